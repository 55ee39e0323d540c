"""The demo you can watch: three windows, three jobs sent from carol's and approved in the
others' review dialogs, every one succeeding (offscreen here; tiled on a real display)."""

from __future__ import annotations

from gui import demo_windows


def test_the_watchable_demo_runs_its_three_jobs_through_the_windows(qtbot, capsys):
    assert demo_windows.main(["--exit", "--pause", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.count(": succeeded") == 3, out
    assert "demo: 3 job(s) ended, 0 not succeeded" in out
