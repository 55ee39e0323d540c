"""My assets: what this node offers to its peers, published from files, edited, unpublished.

The table follows the node's ``asset.*`` events (no polling); an import shows its progress from
``asset.import_progress`` and can be cancelled. A refused import (a bad CSV cell, an ONNX op
CrypTen cannot run) is told in the node's own words, which name the line, column and value.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.asset_dialog import AssetDialog, AssetForm, csv_header
from gui.client import NodeConnection
from gui.confirm_dialog import ConfirmDialog
from gui.style import ERROR, OK, asset_shape, icon, status_style
from node.errors import ImportCancelled, NodeUnreachable, ParleyError

logger = logging.getLogger(__name__)

__all__ = ["PUBLISHABLE", "AssetsView"]

PUBLISHABLE = (".csv", ".npy", ".onnx")
COLUMNS = ("Name", "Kind", "Tags", "Shape", "Description")
IMPORT_TIMEOUT_S = 3600.0


def _item(text: str, tip: str | None = None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if tip:
        item.setToolTip(tip)
    return item


def _number(value: Any) -> str:
    """A stored float32 as the owner typed it (17.99, not 17.989999771118164)."""
    return f"{value:.7g}" if isinstance(value, float) else str(value)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


class _ImportRow(QFrame):
    """One import in flight: file name, progress in bytes, Cancel."""

    def __init__(self, path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(f"Importing {path.name}…")
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy until the node reports bytes
        self.bar.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this import; nothing is published")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.label, 2)
        layout.addWidget(self.bar, 3)
        layout.addWidget(self.cancel_button)

    def show_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(done, total) / total))
            self.bar.setFormat(f"{_mb(done)} of {_mb(total)}")


class AssetsView(QWidget):
    """This node's assets, with publish (file dialog or drop), edit, details and unpublish."""

    sig_assets_loaded = Signal(list)
    """The table now shows this list of assets (after every reload)."""
    sig_import_failed = Signal(str)
    """An import was refused or cancelled: the message shown to the owner."""
    sig_asset_published = Signal(dict)
    """An import this view started finished: the new asset."""

    def __init__(self, conn: NodeConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.assets: list[dict[str, Any]] = []
        self._imports: dict[str, _ImportRow] = {}
        self._detail_id: str | None = None
        self._pending_select: str | None = None
        self.setAcceptDrops(True)

        # -- actions row
        self.publish_button = QPushButton(icon("publish", self), "Publish…")
        self.publish_button.setToolTip("Publish a CSV table, a NumPy array or an ONNX model "
                                       "(Ctrl+O); you can also drop files here")
        self.edit_button = QPushButton(icon("edit", self), "Edit…")
        self.edit_button.setToolTip("Change the name, tags or description")
        self.remove_button = QPushButton(icon("remove", self), "Unpublish…")
        self.remove_button.setToolTip("Stop offering this asset to peers (Delete)")
        for button in (self.edit_button, self.remove_button):
            button.setEnabled(False)
        self.publish_button.clicked.connect(lambda: self.publish_files())
        self.edit_button.clicked.connect(self.edit_selected)
        self.remove_button.clicked.connect(self.unpublish_selected)
        actions = QHBoxLayout()
        actions.addWidget(self.publish_button)
        actions.addWidget(self.edit_button)
        actions.addWidget(self.remove_button)
        actions.addStretch(1)

        title = QLabel("My assets")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        title.setFont(font)
        subtitle = QLabel("What this node offers to paired peers. Peers see names, tags and "
                          "shapes, never the values; every job that reads an asset waits "
                          "for your approval in the Inbox.")
        subtitle.setWordWrap(True)

        # -- messages and imports in flight
        self.message = QLabel()
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        self.imports_box = QVBoxLayout()
        self.imports_box.setSpacing(4)

        # -- the table, or an empty state that says what to do
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_selection_changed)
        self.table.itemDoubleClicked.connect(lambda _item: self.edit_selected())
        QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table,
                  self.unpublish_selected)

        self.details = QGroupBox("Details")
        self.detail_summary = QLabel("Select an asset to see its schema and first rows.")
        self.detail_summary.setTextFormat(Qt.TextFormat.PlainText)
        self.detail_summary.setWordWrap(True)
        self.detail_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail_table = QTableWidget(0, 0)
        self.detail_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.detail_table.setAlternatingRowColors(True)
        self.detail_table.hide()
        details_layout = QVBoxLayout(self.details)
        details_layout.addWidget(self.detail_summary)
        details_layout.addWidget(self.detail_table, 1)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([200, 320])
        splitter.setChildrenCollapsible(False)

        self.empty = QLabel("No assets published yet.\n\nDrop a .csv, .npy or .onnx file here, "
                            "or click Publish… (Ctrl+O).\nPeers will find it by the tags you "
                            "give it; its values never leave this machine.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setFrameShape(QFrame.Shape.StyledPanel)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(splitter)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(subtitle)
        layout.addLayout(actions)
        layout.addWidget(self.message)
        layout.addLayout(self.imports_box)
        layout.addWidget(self.stack, 1)
        self.setTabOrder(self.publish_button, self.edit_button)
        self.setTabOrder(self.edit_button, self.remove_button)
        self.setTabOrder(self.remove_button, self.table)

        self._reload = QTimer(self, singleShot=True, interval=150)
        self._reload.timeout.connect(self.refresh)
        conn.sig_event_received.connect(self._on_event)
        self.refresh()

    # -- loading ------------------------------------------------------------------------------
    def screenshot_ready(self) -> None:
        """For `make screenshots`: show the details of the first asset."""
        if self.table.rowCount():
            self.table.selectRow(self.table.rowCount() - 1)

    def refresh(self) -> None:
        """Load the list from the node (also on F5 and when the node answers again)."""
        self.conn.get("/assets").then(self._on_assets_loaded, self._on_load_failed)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("kind", ""))
        if kind == "asset.import_progress":
            data = event.get("data") or {}
            row = self._imports.get(str(data.get("import_id")))
            if row is not None:
                row.show_progress(int(data.get("done", 0)), int(data.get("total", 0)))
        elif kind.startswith("asset."):
            self._reload.start()  # several events in a burst make one reload

    def _on_load_failed(self, exc: ParleyError) -> None:
        if not isinstance(exc, NodeUnreachable):  # the window's banner says that one
            self.show_message(f"Could not load this node's assets: {exc.message}", error=True)

    def _on_assets_loaded(self, answer: dict[str, Any]) -> None:
        selected = self.selected_asset()
        keep = selected["id"] if selected else None
        self.assets = sorted(answer.get("assets", []), key=lambda a: str(a.get("name", "")).lower())
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.assets))
        for row, asset in enumerate(self.assets):
            name = _item(str(asset.get("name", "")), f"id {asset.get('id')}")
            name.setData(Qt.ItemDataRole.UserRole, asset.get("id"))
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, _item(str(asset.get("kind", ""))))
            self.table.setItem(row, 2, _item(", ".join(asset.get("tags", []))))
            self.table.setItem(row, 3, _item(asset_shape(asset)))
            description = str(asset.get("description", ""))
            self.table.setItem(row, 4, _item(description.splitlines()[0] if description else "",
                                             description or None))
        self.table.setSortingEnabled(True)
        self.stack.setCurrentIndex(1 if self.assets else 0)
        if self._pending_select and self.select_asset(self._pending_select):
            self._pending_select = None  # the asset just published
        elif keep:
            self.select_asset(keep)
        if self.selected_asset() is None:
            self._show_details(None)
        self.sig_assets_loaded.emit(self.assets)

    # -- selection and details ----------------------------------------------------------------
    def row_names(self) -> list[str]:
        """The names in the table, top to bottom (as the owner sees them)."""
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())
                if self.table.item(r, 0) is not None]

    def selected_asset(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        asset_id = self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        return next((a for a in self.assets if a.get("id") == asset_id), None)

    def select_asset(self, asset_id: str) -> bool:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == asset_id:
                self.table.selectRow(row)
                return True
        return False

    def _on_selection_changed(self) -> None:
        asset = self.selected_asset()
        self.edit_button.setEnabled(asset is not None)
        self.remove_button.setEnabled(asset is not None)
        if asset is None or asset.get("id") != self._detail_id:
            self._show_details(asset)

    def _show_details(self, asset: dict[str, Any] | None) -> None:
        self._detail_id = asset.get("id") if asset else None
        self.detail_table.hide()
        if asset is None:
            self.details.setTitle("Details")
            self.detail_summary.setText("Select an asset to see its schema and first rows.")
            return
        self.details.setTitle(f"Details: {asset.get('name', '')}")
        self.detail_summary.setText(self._summary(asset, None))
        asset_id = str(asset.get("id"))
        self.conn.get(f"/assets/{asset_id}/preview").then(
            lambda preview, a=asset: self._on_preview_loaded(a, preview),
            lambda exc, a=asset: self._on_preview_failed(a, exc))

    def _summary(self, asset: dict[str, Any], preview: dict[str, Any] | None) -> str:
        schema = asset.get("schema") or {}
        created = asset.get("created_at")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "?"
        tags = ", ".join(asset.get("tags", [])) or "(none: peers cannot find it by tag)"
        lines = [f"{asset.get('kind', '?')} {asset.get('id', '')}, published {when}",
                 f"Tags: {tags}"]
        if asset.get("description"):
            lines.append(f"Description: {asset['description']}")
        if asset.get("kind") == "dataset":
            lines.append(f"Shape: {asset_shape(asset)}, {schema.get('dtype', 'float32')}")
            label = (preview or {}).get("label") or schema.get("label")
            if isinstance(label, dict):
                label = label.get("name")
            lines.append(f"Label column: {label or '(none)'}")
        else:
            source = preview or schema
            for key, title in (("inputs", "Inputs"), ("outputs", "Outputs")):
                parts = [f"{t.get('name', '?')} "
                         f"[{' × '.join('?' if d is None else str(d) for d in t.get('shape', []))}]"
                         for t in source.get(key, []) if isinstance(t, dict)]
                lines.append(f"{title}: {', '.join(parts) or '?'}")
            if schema.get("parameters"):
                lines.append(f"Parameters: {schema['parameters']:,}, "
                             f"opset {schema.get('opset', '?')}")
        return "\n".join(lines)

    def _on_preview_loaded(self, asset: dict[str, Any], preview: dict[str, Any]) -> None:
        if asset.get("id") != self._detail_id:
            return  # the owner has moved on to another asset
        self.detail_summary.setText(self._summary(asset, preview))
        if asset.get("kind") == "dataset":
            columns = [str(c) for c in preview.get("columns", [])]
            rows = preview.get("rows", [])
            self._fill_detail(columns, [[_number(v) for v in r] for r in rows])
            shown = len(rows)
            total = (preview.get("shape") or [shown])[0]
            self.detail_table.setToolTip(f"The first {shown} of {total} rows; these values "
                                         "stay on this machine")
        else:
            layers = preview.get("layers", [])
            self._fill_detail(["Operation", "Name"],
                              [[str(layer.get("op", "")), str(layer.get("name", ""))]
                               for layer in layers])
            self.detail_table.setToolTip("The model's layers, in order")

    def _on_preview_failed(self, asset: dict[str, Any], exc: ParleyError) -> None:
        if asset.get("id") != self._detail_id:
            return
        schema = asset.get("schema") or {}
        # the schema alone still says what peers can see
        if asset.get("kind") == "dataset" and schema.get("columns"):
            self._fill_detail(["Column"], [[str(c)] for c in schema["columns"]])
        elif schema.get("ops"):
            self._fill_detail(["Operation"], [[str(op)] for op in schema["ops"]])
        self.detail_summary.setText(self._summary(asset, None) +
                                    f"\n(No preview of the first rows: {exc.message})")

    def _fill_detail(self, columns: list[str], rows: list[list[str]]) -> None:
        table = self.detail_table
        table.clear()
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, value in enumerate(values[:len(columns)]):
                table.setItem(r, c, _item(value))
        table.resizeColumnsToContents()
        table.setVisible(bool(columns))

    # -- messages -----------------------------------------------------------------------------
    def show_message(self, text: str, error: bool = False, ok: bool = False) -> None:
        """One line (or a few) above the table: what happened and what to do next."""
        self.message.setText(text)
        self.message.setStyleSheet(status_style(ERROR) if error else
                                   status_style(OK) if ok else "")
        self.message.show()

    # -- publish ------------------------------------------------------------------------------
    def publish_files(self, paths: list[str] | None = None) -> list[str]:
        """Ask the owner about each file (a file dialog first when ``paths`` is None) and start
        its import; returns the import ids started."""
        if paths is None:
            paths, _ = QFileDialog.getOpenFileNames(
                self, "Publish files", str(Path.home()),
                "Tables and models (*.csv *.npy *.onnx);;All files (*)")
        started = []
        tags_in_use = sorted({t for a in self.assets for t in a.get("tags", [])})
        for raw in paths:
            path = Path(raw).expanduser().resolve()
            if path.suffix.lower() not in PUBLISHABLE:
                self.show_message(f"{path.name} is not a .csv, .npy or .onnx file; Parley "
                                  "publishes tables (CSV, NumPy arrays) and ONNX models.",
                                  error=True)
                continue
            columns = csv_header(path) if path.suffix.lower() == ".csv" else []
            form = AssetDialog.ask(self, path=path, tags_in_use=tags_in_use, columns=columns)
            if form is not None:
                started.append(self.publish(path, form))
        return started

    def publish(self, path: str | Path, form: AssetForm) -> str:
        """Start importing ``path`` as the form says; the answer arrives later. The import id."""
        path = Path(path)
        import_id = uuid.uuid4().hex
        row = _ImportRow(path, self)
        row.cancel_button.clicked.connect(lambda _=False, i=import_id: self.cancel_import(i))
        self._imports[import_id] = row
        self.imports_box.addWidget(row)
        row.show()
        body: dict[str, Any] = {"path": str(path), "name": form.name, "tags": form.tags,
                                "description": form.description, "import_id": import_id}
        if form.label_column:
            body["label_column"] = form.label_column
        self.conn.post("/assets", body, timeout=IMPORT_TIMEOUT_S).then(
            lambda asset, i=import_id: self._on_published(i, asset),
            lambda exc, i=import_id, p=path: self._on_publish_failed(i, p, exc))
        return import_id

    def cancel_import(self, import_id: str) -> None:
        row = self._imports.get(import_id)
        if row is None:
            return
        row.cancel_button.setEnabled(False)
        row.cancel_button.setText("Cancelling…")
        self.conn.post(f"/imports/{import_id}/cancel").then(
            None, lambda exc: self.show_message(
                f"Could not cancel the import: {exc.message}. It goes on; unpublish the asset "
                "when it appears if you do not want it.", error=True))

    def _end_import(self, import_id: str) -> None:
        row = self._imports.pop(import_id, None)
        if row is not None:
            self.imports_box.removeWidget(row)
            row.deleteLater()

    def _on_published(self, import_id: str, asset: dict[str, Any]) -> None:
        self._end_import(import_id)
        self.show_message(f"Published {asset.get('kind', 'asset')} '{asset.get('name')}' "
                          f"({asset_shape(asset)}). Paired peers can now find it by its tags: "
                          f"{', '.join(asset.get('tags', [])) or '(none; add tags with Edit…)'}.",
                          ok=True)
        self._pending_select = asset.get("id")
        self.refresh()
        self.sig_asset_published.emit(asset)

    def _on_publish_failed(self, import_id: str, path: Path, exc: ParleyError) -> None:
        self._end_import(import_id)
        if isinstance(exc, ImportCancelled):
            text = f"Import of {path.name} cancelled; nothing was published."
        else:
            text = f"{path.name} was not published: {exc.message}"
        self.show_message(text, error=not isinstance(exc, ImportCancelled))
        self.sig_import_failed.emit(text)

    # -- edit and unpublish -------------------------------------------------------------------
    def edit_selected(self) -> None:
        asset = self.selected_asset()
        if asset is None:
            return
        tags_in_use = sorted({t for a in self.assets for t in a.get("tags", [])})
        form = AssetDialog.ask(self, asset=asset, tags_in_use=tags_in_use)
        if form is None:
            return
        self.conn.patch(f"/assets/{asset['id']}", {
            "name": form.name, "tags": form.tags, "description": form.description}).then(
            lambda new: (self.show_message(f"Saved '{new.get('name', form.name)}'.", ok=True),
                         self.refresh()),
            lambda exc: self.show_message(f"Could not save {asset.get('name')}: {exc.message}",
                                          error=True))

    def unpublish_selected(self) -> None:
        asset = self.selected_asset()
        if asset is None:
            return
        answer = ConfirmDialog.ask(
            self, "Unpublish asset",
            f"Unpublish '{asset.get('name')}'? Peers will no longer find it, and jobs that "
            "have not started cannot read it. Parley deletes its own copy; your original "
            "file stays where it is.", [("unpublish", "Unpublish")])
        if answer != "unpublish":
            return
        self.conn.delete(f"/assets/{asset['id']}").then(
            lambda _answer: (self.show_message(f"Unpublished '{asset.get('name')}'."),
                             self.refresh()),
            lambda exc: self.show_message(
                f"Could not unpublish {asset.get('name')}: {exc.message}", error=True))

    # -- drag and drop ------------------------------------------------------------------------
    @staticmethod
    def droppable(event: QDragEnterEvent | QDropEvent) -> list[str]:
        """The local files in a drag that Parley can publish."""
        mime = event.mimeData()
        if not mime.hasUrls():
            return []
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()
                and Path(u.toLocalFile()).suffix.lower() in PUBLISHABLE]

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.droppable(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = self.droppable(event)
        if paths:
            event.acceptProposedAction()
            QTimer.singleShot(0, lambda: self.publish_files(paths))  # after the drop ends
