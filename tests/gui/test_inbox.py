"""The Inbox and the review against real nodes: proposals arrive live, the owner's decision
(approve, reject with a reason, always approve) reaches the orchestrator, and what waits for
the owner survives a restart of the node."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from gui.inbox_view import InboxView
from gui.pairing_dialog import PairingDialog
from gui.review_dialog import ReviewDialog
from tests.gui.flows import job_ends
from tests.test_jobs import spec, write_csv

WAIT_MS = 30_000
SOURCE = ("def run(crypten):\n"
          "    x = crypten.load('nums', 1)\n"
          "    return x.sum(0).get_plain_text(dst=0)\n")


def _nodes(make_node, tmp_path):  # noqa: ANN001
    """alice orchestrates (and approves her own part); bob decides through the GUI."""
    alice = make_node("alice", auto_approve=True)
    bob = make_node("bob", auto_approve=False)
    bob.client.publish(write_csv(tmp_path / "n.csv", np.arange(12.0).reshape(4, 3), "a,b,c"),
                       tags=["nums"], name="bob numbers")
    return alice, bob


def _inbox(qtbot, keep, conn) -> InboxView:  # noqa: ANN001
    inbox = keep(InboxView(conn))
    qtbot.waitUntil(lambda: inbox.pending_count >= 0, timeout=WAIT_MS)
    return inbox


def _propose(qtbot, inbox: InboxView, alice, bob) -> str:  # noqa: ANN001
    """alice proposes a job; it appears in bob's inbox by itself (an event, no refresh)."""
    before = inbox.pending_count
    with qtbot.waitSignal(inbox.sig_pending_changed, timeout=WAIT_MS,
                          check_params_cb=lambda n: n == before + 1):
        job = alice.client.submit(spec([alice, bob], SOURCE, [("nums", 1, "dataset")]))
    assert ("waiting", "job", job["id"]) in inbox.items()
    return job["id"]


def _review(qtbot, inbox: InboxView, job_id: str) -> ReviewDialog:
    assert inbox.select(job_id)
    with qtbot.waitSignal(inbox.sig_item_opened, timeout=WAIT_MS) as opened:
        qtbot.mouseClick(inbox.open_button, Qt.MouseButton.LeftButton)
    dialog = opened.args[0]
    assert isinstance(dialog, ReviewDialog)
    qtbot.waitUntil(lambda: dialog.material.get("state") == "awaiting_approval",
                    timeout=WAIT_MS)
    return dialog


def test_a_proposal_arrives_live_and_approving_its_review_runs_it(make_node, connect, keep,
                                                                  qtbot, tmp_path):
    alice, bob = _nodes(make_node, tmp_path)
    orchestrator = connect(alice)
    inbox = _inbox(qtbot, keep, connect(bob))
    assert inbox.pending_count == 0
    job_id = _propose(qtbot, inbox, alice, bob)
    assert inbox.pending_count == 1

    dialog = _review(qtbot, inbox, job_id)
    assert "    x = crypten.load('nums', 1)\n" in dialog.source_text()
    assert dialog.source_view.blockCount() == 3 and dialog.source_view.gutter_width() > 0
    assert len(dialog.source_view.extraSelections()) == 1  # the reveal's line is marked
    summary = dialog.summary_text()
    assert "bob numbers" in summary and "tag nums" in summary  # the asset of bob it reads
    # its shape, as the proposal states it to every party, and its minimum of rows per reveal
    assert "dataset, 4 × 3; no minimum of rows per reveal)" in summary
    assert "line 3: to rank 0 (alice)" in summary  # the reveal and who receives it
    assert "Goes back to alice" in summary
    assert dialog.warnings_label.isVisibleTo(dialog)

    with job_ends(qtbot, orchestrator, job_id) as end:
        with qtbot.waitSignal(dialog.sig_job_decided, timeout=WAIT_MS):
            qtbot.mouseClick(dialog.approve_button, Qt.MouseButton.LeftButton)
    assert end["state"] == "succeeded", end
    assert bob.client.job(job_id, role="party")["detail"]["approved_by"] == \
        "approved by the owner"
    qtbot.waitUntil(lambda: ("decided", "job", job_id) in inbox.items(), timeout=WAIT_MS)
    assert inbox.pending_count == 0


