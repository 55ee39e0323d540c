"""``make screenshots``: the app's views on the demo's data, rendered to PNG files (offscreen).

Starts alice, bob and carol on the loopback as ``parley demo`` does, publishes the demo's data,
has carol propose the seed's job (alice's model on bob's data) and a fourth node ask alice to
pair, then renders alice's window: every view, the review dialog and the pairing dialog. Then
carol's desk: Compose with the seed's job loaded, Jobs with one job running and one failed,
a statistics result with its charts, its costs, and the benchmark against plain CrypTen.

    QT_QPA_PLATFORM=offscreen python -m gui.screenshots docs/
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from gui.client import NodeConnection  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui.pairing_dialog import PairingDialog  # noqa: E402
from gui.review_dialog import ReviewDialog  # noqa: E402
from node.demo import INFERENCE_PRECISION_BITS, encrypted_inference, resource  # noqa: E402
from node.localnet import LocalNode  # noqa: E402

SIZE = (1180, 760)


def settle(app: QApplication, seconds: float, until: Callable[[], bool] | None = None) -> None:
    """Let the window load what it asked the node for (events, answers, drawing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        if until is not None and until():
            break
        time.sleep(0.02)
    for _ in range(5):
        app.processEvents()


def save(widget: QWidget, path: Path) -> None:
    widget.grab().save(str(path))
    print(f"  {path}")


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs")
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="parley-shots-"))
    nodes = [LocalNode(n, base / n) for n in ("alice", "bob", "carol", "dave")]
    alice, bob, carol, dave = nodes
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Parley")
    conn = None
    try:
        for node in nodes:
            node.start()
        for a, b in ((alice, bob), (alice, carol), (bob, carol)):
            a.pair_with(b)
        for node, files in {
                alice: [("alice_model.onnx", ["bc-model"], None, "breast-cancer classifier"),
                        ("alice_features.csv", ["bc-features-a"], None, "first 15 features")],
                bob: [("bob_inference.csv", ["bc-inference"], None, "rows to classify")],
                carol: [("carol_labels.csv", ["bc-labels"], None, "diagnosis labels")]}.items():
            for filename, tags, label, text in files:
                node.client.publish(resource(filename), tags=tags, label_column=label,
                                    description=text)
        job = carol.client.submit({
            "title": "encrypted inference", "parties": [alice.party.spec(), bob.party.spec()],
            "source": _source(), "entry": "encrypted_inference",
            "bindings": [{"tag": "bc-model", "rank": 0, "kind": "model"},
                         {"tag": "bc-inference", "rank": 1, "kind": "dataset"}],
            "result_to": [1], "crypten": {"precision_bits": INFERENCE_PRECISION_BITS}})
        asked = dave.client.pair(alice.address)
        # statistics with differential privacy over rows alice and bob hold: the review counts
        # each reveal's rows and the budget it spends before anything runs
        for node in (alice, bob):
            node.client.publish(resource(f"rows_{node.name}.csv"), tags=["bc-rows-dp"],
                                label_column="diagnosis", min_rows=20,
                                description="patients' rows, with a privacy budget",
                                dp={"epsilon": 3.0, "bounds": [[0.0, 2500.0]]})
        stats = carol.client.submit({
            "title": "tumour statistics", "parties": [alice.party.spec(), bob.party.spec(),
                                                      carol.party.spec()],
            "plan": {"kind": "statistics", "data": [{"tag": "bc-rows-dp", "rank": r}
                                                     for r in (0, 1)],
                     "stats": ["count", "mean", "variance"], "output_to": 2,
                     "dp": {"epsilon": 0.5}}})

        settings = QSettings(str(base / "gui.ini"), QSettings.Format.IniFormat)
        conn = NodeConnection(alice.data_dir)
        window = MainWindow(conn, settings=settings)
        window.resize(*SIZE)
        window.show()
        window.attach()
        settle(app, 4)
        for name in ("assets", "network", "inbox", "audit", "settings"):
            window.show_view(name)
            view = window.views[name]
            if hasattr(view, "screenshot_ready"):  # a view may prepare itself (select a row)
                view.screenshot_ready()
            settle(app, 2.5)
            save(window, out / f"window-{name}.png")

        for job_id, name in ((job["id"], "review-dialog"), (stats["id"],
                                                           "review-dialog-privacy")):
            review = ReviewDialog(conn, job_id, window)
            review.resize(1000, 760)
            review.show()
            settle(app, 4)
            save(review, out / f"{name}.png")
            review.close()

        pairing = next(p for p in alice.client.pairings() if p["id"] == asked["id"])
        dialog = PairingDialog(conn, pairing, window)
        dialog.show()
        settle(app, 2)
        save(dialog, out / "pairing-dialog.png")
        dialog.close()
        window.close()
        settle(app, 0.5)
        carol.client.cancel(job["id"], "the screenshots are taken")
        carol.client.cancel(stats["id"], "the screenshots are taken")
        _orchestrator_desk(app, out, base, alice, bob, carol)
        return 0
    finally:
        if conn is not None:
            conn.close()
        for node in nodes:
            node.stop()


