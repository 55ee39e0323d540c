"""Compose against real nodes: the seed's demo and a training job composed by clicks and run to
a result equal to plaintext; what cannot work refused before it is sent, with its reason; custom
code marked inline by the static check; a job saved and opened again unchanged."""

from __future__ import annotations

import json
import keyword

import numpy as np
import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QHelpEvent
from PySide6.QtWidgets import QApplication, QToolTip

from gui.code_editor import ATTRIBUTES, NAMESPACES, TOP_LEVEL, CodeEditorWidget
from gui.compose_view import ComposeView
from node.client import results
from node.demo import plain_logistic_regression
from resources import path as resource
from tests.conftest import JOB_TIMEOUT
from tests.test_jobs import write_csv

WAIT_MS = 30_000
JOB_MS = int(JOB_TIMEOUT * 1000)
GOOD = ("def run(crypten):\n"
        "    x = crypten.load('nums', 1)\n"
        "    return x.sum(0).get_plain_text(dst=0)\n")


def _view(qtbot, keep, conn, parties: int) -> ComposeView:  # noqa: ANN001
    """A Compose view that has loaded its party candidates and the catalogs."""
    view = keep(ComposeView(conn))
    view.resize(1010, 760)
    qtbot.waitUntil(lambda: len(view.party_names()) == parties and bool(view.catalog)
                    and view.search_button.isEnabled(), timeout=WAIT_MS)
    return view


def _choose(view: ComposeView, title: str) -> None:
    index = view.template_combo.findText(title)
    assert index >= 0, title
    view.template_combo.setCurrentIndex(index)


def _search(qtbot, view: ComposeView, text: str) -> None:  # noqa: ANN001
    view.search_edit.setText(text)
    with qtbot.waitSignal(view.sig_search_finished, timeout=WAIT_MS):
        qtbot.mouseClick(view.search_button, Qt.MouseButton.LeftButton)


def _bind(qtbot, view: ComposeView, row: int | None, node: str, tag: str) -> None:  # noqa: ANN001
    """Select the input (or none: custom code adds one), then the asset, then Use."""
    if row is not None:
        view.select_input(row)
    assert view.select_asset(node, tag), (node, tag, view.catalog_rows())
    assert view.use_button.isEnabled(), view.use_button.toolTip()
    qtbot.mouseClick(view.use_button, Qt.MouseButton.LeftButton)


def _settled(qtbot, view: ComposeView) -> dict:  # noqa: ANN001
    """The node's check of the job as it stands now."""
    qtbot.waitUntil(view.up_to_date, timeout=WAIT_MS)
    return view.last_check


def _ready(qtbot, view: ComposeView) -> None:  # noqa: ANN001
    check = _settled(qtbot, view)
    assert view.send_button.isEnabled(), (view.why_not_sendable(), view.problems(), check)


def _send_and_wait(qtbot, view: ComposeView) -> dict:  # noqa: ANN001
    with qtbot.waitSignal(view.sig_job_ended, timeout=JOB_MS) as ended, \
            qtbot.waitSignal(view.sig_job_submitted, timeout=WAIT_MS) as sent:
        qtbot.mouseClick(view.send_button, Qt.MouseButton.LeftButton)
    job = ended.args[0]
    assert job["id"] == sent.args[0]["id"]
    assert job["state"] == "succeeded", job
    return job


def _plain_inference() -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    model = ReferenceEvaluator(str(resource("alice_model.onnx")))
    rows = np.loadtxt(resource("bob_inference.csv"), delimiter=",", skiprows=1,
                      dtype=np.float32)
    return model.run(None, {model.input_names[0]: rows})[0]


