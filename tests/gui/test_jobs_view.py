"""The Jobs view against real nodes: a running job followed live and cancelled, a killed party
named with its cause, a result exported as CSV, a statistics job's histogram and costs, the
benchmark, runs of one plan compared, and the window turning while a training job runs."""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from gui import charts
from gui.jobs_view import JobsView
from gui.results_view import PHASES, ResultsView
from node.client import results
from node.localnet import party_pids
from tests.conftest import JOB_TIMEOUT
from tests.gui.flows import job_ends
from tests.gui.test_responsiveness import TRAIN_JOB, GapMeter
from tests.test_jobs import LONG_JOB, spec, write_csv

WAIT_MS = 30_000
PRINTING_JOB = LONG_JOB.replace("    y = x\n", "    y = x\n    print('entering the loop')\n")
DOUBLE_JOB = ("def run(crypten):\n"
              "    x = crypten.load('nums', 1)\n"
              "    return (x * 2 - 1).get_plain_text(dst=0)\n")
STATISTICS = {"kind": "statistics", "data": [{"tag": "nums", "rank": 0},
                                             {"tag": "nums", "rank": 1}],
              "stats": ["count", "sum", "mean", "variance", "histogram"],
              "histogram": {"column": 0, "edges": [0, 25, 50, 75, 100]}, "output_to": 0}


def _pair(make_node, tmp_path, rows: int = 20):  # noqa: ANN001
    """alice orchestrates and is rank 0, bob rank 1; both hold 'nums' (values 0..100)."""
    alice, bob = make_node("alice"), make_node("bob")
    rng = np.random.default_rng(3)
    for node in (alice, bob):
        node.client.publish(write_csv(tmp_path / f"{node.name}.csv",
                                      np.round(rng.uniform(0, 100, (rows, 3)), 2), "a,b,c"),
                            tags=["nums"])
    return alice, bob


def _view(qtbot, keep, conn) -> JobsView:  # noqa: ANN001
    view = keep(JobsView(conn))
    view.resize(1200, 800)
    qtbot.waitUntil(lambda: view.loaded == {"orchestrator", "party"}, timeout=WAIT_MS)
    return view


def _select(qtbot, view: JobsView, job_id: str) -> None:
    view.show_job(job_id)
    qtbot.waitUntil(lambda: view.selected == ("orchestrator", job_id), timeout=WAIT_MS)


def _states(view: JobsView) -> list[str]:
    return [row[1] for row in view.party_rows()]


def _run_statistics(qtbot, conn, alice, bob, title: str = "wages") -> str:  # noqa: ANN001
    job = alice.client.submit({"title": title, "plan": STATISTICS,
                               "parties": [alice.party.spec(), bob.party.spec()]})
    with job_ends(qtbot, conn, job["id"]) as end:
        pass
    assert end["state"] == "succeeded", end
    return job["id"]


def test_a_running_job_is_followed_live_and_cancelled_from_the_view(
        make_node, connect, keep, qtbot, tmp_path, monkeypatch):
    alice, bob = _pair(make_node, tmp_path)
    conn = connect(alice)
    view = _view(qtbot, keep, conn)
    job = alice.client.submit(spec([alice, bob], PRINTING_JOB, [("nums", 1, "dataset")],
                                   time_s=300))
    # it appears by itself (an event), and show_job selects it once the list has it
    view.show_job(job["id"])
    qtbot.waitUntil(lambda: view.selected == ("orchestrator", job["id"]), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: _states(view) == ["running", "running"], timeout=60_000)
    # alice also plays rank 0: the job is listed as received too
    qtbot.waitUntil(lambda: ("party", job["id"]) in view.jobs, timeout=WAIT_MS)
    # live progress: rounds and bytes so far, and elapsed time, for each party
    qtbot.waitUntil(lambda: all(row[3] and row[4] and row[5] for row in view.party_rows()),
                    timeout=WAIT_MS)
    assert view.party_rows()[0][0] == "alice (rank 0), this node"
    assert view.party_rows()[1][0] == "bob (rank 1)"
    # what the job printed at this node (and only here)
    qtbot.waitUntil(lambda: "entering the loop" in view.output_view.toPlainText(),
                    timeout=WAIT_MS)
    assert view.output_box.isVisibleTo(view)
    assert view.cancel_button.isEnabled()

    monkeypatch.setattr(JobsView, "ask_cancel_reason",
                        classmethod(lambda cls, _parent, _title: "no longer needed"))
    with qtbot.waitSignal(view.sig_job_cancelled, timeout=WAIT_MS):
        qtbot.mouseClick(view.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.title_label.text().endswith("cancelled"), timeout=WAIT_MS)
    assert view.current_job()["state"] == "cancelled"
    assert ("orchestrator", job["id"], "cancelled") in view.items()
    assert view.reason_label.text() == "Cancelled by alice: no longer needed"
    assert not view.cancel_button.isEnabled()
    # each party's end is asked for once the job ended (up to 30 s each on a loaded machine)
    qtbot.waitUntil(lambda: all(s in ("cancelled", "failed") for s in _states(view)),
                    timeout=90_000)
    assert alice.client.orchestration(job["id"])["state"] == "cancelled"
    assert {p["state"] for p in alice.client.orchestration(job["id"])["detail"][
        "parties"].values()} <= {"cancelled", "failed"}


