"""Deciding on one proposal: what the code reads, what it reveals and to whom, then a decision.

The review material is computed by this owner's own node from the proposal
(``GET /admin/v1/jobs/{id}/review``; node/review.py): the exact code that would run, with line
numbers and colours (reveals in red); the assets it reads, here and at the other parties, with
what the proposal states of each (a dataset's shape, a model's layers and parameter shapes);
every decryption and its recipient; what goes back to the orchestrator; loops and a cost
estimate; warnings; and the diff against the version this owner last approved. A dry run
executes the code on mock data shaped like this node's assets, so an owner can see it run
before any real value is touched.

The decision names the exact version reviewed (its proposal hash): if the orchestrator sent
another version in between, the node refuses the approval.

Everything here except our own words came from the orchestrator (title, names, source,
reasons, tags): it is shown as plain text or html-escaped, never interpreted as markup.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from gui.client import NodeConnection
from gui.code_editor import CodeEditorWidget
from gui.confirm_dialog import ConfirmDialog
from gui.style import ERROR, OK
from node.display import safe
from node.errors import ParleyError, UnknownJob
from node.review import privacy_words

logger = logging.getLogger(__name__)
__all__ = ["ReviewDialog"]

DRY_RUN_TIMEOUT_S = 300
KIND_WORDS = {"source": "source code", "statistics": "statistics plan",
              "training": "training plan", "inference": "inference plan",
              "benchmark": "benchmark plan"}


STATE_WORDS = {"awaiting_approval": "waiting for your decision"}


def _esc(value: Any) -> str:
    """Peer text for rich text: control characters as visible escapes, then HTML-escaped."""
    return html.escape(safe(value), quote=True)


def normalise(material: dict[str, Any], job: dict[str, Any] | None = None) -> dict[str, Any]:
    """The review material under the contract's names, from either the review endpoint or the
    ``review`` kept in a party job's detail (node/review.py's names)."""
    job = job or {}
    m = dict(material)
    orch = m.get("orchestrator")
    if isinstance(orch, dict):
        m["orchestrator_url"] = orch.get("url", "")
        m["orchestrator"] = orch.get("name", "")
    m.setdefault("orchestrator", "")
    m.setdefault("kind", m.get("code_kind", ""))
    m.setdefault("released_to", m.get("released_to_orchestrator", []))
    if "diff" not in m:
        m["diff"] = m.get("diff_from_last_approved")
    m.setdefault("job_id", job.get("id", ""))
    m.setdefault("state", job.get("state", ""))
    m.setdefault("reason", job.get("reason", ""))
    m.setdefault("proposal_hash", job.get("proposal_hash", ""))
    m.setdefault("title", job.get("title", ""))
    for key in ("reads", "reveals", "loops", "warnings", "released_to"):
        m[key] = list(m.get(key) or [])
    m.setdefault("source", "\n".join(line[6:] for line in m.get("numbered", [])))
    return m


def readable(value: Any, limit: int = 12) -> str:
    """A result from the wire ({"$tensor": ...}, {"$float": ...}) in a line a person reads."""
    if isinstance(value, dict) and set(value) == {"$tensor"}:
        t = value["$tensor"]
        flat = t.get("data", [])
        while flat and isinstance(flat[0], list):
            flat = [x for row in flat for x in row]
        shown = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in flat[:limit])
        more = f", … ({len(flat)} values)" if len(flat) > limit else ""
        dims = "×".join(str(n) for n in t.get("shape", [])) or "scalar"
        return f"tensor {dims} ({t.get('dtype')}): [{shown}{more}]"
    if isinstance(value, dict) and set(value) == {"$float"}:
        return str(value["$float"])
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {readable(v, limit)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(readable(v, limit) for v in value[:limit]) + \
            (", …" if len(value) > limit else "") + "]"
    return json.dumps(value, default=str)


def dry_run_text(answer: dict[str, Any]) -> str:
    """A dry run's answer as lines a person reads: the result, its output, how long it took
    and whether it ran confined; the rest of the answer is in the tooltip."""
    lines = []
    if "result" in answer:
        lines.append(f"result: {readable(answer['result'])}")
    for key, value in answer.items():
        if key in ("state", "reason", "result", "confinement", "timings", "kind") or \
                value in (None, "", [], {}):
            continue
        lines.append(f"{key}: {value if isinstance(value, str) else readable(value)}")
    total = (answer.get("timings") or {}).get("total_s")
    if isinstance(total, (int, float)):
        lines.append(f"took {total:.1f} s")
    confinement = answer.get("confinement") or {}
    if confinement:
        lines.append("ran fully confined, as a real job would"
                     if confinement.get("complete") else
                     "ran with partial confinement: "
                     + readable({k: v for k, v in confinement.items() if k != "rlimits"}))
    return "\n".join(lines) or "(no output)"


def stated_words(read: dict[str, Any]) -> str:
    """What the proposal states of a read asset, in a few words: a dataset's shape (and its
    labels'), or that a model's architecture is not stated ('' when nothing is said)."""
    if read.get("kind") == "model":
        return "architecture not stated" if "architecture" in read and \
            read["architecture"] is None else ""
    if "shape" not in read:  # material from before proposals stated shapes: the schema's
        shape = (read.get("schema") or {}).get("shape")
        return " × ".join(str(n) for n in shape) if shape else ""
    if read["shape"] is None:
        return "shape not stated"
    words = " × ".join("any" if n is None else str(n) for n in read["shape"])
    if read.get("label_shape") is not None:
        words += ", labels " + " × ".join("any" if n is None else str(n)
                                          for n in read["label_shape"])
    return words + privacy_words(read)


def _stated_html(read: dict[str, Any]) -> str:
    """``stated_words`` then, for a model, its architecture line by line (peer text: escaped);
    closes the parenthesis the caller opened."""
    words = stated_words(read)
    out = (f", {_esc(words)}" if words else "") + ")"
    lines = read.get("architecture") or []
    if lines:
        out += ("<br>architecture every party builds (weights stay encrypted):"
                "<pre style='margin:2px 0'>" + "\n".join(_esc(line) for line in lines)
                + "</pre>")
    return out


class ReviewDialog(QDialog):
    """The review of one proposal this node received, and the owner's decision on it."""

    sig_review_loaded = Signal(dict)
    """The review material arrived (normalised to the contract's names)."""
    sig_job_decided = Signal(str, str)
    """The node took the owner's decision: (job id, "approved" or "rejected")."""
    sig_dry_run_finished = Signal(dict)
    """A dry run on mock data ended: the node's answer ({state, reason, result, ...})."""

    def __init__(self, conn: NodeConnection, job_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.job_id = job_id
        self.material: dict[str, Any] = {}
        self.decision = ""
        self.setWindowTitle(f"Review proposal {job_id}")
        self.resize(1100, 760)
        self._build()
        self.reload()

    # -- injectable questions -----------------------------------------------------------------
    @classmethod
    def ask(cls, conn: NodeConnection, job_id: str, parent: QWidget | None = None) -> str:
        """Review modally; the decision taken ("approved", "rejected") or "" if none."""
        dialog = cls(conn, job_id, parent)
        dialog.exec()
        return dialog.decision

    @classmethod
    def ask_reason(cls, parent: QWidget | None, orchestrator: str) -> str | None:
        """Why the owner rejects: sent back to the orchestrator. None cancels."""
        del orchestrator  # not put in the label: QInputDialog's label may render rich text
        text, ok = QInputDialog.getMultiLineText(
            parent, "Reject the proposal",
            "Reason, sent back to the orchestrator so they can change the job:", "")
        return text.strip() if ok else None

    @classmethod
    def ask_always(cls, parent: QWidget | None, kind: str, orchestrator: str) -> bool:
        """Whether to approve every future ``kind`` job from ``orchestrator`` unasked."""
        words = KIND_WORDS.get(kind, kind)
        return ConfirmDialog.ask(
            parent, "Always approve",
            f"Approve this job and, from now on, every {words} job from {orchestrator} "
            f"without asking you?\n\nEach such job still shows in the Inbox and the audit "
            f"log, and you can remove the rule later (policies).",
            [("always", f"Always approve {words} jobs from {orchestrator}")]) == "always"

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.title_label = QLabel("Loading the review…")
        self.title_label.setTextFormat(Qt.TextFormat.PlainText)
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.title_label.setFont(font)
        self.title_label.setWordWrap(True)
        layout.addWidget(self.title_label)
        self.from_label = QLabel("")
        self.from_label.setTextFormat(Qt.TextFormat.RichText)  # built from escaped parts only
        self.from_label.setWordWrap(True)
        layout.addWidget(self.from_label)

        self.warnings_label = QLabel("")
        self.warnings_label.setObjectName("reviewWarnings")
        self.warnings_label.setTextFormat(Qt.TextFormat.RichText)  # escaped parts only
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setVisible(False)
        layout.addWidget(self.warnings_label)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.code_caption = QLabel("Code that would run")
        left_layout.addWidget(self.code_caption)
        self.source_view = CodeEditorWidget(read_only=True)
        left_layout.addWidget(self.source_view)
        splitter.addWidget(left)
        self.summary = QTextBrowser()
        self.summary.setOpenLinks(False)
        self.summary.setOpenExternalLinks(False)
        splitter.addWidget(self.summary)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter, 1)

        dry = QFrame()
        dry_layout = QVBoxLayout(dry)
        dry_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.dry_run_button = QPushButton("Dry run on mock data")
        self.dry_run_button.setToolTip("Run this code on made-up data shaped like your assets, "
                                       "with the proposal's reveal map and limits. No real "
                                       "value is read and nothing leaves this machine.")
        self.dry_run_button.clicked.connect(self._on_dry_run_clicked)
        self.dry_run_progress = QProgressBar()
        self.dry_run_progress.setRange(0, 0)
        self.dry_run_progress.setMaximumWidth(160)
        self.dry_run_progress.setVisible(False)
        self.dry_run_label = QLabel("")
        self.dry_run_label.setTextFormat(Qt.TextFormat.PlainText)
        self.dry_run_label.setWordWrap(True)
        row.addWidget(self.dry_run_button)
        row.addWidget(self.dry_run_progress)
        row.addWidget(self.dry_run_label, 1)
        dry_layout.addLayout(row)
        self.dry_run_output = QPlainTextEdit()
        self.dry_run_output.setReadOnly(True)
        self.dry_run_output.setMaximumHeight(130)
        self.dry_run_output.setVisible(False)
        dry_layout.addWidget(self.dry_run_output)
        layout.addWidget(dry)

        self.status_label = QLabel("")
        self.status_label.setObjectName("reviewStatus")
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        buttons = QHBoxLayout()
        self.reject_button = QPushButton("Reject…")
        self.reject_button.clicked.connect(self._on_reject_clicked)
        self.always_button = QPushButton("Always approve…")
        self.always_button.clicked.connect(self._on_always_clicked)
        self.approve_button = QPushButton("Approve this version")
        self.approve_button.clicked.connect(self._on_approve_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons.addWidget(self.reject_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.always_button)
        buttons.addWidget(self.approve_button)
        layout.addLayout(buttons)
        self._set_decidable(False)

    # -- loading ------------------------------------------------------------------------------
    def reload(self) -> None:
        self.conn.get(f"/jobs/{self.job_id}/review").then(self._on_review, self._on_review_error)

    def _on_review(self, material: dict[str, Any]) -> None:
        self.show_material(normalise(material))

    def _on_review_error(self, error: ParleyError) -> None:
        if getattr(error, "status", 0) == 404 and not isinstance(error, UnknownJob):
            # a node without the review endpoint: the material kept with the job
            self.conn.get(f"/jobs/{self.job_id}?role=party").then(self._on_job, self._on_failed)
            return
        self._on_failed(error)

    def _on_job(self, job: dict[str, Any]) -> None:
        review = (job.get("detail") or {}).get("review")
        if not review:
            self._on_failed(ParleyError(f"job {self.job_id} has no review material"))
            return
        self.show_material(normalise(review, job))

    def _on_failed(self, error: ParleyError) -> None:
        self.title_label.setText("The review could not be loaded")
        self.status_label.setText(error.message)

    def show_material(self, m: dict[str, Any]) -> None:
        """Fill the dialog from normalised review material."""
        self.material = m
        orch = str(m["orchestrator"])
        kind = str(m["kind"])
        self.title_label.setText(str(m["title"]) or f"Job {self.job_id}")
        where = f" ({_esc(m['orchestrator_url'])})" if m.get("orchestrator_url") else ""
        self.from_label.setText(
            f"Proposed by <b>{_esc(orch)}</b>{where} · {_esc(KIND_WORDS.get(kind, kind))} · "
            f"job <code>{_esc(self.job_id)}</code> · "
            f"<b>{_esc(STATE_WORDS.get(str(m['state']), m['state']))}</b>")
        if m["warnings"]:
            items = "".join(f"<li>{_esc(w)}</li>" for w in m["warnings"])
            self.warnings_label.setText(f"<b>⚠ Warnings: read these before deciding</b>"
                                        f"<ul style='margin:2px 0 0 -20px'>{items}</ul>")
            self.warnings_label.setStyleSheet(
                "QLabel { background: #fff4d6; border: 2px solid #d9a300; border-radius: 6px;"
                " padding: 8px; color: #5c4200; }")
        else:
            self.warnings_label.setText("✓ No warnings from your node's checks.")
            self.warnings_label.setStyleSheet(
                "QLabel { background: #eaf6ec; border: 1px solid #9ccfa6; border-radius: 6px;"
                " padding: 6px; color: #1b5e2a; }")
        self.warnings_label.setVisible(True)
        self.code_caption.setText(
            "Code that would run" + (" (rendered by your node from the plan)"
                                     if kind and kind != "source"
                                     else " (sent by the orchestrator)"))
        self.source_view.setPlainText(str(m["source"]).rstrip("\n"))
        self.source_view.mark_lines([int(r["line"]) for r in m["reveals"]
                                     if str(r.get("line", "")).isdigit()])
        self.summary.setHtml(self._summary_html(m))
        self.always_button.setText(f"Always approve {KIND_WORDS.get(kind, kind)} jobs from "
                                   f"{orch}…")
        decidable = m["state"] == "awaiting_approval"
        self._set_decidable(decidable)
        if not decidable:
            why = f" ({m['reason']})" if m.get("reason") else ""
            self.status_label.setText(f"This proposal is {m['state']}{why}; nothing to decide.")
        self.sig_review_loaded.emit(m)

    def _summary_html(self, m: dict[str, Any]) -> str:
        out = ["<h3>Reads from this node</h3>"]
        here = [r for r in m["reads"] if r.get("here")]
        if here:
            out.append("<ul>")
            for r in here:
                out.append(f"<li><b>{_esc(r.get('name', r.get('tag')))}</b> (tag "
                           f"<code>{_esc(r.get('tag'))}</code>, {_esc(r.get('kind'))}"
                           f"{_stated_html(r)}</li>")
            out.append("</ul>")
        else:
            out.append("<p>None of this node's assets.</p>")
        others = [r for r in m["reads"] if not r.get("here")]
        if others:
            out.append("<h3>Other parties' inputs</h3><ul>")
            for r in others:
                out.append(f"<li><code>{_esc(r.get('tag'))}</code> at {_esc(r.get('holder'))} "
                           f"({_esc(r.get('kind'))}{_stated_html(r)}</li>")
            out.append("</ul>")
        out.append("<h3>Reveals (where a value is decrypted)</h3>")
        if m["reveals"]:
            out.append("<ul>")
            for r in m["reveals"]:
                rows = f"<br><i>{_esc(r['rows'])}</i>" if r.get("rows") else ""
                out.append(f"<li>line {_esc(r.get('line'))}: to <b>{_esc(r.get('to'))}</b>"
                           f"<br><code>{_esc(r.get('expr', ''))}</code>{rows}</li>")
            out.append("</ul>")
        else:
            out.append("<p>Nothing is decrypted.</p>")
        if m.get("budgets"):
            out.append("<h3>Privacy budget</h3><ul>" + "".join(
                f"<li>{_esc(b)}</li>" for b in m["budgets"]) + "</ul>")
        out.append(f"<h3>Goes back to {_esc(m['orchestrator'])}</h3>")
        if m["released_to"]:
            out.append("<p>The return value of " + ", ".join(_esc(x) for x in m["released_to"])
                       + ".</p>")
        else:
            out.append("<p>Nothing.</p>")
        out.append("<h3>Loops and cost</h3>")
        if m["loops"]:
            out.append("<ul>" + "".join(
                f"<li>line {_esc(lp.get('line'))}: {_esc(lp.get('kind'))} loop, "
                + (f"{_esc(lp.get('bound'))} times" if lp.get("bound") is not None
                   else "no literal bound") + "</li>" for lp in m["loops"]) + "</ul>")
        out.append(f"<p>{_esc(m.get('cost') or 'no estimate')}</p>")
        if m.get("reveal_budget") is not None:
            budget = m["reveal_budget"]
            budget = f"{budget:,}" if isinstance(budget, int) else str(budget)
            out.append(f"<p>Reveal budget: at most {_esc(budget)} decrypted values.</p>")
        out.append("<h3>Changes since the version you last approved</h3>")
        if m.get("diff"):
            lines = []
            for line in str(m["diff"]).splitlines():
                colour = (OK.name() if line.startswith("+") and not line.startswith("+++") else
                          ERROR.name() if line.startswith("-") and not line.startswith("---")
                          else "")
                lines.append(f"<span style='color:{colour}'>{_esc(line)}</span>" if colour
                             else _esc(line))
            out.append("<pre>" + "\n".join(lines) + "</pre>")
        elif m.get("first_version", True):
            out.append("<p>First version: you have not approved this job before.</p>")
        else:
            out.append("<p>Identical to the version you last approved.</p>")
        out.append(f"<p>Proposal hash <code>{_esc(m['proposal_hash'])}"
                   f"</code></p>")
        return "".join(out)

    def source_text(self) -> str:
        return self.source_view.toPlainText()

    def summary_text(self) -> str:
        return self.summary.toPlainText()

    def _set_decidable(self, on: bool) -> None:
        for button in (self.approve_button, self.always_button, self.reject_button):
            button.setEnabled(on)
        self.approve_button.setDefault(on)

    # -- decisions ----------------------------------------------------------------------------
    def _on_approve_clicked(self) -> None:
        self._approve(always=False)

    def _on_always_clicked(self) -> None:
        if self.ask_always(self, str(self.material.get("kind")),
                           str(self.material.get("orchestrator"))):
            self._approve(always=True)

    def _approve(self, always: bool) -> None:
        body: dict[str, Any] = {"proposal_hash": self.material.get("proposal_hash")}
        if always:
            body["always"] = True
        self._set_decidable(False)
        self.status_label.setText("Approving…")
        self.conn.post(f"/jobs/{self.job_id}/approve", body).then(self._on_approved,
                                                                 self._on_decide_error)

    def _on_approved(self, job: dict[str, Any]) -> None:
        self._decided("approved", job)

    def _on_reject_clicked(self) -> None:
        reason = self.ask_reason(self, str(self.material.get("orchestrator")))
        if reason is None:
            return
        self._set_decidable(False)
        self.status_label.setText("Rejecting…")
        self.conn.post(f"/jobs/{self.job_id}/reject", {"reason": reason}).then(
            self._on_rejected, self._on_decide_error)

    def _on_rejected(self, job: dict[str, Any]) -> None:
        self._decided("rejected", job)

    def _decided(self, decision: str, job: dict[str, Any]) -> None:
        self.decision = decision
        self.material["state"] = job.get("state", decision)
        self.status_label.setText(f"{decision.capitalize()}: {job.get('reason') or decision}.")
        self.sig_job_decided.emit(self.job_id, decision)

    def _on_decide_error(self, error: ParleyError) -> None:
        self.status_label.setText(f"Not done: {error.message}")
        self.reload()

    # -- dry run ------------------------------------------------------------------------------
    def _on_dry_run_clicked(self) -> None:
        self.dry_run_button.setEnabled(False)
        self.dry_run_button.setText("Running on mock data…")
        self.dry_run_progress.setVisible(True)
        self.dry_run_label.setText("This can take a minute; you can keep reading meanwhile.")
        self.conn.post(f"/jobs/{self.job_id}/dry-run", {}, timeout=DRY_RUN_TIMEOUT_S).then(
            self._on_dry_run_answer, self._on_dry_run_error)

    def _dry_run_done(self) -> None:
        self.dry_run_button.setEnabled(True)
        self.dry_run_button.setText("Dry run again")
        self.dry_run_progress.setVisible(False)

    def _on_dry_run_answer(self, answer: dict[str, Any]) -> None:
        self._dry_run_done()
        state = str(answer.get("state", "?"))
        reason = answer.get("reason") or ""
        ok = state == "succeeded"
        self.dry_run_label.setText(f"Dry run {state}" + (f": {reason}" if reason else "")
                                   + (" (mock data: the numbers mean nothing)" if ok else ""))
        self.dry_run_label.setStyleSheet(f"color: {(OK if ok else ERROR).name()};"
                                         "font-weight: bold;")
        self.dry_run_output.setPlainText(dry_run_text(answer))
        self.dry_run_output.setToolTip(json.dumps(answer, indent=1, default=str)[:4000])
        self.dry_run_output.setVisible(True)
        self.sig_dry_run_finished.emit(answer)

    def _on_dry_run_error(self, error: ParleyError) -> None:
        self._dry_run_done()
        self.dry_run_label.setText(f"The dry run could not run: {error.message}")
        self.dry_run_label.setStyleSheet(f"color: {ERROR.name()}; font-weight: bold;")
        self.sig_dry_run_finished.emit({"state": "error", "reason": error.message})