def test_the_seeds_demo_takes_a_handful_of_clicks_and_matches_plaintext(make_node, connect, keep,
                                                                        qtbot):
    alice, bob, carol = make_node("alice"), make_node("bob"), make_node("carol")
    alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
    bob.client.publish(resource("bob_inference.csv"), tags=["bc-inference"])
    view = _view(qtbot, keep, connect(carol), 3)
    assert not view.send_button.isEnabled()  # nothing composed yet

    _choose(view, "Model hiding (encrypted inference)")
    assert view.set_party_checked("alice") and view.set_party_checked("bob")
    _search(qtbot, view, "bc-model")
    _bind(qtbot, view, 0, "alice", "bc-model")
    _search(qtbot, view, "bc-inference")
    _bind(qtbot, view, None, "bob", "bc-inference")  # the next unbound input is selected
    _ready(qtbot, view)

    assert view.spec()["plan"] == {"kind": "inference", "model": {"tag": "bc-model", "rank": 0},
                                   "data": {"tag": "bc-inference", "rank": 1}, "output_to": 1}
    code = view.editor.toPlainText()  # what alice's and bob's owners will review
    assert "crypten.load_model('bc-model')" in code and "get_plain_text(dst=1)" in code
    assert view.editor.isReadOnly()
    assert "rank 0 is alice, rank 1 is bob" in view.ranks_label.text()
    assert view.estimate_label.text().startswith("Estimated cost:")

    job = _send_and_wait(qtbot, view)
    predicted = np.asarray(results(job)[1])
    plain = _plain_inference()
    assert predicted.shape == plain.shape
    assert float(np.abs(predicted - plain).max()) < 1e-2
    assert (predicted.argmax(1) == plain.argmax(1)).mean() > 0.99
    assert "succeeded" in view.status_label.text()


def test_logistic_regression_with_the_labels_at_a_third_party(make_node, connect, keep, qtbot):
    alice, bob, carol = make_node("alice"), make_node("bob"), make_node("carol")
    alice.client.publish(resource("alice_features.csv"), tags=["bc-features-a"])
    bob.client.publish(resource("bob_features.csv"), tags=["bc-features-b"])
    carol.client.publish(resource("carol_labels.csv"), tags=["bc-labels"])
    view = _view(qtbot, keep, connect(carol), 3)
    assert len(view.catalog_rows()) == 3  # the catalogs of carol and both peers, unsearched

    _choose(view, "Data labelling (labels at another party)")
    for row, (node, tag) in enumerate((("alice", "bc-features-a"), ("bob", "bc-features-b"),
                                       ("carol", "bc-labels"))):
        _bind(qtbot, view, row, node, tag)  # the holders become the parties, in list order
    assert [c["name"] for c in view.chosen()] == ["alice", "bob", "carol"]
    assert view.output_combo.currentText() == "carol (rank 2)"  # the labels' holder
    _ready(qtbot, view)
    plan = view.spec()["plan"]
    assert plan == {"kind": "train", "model": "logistic",
                    "features": [{"tag": "bc-features-a", "rank": 0},
                                 {"tag": "bc-features-b", "rank": 1}],
                    "labels": {"tag": "bc-labels", "rank": 2}, "epochs": 30,
                    "learning_rate": 1.0, "output_to": 2}

    job = _send_and_wait(qtbot, view)
    trained = results(job)[2]
    assert np.asarray(trained["weights"]).shape == (30, 1)
    assert abs(float(np.asarray(trained["accuracy"])) - plain_logistic_regression()) <= 0.02


def test_a_model_whose_width_is_not_the_datas_is_refused_before_sending(make_node, connect,
                                                                        keep, qtbot):
    alice, bob, carol = make_node("alice"), make_node("bob"), make_node("carol")
    alice.client.publish(resource("alice_model.onnx"), tags=["bc-model"])
    bob.client.publish(resource("bob_features.csv"), tags=["bc-narrow"])  # 15 columns
    bob.client.publish(resource("bob_inference.csv"), tags=["bc-inference"])  # 30 columns
    view = _view(qtbot, keep, connect(carol), 3)
    _choose(view, "Model hiding (encrypted inference)")
    _bind(qtbot, view, 0, "alice", "bc-model")
    _bind(qtbot, view, 1, "bob", "bc-narrow")

    check = _settled(qtbot, view)
    assert check["ok"] is False
    reason = next(p for p in check["problems"] if "30" in p and "15" in p)
    assert "bc-narrow" in reason
    assert reason in view.check_label.text() and view.check_label.isVisibleTo(view)
    assert not view.send_button.isEnabled()
    with qtbot.assertNotEmitted(view.sig_job_submitted, wait=300):
        view.send()  # even when asked directly, nothing is sent
    assert alice.client.jobs(role="party") == [] and bob.client.jobs(role="party") == []

    _bind(qtbot, view, 1, "bob", "bc-inference")  # data of the model's width: now it can go
    _ready(qtbot, view)
    assert view.problems() == []


