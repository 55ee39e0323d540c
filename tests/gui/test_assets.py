"""My assets, against a real node: publish, a refused import, details, edit, unpublish.

Dialogs are answered through their ``ask`` classmethods (what their OK or Cancel returns), so
each test runs the same code path as a click without a modal loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gui.asset_dialog import AssetDialog, AssetForm
from gui.assets_view import AssetsView
from gui.confirm_dialog import ConfirmDialog

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
WAIT_MS = 30_000


@pytest.fixture
def view_of(qtbot, connect, dispose) -> Iterator[Callable[[Any], AssetsView]]:
    """An AssetsView on a real node, its first list loaded; deleted before its connection."""
    made: list[AssetsView] = []

    def make(node: Any) -> AssetsView:
        view = AssetsView(connect(node))
        made.append(view)
        view.show()
        with qtbot.waitSignal(view.sig_assets_loaded, timeout=WAIT_MS):
            pass  # the first list arrives through the event loop, so this cannot miss it
        return view

    yield make
    for view in made:
        dispose(view)


def answer_asset_dialog(monkeypatch: pytest.MonkeyPatch, form: AssetForm) -> list[dict]:
    """Make AssetDialog.ask return ``form`` (as its OK would); what it was asked is recorded."""
    asked: list[dict] = []

    def ask(cls, parent, **kwargs):
        asked.append(kwargs)
        return form

    monkeypatch.setattr(AssetDialog, "ask", classmethod(ask))
    return asked


def row_of(view: AssetsView, name: str) -> dict[str, str]:
    row = view.row_names().index(name)
    return {view.table.horizontalHeaderItem(c).text(): view.table.item(row, c).text()
            for c in range(view.table.columnCount())}


def test_publish_csv_appears_in_the_table_and_in_the_node(make_node, view_of, qtbot,
                                                          monkeypatch):
    node = make_node("alice", auto_approve=False, pair=False)
    view = view_of(node)
    assert view.row_names() == [] and view.stack.currentWidget() is view.empty
    asked = answer_asset_dialog(monkeypatch, AssetForm(
        name="clinic_b", tags=["breast-cancer", "features"], description="demo features"))

    view.publish_files([str(RESOURCES / "bob_features.csv")])

    # the dialog was offered the CSV's header for the label column
    assert asked and "worst_radius" in asked[0]["columns"]
    qtbot.waitUntil(lambda: "clinic_b" in view.row_names(), timeout=WAIT_MS)
    row = row_of(view, "clinic_b")
    assert row["Kind"] == "dataset"
    assert row["Tags"] == "breast-cancer, features"
    assert row["Shape"].startswith("399 × 15")
    assert "clinic_b" in view.message.text()  # says it was published
    assert not view._imports  # no progress row left behind
    [asset] = node.client.assets()
    assert (asset["name"], asset["tags"]) == ("clinic_b", ["breast-cancer", "features"])

    # published elsewhere (the CLI): the table follows the node's events, without a reload
    node.client.publish(RESOURCES / "alice_model.onnx", tags=["model"], name="tumour_model")
    qtbot.waitUntil(lambda: "tumour_model" in view.row_names(), timeout=WAIT_MS)
    assert row_of(view, "tumour_model")["Kind"] == "model"


def test_bad_csv_is_refused_with_line_column_and_value(make_node, view_of, qtbot, monkeypatch,
                                                       tmp_path):
    node = make_node("alice", auto_approve=False, pair=False)
    view = view_of(node)
    lines = (RESOURCES / "bob_features.csv").read_text().splitlines()[:6]
    cells = lines[2].split(",")
    cells[4] = "n/a"  # line 3 of the file, column fractal_dimension_error
    lines[2] = ",".join(cells)
    bad = tmp_path / "bad_features.csv"
    bad.write_text("\n".join(lines) + "\n")
    answer_asset_dialog(monkeypatch, AssetForm(name="bad", tags=["demo"]))

    with qtbot.waitSignal(view.sig_import_failed, timeout=WAIT_MS) as failed:
        view.publish_files([str(bad)])

    text = failed.args[0]
    assert "line 3" in text and "fractal_dimension_error" in text and "'n/a'" in text
    assert view.message.isVisible() and view.message.text() == text
    assert "Traceback" not in text
    assert view.row_names() == [] and not view._imports
    assert node.client.assets() == []


def test_details_show_first_rows_and_model_layers(make_node, view_of, qtbot):
    node = make_node("alice", auto_approve=False, pair=False)
    node.client.publish(RESOURCES / "breast_cancer.csv", tags=["demo"], name="wdbc",
                        label_column="diagnosis")
    node.client.publish(RESOURCES / "alice_model.onnx", tags=["model"], name="mlp")
    view = view_of(node)
    qtbot.waitUntil(lambda: set(view.row_names()) == {"wdbc", "mlp"}, timeout=WAIT_MS)

    assert view.select_asset(next(a["id"] for a in view.assets if a["name"] == "wdbc"))
    table = view.detail_table
    qtbot.waitUntil(lambda: table.isVisible() and table.rowCount() == 20, timeout=WAIT_MS)
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers[0] == "mean_radius" and headers[-1] == "diagnosis"
    assert float(table.item(0, 0).text()) == pytest.approx(17.99)
    assert "Label column: diagnosis" in view.detail_summary.text()

    assert view.select_asset(next(a["id"] for a in view.assets if a["name"] == "mlp"))
    qtbot.waitUntil(lambda: table.columnCount() == 2 and table.rowCount() > 0, timeout=WAIT_MS)
    ops = {table.item(r, 0).text() for r in range(table.rowCount())}
    assert "Gemm" in ops
    assert "Inputs: input [1 × 30]" in view.detail_summary.text()


def test_edit_tags_then_unpublish_with_confirmation(make_node, view_of, qtbot, monkeypatch):
    node = make_node("alice", auto_approve=False, pair=False)
    asset = node.client.publish(RESOURCES / "bob_features.csv", tags=["demo"], name="bob")
    view = view_of(node)
    qtbot.waitUntil(lambda: view.row_names() == ["bob"], timeout=WAIT_MS)
    assert view.select_asset(asset["id"]) and view.edit_button.isEnabled()

    asked = answer_asset_dialog(monkeypatch, AssetForm(
        name="bob", tags=["demo", "breast-cancer"], description="second half of the features"))
    view.edit_selected()
    assert asked[0]["asset"]["id"] == asset["id"]  # the dialog opened on the selected asset
    qtbot.waitUntil(lambda: row_of(view, "bob")["Tags"] == "breast-cancer, demo",
                    timeout=WAIT_MS)
    [stored] = node.client.assets()
    assert stored["tags"] == ["breast-cancer", "demo"]
    assert stored["description"] == "second half of the features"

    questions: list[str] = []

    def confirm(cls, parent, title, text, answers):
        questions.append(text)
        return "unpublish" if len(questions) > 1 else None  # Cancel first, then Unpublish

    monkeypatch.setattr(ConfirmDialog, "ask", classmethod(confirm))
    view.unpublish_selected()  # cancelled: nothing is sent
    assert len(questions) == 1 and "'bob'" in questions[0]
    assert view.row_names() == ["bob"]
    view.unpublish_selected()
    qtbot.waitUntil(lambda: view.row_names() == [], timeout=WAIT_MS)
    assert view.stack.currentWidget() is view.empty
    assert node.client.assets() == []


def test_a_large_import_shows_progress_and_can_be_cancelled(make_node, view_of, qtbot,
                                                            monkeypatch, tmp_path):
    node = make_node("alice", auto_approve=False, pair=False)
    view = view_of(node)
    big = tmp_path / "big.csv"
    rows = np.random.default_rng(1).standard_normal((300_000, 8))
    np.savetxt(big, rows, fmt="%.6f", delimiter=",", header="a,b,c,d,e,f,g,h", comments="")
    answer_asset_dialog(monkeypatch, AssetForm(name="big", tags=["big"]))

    [import_id] = view.publish_files([str(big)])
    row = view._imports[import_id]
    assert row.isVisible() and row.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: row.bar.maximum() == 1000 and 0 < row.bar.value() < 1000,
                    timeout=WAIT_MS)  # the node's asset.import_progress events arrived
    assert " of " in row.bar.format()

    with qtbot.waitSignal(view.sig_import_failed, timeout=WAIT_MS) as failed:
        row.cancel_button.click()
    assert "cancelled" in failed.args[0] and "nothing was published" in failed.args[0]
    assert not view._imports and view.row_names() == []
    assert node.client.assets() == []
