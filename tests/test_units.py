"""Pure logic: proposal validation, the wire format, the job state machine."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from node import proposal as proposals
from node.errors import JobStateError, ProposalError, UnknownJob
from node.jobs import JobBook
from node.wire import WireError, decode, encode

GOOD = {
    "version": 1, "job_id": "j-0123456789abcdef", "title": "t",
    "orchestrator": {"name": "carol", "url": "https://127.0.0.1:1", "node_id": "n-c"},
    "parties": [{"name": "alice", "url": "https://a", "node_id": "n-a", "rank": 0},
                {"name": "bob", "url": "https://b", "node_id": "n-b", "rank": 1}],
    "code": {"kind": "source", "source": "def run(crypten):\n    return 1\n", "entry": "run"},
    "bindings": [{"tag": "x", "rank": 1, "kind": "dataset", "expect": {"shape": [None, 3]}}],
    "reveal": {"to": [0], "everyone": False, "budget": 100, "result_to": [0]},
}


def test_a_good_proposal_validates_and_hashes_stably():
    p = proposals.validate(copy.deepcopy(GOOD))
    assert proposals.proposal_hash(p) == proposals.proposal_hash(copy.deepcopy(GOOD))
    changed = copy.deepcopy(GOOD)
    changed["code"]["source"] += "# one more line\n"
    assert proposals.proposal_hash(changed) != proposals.proposal_hash(p)


@pytest.mark.parametrize("path,value,message", [
    (("version",), 2, "version"),
    (("job_id",), "../../etc", "job_id"),
    (("parties",), [], "parties"),
    (("parties", 1, "rank"), 0, "ranks must be 0..n-1"),
    (("code", "kind"), "pickle", "code.kind"),
    (("code", "entry"), "__import__", "code.entry"),
    (("bindings", 0, "rank"), 5, "bindings[0].rank"),
    (("bindings", 0, "kind"), "weights", "bindings[0].kind"),
    (("bindings", 0, "expect"), {"shape": "big"}, "expect.shape"),
    (("reveal", "result_to"), [9], "reveal.result_to"),
    (("reveal", "to"), [-1], "reveal.to"),
    (("reveal", "budget"), "all", "reveal.budget"),
    (("reveal", "everyone"), 1, "reveal.everyone"),
    (("limits",), {"time_s": -1}, "limits.time_s"),
    (("limits",), {"forever": 1}, "limits.forever"),
    (("crypten",), {"precision_bits": 60}, "precision_bits"),
])
def test_malformed_proposals_name_the_field(path, value, message):
    p = copy.deepcopy(GOOD)
    target = p
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProposalError, match=message.replace("[", r"\[").replace("]", r"\]")):
        proposals.validate(p)


def test_results_travel_as_plain_json_only():
    value = {"w": torch.tensor([[1.5, -2.0]]), "n": 3, "ok": True, "inf": float("inf")}
    back = decode(encode(value))
    np.testing.assert_array_equal(back["w"], np.array([[1.5, -2.0]], dtype=np.float32))
    assert back["n"] == 3 and back["ok"] is True and back["inf"] == float("inf")
    with pytest.raises(WireError, match="not builtins.object"):
        encode(object())
    with pytest.raises(WireError, match="string keys"):
        encode({1: 2})


def test_an_encrypted_value_cannot_be_returned():
    from node.compat import crypten

    class Fake:  # stands for any crypten object: refused by its module
        pass

    Fake.__module__ = "crypten.mpc.mpc"
    with pytest.raises(WireError, match="get_plain_text"):
        encode(Fake())
    assert crypten is not None


def test_job_state_machine_refuses_impossible_moves_and_survives_reopen(tmp_path):
    from node.events import EventLog

    events = EventLog(tmp_path)
    book = JobBook(tmp_path, events)
    p = proposals.validate(copy.deepcopy(GOOD))
    book.create(p["job_id"], "party", "awaiting_approval", p, "h", 1)
    with pytest.raises(JobStateError, match="cannot become running"):
        book.transition(p["job_id"], "party", "running")
    book.transition(p["job_id"], "party", "approved")
    book.transition(p["job_id"], "party", "starting")
    book.transition(p["job_id"], "party", "running")
    with pytest.raises(JobStateError, match="already exists"):
        book.create(p["job_id"], "party", "awaiting_approval", p, "h", 1)
    book.close()
    events.close()
    events = EventLog(tmp_path)  # the log survives the restart, and so does its numbering
    book = JobBook(tmp_path, events)
    assert book.fail_interrupted() == [p["job_id"]]
    job = book.get(p["job_id"], "party")
    assert job.state == "failed" and "node stopped while the job was running" in job.reason
    states = [e for e in events.since(job_id=p["job_id"]) if e["kind"] == "job.state"]
    assert [e["data"]["state"] for e in states] == [
        "awaiting_approval", "approved", "starting", "running", "failed"]
    assert [e["seq"] for e in states] == sorted(e["seq"] for e in states)
    with pytest.raises(UnknownJob):
        book.get("j-ffffffffffffffff")


# -- HOST:PORT (node/address.py): the one reader of an address an owner types ------------------
@pytest.mark.parametrize("text,host,port,written", [
    ("10.8.0.5:7001", "10.8.0.5", 7001, "10.8.0.5:7001"),
    (" Alice.LAN:7002 ", "alice.lan", 7002, "alice.lan:7002"),
    ("[fd00::5]:7003", "fd00::5", 7003, "[fd00::5]:7003"),
    ("[FD00:0::5]:7003", "fd00::5", 7003, "[fd00::5]:7003"),
])
def test_an_address_reads_and_writes_back_the_same(text, host, port, written):
    from node.address import format_address, parse_address

    assert parse_address(text) == (host, port)
    assert format_address(host, port) == written
    assert parse_address(written) == (host, port)


@pytest.mark.parametrize("text,message", [
    ("10.8.0.5", "is not HOST:PORT; write it as 192.168.1.20:7001"),
    ("10.8.0.5:0", "port 0 is outside 1-65535"),
    ("10.8.0.5:70000", "port 70000 is outside 1-65535"),
    ("host name:1", "is not HOST:PORT"),
    ("fd00::5:7001", "is not HOST:PORT"),  # an IPv6 address needs its brackets
    ("[nope]:7001", "neither an IP address nor a host name"),
    (":7001", "is not HOST:PORT"),
    ("a/b:1", "is not HOST:PORT"),
    ("-bad-.lan:1", "neither an IP address nor a host name"),
    (None, "is not HOST:PORT"),
])
def test_a_bad_address_says_what_is_wrong(text, message):
    from node.address import parse_address

    with pytest.raises(ProposalError, match=message):
        parse_address(text)


def test_a_name_is_not_taken_for_an_address():
    from node.address import looks_like_address

    assert looks_like_address("bob.lan:7001") and looks_like_address("[fd00::5]:7001")
    assert not looks_like_address("bob") and not looks_like_address("bob:")


# -- tags: one rule for the store, plans and proposals ------------------------------------------
@pytest.mark.parametrize("tag,ok", [("cohort-2025", True), ("bc.rows:v2", True), ("9lives", True),
                                    ("-flag", False), (".hidden", False), ("Upper", False),
                                    ("x" * 65, False), ("", False), ("a b", False)])
def test_a_tag_is_the_same_tag_everywhere(tag, ok):
    from node import plans
    from node.errors import StoreError
    from node.store import normalise_tags

    def store_takes() -> bool:
        try:
            return normalise_tags([tag]) == (tag,)  # as typed: no case or space fixed here
        except StoreError:
            return False

    def plan_takes() -> bool:
        try:
            plans.validate({"kind": "statistics", "data": [{"tag": tag, "rank": 0}],
                            "stats": ["count"], "output_to": 0}, 1)
            return True
        except ProposalError as exc:
            assert "must be a tag: 1 to 64 characters" in str(exc)
            return False

    def proposal_takes() -> bool:
        p = copy.deepcopy(GOOD)
        p["bindings"][0]["tag"] = tag
        try:
            proposals.validate(p)
            return True
        except ProposalError as exc:
            assert "needs a tag: 1 to 64 characters" in str(exc)
            return False

    assert (store_takes(), plan_takes(), proposal_takes()) == (ok, ok, ok)


# -- one exception tree: a client gets the specific exception for each problem type ----------
def test_every_problem_type_comes_back_as_its_own_exception():
    import node.errors as errors

    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.ParleyError)]
    declared = {c.__name__ for c in classes}
    assert {"AuthError", "PinMismatch", "JailRejected", "JailViolation", "JobApiError",
            "WireError", "JsonTooDeep", "IdentityError", "BenchError"} <= declared
    typed = [c for c in classes if c.problem_type != "about:blank"]
    assert len({c.problem_type for c in typed}) == len(typed)  # no type names two classes
    for cls in typed:
        exc = errors.error_from_problem({"type": cls.problem_type, "detail": "what happened"},
                                        cls.http_status)
        assert type(exc) is cls and exc.message == "what happened"
        assert exc.status == cls.http_status
    unknown = errors.error_from_problem({"type": "https://elsewhere/x", "detail": "d"}, 500)
    assert type(unknown) is errors.ParleyError


def test_no_module_declares_a_parley_error_outside_the_tree():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    outside = []
    for path in [*root.glob("node/**/*.py"), *root.glob("gui/**/*.py")]:
        if path.name == "errors.py" and path.parent.name == "node":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Violation",
                                                                       "Rejected", "Mismatch"))
                    for b in node.bases):
                outside.append(f"{path.relative_to(root)}: {node.name}")
    assert outside == []


def test_a_loop_stall_says_whether_the_loop_ran_or_waited():
    """The node's loop probe (node/core.py) records each stall with the CPU that the loop's
    thread and the node used in it: code blocking the loop shows as the loop's own CPU, a loop
    that sat waiting (here a blocking sleep, as for a core or the GIL) shows none."""
    import asyncio
    import time

    from node.core import LoopProbe

    async def scenario() -> LoopProbe:
        probe = LoopProbe()
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.05)
        end = time.monotonic() + 0.15
        while time.monotonic() < end:  # the loop runs code for 150 ms
            pass
        await asyncio.sleep(0.05)
        time.sleep(0.15)  # the loop waits 150 ms without running
        await asyncio.sleep(0.05)
        task.cancel()
        return probe

    probe = asyncio.run(scenario())
    stalls = [s for s in probe.status()["stalls"] if s[1] > 100]
    assert len(stalls) == 2, probe.status()
    (_, busy_ms, busy_loop, busy_node), (_, idle_ms, idle_loop, idle_node) = stalls
    # the spin gets a core for only part of its 150 ms when other processes share the machine
    assert busy_loop > 20 and busy_node >= busy_loop - 1, stalls
    assert idle_loop < 10 and idle_node < 10, stalls
    assert probe.status()["longest_stall_ms"] >= max(busy_ms, idle_ms)


def test_a_proposal_and_its_policys_approval_are_listed_as_one_change(tmp_path):
    """A job that a policy approves is never listed as waiting for the owner: a listing that
    comes between its record and its approval waits for both (node/core.py records them so)."""
    import threading

    from node.events import EventLog

    events = EventLog(tmp_path)
    book = JobBook(tmp_path, events)
    p = proposals.validate(copy.deepcopy(GOOD))
    seen: list[list[str]] = []
    reader = threading.Thread(target=lambda: seen.append(
        [j.state for j in book.list("party")]))
    with book.as_one_change():
        book.create(p["job_id"], "party", "awaiting_approval", p, "h", 1)
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and seen == []  # the listing waits for the whole change
        book.transition(p["job_id"], "party", "approved", "a policy")
    reader.join(10)
    assert seen == [["approved"]]
    book.close()
    events.close()


def test_parties_recorded_at_once_each_keep_their_state(tmp_path):
    """The orchestrator records each party's end from a task of its own, on threads; with a
    read, a merge and a write apart, one party's "cancelled" was lost to the other's and the
    job listed a party running for good (found under two make test at once)."""
    import threading

    from node.events import EventLog

    events = EventLog(tmp_path)
    book = JobBook(tmp_path, events)
    p = proposals.validate(copy.deepcopy(GOOD))
    book.create(p["job_id"], "orchestrator", "running", p, "h", None,
                detail={"parties": {"0": {"name": "a"}, "1": {"name": "b"}}})
    go = threading.Barrier(2)

    def record(rank: str) -> None:  # many parties' ends: none may be lost
        go.wait()
        for i in range(150):
            book.update_entry(p["job_id"], "orchestrator", "parties", f"{rank}.{i}",
                              {"state": "cancelled"})
        book.update_entry(p["job_id"], "orchestrator", "parties", rank, {"state": "cancelled"})

    threads = [threading.Thread(target=record, args=(r,)) for r in ("0", "1")]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often, as on a loaded machine
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        sys.setswitchinterval(switch)
    parties = book.get(p["job_id"], "orchestrator").detail["parties"]
    assert parties == {"0": {"name": "a", "state": "cancelled"},
                       "1": {"name": "b", "state": "cancelled"},
                       **{f"{r}.{i}": {"state": "cancelled"} for r in "01" for i in range(150)}}
    book.close()
    events.close()


def test_storage_called_on_the_event_loop_is_reported(tmp_path, caplog):
    """The check behind make_node's teardown: a storage method called by a running event loop
    is logged with its caller; the same call from a plain thread is not."""
    import asyncio
    import logging

    from node import db
    from node.events import EventLog

    assert db.LOOP_CHECK  # conftest turns it on for the tests and the nodes they start
    events = EventLog(tmp_path)
    book = JobBook(tmp_path, events)
    caplog.set_level(logging.WARNING, logger="node.db")

    async def on_the_loop() -> None:
        book.list("party")

    asyncio.run(on_the_loop())
    assert "storage on the event loop: JobBook.list, called from" in caplog.text
    assert "on_the_loop" in caplog.text
    caplog.clear()
    book.list("party")
    asyncio.run(asyncio.to_thread(book.list, "party"))
    assert "storage on the event loop" not in caplog.text
    book.close()
    events.close()