def test_custom_code_the_jail_refuses_is_marked_inline_and_cannot_be_sent(make_node, connect,
                                                                         keep, qtbot, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    bob.client.publish(write_csv(tmp_path / "n.csv", np.arange(12.0).reshape(4, 3), "a,b,c"),
                       tags=["nums"], name="bob numbers")
    view = _view(qtbot, keep, connect(alice), 2)
    _choose(view, "Custom code")
    assert not view.editor.isReadOnly()
    assert view.set_party_checked("alice") and view.set_party_checked("bob")
    _bind(qtbot, view, None, "bob", "nums")  # custom code: the asset becomes a new input
    view.editor.setPlainText(GOOD)
    _ready(qtbot, view)  # this one could be sent
    assert view.spec()["bindings"] == [{"tag": "nums", "rank": 1, "kind": "dataset"}]
    assert view.spec()["result_to"] == [0] and view.spec()["reveal_to"] == [0]

    # the owner types a line the jail refuses, after line 2
    cursor = view.editor.textCursor()
    cursor.setPosition(view.editor.document().findBlockByNumber(1).position()
                       + len("    x = crypten.load('nums', 1)"))
    view.editor.setTextCursor(cursor)
    view.editor.setFocus()
    qtbot.keyClick(view.editor, Qt.Key.Key_Return)  # keeps the indentation
    with qtbot.waitSignal(view.sig_source_checked, timeout=WAIT_MS,
                          check_params_cb=lambda problems: bool(problems)) as checked:
        qtbot.keyClicks(view.editor, "y = x.__class__")
    assert view.editor.toPlainText().splitlines()[2] == "    y = x.__class__"
    problem = checked.args[0][0]
    assert problem["line"] == 3 and problem["rule"] == "no-underscore"
    assert view.editor.marked_lines() == [3]
    assert view.editor.extraSelections()  # the line is shaded and underlined
    assert "Line 3:" in view.source_problems_label.text()
    line3 = view.editor.textCursor()
    line3.setPosition(view.editor.document().findBlockByNumber(2).position() + 6)
    at = view.editor.cursorRect(line3).center()
    QApplication.sendEvent(view.editor.viewport(), QHelpEvent(
        QEvent.Type.ToolTip, at, view.editor.viewport().mapToGlobal(at)))
    assert "starting with '_' are not allowed (no-underscore)" in QToolTip.text()  # on hover
    assert "no-underscore" in view.source_problems_label.text()
    _settled(qtbot, view)
    assert not view.send_button.isEnabled()
    assert "static check" in view.why_not_sendable()
    assert any(p.startswith("line 3:") for p in view.problems())
    with qtbot.assertNotEmitted(view.sig_job_submitted, wait=300):
        view.send()

    cursor = view.editor.textCursor()  # the owner deletes the line again
    cursor.setPosition(view.editor.document().findBlockByNumber(2).position())
    cursor.movePosition(cursor.MoveOperation.Down, cursor.MoveMode.KeepAnchor)
    cursor.removeSelectedText()
    assert view.editor.toPlainText() == GOOD
    _ready(qtbot, view)
    assert view.editor.marked_lines() == [] and not view.source_problems_label.isVisibleTo(view)

    with qtbot.waitSignal(view.sig_dry_run_finished, timeout=JOB_MS) as dry:
        qtbot.mouseClick(view.dry_run_button, Qt.MouseButton.LeftButton)
    assert dry.args[0]["state"] == "succeeded", dry.args[0]
    assert "result" in view.dry_run_output.toPlainText()


@pytest.mark.parametrize("kind", ["statistics", "custom"])
def test_a_saved_job_opens_as_the_same_spec(make_node, connect, keep, qtbot, tmp_path,
                                           monkeypatch, kind):
    alice, bob = make_node("alice"), make_node("bob")
    for node, name in ((alice, "rows_alice.csv"), (bob, "rows_bob.csv")):
        node.client.publish(resource(name), tags=["bc-rows"], label_column="diagnosis")
    conn = connect(alice)
    view = _view(qtbot, keep, conn, 2)
    if kind == "statistics":
        _choose(view, "Dataset augmentation (statistics with a histogram)")
        _bind(qtbot, view, 0, "alice", "bc-rows")
        _bind(qtbot, view, 1, "bob", "bc-rows")
        view.stat_boxes["sum"].setChecked(False)
        view.column_spin.setValue(2)
        view.edges_edit.setText("0, 50, 100.5, 200")
    else:
        _choose(view, "Custom code")
        _bind(qtbot, view, None, "bob", "bc-rows")
        _bind(qtbot, view, None, "alice", "bc-rows")
        view.set_receivers(["alice", "bob"], ["bob"])
        view.editor.setPlainText("def run(crypten):\n"
                                 "    x = crypten.cat([crypten.load('bc-rows', 1), "
                                 "crypten.load('bc-rows', 0)])\n"
                                 "    return x.mean(0).get_plain_text(dst=1)\n")
    view.title_edit.setText("what the owners see")
    view.time_spin.setValue(300)
    _ready(qtbot, view)
    spec = view.spec()
    path = tmp_path / "job.json"
    monkeypatch.setattr(ComposeView, "ask_save_path", classmethod(lambda cls, _p, _s: str(path)))
    qtbot.mouseClick(view.save_button, Qt.MouseButton.LeftButton)
    assert json.loads(path.read_text()) == spec
    if kind == "statistics":
        assert spec["plan"]["histogram"] == {"column": 2, "edges": [0, 50, 100.5, 200]}
        assert spec["plan"]["stats"] == ["count", "mean", "variance", "histogram"]
    else:
        assert spec["result_to"] == [0, 1] and spec["reveal_to"] == [1]
        assert spec["bindings"] == [{"tag": "bc-rows", "rank": 1, "kind": "dataset"},
                                    {"tag": "bc-rows", "rank": 0, "kind": "dataset"}]

    # the same format the node takes: its check accepts the file as it is
    assert alice.client.call("POST", "/admin/v1/compose/check", json.loads(path.read_text())
                             )["ok"] is True

    again = _view(qtbot, keep, conn, 2)
    monkeypatch.setattr(ComposeView, "ask_open_path", classmethod(lambda cls, _p: str(path)))
    qtbot.mouseClick(again.load_button, Qt.MouseButton.LeftButton)
    assert again.spec() == spec
    _ready(qtbot, again)
    assert again.template.key == ("statistics" if kind == "statistics" else "custom")


def test_the_editor_completes_the_job_api_the_jail_allows(qtbot):
    editor = CodeEditorWidget()
    qtbot.addWidget(editor)
    editor.show()
    qtbot.keyClicks(editor, "x = crypten.lo")
    assert editor.completer.popup().isVisible()
    assert editor.completion_names() == ["load", "load_model"]
    qtbot.keyClick(editor, Qt.Key.Key_Tab)  # takes the first
    assert editor.toPlainText() == "x = crypten.load"
    editor.setPlainText("")
    qtbot.keyClicks(editor, "y = x.get_pl")
    assert editor.completion_names() == ["get_plain_text"]
    editor.setPlainText("")
    qtbot.keyClicks(editor, "m = crypten.nn.")
    assert "Linear" in editor.completion_names() and "BCEWithLogitsLoss" in \
        editor.completion_names()
    editor.setPlainText("")
    qtbot.keyClicks(editor, "print('crypten.lo")  # not inside a string
    assert not editor.completer.popup().isVisible()

    # every name offered is one the jail lets a job use (node/jail/runtime.py)
    from node.jail import runtime

    crypten = runtime.crypten_facade(lambda *_: None, lambda *_: None)
    torch = runtime.torch_facade()
    facades = {"crypten": crypten, "crypten.nn": crypten.nn, "crypten.optim": crypten.optim,
               "torch": torch, "torch.nn": torch.nn, "torch.nn.functional": torch.nn.functional}
    for name, names in NAMESPACES.items():
        assert set(names) == set(facades[name].allowed), name
    methods = set(runtime.CRYPTENSOR_ATTRS | runtime.TENSOR_ATTRS | runtime.MODULE_ATTRS
                  | runtime.OPTIM_ATTRS).union(*runtime.CONTAINER_ATTRS.values())
    assert set(ATTRIBUTES) <= methods, set(ATTRIBUTES) - methods
    builtins = set(runtime._safe_builtins(print))
    names = {n for n in TOP_LEVEL if not keyword.iskeyword(n)} - {"crypten", "torch"}
    assert names <= builtins, names - builtins