def test_a_party_killed_mid_job_is_named_with_its_cause_within_15s(
        make_node, connect, keep, qtbot, tmp_path):
    alice, bob = _pair(make_node, tmp_path)
    view = _view(qtbot, keep, connect(alice))
    job = alice.client.submit(spec([alice, bob], LONG_JOB, [("nums", 1, "dataset")],
                                   time_s=300))
    _select(qtbot, view, job["id"])
    qtbot.waitUntil(lambda: _states(view) == ["running", "running"], timeout=60_000)
    (victim,) = party_pids(bob.data_dir)
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    def named() -> bool:
        rows = view.party_rows()
        return ("SIGKILL" in view.reason_label.text() and len(rows) == 2
                and rows[1][1] == "failed" and "SIGKILL" in rows[1][6])

    qtbot.waitUntil(named, timeout=15_000)
    assert time.monotonic() - killed < 15
    reason = view.reason_label.text()
    assert reason.startswith("Failed because of bob (rank 1): "), reason
    assert "killed by SIGKILL" in reason and view.reason_label.isVisibleTo(view)
    assert view.party_rows()[1][0] == "bob (rank 1)"
    assert ("orchestrator", job["id"], "failed") in view.items()
    assert view.results.result_label.text() == "No result: the job failed."


def test_an_exported_csv_equals_the_result_and_finished_jobs_survive_a_restart(
        make_node, connect, keep, dispose, qtbot, tmp_path, monkeypatch):
    alice, bob = _pair(make_node, tmp_path, rows=7)
    conn = connect(alice)
    view = _view(qtbot, keep, conn)
    job = alice.client.submit(spec([alice, bob], DOUBLE_JOB, [("nums", 1, "dataset")]))
    with job_ends(qtbot, conn, job["id"]) as end:
        pass
    assert end["state"] == "succeeded", end
    _select(qtbot, view, job["id"])
    qtbot.waitUntil(lambda: view.results.current_value() is not None, timeout=WAIT_MS)
    expected = results(alice.client.orchestration(job["id"]))[0]
    assert expected.shape == (7, 3)
    assert view.results.model.rowCount() == 7 and view.results.model.columnCount() == 3

    target = tmp_path / "result.csv"
    monkeypatch.setattr(ResultsView, "ask_export_path",
                        classmethod(lambda cls, _parent, _suggested: str(target)))
    with qtbot.waitSignal(view.results.sig_result_exported, timeout=WAIT_MS):
        qtbot.mouseClick(view.results.export_button, Qt.MouseButton.LeftButton)
    exported = np.loadtxt(target, delimiter=",")
    assert np.array_equal(exported, expected.astype(exported.dtype)), (exported, expected)
    # copy: the same numbers, tab-separated, on the clipboard
    view.results.copy()
    copied = np.loadtxt(QApplication.clipboard().text().splitlines(), delimiter="\t")
    assert np.array_equal(copied, exported)

    alice.stop()
    alice.start()
    conn = connect(alice)
    again = _view(qtbot, keep, conn)
    assert ("orchestrator", job["id"], "done") in again.items()
    assert ("party", job["id"], "done") in again.items()
    # the view closes while its answers travel (both of the job's records: alice sent it and
    # played rank 0): they are dropped, not painted into a deleted list
    _select(qtbot, again, job["id"])
    again._fetch_selected()
    dispose(again)
    with qtbot.waitSignal(conn.get("/status").sig_finished, timeout=WAIT_MS):
        pass  # asked after them, on the same connection
    qtbot.wait(500)  # and time for any answer still on its way


