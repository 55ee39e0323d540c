"""The audit log: a hash chain that notices every kind of after-the-fact edit."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.audit import (
    GENESIS_HASH,
    MAX_REFUSAL_SOURCES,
    AuditError,
    AuditLog,
    VerifyReport,
    entry_hash,
)
from node.errors import ParleyError


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path) as audit:
        for event in (
            ("pairing", {"peer": "n-bob", "code_confirmed": True}),
            ("proposal", {"job": "j1", "hash": "ab" * 32, "orchestrator": "n-alice"}),
            ("decision", {"job": "j1", "decision": "approve", "who": "owner"}),
            ("run", {"job": "j1", "rank": 1, "outcome": "succeeded"}),
            ("reveal", {"job": "j1", "recipient": "n-alice", "what": "result"}),
        ):
            audit.append(event[0], **event[1])
        yield audit


def edit(tmp_path: Path, sql: str, *args: object) -> None:
    """Change the database behind the log's back, as someone with file access could."""
    db = sqlite3.connect(tmp_path / "audit.sqlite")
    with db:
        db.execute(sql, args)
    db.close()


def test_append_chains_entries_and_verifies(log: AuditLog, tmp_path: Path) -> None:
    entries = log.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == GENESIS_HASH
    for before, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == before["hash"]
    e = entries[2]
    assert e["kind"] == "decision" and e["fields"] == {"job": "j1", "decision": "approve",
                                                       "who": "owner"}
    assert e["hash"] == entry_hash(e["seq"], e["time"], e["kind"], e["fields"], e["prev_hash"])
    assert log.verify() == VerifyReport(ok=True, entries=5)

    assert [e["seq"] for e in log.entries(after=3)] == [4, 5]
    assert [e["kind"] for e in log.entries(kind="reveal")] == ["reveal"]


def test_the_chain_continues_after_reopening(log: AuditLog, tmp_path: Path) -> None:
    last = log.entries()[-1]
    log.close()
    with AuditLog(tmp_path) as reopened:
        entry = reopened.append("refusal", job="j2", reason="plan not allowed")
        assert entry["seq"] == 6 and entry["prev_hash"] == last["hash"]
        assert reopened.verify().ok


@pytest.mark.parametrize("fields", [
    {"value": 0.731},  # a float is what a revealed result looks like
    {"rows": [1, 2, 3]},
    {"data": {"x": 1}},
    {"blob": b"\x00"},
    {"text": "x" * 1001},
    {"Bad-Name": "x"},
])
def test_data_values_are_refused(tmp_path: Path, fields: dict[str, object]) -> None:
    with AuditLog(tmp_path) as audit:
        with pytest.raises(AuditError) as info:
            audit.append("reveal", **fields)
        assert isinstance(info.value, ParleyError)
        assert audit.entries() == []


def test_a_changed_field_is_detected_at_its_entry(log: AuditLog, tmp_path: Path) -> None:
    edit(tmp_path, "UPDATE audit SET fields = ? WHERE seq = 3",
         '{"decision":"approve","job":"j1","who":"someone else"}')
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and report.entries == 5
    assert "changed" in report.problem


def test_a_changed_hash_is_detected_at_its_entry(log: AuditLog, tmp_path: Path) -> None:
    edit(tmp_path, "UPDATE audit SET hash = ? WHERE seq = 2", "f" * 64)
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 2


def test_an_entry_rewritten_with_a_fresh_hash_breaks_the_link(log: AuditLog,
                                                              tmp_path: Path) -> None:
    e = log.entries()[2]
    fields = {**e["fields"], "decision": "reject"}
    digest = entry_hash(3, e["time"], e["kind"], fields, e["prev_hash"])
    edit(tmp_path, "UPDATE audit SET fields = ?, hash = ? WHERE seq = 3",
         '{"decision":"reject","job":"j1","who":"owner"}', digest)
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 4
    assert "prev_hash" in report.problem


def test_a_deleted_middle_entry_is_detected(log: AuditLog, tmp_path: Path) -> None:
    edit(tmp_path, "DELETE FROM audit WHERE seq = 3")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3
    assert "missing" in report.problem


def test_a_deleted_last_entry_is_detected_by_the_head(log: AuditLog, tmp_path: Path) -> None:
    edit(tmp_path, "DELETE FROM audit WHERE seq = 5")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 5 and report.entries == 4
    assert "removed from the end" in report.problem


def test_an_emptied_log_is_detected_by_the_head(log: AuditLog, tmp_path: Path) -> None:
    edit(tmp_path, "DELETE FROM audit")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 1


def test_a_missing_head_is_reported(log: AuditLog, tmp_path: Path) -> None:
    (tmp_path / "audit.head").unlink()
    report = log.verify()
    assert not report.ok and "audit.head" in report.problem


def test_reordered_entries_are_detected(log: AuditLog, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "audit.sqlite")
    with db:  # swap entries 2 and 4
        db.execute("UPDATE audit SET seq = -1 WHERE seq = 2")
        db.execute("UPDATE audit SET seq = 2 WHERE seq = 4")
        db.execute("UPDATE audit SET seq = 4 WHERE seq = -1")
    db.close()
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 2


