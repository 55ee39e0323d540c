"""What a job produced and what it cost: its result, its costs per party, a benchmark, and
other runs of the same plan side by side.

* **Result**: the released values, decoded from the wire (``node.wire.decode``; tensors come
  back as numpy arrays). Each array is a table that can be copied (tab-separated, for a
  spreadsheet) and exported as CSV at full precision. A statistics result also shows its
  numbers and a histogram; an inference result (one row of scores per input row) the
  predicted class counts.
* **Costs**: each party's time per phase, bytes sent and communication rounds, from the
  timings and statistics its node reported (``detail.parties[rank]``) and the orchestration's
  own phases (``detail.phases``).
* **Benchmark**: ``POST orchestrations/{id}/benchmark`` runs the job's computation again
  through Parley, as plain CrypTen and as plaintext, and charts the three with the overhead.
* **Compare runs**: the sent jobs with the same title and kind: seconds, rounds, bytes.

Nothing here calls the node except the benchmark; the Jobs view hands in the job records it
follows from the event log.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui import charts
from gui.style import ERROR
from node.errors import ParleyError
from node.wire import decode

logger = logging.getLogger(__name__)
__all__ = ["ResultsView", "cost_phases", "released_values"]

PHASES = ["start", "rendezvous", "load", "compute", "reveal"]
PHASE_HELP = (
    "start: launching the party process until torch and CrypTen are imported; "
    "rendezvous: meeting the other parties, then locking the process down; "
    "load: sharing the inputs (data, model weights) in encrypted form; "
    "compute: the job's own work; "
    "reveal: from the end of the computation to the party's end (handing the result over)")
BENCHMARK_TIMEOUT_S = 600
TABLE_ROWS_SHOWN = 5000
ArrayEntry = tuple[str, np.ndarray, list[str] | None, list[str] | None]
"""(label, values as a 2-D array, row names or None, column names or None)."""


# -- reading records ------------------------------------------------------------------------
def released_values(job: dict[str, Any]) -> dict[int, Any]:
    """A job's released results by rank, decoded: an orchestration's ``{rank: value}``, or a
    received job's own value (``{"value": ...}``) under this node's rank."""
    result = job.get("result")
    if not result:
        return {}
    if job.get("role") == "party":
        if isinstance(result, dict) and "value" in result and result["value"] is not None:
            return {int(job.get("rank") or 0): decode(result["value"])}
        return {}
    return {int(rank): decode(value) for rank, value in result.items()}


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def cost_phases(party: dict[str, Any]) -> dict[str, float]:
    """One party's seconds per phase (NaN where its node has not reported it), from the
    timings the party's node records (node/runner.py, node/party.py)."""
    t = party.get("timings") or {}
    start = _num(t.get("imported_at_s", t.get("import_s")))
    rendezvous = _num(t.get("rendezvous_s")) + (_num(t.get("setup_s"))
                                                 if "setup_s" in t else 0.0)
    load = _num(t.get("load_s"))
    compute_all = _num(t.get("compute_s"))
    compute = compute_all - (0.0 if math.isnan(load) else load)
    reveal = _num(t.get("total_s")) - _num(t.get("running_at_s")) - compute_all
    return {"start": start, "rendezvous": rendezvous, "load": load, "compute": compute,
            "reveal": max(0.0, reveal) if not math.isnan(reveal) else math.nan}


def run_figures(job: dict[str, Any]) -> dict[str, float]:
    """A run's seconds (the orchestrator's run phase, else the slowest party), rounds (the
    most any party made) and bytes (all parties together)."""
    detail = job.get("detail") or {}
    parties = list((detail.get("parties") or {}).values())
    seconds = _num((detail.get("phases") or {}).get("run_s"))
    if math.isnan(seconds):
        totals = [_num((p.get("timings") or {}).get("total_s")) for p in parties]
        seconds = max((s for s in totals if not math.isnan(s)), default=math.nan)
    rounds = [_num((p.get("stats") or {}).get("rounds")) for p in parties]
    sizes = [_num((p.get("stats") or {}).get("bytes")) for p in parties]
    return {"seconds": seconds,
            "rounds": max((r for r in rounds if not math.isnan(r)), default=math.nan),
            "bytes": sum(b for b in sizes if not math.isnan(b)) if any(
                not math.isnan(b) for b in sizes) else math.nan}


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and
                                                 not isinstance(v, bool) for v in value):
        return np.asarray(value)
    return None