def _model_named(weight: str) -> bytes:
    """y = x W^T + b for 3 inputs, its weight called ``weight`` (a name its owner chose)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", weight, "b"], ["y"], alpha=1.0, beta=1.0, transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(np.ones((2, 3), dtype=np.float32), weight),
         numpy_helper.from_array(np.zeros(2, dtype=np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_the_review_shows_a_models_architecture_escaped(make_node, connect, keep, qtbot,
                                                        tmp_path):
    """bob reviews an inference of alice's model on his rows: the layers and parameter shapes
    every party will build are listed, and the names from alice's model are shown as text."""
    alice, bob = _nodes(make_node, tmp_path)
    weird = "w<b>bold</b>\x1b[2J"
    (tmp_path / "m.onnx").write_bytes(_model_named(weird))
    alice.client.publish(tmp_path / "m.onnx", tags=["risk"])
    inbox = _inbox(qtbot, keep, connect(bob))
    with qtbot.waitSignal(inbox.sig_pending_changed, timeout=WAIT_MS):
        job = alice.client.submit({
            "title": "inference", "parties": [alice.party.spec(), bob.party.spec()],
            "plan": {"kind": "inference", "model": {"tag": "risk", "rank": 0},
                     "data": {"tag": "nums", "rank": 1}, "output_to": 1}})
    dialog = _review(qtbot, inbox, job["id"])
    summary = dialog.summary_text()
    assert "risk at alice (model)" in summary
    assert "Gemm  w<b>bold</b>\\x1b[2J 2×3, b 2" in summary  # escaped, not markup
    assert "8 parameters in 2 tensors" in summary
    assert "\x1b" not in summary and "<b>bold" not in dialog.summary.toHtml()


def test_rejecting_with_a_reason_tells_the_orchestrator(make_node, connect, keep, qtbot,
                                                        tmp_path, monkeypatch):
    alice, bob = _nodes(make_node, tmp_path)
    orchestrator = connect(alice)
    inbox = _inbox(qtbot, keep, connect(bob))
    job_id = _propose(qtbot, inbox, alice, bob)
    dialog = _review(qtbot, inbox, job_id)
    monkeypatch.setattr(ReviewDialog, "ask_reason",
                        classmethod(lambda cls, _p, _o: "column c identifies people"))
    with job_ends(qtbot, orchestrator, job_id) as end:
        qtbot.mouseClick(dialog.reject_button, Qt.MouseButton.LeftButton)
    assert end["state"] == "rejected"
    assert "column c identifies people" in alice.client.orchestration(job_id)["reason"]
    qtbot.waitUntil(lambda: inbox.pending_count == 0, timeout=WAIT_MS)


def test_always_approve_runs_the_next_proposal_without_asking(make_node, connect, keep,
                                                              qtbot, tmp_path, monkeypatch):
    alice, bob = _nodes(make_node, tmp_path)
    orchestrator = connect(alice)
    inbox = _inbox(qtbot, keep, connect(bob))
    first = _propose(qtbot, inbox, alice, bob)
    dialog = _review(qtbot, inbox, first)
    assert dialog.always_button.text() == "Always approve source code jobs from alice…"
    monkeypatch.setattr(ReviewDialog, "ask_always", classmethod(lambda cls, _p, _k, _o: True))
    with job_ends(qtbot, orchestrator, first) as end:
        qtbot.mouseClick(dialog.always_button, Qt.MouseButton.LeftButton)
    assert end["state"] == "succeeded", end
    assert [(p["orchestrator"], p["kind"]) for p in bob.client.policies()] == [
        ("alice", "source")]

    counts: list[int] = []
    inbox.sig_pending_changed.connect(counts.append)
    second = alice.client.submit(spec([alice, bob], SOURCE, [("nums", 1, "dataset")]))
    with job_ends(qtbot, orchestrator, second["id"]) as end:
        pass
    assert end["state"] == "succeeded", end
    assert bob.client.job(second["id"], role="party")["detail"]["approved_by"] == \
        f"approved by the owner's policy: source jobs from alice ({alice.node_id})"
    qtbot.waitUntil(lambda: ("decided", "job", second["id"]) in inbox.items(), timeout=WAIT_MS)
    assert counts == [] and inbox.pending_count == 0  # the owner was never asked