def test_a_head_one_behind_after_a_crash_is_not_tampering(log: AuditLog,
                                                          tmp_path: Path) -> None:
    fourth = log.entries()[3]
    head = tmp_path / "audit.head"
    head.write_text(f'{{"hash":"{fourth["hash"]}","seq":4}}')  # stopped before the head write
    assert log.verify().ok
    log.close()
    with AuditLog(tmp_path) as reopened:
        assert '"seq":5' in head.read_text()
        assert reopened.verify().ok


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    with AuditLog(tmp_path) as audit:
        def work(worker: int) -> None:
            for i in range(25):
                audit.append("run", job=f"j{worker}", step=i)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [e["seq"] for e in audit.entries()] == list(range(1, 201))
        assert audit.verify() == VerifyReport(ok=True, entries=200)


# -- refusals that repeat ------------------------------------------------------------------


class Clock:
    """The log's clock, moved by the test (entry times are ISO 8601, UTC)."""

    def __init__(self) -> None:
        self.minute, self.second = 0, 0

    def __call__(self) -> str:
        return f"2026-12-03T10:{self.minute:02d}:{self.second:02d}.000+00:00"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("node.audit._now", clock)
    return clock


def unsigned(audit: AuditLog, remote: str = "10.0.0.5", reason: str = "unsigned",
             **more: object) -> dict[str, object]:
    return audit.append("refusal", path="/peer/v1/catalog", reason=reason, sender="",
                        remote=remote, **more)


def test_a_flood_of_refusals_is_one_entry_and_a_count_per_minute(tmp_path: Path,
                                                                 clock: Clock) -> None:
    with AuditLog(tmp_path) as audit:
        first = unsigned(audit)
        counted = [unsigned(audit) for _ in range(1999)]
        assert first["seq"] == 1 and {c["seq"] for c in counted} == {None}
        assert all(c["counted"] for c in counted)
        assert len(audit.entries()) == 1  # the minute is not over: nothing more yet

        clock.minute = 1
        audit.append("run", job="j1", event="started")  # the next entry closes the minute
        kinds = [(e["kind"], e["fields"].get("count")) for e in audit.entries()]
        assert kinds == [("refusal", None), ("refusal", 1999), ("run", None)]
        summary = audit.entries()[1]["fields"]
        assert summary["remote"] == "10.0.0.5" and summary["reason"] == "unsigned"
        assert summary["minute"] == "2026-12-03T10:00" and summary["first_seq"] == 1
        assert summary["paths"] == "/peer/v1/catalog" and "1999 more" in summary["summary"]
        assert audit.verify() == VerifyReport(ok=True, entries=3)

        unsigned(audit)  # a new minute: written at once again
        assert audit.entries()[-1]["fields"].get("count") is None


def test_each_source_and_reason_is_written_once_a_minute(tmp_path: Path, clock: Clock) -> None:
    with AuditLog(tmp_path) as audit:
        for reason in ("unsigned", "forged", "expired", "unsigned", "forged"):
            unsigned(audit, reason=reason)
        unsigned(audit, remote="10.0.0.6")
        audit.append("refusal", job="j1", sender="n-bob", reason="not the job's orchestrator")
        audit.append("refusal", job="j2", sender="n-bob", reason="not the job's orchestrator")
        written = [(e["fields"].get("remote") or e["fields"]["sender"], e["fields"]["reason"])
                   for e in audit.entries()]
        assert written == [("10.0.0.5", "unsigned"), ("10.0.0.5", "forged"),
                           ("10.0.0.5", "expired"), ("10.0.0.6", "unsigned"),
                           ("n-bob", "not the job's orchestrator")]
        clock.minute = 1
        audit.flush()  # what the node does every few seconds
        counts = {(e["fields"].get("remote") or e["fields"].get("sender"), e["fields"]["count"])
                  for e in audit.entries() if "count" in e["fields"]}
        assert counts == {("10.0.0.5", 1), ("n-bob", 1)}
        assert audit.verify().ok


def test_many_sources_in_a_minute_share_one_count_past_the_cap(tmp_path: Path,
                                                               clock: Clock) -> None:
    with AuditLog(tmp_path) as audit:
        for i in range(500):
            unsigned(audit, remote=f"10.1.{i // 250}.{i % 250}")
        assert len(audit.entries()) == MAX_REFUSAL_SOURCES
        clock.minute = 1
        audit.flush()
        entries = audit.entries()
        assert len(entries) == MAX_REFUSAL_SOURCES + 1
        assert entries[-1]["fields"]["count"] == 500 - MAX_REFUSAL_SOURCES
        assert "other sources" in entries[-1]["fields"]["summary"]


def test_closing_the_log_writes_the_count_of_the_minute_not_yet_over(tmp_path: Path,
                                                                     clock: Clock) -> None:
    with AuditLog(tmp_path) as audit:
        for _ in range(10):
            unsigned(audit)
        clock.second = 30
        audit.flush()  # the minute is not over: nothing is written early
        assert len(audit.entries()) == 1
    with AuditLog(tmp_path) as reopened:
        entries = reopened.entries()
        assert [e["fields"].get("count") for e in entries] == [None, 9]
        assert reopened.verify() == VerifyReport(ok=True, entries=2)