def _table_shape(array: np.ndarray) -> np.ndarray:
    """Any array as rows × columns: a vector is one column, a scalar one cell."""
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(-1, 1)
    return array.reshape(array.shape[0], -1)


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value.item() if isinstance(value, np.generic) else value)


def _exact(value: Any) -> str:
    """Full precision, read back bit for bit (``repr`` of the float)."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value.item() if isinstance(value, np.generic) else value)


class _ArrayModel(QAbstractTableModel):
    """A 2-D numpy array for a QTableView (no copy into items: a big result stays cheap)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.array = np.zeros((0, 0))
        self.rows: list[str] | None = None
        self.columns: list[str] | None = None

    def set_array(self, array: np.ndarray, rows: list[str] | None,
                  columns: list[str] | None) -> None:
        self.beginResetModel()
        self.array, self.rows, self.columns = array, rows, columns
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008,N802
        return 0 if parent.isValid() else min(TABLE_ROWS_SHOWN, self.array.shape[0])

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008,N802
        return 0 if parent.isValid() or self.array.ndim < 2 else self.array.shape[1]

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return _cell(self.array[index.row(), index.column()])
        if role == Qt.ItemDataRole.ToolTipRole:
            return _exact(self.array[index.row(), index.column()])
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        names = self.columns if orientation == Qt.Orientation.Horizontal else self.rows
        if names is not None and section < len(names):
            return names[section]
        return str(section)