def test_the_inbox_and_a_pairing_request_survive_a_node_restart(make_node, connect, keep,
                                                                qtbot, tmp_path):
    alice, bob = _nodes(make_node, tmp_path)
    carol = make_node("carol", pair=False)
    inbox = _inbox(qtbot, keep, connect(bob))
    job_id = _propose(qtbot, inbox, alice, bob)
    with qtbot.waitSignal(inbox.sig_pending_changed, timeout=WAIT_MS,
                          check_params_cb=lambda n: n == 2):
        asked = carol.client.pair(bob.address)
    assert ("waiting", "pairing", asked["id"]) in inbox.items()

    bob.stop()
    bob.start()
    # the app restarts too: a new connection and a new inbox read everything from the node
    again = _inbox(qtbot, keep, connect(bob))
    qtbot.waitUntil(lambda: again.pending_count == 2, timeout=WAIT_MS)
    assert {("waiting", "job", job_id), ("waiting", "pairing", asked["id"])} <= \
        set(again.items())
    dialog = again.open_item(asked["id"])
    assert isinstance(dialog, PairingDialog)
    assert dialog.code == asked["code"] and dialog.state == "pending"
    assert dialog.confirm_button.isEnabled()
    # the app that stayed open follows the restarted node: a new proposal shows up live
    later = _propose(qtbot, inbox, alice, bob)
    assert inbox.pending_count == 3 and inbox.item_for(asked["id"]) is not None
    assert ("waiting", "job", later) in inbox.items()


def test_the_review_of_a_plan_counts_each_reveals_rows_and_the_privacy_budget(
        make_node, connect, keep, qtbot, tmp_path):
    """bob's dataset has a minimum of 3 rows and a privacy budget; alice's statistics plan
    with noise shows him, before anything runs, what each reveal aggregates and what it
    spends."""
    alice, bob = _nodes(make_node, tmp_path)
    asset = bob.client.assets()[0]
    bob.client.update_asset(asset["id"], privacy={"min_rows": 3,
                                                  "dp": {"epsilon": 2.0, "bounds": [[0, 20]]}})
    inbox = _inbox(qtbot, keep, connect(bob))
    plan = {"kind": "statistics", "data": [{"tag": "nums", "rank": 1}],
            "stats": ["count", "sum", "mean"], "output_to": 0, "dp": {"epsilon": 0.5}}
    with qtbot.waitSignal(inbox.sig_pending_changed, timeout=WAIT_MS):
        job = alice.client.submit({"title": "plan", "plan": plan,
                                   "parties": [alice.party.spec(), bob.party.spec()]})
    dialog = _review(qtbot, inbox, job["id"])
    summary = dialog.summary_text()
    assert "reveals to others aggregate at least 3 rows; differential privacy on" in summary
    assert "sum over 4 rows of 'nums' (bob)" in summary
    assert "mean over 4 rows of 'nums' (bob)" in summary
    assert "Privacy budget" in summary
    assert ("differential privacy on 'nums': this job adds noise and spends epsilon 0.5 of its "
            "budget; 2 of 2 left before it") in summary
    assert "crypten.laplace_noise('nums', 1, 'sum', n, 0.25, d)" in dialog.source_text()