def test_a_statistics_job_fills_the_histogram_the_costs_and_the_comparison(
        make_node, connect, keep, qtbot, tmp_path):
    alice, bob = _pair(make_node, tmp_path)
    conn = connect(alice)
    view = _view(qtbot, keep, conn)
    first = _run_statistics(qtbot, conn, alice, bob)
    second = _run_statistics(qtbot, conn, alice, bob)
    _select(qtbot, view, second)
    shown = view.results
    qtbot.waitUntil(lambda: "count" in charts.series_of(shown.result_chart), timeout=WAIT_MS)

    done = alice.client.orchestration(second)
    value = results(done)[0]
    assert charts.series_of(shown.result_chart)["count"] == [float(c) for c in
                                                             value["histogram"]]
    assert sum(charts.series_of(shown.result_chart)["count"]) == 40
    assert shown.result_chart.isVisibleTo(shown)
    assert "count = 40" in shown.result_label.text()
    statistics = shown.entries[0]
    assert statistics[0] == "statistics" and statistics[2][:3] == ["sum", "mean", "variance"]
    np.testing.assert_allclose(statistics[1][1], value["mean"], rtol=1e-6)

    costs = charts.series_of(shown.phase_chart)
    assert set(costs) == {"alice", "bob"}
    for name in ("alice", "bob"):
        figures = dict(zip(PHASES, costs[name]))
        assert all(not math.isnan(v) and v >= 0 for v in figures.values()), figures
        assert figures["start"] > 0 and figures["compute"] > 0
    parties = done["detail"]["parties"]
    assert charts.series_of(shown.bytes_chart)["bytes"] == [
        float(parties[r]["stats"]["bytes"]) for r in ("0", "1")]
    assert charts.series_of(shown.rounds_chart)["rounds"] == [
        float(parties[r]["stats"]["rounds"]) for r in ("0", "1")]
    assert all(v > 0 for v in charts.series_of(shown.rounds_chart)["rounds"])

    # both runs of the plan side by side, this one in bold
    qtbot.waitUntil(lambda: shown.compare_tree.topLevelItemCount() == 2, timeout=WAIT_MS)
    runs = [shown.compare_tree.topLevelItem(i) for i in range(2)]
    assert first in runs[0].text(0) and second in runs[1].text(0)
    assert runs[1].font(0).bold() and not runs[0].font(0).bold()
    seconds = charts.series_of(shown.compare_chart)["seconds"]
    assert len(seconds) == 2 and all(s > 0 for s in seconds)

    # the same job as received: alice's own party, which the result was revealed to
    view.tree.setCurrentItem(view.item_for(("party", second)))
    qtbot.waitUntil(lambda: view.current_job().get("result") is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "count" in charts.series_of(shown.result_chart), timeout=WAIT_MS)
    assert view.party_rows()[0][:2] == ["this node (rank 0)", "done"]
    assert "received from alice" in view.meta_label.text()
    assert not view.cancel_button.isVisibleTo(view)
    assert list(charts.series_of(shown.phase_chart)) == ["this node (rank 0)"]


def test_the_benchmark_button_charts_parley_crypten_and_plaintext(
        make_node, connect, keep, qtbot, tmp_path):
    alice, bob = _pair(make_node, tmp_path)
    conn = connect(alice)
    view = _view(qtbot, keep, conn)
    job_id = _run_statistics(qtbot, conn, alice, bob)
    _select(qtbot, view, job_id)
    shown = view.results
    shown.tabs.setCurrentIndex(2)
    qtbot.waitUntil(shown.benchmark_button.isEnabled, timeout=WAIT_MS)
    with qtbot.waitSignal(shown.sig_benchmark_finished, timeout=JOB_TIMEOUT * 1000) as done:
        qtbot.mouseClick(shown.benchmark_button, Qt.MouseButton.LeftButton)
        assert shown.benchmark_progress.isVisibleTo(shown)  # busy while it runs
        assert not shown.benchmark_button.isEnabled()
    job, answer = done.args
    assert job == job_id and isinstance(answer, dict), answer
    series = charts.series_of(shown.benchmark_chart)
    assert list(series) == ["Parley", "plain CrypTen", "plaintext"]
    totals = {name: values[-1] for name, values in series.items()}
    assert all(not math.isnan(t) and t > 0 for t in totals.values()), totals
    assert not shown.benchmark_progress.isVisibleTo(shown)
    assert "Parley took" in shown.benchmark_label.text()
    assert "× as long as plain CrypTen" in shown.benchmark_label.text()


def test_the_window_keeps_turning_while_the_view_follows_a_training_job(
        make_node, connect, keep, qtbot, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    write_csv(tmp_path / "c.csv", np.random.default_rng(0).standard_normal((200, 4)))
    bob.client.publish(tmp_path / "c.csv", tags=["cohort"])
    conn = connect(alice)
    view = _view(qtbot, keep, conn)
    meter = GapMeter()
    qtbot.waitUntil(lambda: meter.ticks > 10, timeout=5000)
    meter.reset()
    job = alice.client.submit(spec([alice, bob], TRAIN_JOB, [("cohort", 1, "dataset")]))
    view.show_job(job["id"])
    with job_ends(qtbot, conn, job["id"]) as end:
        pass
    assert end["state"] == "succeeded", end
    qtbot.waitUntil(lambda: view.results.current_value() is not None, timeout=WAIT_MS)
    meter.timer.stop()
    print(f"\nlongest gap of a 10 ms timer while the Jobs view followed a training job: "
          f"{meter.longest * 1000:.0f} ms less waits for a core, {meter.longest_wall * 1000:.0f}"
          f" ms in all ({meter.ticks} ticks)")
    assert meter.ticks > 50 and meter.longest < 1.0, (meter.longest, meter.ticks)