class ResultsView(QWidget):
    """The result, costs, benchmark and other runs of the job the Jobs view selected."""

    sig_result_exported = Signal(str)
    """The shown value was written as CSV: the file's path."""
    sig_benchmark_finished = Signal(str, object)
    """A benchmark answered: the job id and the answer (a dict), or a ParleyError."""

    def __init__(self, conn: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.job: dict[str, Any] = {}
        self.runs: list[dict[str, Any]] = []
        self.entries: list[ArrayEntry] = []
        self.benchmarks: dict[str, Any] = {}  # job id -> answer or ParleyError
        self.benchmarking: dict[str, float] = {}  # job id -> when it was asked
        self._result_key: tuple[Any, ...] = ()
        self._cost_key = ""
        self._compare_key = ""
        self._benchmark_key: tuple[Any, ...] = ()
        self._build()
        self.show_job(None)

    @classmethod
    def ask_export_path(cls, parent: QWidget | None, suggested: str) -> str | None:
        """Where to write the CSV, or None."""
        path, _ = QFileDialog.getSaveFileName(parent, "Export the result", suggested,
                                              "CSV (*.csv)")
        return path or None

    # -- building -------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs)
        self.tabs.addTab(self._build_result(), "Result")
        self.tabs.addTab(self._build_costs(), "Costs")
        self.tabs.addTab(self._build_benchmark(), "Benchmark")
        self.tabs.addTab(self._build_compare(), "Compare runs")

    def _label(self, text: str = "") -> QLabel:
        label = QLabel(text)
        label.setTextFormat(Qt.TextFormat.PlainText)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return label

    def _build_result(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.result_label = self._label()
        layout.addWidget(self.result_label)
        self.value_row = QWidget()
        row = QHBoxLayout(self.value_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Value:"))
        self.value_name = QLabel()
        self.value_name.setTextFormat(Qt.TextFormat.PlainText)
        row.addWidget(self.value_name)
        self.value_combo = QComboBox()
        self.value_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.value_combo.currentIndexChanged.connect(self._on_value_changed)
        row.addWidget(self.value_combo)
        row.addStretch(1)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the table (or the selected cells) as tab-separated "
                                    "text, for a spreadsheet")
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.copy_button)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Write the whole value as CSV, every number at full "
                                      "precision")
        self.export_button.clicked.connect(self._on_export_clicked)
        row.addWidget(self.export_button)
        layout.addWidget(self.value_row)
        split = QSplitter(Qt.Orientation.Vertical)
        self.model = _ArrayModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ContiguousSelection)
        self.table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setDefaultSectionSize(
            self.table.fontMetrics().height() + 6)
        split.addWidget(self.table)
        self.result_chart = charts.new_plot("", "", self)
        split.addWidget(self.result_chart)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        layout.addWidget(split, 1)
        self.result_split = split
        return page

    def _build_costs(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.cost_label = self._label()
        layout.addWidget(self.cost_label)
        self.phase_chart = charts.new_plot("Time per phase (s)", "", self)
        self.phase_chart.setToolTip(PHASE_HELP)
        layout.addWidget(self.phase_chart, 3)
        row = QHBoxLayout()
        self.bytes_chart = charts.new_plot("Bytes communicated", "", self)
        self.rounds_chart = charts.new_plot("Communication rounds", "", self)
        row.addWidget(self.bytes_chart)
        row.addWidget(self.rounds_chart)
        layout.addLayout(row, 2)
        return page

    def _build_benchmark(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        intro = self._label("Runs this job's code again on this machine, on mock data "
                            "shaped like its assets: as plain CrypTen processes (no nodes, "
                            "approvals or jail) and, for a plan, as plaintext numpy; then "
                            "compares them with this run through Parley. It can take half a "
                            "minute.")
        layout.addWidget(intro)
        row = QHBoxLayout()
        self.benchmark_button = QPushButton("Run the benchmark")
        self.benchmark_button.clicked.connect(self.start_benchmark)
        row.addWidget(self.benchmark_button)
        self.benchmark_progress = QProgressBar()
        self.benchmark_progress.setRange(0, 0)
        self.benchmark_progress.setMaximumWidth(180)
        self.benchmark_progress.setVisible(False)
        row.addWidget(self.benchmark_progress)
        row.addStretch(1)
        layout.addLayout(row)
        self.benchmark_label = self._label()
        layout.addWidget(self.benchmark_label)
        self.benchmark_chart = charts.new_plot("Seconds, by phase", "", self)
        layout.addWidget(self.benchmark_chart, 1)
        return page

    def _build_compare(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.compare_label = self._label()
        layout.addWidget(self.compare_label)
        self.compare_tree = QTreeWidget()
        self.compare_tree.setRootIsDecorated(False)
        self.compare_tree.setHeaderLabels(["Run", "State", "Seconds", "Rounds", "Bytes"])
        self.compare_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, 5):
            self.compare_tree.header().setSectionResizeMode(
                c, QHeaderView.ResizeMode.ResizeToContents)
        self.compare_tree.header().setStretchLastSection(False)
        layout.addWidget(self.compare_tree, 1)
        self.compare_chart = charts.new_plot("Seconds per run", "", self)
        layout.addWidget(self.compare_chart, 1)
        return page

    # -- showing a job --------------------------------------------------------------------------
    def show_job(self, job: dict[str, Any] | None, runs: list[dict[str, Any]] | None = None
                 ) -> None:
        """Show ``job`` (a full record: an orchestration, or a received job) and ``runs``, the
        sent jobs to compare it with; None shows nothing."""
        self.job = dict(job or {})
        self.runs = list(runs or [])
        self._show_result()
        self._show_costs()
        self._show_benchmark()
        self._show_compare()

    def _show_result(self) -> None:
        job = self.job
        key = (job.get("id"), job.get("role"), job.get("state"), job.get("result") is None)
        if key == self._result_key:
            return
        self._result_key = key
        self.entries = []
        self.value_combo.blockSignals(True)
        self.value_combo.clear()
        self.value_combo.blockSignals(False)
        self.model.set_array(np.zeros((0, 0)), None, None)
        charts.clear_chart(self.result_chart)
        self.result_chart.setVisible(False)
        if not job:
            self.result_label.setText("Select a job to see its result.")
            self._update_result_buttons()
            return
        state = str(job.get("state", ""))
        try:
            values = released_values(job)
        except ParleyError as exc:
            self.result_label.setText(f"The result could not be read: {exc}")
            self._update_result_buttons()
            return
        if not values:
            self.result_label.setText(self._no_result_text(state))
            self._update_result_buttons()
            return
        kind = str(job.get("kind", ""))
        names = self._party_names()
        lines: list[str] = []
        for rank, value in sorted(values.items()):
            who = f"rank {rank} ({names[rank]})" if rank in names else f"rank {rank}"
            prefix = f"{who}: " if len(values) > 1 else ""
            self._collect(value, prefix, lines, kind)
            if kind == "statistics" and isinstance(value, dict):
                self._show_statistics(value, prefix, lines)
            elif kind == "inference" and isinstance(value, np.ndarray) and value.ndim == 2:
                self._show_predictions(value, f", for {who}" if len(values) > 1 else "")
        if job.get("role") == "party":
            head = f"Revealed to this node (rank {job.get('rank')})."
        else:
            head = f"Revealed to {', '.join(sorted(self._who(r, names) for r in values))}."
        self.result_label.setText("\n".join([head, *lines]))
        self.value_combo.blockSignals(True)
        for label, array, _r, _c in self.entries:
            dims = " × ".join(str(d) for d in array.shape)
            self.value_combo.addItem(f"{label} ({dims})")
        self.value_combo.blockSignals(False)
        self._on_value_changed(0)

    @staticmethod
    def _who(rank: int, names: dict[int, str]) -> str:
        return f"{names[rank]} (rank {rank})" if rank in names else f"rank {rank}"

    def _no_result_text(self, state: str) -> str:
        if state == "succeeded":
            if self.job.get("role") == "party":
                return "The job succeeded; its result was not revealed to this node."
            return "The job succeeded without a value to show."
        if state in ("failed", "rejected", "cancelled"):
            return f"No result: the job {state}."
        return "The result appears here when the job has finished."

    def _party_names(self) -> dict[int, str]:
        parties = (self.job.get("detail") or {}).get("parties") or {}
        names = {int(r): str(p.get("name", "")) for r, p in parties.items() if p.get("name")}
        for p in (self.job.get("proposal") or {}).get("parties") or []:
            names.setdefault(int(p.get("rank", 0)), str(p.get("name", "")))
        return names

    def _collect(self, value: Any, label: str, lines: list[str], kind: str) -> None:
        """Every array in a (nested) value becomes a table; numbers become lines."""
        array = _as_array(value)
        if array is not None:
            columns = None
            if kind == "inference" and array.ndim == 2:
                columns = [f"class {i} score" for i in range(array.shape[1])]
            self.entries.append((label.rstrip(": ") or "value", _table_shape(array), None,
                                 columns))
            return
        if isinstance(value, dict):
            for key, item in value.items():
                self._collect(item, f"{label}{key}: " if label else f"{key}: ", lines, kind)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                self._collect(item, f"{label}[{i}]: ", lines, kind)
            return
        text = _cell(value) if isinstance(value, (int, float)) else repr(value)
        lines.append(f"{label.rstrip(': ') or 'value'} = {text}")

    def _show_statistics(self, value: dict[str, Any], prefix: str, lines: list[str]) -> None:
        """The aggregates as one table (a row per statistic, a column per data column) and
        the histogram as a chart."""
        rows = [k for k in ("sum", "mean", "variance") if _as_array(value.get(k)) is not None]
        if rows:
            table = np.vstack([np.asarray(value[k], dtype=float).reshape(-1) for k in rows])
            names = list(rows)
            if "variance" in rows:
                table = np.vstack([table, np.sqrt(np.clip(table[rows.index("variance")], 0,
                                                          None))])
                names.append("std deviation")
            columns = [f"column {i}" for i in range(table.shape[1])]
            self.entries.insert(0, (f"{prefix}statistics".strip(), table, names, columns))
        counts = _as_array(value.get("histogram"))
        if counts is not None:
            edges = value.get("edges") or []
            self.result_chart.setVisible(True)
            plan = ((self.job.get("proposal") or {}).get("code") or {}).get("plan") or {}
            column = (plan.get("histogram") or {}).get("column")
            of = f" of column {column}" if column is not None else ""
            charts.set_title(self.result_chart, f"{prefix}Histogram{of} (rows per bin)")
            charts.histogram(self.result_chart, [float(e) for e in edges],
                             [float(c) for c in counts.reshape(-1)])

    def _show_predictions(self, scores: np.ndarray, who: str) -> None:
        predicted = np.argmax(scores, axis=1)
        counts = np.bincount(predicted, minlength=scores.shape[1])
        self.result_chart.setVisible(True)
        charts.set_title(self.result_chart, f"Predicted class (the highest score) of each "
                                            f"row: {len(predicted)} rows{who}")
        charts.bar_chart(self.result_chart, [f"class {i}" for i in range(len(counts))],
                         [float(c) for c in counts], name="rows")

    def _on_value_changed(self, index: int) -> None:
        if 0 <= index < len(self.entries):
            _label, array, rows, columns = self.entries[index]
            self.model.set_array(array, rows, columns)
            if array.shape[0] > TABLE_ROWS_SHOWN:
                self.table.setToolTip(f"The first {TABLE_ROWS_SHOWN} of {array.shape[0]} rows; "
                                      f"export has them all.")
            else:
                self.table.setToolTip("")
        self._update_result_buttons()

    def _update_result_buttons(self) -> None:
        has = bool(self.entries)
        self.copy_button.setEnabled(has)
        self.export_button.setEnabled(has)
        self.value_row.setVisible(has)
        self.table.setVisible(has)
        self.value_combo.setVisible(len(self.entries) > 1)
        self.value_name.setVisible(len(self.entries) == 1)
        if len(self.entries) == 1:
            self.value_name.setText(self.value_combo.itemText(0))

    def current_value(self) -> np.ndarray | None:
        """The value the table shows, as it was released (a vector stays a vector)."""
        index = self.value_combo.currentIndex()
        if not 0 <= index < len(self.entries):
            return None
        return self.entries[index][1]

    def copy(self) -> str:
        """The selected cells (or the whole value) to the clipboard, tab-separated."""
        array = self.current_value()
        if array is None:
            return ""
        selection = self.table.selectionModel().selectedIndexes() if \
            self.table.selectionModel() else []
        if selection:
            r0 = min(i.row() for i in selection)
            r1 = max(i.row() for i in selection)
            c0 = min(i.column() for i in selection)
            c1 = max(i.column() for i in selection)
            array = array[r0:r1 + 1, c0:c1 + 1]
        text = "\n".join("\t".join(_exact(v) for v in row) for row in array) + "\n"
        QApplication.clipboard().setText(text)
        return text

    def _on_export_clicked(self) -> None:
        index = self.value_combo.currentIndex()
        label = self.entries[index][0] if 0 <= index < len(self.entries) else "result"
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in label).strip("-")
        path = self.ask_export_path(self, f"{self.job.get('id', 'job')}-{safe or 'result'}.csv")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str | Path) -> bool:
        """Write the shown value as CSV (no header: ``numpy.loadtxt(path, delimiter=",")``
        reads it back exactly); say where, or why not."""
        array = self.current_value()
        if array is None:
            return False
        target = Path(path)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in array:
            writer.writerow([_exact(v) for v in row])
        try:
            target.write_text(buffer.getvalue(), encoding="utf-8")
        except OSError as exc:
            self.result_label.setText(f"Could not write {target}: {exc.strerror or exc}; "
                                      f"choose another folder.")
            return False
        self.sig_result_exported.emit(str(target))
        return True

    # -- costs ------------------------------------------------------------------------------
    def _parties(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, party record) in rank order: an orchestration's parties, or this node's
        own party for a received job."""
        detail = self.job.get("detail") or {}
        if self.job.get("role") == "party":
            rank = self.job.get("rank")
            me = {"timings": detail.get("timings") or {}, "stats": detail.get("stats") or {}}
            return [(f"this node (rank {rank})", me)]
        parties = detail.get("parties") or {}
        return [(f"{p.get('name', '?')} (rank {r})", p)
                for r, p in sorted(parties.items(), key=lambda kv: int(kv[0]))]

    def _show_costs(self) -> None:
        parties = self._parties()
        detail = self.job.get("detail") or {}
        key = repr([(n, p.get("timings"), p.get("stats")) for n, p in parties]) + \
            repr(detail.get("phases")) + str(self.job.get("id"))
        if key == self._cost_key:
            return
        self._cost_key = key
        measured = [(n, p) for n, p in parties if p.get("timings") or p.get("stats")]
        if not measured:
            for chart in (self.phase_chart, self.bytes_chart, self.rounds_chart):
                charts.clear_chart(chart, "no figures yet")
            self.cost_label.setText("Costs appear when the parties have reported them (at "
                                    "the end of their run)." if self.job else "")
            return
        names = [n.split(" (")[0] if self.job.get("role") != "party" else n
                 for n, _ in measured]
        series = [(name, [cost_phases(p)[ph] for ph in PHASES])
                  for name, (_, p) in zip(names, measured)]
        charts.grouped_bars(self.phase_chart, PHASES, series)
        charts.bar_chart(self.bytes_chart, names,
                         [_num((p.get("stats") or {}).get("bytes")) for _, p in measured],
                         name="bytes", colour=charts.SERIES_COLOURS[4], fmt=charts.size_text,
                         units="B")
        charts.bar_chart(self.rounds_chart, names,
                         [_num((p.get("stats") or {}).get("rounds")) for _, p in measured],
                         name="rounds", colour=charts.SERIES_COLOURS[5])
        phases = detail.get("phases") or {}
        words = []
        if isinstance(phases.get("approved_s"), (int, float)):
            words.append(f"approvals took {phases['approved_s']:.1f} s")
        if isinstance(phases.get("run_s"), (int, float)):
            words.append(f"the run {phases['run_s']:.1f} s")
        comm = [_num((p.get("stats") or {}).get("comm_s")) for _, p in measured]
        if any(not math.isnan(c) for c in comm):
            words.append("communication " + ", ".join(
                f"{n} {c:.2f} s" for n, c in zip(names, comm) if not math.isnan(c)))
        self.cost_label.setText(("Seen from the orchestrator: " if phases else "")
                                + "; ".join(words) + ("." if words else ""))

    # -- benchmark ------------------------------------------------------------------------------
    def start_benchmark(self) -> None:
        """Ask the node to benchmark the shown (sent) job; the answer fills the chart."""
        job_id = str(self.job.get("id", ""))
        if not job_id or self.job.get("role") != "orchestrator" or job_id in self.benchmarking:
            return
        self.benchmarking[job_id] = time.monotonic()
        self.benchmarks.pop(job_id, None)
        self.conn.post(f"/orchestrations/{job_id}/benchmark", {},
                       timeout=BENCHMARK_TIMEOUT_S).then(
            lambda answer, j=job_id: self._on_benchmark(j, answer),
            lambda error, j=job_id: self._on_benchmark(j, error), owner=self)
        self._show_benchmark()

    def _on_benchmark(self, job_id: str, answer: Any) -> None:
        asked = self.benchmarking.pop(job_id, time.monotonic())
        if not isinstance(answer, (dict, ParleyError)):
            answer = ParleyError("the node answered the benchmark with something unexpected")
        if isinstance(answer, dict):
            answer = {**answer, "_took_s": time.monotonic() - asked}
        self.benchmarks[job_id] = answer
        if job_id == self.job.get("id"):
            self._show_benchmark()
        self.sig_benchmark_finished.emit(job_id, answer)

    def _show_benchmark(self) -> None:
        job_id = str(self.job.get("id", ""))
        sent = self.job.get("role") == "orchestrator"
        running = job_id in self.benchmarking
        done = self.job.get("state") == "succeeded"
        self.benchmark_button.setEnabled(sent and done and not running)
        self.benchmark_progress.setVisible(running)
        answer = self.benchmarks.get(job_id)
        if running:
            self.benchmark_label.setText("Benchmarking: running the job's code as plain "
                                         "CrypTen processes and as plaintext…")
            self.benchmark_label.setStyleSheet("")
        elif isinstance(answer, ParleyError):
            self.benchmark_label.setText(f"No benchmark: {answer.message}")
            self.benchmark_label.setStyleSheet(f"color: {ERROR.name()}")
        elif isinstance(answer, dict):
            self.benchmark_label.setText(benchmark_words(answer))
            self.benchmark_label.setStyleSheet("")
        elif not sent:
            self.benchmark_label.setText("Only a job this node sent can be benchmarked.")
            self.benchmark_label.setStyleSheet("")
        elif not done:
            self.benchmark_label.setText("A job can be benchmarked once it has succeeded.")
            self.benchmark_label.setStyleSheet("")
        else:
            self.benchmark_label.setText("")
        key = (job_id, running, id(answer))
        if key == self._benchmark_key:
            return
        self._benchmark_key = key
        if isinstance(answer, dict):
            categories, series = benchmark_series(answer)
            charts.grouped_bars(self.benchmark_chart, categories, series)
        else:
            charts.clear_chart(self.benchmark_chart,
                               "running…" if running else "no benchmark yet")

    # -- compare runs ---------------------------------------------------------------------------
    def _show_compare(self) -> None:
        job = self.job
        same = [r for r in self.runs if job and r.get("title") == job.get("title")
                and r.get("kind") == job.get("kind")]
        same.sort(key=lambda r: float(r.get("created_at") or 0))
        key = repr((job.get("id"), [(r.get("id"), r.get("state"), run_figures(r))
                                    for r in same]))
        if key == self._compare_key:
            return
        self._compare_key = key
        self.compare_tree.clear()
        if not job:
            self.compare_label.setText("")
            charts.clear_chart(self.compare_chart)
            return
        self.compare_label.setText(
            f"Jobs this node sent with the title '{job.get('title') or '(none)'}' and kind "
            f"{job.get('kind') or '?'}: {len(same)} run{'s' if len(same) != 1 else ''}."
            if same else "Other runs of this plan appear here (sent jobs with the same title "
                         "and kind).")
        labels: list[str] = []
        seconds: list[float] = []
        for i, run in enumerate(same, 1):
            fig = run_figures(run)
            when = time.strftime("%m-%d %H:%M:%S", time.localtime(float(run.get("created_at")
                                                                         or 0)))
            label = f"#{i}"
            item = QTreeWidgetItem(self.compare_tree, [
                f"{label}  {when}  {run.get('id')}", str(run.get("state", "")),
                "" if math.isnan(fig["seconds"]) else f"{fig['seconds']:.2f}",
                "" if math.isnan(fig["rounds"]) else f"{fig['rounds']:.0f}",
                "" if math.isnan(fig["bytes"]) else charts.size_text(fig["bytes"])])
            for c in (2, 3, 4):
                item.setTextAlignment(c, Qt.AlignmentFlag.AlignRight)
            if run.get("id") == job.get("id"):
                font = QFont(item.font(0))
                font.setBold(True)
                for c in range(5):
                    item.setFont(c, font)
            labels.append(label)
            seconds.append(fig["seconds"])
        if same:
            charts.bar_chart(self.compare_chart, labels, seconds, name="seconds",
                             colour=charts.SERIES_COLOURS[0])
        else:
            charts.clear_chart(self.compare_chart, "no runs to compare")


def _seconds(value: Any) -> float:
    if isinstance(value, dict):
        value = value.get("seconds", value.get("s"))
    return _num(value)


def benchmark_series(answer: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """The benchmark's three runs as chart series over their phases and the total."""
    runs = [("Parley", answer.get("parley") or {}), ("plain CrypTen", answer.get("crypten") or {}),
            ("plaintext", answer.get("plaintext") or {})]
    phases: list[str] = []
    for _name, run in runs:
        for key in (run.get("phases") or {}):
            name = str(key).removesuffix("_s")
            if name not in phases:
                phases.append(name)
    categories = [*phases, "total"]
    series = []
    for name, run in runs:
        got = {str(k).removesuffix("_s"): _seconds(v) for k, v in (run.get("phases") or {}).items()}
        values = [got.get(ph, math.nan) for ph in phases] + [_seconds(run.get("seconds"))]
        series.append((name, values))
    return categories, series


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def benchmark_words(answer: dict[str, Any]) -> str:
    """The overhead in a sentence: how many times longer each layer takes."""
    overhead = answer.get("overhead") or {}
    parts = []
    for key, text in (("parley_vs_crypten", "Parley took {x:.2f}× as long as plain CrypTen"),
                      ("crypten_vs_plaintext", "plain CrypTen {x:.0f}× as long as plaintext")):
        x = overhead.get(key)
        if isinstance(x, (int, float)) and math.isfinite(x):
            parts.append(text.format(x=x))
    seconds = [f"{name} {_duration(_seconds(answer.get(key)))}"
               for key, name in (("parley", "Parley"), ("crypten", "plain CrypTen"),
                                 ("plaintext", "plaintext"))
               if not math.isnan(_seconds(answer.get(key)))]
    why_not = (answer.get("plaintext") or {}).get("why_not")
    if why_not:
        parts.append(f"no plaintext figure: {why_not}")
    text = "; ".join(parts)
    if seconds:
        text = (text + ". " if text else "") + "Seconds: " + ", ".join(seconds) + "."
    return text or "The benchmark answered without figures."
