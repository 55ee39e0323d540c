"""The demo you can watch, offscreen: carol composes and sends each job from her window, alice
and bob approve in their review dialogs, and carol's Jobs view shows the seed's result (equal
to the plaintext answer) with its cost chart filled."""

from __future__ import annotations

import numpy as np
import pytest

from gui import charts
from gui.client import NodeConnection
from gui.demo_windows import DemoConductor
from gui.main_window import MainWindow
from node.demo import plain_inference, start_nodes

pytestmark = pytest.mark.real  # every test here starts real processes

WAIT_MS = 240_000


def test_the_seeds_demo_through_three_windows(qtbot, tmp_path):
    nodes = start_nodes(tmp_path, say=lambda _line: None)
    windows: dict[str, MainWindow] = {}
    try:
        for node in nodes:
            window = MainWindow(NodeConnection(node.data_dir))
            qtbot.addWidget(window)
            window.attach()
            windows[node.name] = window
        conductor = DemoConductor(nodes, windows, pause_s=0.2, interactive=False)
        conductor.start()
        qtbot.waitUntil(lambda: conductor.done, timeout=WAIT_MS)
        assert [e["state"] for e in conductor.ended] == ["succeeded"] * 3
        # every approval was given in a review dialog: the owners' inboxes show them decided
        for owner in ("alice", "bob"):
            decided = [j for j in nodes[["alice", "bob"].index(owner)].client.jobs(role="party")
                       if j["detail"].get("approved_by") == "approved by the owner"]
            assert len(decided) == 3

        jobs = windows["carol"].show_view("jobs")
        assert jobs.show_job(conductor.ended[0]["id"])
        shown = jobs.results
        qtbot.waitUntil(lambda: shown.current_value() is not None, timeout=30_000)
        scores = np.asarray(shown.current_value())
        plain = plain_inference()
        assert scores.shape == plain.shape
        assert float(np.abs(scores - plain).max()) < 1e-2  # the demo's stated tolerance
        qtbot.waitUntil(lambda: bool(charts.series_of(shown.phase_chart)), timeout=30_000)
        phases = charts.series_of(shown.phase_chart)
        assert set(phases) == {"alice", "bob"} and all(
            all(v >= 0 for v in values) and sum(values) > 0 for values in phases.values())
    finally:
        for window in windows.values():
            window.conn.close()
        for node in nodes:
            node.stop()
