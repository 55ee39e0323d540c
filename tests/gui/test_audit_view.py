"""The audit view against a real node: the chain verified (or where it breaks), filters, export."""

from __future__ import annotations

import csv
import json
import sqlite3

from PySide6.QtCore import Qt

from gui.audit_view import AuditView

WAIT_MS = 30_000


def _loaded(qtbot, view: AuditView, what) -> None:  # noqa: ANN001
    """Wait until a reload of the log satisfies ``what`` (the view reloads after events)."""
    qtbot.waitUntil(lambda: bool(view.verify) and what(), timeout=WAIT_MS)


def test_the_chain_shows_as_verified_filters_and_exports(make_node, connect, keep, qtbot,
                                                         monkeypatch, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")  # pairing writes audit entries
    make_node("carol")  # and more of them, about another peer
    view = keep(AuditView(connect(alice)))
    count = alice.client.audit()["verify"]["entries"]
    assert count > 0
    _loaded(qtbot, view, lambda: len(view.entries) >= count)
    assert view.banner.text().startswith(f"✓ Chain verified: {len(view.entries)} entries")
    assert view.table.rowCount() == len(view.entries)

    view.set_filters(kind="pairing", peer=bob.node_id)
    _loaded(qtbot, view, lambda: view.shown and view.table.rowCount() == len(view.shown)
            < view.verify["entries"])
    assert {e["kind"] for e in view.shown} == {"pairing"}
    assert all(bob.node_id in json.dumps(e["fields"]) for e in view.shown)
    assert {e["fields"].get("event") for e in view.shown} >= {"requested", "paired"}

    monkeypatch.setattr(AuditView, "ask_export_path",
                        classmethod(lambda cls, _p: str(tmp_path / "audit.json")))
    with qtbot.waitSignal(view.sig_exported, timeout=WAIT_MS):
        qtbot.mouseClick(view.export_button, Qt.MouseButton.LeftButton)
    exported = json.loads((tmp_path / "audit.json").read_text())
    assert exported["verify"]["ok"] is True
    assert [e["seq"] for e in exported["entries"]] == [e["seq"] for e in view.shown]
    view.export(str(tmp_path / "audit.csv"))
    with (tmp_path / "audit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["seq"]) for r in rows] == [e["seq"] for e in view.shown]
    assert all(r["kind"] == "pairing" for r in rows)


def test_a_changed_entry_shows_where_the_chain_breaks(make_node, connect, keep, qtbot):
    alice, _bob = make_node("alice"), make_node("bob")
    view = keep(AuditView(connect(alice)))
    _loaded(qtbot, view, lambda: view.verify.get("ok") is True)
    with sqlite3.connect(alice.data_dir / "audit.sqlite") as db:  # someone edits the log
        db.execute("UPDATE audit SET fields = '{\"event\":\"nothing happened\"}' WHERE seq = 2")
    view.refresh()
    _loaded(qtbot, view, lambda: view.verify.get("ok") is False)
    assert view.banner.text().startswith("✗ BROKEN at entry 2: ")
    assert "Chain verified" not in view.banner.text()
