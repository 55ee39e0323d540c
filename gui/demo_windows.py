"""The demo you can watch: three nodes, three windows, three jobs (``make demo`` with a display).

alice, bob and carol start on the loopback, paired, with the demo's files published (the same
setup as the headless demo, node/demo.py). One window per owner, tiled across the screen:
carol composes each job in her Compose view and sends it; the proposals appear in alice's and
bob's inboxes (and carol's, where she is a party), where the review opens and is approved after
a short visible pause (or by the person, with ``--interactive``); carol's Jobs view then shows
each result with its cost charts. Windows stay open at the end until closed (``--exit`` quits
when the last job has ended, for tests and recordings).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from gui.client import NodeConnection
from gui.main_window import MainWindow
from node.demo import job_specs, start_nodes
from node.localnet import LocalNode

TERMINAL = ("succeeded", "failed", "rejected", "cancelled")


class DemoConductor(QObject):
    """Sends carol's jobs one after the other and, unless the person approves, approves each
    proposal in the windows of the owners it reaches after ``pause_s``."""

    def __init__(self, nodes: list[LocalNode], windows: dict[str, MainWindow],
                 pause_s: float, interactive: bool) -> None:
        super().__init__()
        self.nodes = {n.name: n for n in nodes}
        self.windows = windows
        self.pause_ms = int(pause_s * 1000)
        self.interactive = interactive
        self.specs = job_specs(*nodes)
        self.ended: list[dict[str, Any]] = []
        self.current: str | None = None
        self.done = False
        self.exit_when_done = False
        for name, window in windows.items():
            window.conn.sig_event_received.connect(
                lambda event, n=name: self._on_event(n, event))

    def start(self) -> None:
        QTimer.singleShot(self.pause_ms, self._send_next)

    def _send_next(self) -> None:
        if len(self.ended) == len(self.specs):
            self.done = True
            print("demo: every job has ended; close the windows to stop the nodes", flush=True)
            if self.exit_when_done:
                QApplication.instance().quit()
            return
        title, spec, _result_to = self.specs[len(self.ended)]
        carol = self.windows["carol"]
        compose = carol.views["compose"]
        carol.show_view("compose")
        compose.load_spec(spec)
        compose.sig_job_submitted.connect(self._on_submitted)
        print(f"== {title}", flush=True)
        QTimer.singleShot(self.pause_ms, lambda: self._send_when_ready(0))

    def _send_when_ready(self, tries: int) -> None:
        """Send once carol's node has checked the job (the button says when)."""
        compose = self.windows["carol"].views["compose"]
        if compose.send_button.isEnabled():
            compose.send_button.click()
        elif tries < 600:
            QTimer.singleShot(100, lambda: self._send_when_ready(tries + 1))
        else:
            print(f"demo: carol's Compose view never allowed sending: "
                  f"{compose.send_button.toolTip()}", flush=True)
            QApplication.instance().quit()

    def _on_submitted(self, job: dict[str, Any]) -> None:
        compose = self.windows["carol"].views["compose"]
        try:
            compose.sig_job_submitted.disconnect(self._on_submitted)
        except (RuntimeError, TypeError):
            pass
        self.current = str(job.get("id"))  # the window shows it in Jobs (MainWindow)

    def _on_event(self, owner: str, event: dict[str, Any]) -> None:
        kind, data = event.get("kind"), event.get("data") or {}
        if kind == "proposal.arrived" and data.get("state") == "awaiting_approval":
            window = self.windows[owner]
            window.show_view("inbox")
            if not self.interactive:
                QTimer.singleShot(self.pause_ms // 2,
                                  lambda: self._review(owner, str(data["job_id"])))
        elif (kind == "job.state" and owner == "carol" and event.get("role") == "orchestrator"
              and data.get("state") in TERMINAL and event.get("job_id") == self.current):
            print(f"   {self.current}: {data.get('state')} {data.get('reason', '')}".rstrip(),
                  flush=True)
            self.ended.append({"id": self.current, "state": data.get("state")})
            self._show_in_jobs(self.current)
            self.current = None
            QTimer.singleShot(self.pause_ms * 2, self._send_next)

    def _show_in_jobs(self, job_id: str) -> None:
        """carol's window goes back to the job, where its result and costs appear."""
        carol = self.windows["carol"]
        carol.show_view("jobs")
        carol.views["jobs"].show_job(job_id)

    def _review(self, owner: str, job_id: str) -> None:
        dialog = self.windows[owner].views["inbox"].open_item(job_id)
        if dialog is None:  # the list has not caught up yet
            QTimer.singleShot(200, lambda: self._review(owner, job_id))
            return
        self._approve_when_ready(dialog, 0)

    def _approve_when_ready(self, dialog: QWidget, tries: int) -> None:
        button = getattr(dialog, "approve_button", None)
        if button is not None and button.isEnabled():
            QTimer.singleShot(self.pause_ms, button.click)
            if dialog.parent() is self.windows["carol"].views["inbox"] and self.current:
                job_id = self.current  # carol is a party too: back to the job she sent
                QTimer.singleShot(self.pause_ms * 2, lambda: self._show_in_jobs(job_id))
        elif tries < 100:
            QTimer.singleShot(100, lambda: self._approve_when_ready(dialog, tries + 1))


def tile(windows: list[MainWindow], shares: list[int]) -> None:
    """Side by side across the screen's available area, each its share of the width (the
    orchestrator's window, with results and charts, gets the most)."""
    screen = QApplication.primaryScreen().availableGeometry()
    x = screen.x()
    for window, share in zip(windows, shares):
        width = screen.width() * share // sum(shares)
        window.setGeometry(x, screen.y(), width, screen.height())
        window.show()
        x += width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gui.demo_windows",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--interactive", action="store_true",
                        help="approve in alice's and bob's windows yourself")
    parser.add_argument("--pause", type=float, default=1.5,
                        help="seconds each automatic step waits, so that it can be seen")
    parser.add_argument("--exit", action="store_true", help="quit when the last job ended")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' data dirs")
    args = parser.parse_args(argv)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Parley demo")
    base = Path(tempfile.mkdtemp(prefix="parley-demo-"))
    nodes = start_nodes(base)
    windows: dict[str, MainWindow] = {}
    try:
        for node in nodes:
            window = MainWindow(NodeConnection(node.data_dir))
            window.setWindowTitle(f"Parley: {node.name}")
            window.keep_running_in_tray = False
            window.attach()
            windows[node.name] = window
        tile([windows["alice"], windows["carol"], windows["bob"]], [1, 2, 1])
        conductor = DemoConductor(nodes, windows, args.pause, args.interactive)
        conductor.exit_when_done = args.exit
        conductor.start()
        if args.exit:  # unattended: never wait forever on a window
            QTimer.singleShot(600_000, lambda: (print("demo: gave up after 10 minutes",
                                                           flush=True), app.quit()))
        app.exec()
        failed = [e for e in conductor.ended if e["state"] != "succeeded"]
        print(f"demo: {len(conductor.ended)} job(s) ended, {len(failed)} not succeeded",
              flush=True)
        return 0 if conductor.done and not failed else 1
    finally:
        for window in windows.values():
            window.conn.close()
        for node in nodes:
            node.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