LONG = """def run(crypten):
    x = crypten.load("bc-inference", 1)
    y = x
    for step in range(100000):
        y = y * 0.5 + x * 0.5
        if step % 500 == 0:
            print(f"step {step}")
    return y.sum().get_plain_text(dst=0)
"""


def _orchestrator_desk(app: QApplication, out: Path, base: Path, alice: LocalNode,
                       bob: LocalNode, carol: LocalNode) -> None:
    """carol's window: Compose, Jobs (running, failed, done), results, costs, benchmark."""
    import os as _os
    import signal

    from node.localnet import party_pids

    for node in (alice, bob, carol):
        node.client.publish(resource(f"rows_{node.name}.csv"), tags=["bc-rows"],
                            label_column="diagnosis", description="rows of the study")
    for node in (alice, bob):
        node.client.add_policy("carol", "statistics")
        node.client.add_policy("carol", "source")
    parties = [alice.party.spec(), bob.party.spec()]
    stats = {"title": "rows at alice and bob", "parties": parties,
             "plan": {"kind": "statistics", "data": [{"tag": "bc-rows", "rank": 0},
                                                    {"tag": "bc-rows", "rank": 1}],
                      "stats": ["count", "mean", "variance", "histogram"],
                      "histogram": {"column": 0, "edges": [5, 10, 15, 20, 25, 30]},
                      "output_to": 0}}
    for _ in range(2):
        carol.client.wait(carol.client.submit(stats)["id"], timeout=300)
    bindings = [{"tag": "bc-inference", "rank": 1, "kind": "dataset"}]
    failed = carol.client.submit({"title": "a long job", "source": LONG, "parties": parties,
                                  "bindings": bindings, "result_to": [0]})
    _wait(lambda: party_pids(bob.data_dir), 60)
    for pid in party_pids(bob.data_dir):
        _os.kill(pid, signal.SIGKILL)
    carol.client.wait(failed["id"], timeout=60)
    running = carol.client.submit({"title": "a long job", "source": LONG, "parties": parties,
                                   "bindings": bindings, "result_to": [0]})

    settings = QSettings(str(base / "gui-carol.ini"), QSettings.Format.IniFormat)
    conn = NodeConnection(carol.data_dir)
    window = MainWindow(conn, settings=settings)
    try:
        window.resize(*SIZE)
        window.show()
        window.attach()
        settle(app, 4)
        compose = window.show_view("compose")
        from node.demo import job_specs

        compose.load_spec(job_specs(alice, bob, carol)[0][1])
        settle(app, 6)
        save(window, out / "window-compose.png")

        jobs = window.show_view("jobs")
        jobs.show_job(running["id"])
        settle(app, 6)
        save(window, out / "window-jobs-running.png")
        jobs.show_job(failed["id"])
        settle(app, 3)
        save(window, out / "window-jobs-failed.png")
        done = [j for j in carol.client.jobs(role="orchestrator")
                if j["state"] == "succeeded" and j["kind"] == "statistics"][0]
        jobs.show_job(done["id"])
        settle(app, 3)
        save(window, out / "window-results.png")
        jobs.results.tabs.setCurrentIndex(1)
        settle(app, 1.5)
        save(window, out / "window-costs.png")
        jobs.results.tabs.setCurrentIndex(2)
        finished: list[str] = []
        jobs.results.sig_benchmark_finished.connect(lambda job_id, _a: finished.append(job_id))
        jobs.results.start_benchmark()
        settle(app, 180, lambda: bool(finished))
        settle(app, 1)
        save(window, out / "window-benchmark.png")
        carol.client.cancel(running["id"], "the screenshots are taken")
        window.close()
        settle(app, 0.5)
    finally:
        conn.close()


def _wait(predicate: Callable[[], object], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("the screenshots' setup timed out")
        time.sleep(0.1)


def _source() -> str:
    from node.client import job_source

    return job_source(encrypted_inference)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
