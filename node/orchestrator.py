"""Drive a job this node sends out: propose, wait for approvals, start, watch, collect.

One asyncio task per orchestration. It talks to each party's peer API only. Rank 0 is
started first: its node picks the rendezvous port and answers with the address, which the
others then get. While the job runs, the first party to fail is the cause; every other party
is cancelled at once with that cause in its reason, so nobody waits for a timeout that the
orchestrator already knows is coming.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from node import architecture, plans
from node import proposal as proposals
from node.core import Node
from node.errors import JobStateError, NodeUnreachable, ParleyError, ProposalError
from node.events import FailureKind, JobState, Role
from node.jail import static
from node.jobs import TERMINAL, JobRecord
from node.network import Network
from node.rendezvous import redact_rendezvous

__all__ = ["BLAME_GRACE_S", "LONG_POLL_S", "ORCH", "Orchestrator", "UNREACHABLE_AFTER_S"]

logger = logging.getLogger(__name__)
ORCH = Role.ORCHESTRATOR
LONG_POLL_S = 10.0  # below the peer session's 15 s timeout
BLAME_GRACE_S = 3.0
UNREACHABLE_AFTER_S = 15.0


class Orchestrator:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.trust = node.trust
        self.network = Network(node)
        self._stop: dict[str, asyncio.Event] = {}  # set when the owner cancels a job
        self._starting = asyncio.Lock()  # one job's starts at a time (see _start)

    async def resume_interrupted(self) -> list[str]:
        """At start: pick up the jobs this node was driving when it stopped. Their parties
        run on without the orchestrator; it follows them again and collects the results
        they hold. A job stopped while its proposal or its start was going out is
        cancelled at every party instead: what each got cannot be known."""
        resumed = []
        for job in await asyncio.to_thread(self.node.jobs.list, role=ORCH):
            if job.terminal:
                continue
            resumed.append(job.id)
            logger.info("resuming orchestration %s (was %s)", job.id, job.state)
            self.node.spawn(self._drive(job.id, resume=job.state))
        return resumed

    def resolve(self, ref: Any) -> dict[str, str]:
        """A party named by the orchestrator's owner: this node, or a paired peer."""
        if isinstance(ref, dict):
            key = ref.get("node_id") or ref.get("name")
        else:
            key = ref
        if key in (self.node.node_id, self.node.name):
            return {"name": self.node.name, "url": self.node.peer_url,
                    "node_id": self.node.node_id}
        if not isinstance(key, str):
            raise ProposalError("parties: name each party by its name or node id")
        peer = self.node.peer_book.find(key)
        if not peer.paired:
            raise ProposalError(f"{peer.name} is not paired with this node; pair first with "
                                f"`parley pair {peer.name}`")
        return {"name": peer.name, "url": peer.url, "node_id": peer.node_id}

    # -- compose and submit -------------------------------------------------------------
    def compose(self, spec: Any) -> dict[str, Any]:
        """A proposal from the admin API's job spec (parties in rank order)."""
        if not isinstance(spec, dict):
            raise ProposalError("expected a job spec object")
        parties = spec.get("parties")
        if not isinstance(parties, list):
            raise ProposalError("parties: expected a list of {name, url} in rank order")
        resolved = [{**self.resolve(q), "rank": i} for i, q in enumerate(parties)]
        for i, q in enumerate(resolved):
            first = next(r for r in resolved if r["node_id"] == q["node_id"])
            if first["rank"] != i:
                raise ProposalError(f"{q['name']} is named twice as a party (ranks "
                                    f"{first['rank']} and {i}); each party plays one rank")
        bindings = spec.get("bindings", [])
        plan = spec.get("plan")
        if plan is not None:
            plans.validate(plan, len(parties))
            code = {"kind": "plan", "plan": plan}
            bindings = plans.bindings(plan)
            spec = {**spec, "result_to": spec.get("result_to", [plan["output_to"]]),
                    "reveal_to": [plan["output_to"]], "reveal_everyone": False}
        else:
            code = {"kind": "source", "source": spec.get("source"),
                    "entry": spec.get("entry", "run")}
        p = {
            "version": proposals.VERSION,
            "job_id": proposals.new_job_id(),
            "title": spec.get("title", ""),
            "orchestrator": {"name": self.node.name, "url": self.node.peer_url,
                             "node_id": self.node.node_id},
            "parties": resolved,
            "code": code,
            "bindings": bindings,
            "reveal": {"to": spec.get("reveal_to", spec.get("result_to", [0])),
                       "everyone": bool(spec.get("reveal_everyone", False)),
                       "budget": spec.get("reveal_budget", proposals.DEFAULT_BUDGET),
                       "result_to": spec.get("result_to", [0])},
            "limits": spec.get("limits", {}),
        }
        if "crypten" in spec:
            p["crypten"] = spec["crypten"]
        return proposals.validate(p)

    async def check(self, spec: Any) -> dict[str, Any]:
        """What the app shows before sending: the code every party will review, every reason
        the job cannot work (checked against the parties' catalogs), and a cost estimate."""
        try:
            p = self.compose(spec)
        except ParleyError as exc:
            return {"ok": False, "problems": [exc.message], "source": "", "entry": "",
                    "parties": [], "estimate": _no_estimate()}
        source, entry = proposals.job_code(p)
        problems = []
        try:
            info = await asyncio.to_thread(static.check, source, entry)
        except static.JailRejected as exc:
            problems.append(f"the static check refuses the code: {exc.message}")
        else:
            allowed = set(p["reveal"]["to"])
            bound = [(b["tag"], b["rank"]) for b in p["bindings"]]
            for ld in info.loads:
                if static.is_dynamic(ld.tag):
                    continue
                ranks = sorted(r for t, r in bound if t == ld.tag)
                if not ranks:
                    problems.append(f"line {ld.line} loads '{ld.tag}', which no input of the "
                                    f"job binds; bind it to the party that holds it")
                elif isinstance(ld.src, int) and ld.src not in ranks:
                    problems.append(f"line {ld.line} loads '{ld.tag}' from rank {ld.src}, but "
                                    f"it is bound at rank(s) {ranks}")
            for r in info.reveals:
                if r.dst is None and not p["reveal"]["everyone"]:
                    problems.append(f"line {r.line} decrypts to every party, which the job's "
                                    f"reveal map does not allow")
                elif isinstance(r.dst, int) and r.dst not in allowed:
                    problems.append(f"line {r.line} reveals to rank {r.dst}, which the job's "
                                    f"reveal map does not allow")
        if not p["reveal"]["result_to"]:
            problems.append("no result comes back to anyone: choose who receives it")
        problems += await self._catalog_problems(p)
        return {"ok": not problems, "problems": problems, "source": source, "entry": entry,
                "parties": [{"rank": q["rank"], "name": q["name"], "node_id": q["node_id"]}
                            for q in p["parties"]],
                "estimate": await asyncio.to_thread(self._estimate, p)}

    async def _catalog_problems(self, p: dict[str, Any]) -> list[str]:
        """Each binding against its holder's catalog, and the shapes against each other."""
        found, problems = await self.schemas_of(p)
        problems += _expectation_problems(p, found)
        if p["code"]["kind"] == "plan" and len(found) == len(p["bindings"]):
            problems += _shape_problems(p["code"]["plan"], found,
                                        {q["rank"]: q["name"] for q in p["parties"]})
        return problems

    async def schemas_of(self, p: dict[str, Any]
                         ) -> tuple[dict[tuple[str, int], dict[str, Any]], list[str]]:
        """The catalog schema of every binding of ``p``, (tag, rank) -> schema, from its
        holder (this node's store, or the peer's catalog); and what is wrong: a holder that
        lacks the asset, holds it twice, holds another kind, or does not answer."""
        found: dict[tuple[str, int], dict[str, Any]] = {}
        problems: list[str] = []

        async def one(b: dict[str, Any]) -> None:
            party = proposals.party_of(p, b["rank"])
            try:
                if party["node_id"] == self.node.node_id:
                    assets = [a.public() for a in await asyncio.to_thread(
                        self.node.store.list, [b["tag"]])]
                else:
                    answer = await asyncio.wait_for(self.network.call(
                        "GET", party, f"/peer/v1/catalog?tag={quote(b['tag'])}"), 10)
                    assets = answer.get("assets", [])
            except (TimeoutError, ParleyError) as exc:
                problems.append(f"{party['name']} did not answer for '{b['tag']}': "
                                f"{getattr(exc, 'message', 'timed out')}")
                return
            if not assets:
                problems.append(f"{party['name']} holds no asset tagged '{b['tag']}'")
            elif len(assets) > 1:
                problems.append(f"{party['name']} has {len(assets)} assets tagged "
                                f"'{b['tag']}'; a job needs exactly one")
            elif assets[0]["kind"] != b["kind"]:
                problems.append(f"'{b['tag']}' at {party['name']} is a {assets[0]['kind']}, "
                                f"not a {b['kind']}")
            else:
                found[(b["tag"], b["rank"])] = assets[0]["schema"]

        await asyncio.gather(*(one(b) for b in p["bindings"]))
        return found, problems

    async def stated(self, p: dict[str, Any]) -> dict[str, Any]:
        """``p`` with each binding's ``expect`` as its holder's catalog says (a dataset's
        shape and labels, a model's architecture: node/proposal.py), so that every party
        reviews them and knows them at run time without asking the owner. ProposalError, and
        nothing sent, when a holder lacks the asset, holds another one than the job expects,
        or does not answer."""
        found, problems = await self.schemas_of(p)
        problems += _expectation_problems(p, found)
        if problems:
            raise ProposalError("the job was not sent: " + "; ".join(problems))
        bindings = []
        for b in p["bindings"]:
            schema = found[(b["tag"], b["rank"])]
            if b["kind"] == "model" and "architecture" not in schema:
                bindings.append(b)  # a holder running an older Parley: it says it at run time
            else:
                bindings.append({**b, "expect": proposals.expectations(b["kind"], schema)})
        return proposals.validate({**p, "bindings": bindings})

    def _estimate(self, p: dict[str, Any]) -> dict[str, Any]:
        """From past runs of the same plan kind (or code) this node sent, else a rough guess."""
        kind = proposals.code_kind(p)
        same = [j for j in self.node.jobs.list(role=ORCH, states=[JobState.SUCCEEDED])
                if proposals.code_kind(j.proposal) == kind
                and (kind != "source" or j.proposal["title"] == p["title"])][:10]
        runs = []
        for j in same:
            parties = j.detail.get("parties", {}).values()
            runs.append((j.detail.get("phases", {}).get("run_s"),
                         max((q.get("stats", {}).get("rounds", 0) for q in parties), default=0),
                         sum(q.get("stats", {}).get("bytes", 0) for q in parties)))
        runs = [r for r in runs if r[0] is not None]
        if runs:
            n = len(runs)
            return {"seconds": sum(r[0] for r in runs) / n, "rounds": round(sum(r[1] for r in
                    runs) / n), "bytes": round(sum(r[2] for r in runs) / n),
                    "basis": f"the mean of the last {n} {kind} job(s) this node sent"}
        return {**_no_estimate(), "seconds": 5.0 + (0.4 * p["code"]["plan"].get("epochs", 30)
                                                    if kind == "train" else 0.0),
                "basis": "a rough guess (no past run of this kind yet): about 5 s to start "
                         "the parties, plus the computation"}

    async def submit(self, spec: Any) -> JobRecord:
        p = await self.stated(self.compose(spec))
        job = await asyncio.to_thread(
            self.node.jobs.create, p["job_id"], ORCH, "proposed", p, proposals.proposal_hash(p),
            None, detail={"parties": {str(q["rank"]): {"name": q["name"], "state": "proposed"}
                                      for q in p["parties"]}})
        self.node.spawn(self._drive(job.id))
        return job

    async def cancel(self, job_id: str, reason: str) -> JobRecord:
        job = await asyncio.to_thread(self.node.jobs.get, job_id, ORCH)
        if job.terminal:
            return job
        reason = f"cancelled by {self.node.name}: {reason.strip() or 'no reason given'}"
        try:  # the owner's word is the job's end; the parties are told next
            job = await asyncio.to_thread(self.node.jobs.transition, job_id, ORCH, "cancelled",
                                          reason)
        except JobStateError:
            return await asyncio.to_thread(self.node.jobs.get, job_id, ORCH)  # it ended meanwhile
        if job_id in self._stop:
            self._stop[job_id].set()  # the drive stops and records how each party ended
        else:
            self.node.spawn(self._settle(job_id, job.proposal))
        await self._cancel_all(job.proposal, reason)
        return job

    # -- the drive ----------------------------------------------------------------------
    async def _set(self, job_id: str, state: str, reason: str = "") -> None:
        """Move the orchestration on (a storage write: off the event loop)."""
        try:
            await asyncio.to_thread(self.node.jobs.transition, job_id, ORCH, state, reason)
        except JobStateError:
            return

    def _party_detail(self, job_id: str, rank: int, **fields: Any) -> None:
        self.node.jobs.update_entry(job_id, ORCH, "parties", str(rank), fields)

    async def _drive(self, job_id: str, resume: str | None = None) -> None:
        """The orchestration from proposal to result; ``resume`` is the state a job was in
        when this node stopped, to go on from there."""
        p = (await asyncio.to_thread(self.node.jobs.get, job_id, ORCH)).proposal
        limits = proposals.limits(p)
        t0 = time.monotonic()
        updates: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        followers: list[asyncio.Task[Any]] = []
        self._stop[job_id] = asyncio.Event()
        try:
            if resume in (JobState.PROPOSED, JobState.STARTING):
                raise ParleyError(f"this node stopped while the job was {resume}; what each "
                                  f"party got is unknown, so it was cancelled: run it again")
            if resume is None:
                await self._propose(job_id, p)
                await self._set(job_id, "awaiting_approval")
            followers = [self.node.spawn(self._follow_party(job_id, q, updates))
                         for q in p["parties"]]
            states: dict[int, dict[str, Any]] = {}
            phase: dict[str, float] = {}
            if resume not in (JobState.RUNNING, JobState.QUEUED):
                if not await self._await_approvals(job_id, p, limits["approval_s"], updates,
                                                   states):
                    return
                await self._set(job_id, "approved")
                phase["approved_s"] = time.monotonic() - t0
                await self._set(job_id, "starting")
                queued = await self._start(job_id, p)
                await self._set(job_id, "queued" if queued else "running",
                                f"waiting for room at {', '.join(queued)}" if queued else "")
            t1 = time.monotonic()
            cause = await self._watch(job_id, p, limits["time_s"] + 30, updates, states)
            phase["run_s"] = time.monotonic() - t1
            if resume is None:
                await asyncio.to_thread(self.node.jobs.update, job_id, ORCH,
                                        detail={"phases": phase})
            if cause:
                await self._set(job_id, "failed", cause)
                return
            result = {}
            for rank in p["reveal"]["result_to"]:
                party = p["parties"][rank]
                data = await self.network.call("GET", party, f"/peer/v1/jobs/{job_id}/result")
                if not await asyncio.to_thread(  # a result can be large: off the loop
                        self.trust.check_result, party["node_id"], job_id, rank, data["value"],
                        data.get("signature", "")):
                    raise ParleyError(f"the result from {party['name']} is not signed by it")
                result[str(rank)] = data["value"]
            await asyncio.to_thread(self.node.jobs.update, job_id, ORCH, result=result)
            await self._set(job_id, "succeeded", "collected after this node restarted"
                            if resume else "")
        except asyncio.CancelledError:
            raise
        except ParleyError as exc:
            if self._stop[job_id].is_set():
                return  # the owner cancelled: cancel() ends the job and tells the parties
            await self._cancel_all(p, f"the orchestrator stopped the job: {exc.message}")
            await self._set(job_id, "failed", exc.message)
        except Exception as exc:  # noqa: BLE001 - a reason for the owner, details in the log
            logger.exception("orchestration %s crashed", job_id)
            await self._cancel_all(p, "the orchestrator hit an unexpected error")
            await self._set(job_id, "failed", f"the orchestrator hit an unexpected error "
                                        f"({type(exc).__name__}); see its log")
        finally:
            for task in followers:
                task.cancel()
            self._stop.pop(job_id, None)
            if (await asyncio.to_thread(self.node.jobs.get, job_id, ORCH)).terminal:
                self.node.spawn(self._settle(job_id, p))

    async def _settle(self, job_id: str, p: dict[str, Any], wait_s: float = 30.0) -> None:
        """Once a job has ended here, record how it ended at each party that was still live
        in this node's view (a cancel or a failure reaches them a moment later)."""
        recorded = (await asyncio.to_thread(self.node.jobs.get, job_id, ORCH)
                    ).detail.get("parties", {})

        async def one(party: dict[str, Any]) -> None:
            rank = str(party["rank"])
            if recorded.get(rank, {}).get("state") in TERMINAL:
                return
            deadline = time.monotonic() + wait_s
            state: dict[str, Any] = {"state": "unknown", "reason": "its node did not answer"}
            while time.monotonic() < deadline:
                try:
                    state = await self.network.call("GET", party, f"/peer/v1/jobs/{job_id}")
                except NodeUnreachable:
                    state = {"state": "unknown", "reason": "its node did not answer"}
                except ParleyError as exc:  # never got the proposal
                    state = {"state": "cancelled", "reason": exc.message}
                if state["state"] in TERMINAL:
                    break
                await asyncio.sleep(0.5)
            await asyncio.to_thread(self._party_detail, job_id, party["rank"],
                                    state=state["state"], reason=state.get("reason", ""))

        await asyncio.gather(*(one(q) for q in p["parties"]))

    async def _propose(self, job_id: str, p: dict[str, Any]) -> None:
        signature = self.trust.sign_proposal(proposals.proposal_hash(p))

        async def one(party: dict[str, Any]) -> None:
            await self.network.call("POST", party, "/peer/v1/proposals",
                             {"proposal": p, "rank": party["rank"], "signature": signature})
            await asyncio.to_thread(self._party_detail, job_id, party["rank"],
                                    state="awaiting_approval")

        results = await asyncio.gather(*(one(q) for q in p["parties"]), return_exceptions=True)
        for party, res in zip(p["parties"], results):
            if isinstance(res, BaseException):
                msg = res.message if isinstance(res, ParleyError) else repr(res)
                await self._cancel_all(p, f"{party['name']} refused the proposal")
                raise ProposalError(f"{party['name']} refused the proposal: {msg}")

    async def _follow_party(self, job_id: str, party: dict[str, Any],
                            updates: asyncio.Queue[tuple[int, dict[str, Any]]]) -> None:
        """Put the party's job state on ``updates`` each time it changes, learning of changes
        from the party node's event long-poll (no polling). A node that does not answer for
        ``UNREACHABLE_AFTER_S`` is reported failed."""
        rank = party["rank"]
        cursor = 0
        answered = time.monotonic()
        while True:
            try:
                state = await self.network.call("GET", party, f"/peer/v1/jobs/{job_id}")
                answered = time.monotonic()
                await updates.put((rank, state))
                if state["state"] in TERMINAL:
                    return
                found = await self.network.call("GET", party, f"/peer/v1/events?job={job_id}&after="
                                         f"{cursor}&timeout={LONG_POLL_S:.0f}")
                cursor = max([cursor] + [int(e["seq"]) for e in found.get("events", [])])
                answered = time.monotonic()
            except NodeUnreachable:
                if time.monotonic() - answered > UNREACHABLE_AFTER_S:
                    await updates.put((rank, {"state": "failed", "reason": (
                        f"its node stopped answering for {UNREACHABLE_AFTER_S:.0f} s")}))
                    return
                await updates.put((rank, {"state": "unknown", "reason": "not answering"}))
                await asyncio.sleep(1.0)

    async def _next_states(self, job_id: str, updates: asyncio.Queue[tuple[int, dict[str, Any]]],
                           states: dict[int, dict[str, Any]], deadline: float) -> bool:
        """Wait for the next party update and record it; False at the deadline. Raises
        ParleyError once the owner cancelled the job."""
        stop = self._stop[job_id]
        getter = asyncio.ensure_future(updates.get())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({getter, stopped}, timeout=max(0.0, deadline - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not getter.done():
                getter.cancel()
        if stop.is_set():
            raise ParleyError("the job was cancelled")
        if not getter.done() or getter.cancelled():
            return False
        rank, state = getter.result()
        states[rank] = state
        fields = {"state": state["state"], "reason": state.get("reason", ""),
                  "failure_kind": state.get("detail", {}).get("failure_kind", "")}
        if state.get("detail", {}).get("timings"):
            fields["timings"] = state["detail"]["timings"]
            fields["stats"] = state["detail"].get("stats", {})
        if state.get("detail", {}).get("progress"):
            fields["progress"] = state["detail"]["progress"]
        await asyncio.to_thread(self._party_detail, job_id, rank, **fields)
        return True

    async def _await_approvals(self, job_id: str, p: dict[str, Any], limit_s: float,
                               updates: asyncio.Queue[tuple[int, dict[str, Any]]],
                               states: dict[int, dict[str, Any]]) -> bool:
        deadline = time.monotonic() + limit_s
        while True:
            try:
                if not await self._next_states(job_id, updates, states, deadline):
                    break
            except ParleyError:
                return False  # cancelled meanwhile: cancel() has told the parties
            refused = {r: s for r, s in states.items()
                       if s["state"] in ("rejected", "failed", "cancelled")}
            if refused:
                rank, s = sorted(refused.items())[0]
                name = p["parties"][rank]["name"]
                await self._cancel_all(p, f"{name} did not approve")
                final = "rejected" if s["state"] == "rejected" else "failed"
                await self._set(job_id, final, f"{name}: {s.get('reason') or s['state']}")
                return False
            if len(states) == len(p["parties"]) and all(
                    s["state"] == "approved" for s in states.values()):
                return True
        await self._cancel_all(p, "not every party approved in time")
        await self._set(job_id, "failed", f"not every party approved within {limit_s:.0f} s")
        return False

    async def _start(self, job_id: str, p: dict[str, Any]) -> list[str]:
        """Start every party (rank 0 first: its node serves the rendezvous); the names of
        those whose node queued the job until it has room.

        One job's starts at a time: a node runs or queues jobs in the order their starts
        arrive, so every node of two jobs must hear of them in the same order. Were job B's
        start to reach alice first and job C's to reach bob first, a node with room for one
        party would run B at alice and C at bob, each waiting for the other's queued party."""
        by_rank = {q["rank"]: q for q in p["parties"]}
        async with self._starting:
            first = await self.network.call("POST", by_rank[0],
                                            f"/peer/v1/jobs/{job_id}/start", {})
            rendezvous = first["rendezvous"]
            others = [q for r, q in sorted(by_rank.items()) if r != 0]
            results = await asyncio.gather(*(
                self.network.call("POST", q, f"/peer/v1/jobs/{job_id}/start",
                                  {"rendezvous": rendezvous}) for q in others),
                return_exceptions=True)
        await asyncio.to_thread(self.node.jobs.update, job_id, ORCH,
                                detail={"rendezvous": redact_rendezvous(rendezvous)})
        for party, res in zip(others, results):
            if isinstance(res, BaseException):
                msg = res.message if isinstance(res, ParleyError) else repr(res)
                raise ParleyError(f"{party['name']} could not start: {msg}")
        answers = [(by_rank[0], first), *zip(others, results)]
        return [q["name"] for q, a in answers if a.get("state") == JobState.QUEUED]

    async def _watch(self, job_id: str, p: dict[str, Any], limit_s: float,
                     updates: asyncio.Queue[tuple[int, dict[str, Any]]],
                     states: dict[int, dict[str, Any]]) -> str:
        """Follow the run until every party has ended; the cause of failure, or ''.

        A party that crashed says so, and is blamed at once. When the first ends only say
        that another party was lost or went silent, the others' news is given ``BLAME_GRACE_S``
        to arrive (each party's node reports on its own), so that the one still silent then is
        the one blamed."""
        deadline = time.monotonic() + limit_s
        cause = ""
        blame_at: float | None = None
        while True:
            until = deadline if blame_at is None else min(deadline, blame_at)
            if not await self._next_states(job_id, updates, states, until) and \
                    time.monotonic() >= deadline:
                await self._cancel_all(p, "the job ran past its time limit")
                raise ParleyError(f"the job ran past its time limit of {limit_s:.0f} s")
            ended = {r for r, s in states.items() if s["state"] in TERMINAL}
            if len(states) == len(p["parties"]) and all(
                    s["state"] not in (JobState.QUEUED, JobState.APPROVED)
                    for s in states.values()) and \
                    (await asyncio.to_thread(self.node.jobs.get, job_id, ORCH)).state == \
                    JobState.QUEUED:
                await self._set(job_id, "running")
            if not cause and any(states[r]["state"] != "succeeded" for r in ended):
                primary = _primary_failure(states)
                if blame_at is None and primary is None and len(ended) < len(p["parties"]):
                    blame_at = time.monotonic() + BLAME_GRACE_S
                elif primary is not None or time.monotonic() >= (blame_at or 0) or \
                        len(ended) == len(p["parties"]):
                    rank, why = primary or _root_cause(states)
                    cause = f"{p['parties'][rank]['name']} (rank {rank}): {why}"
                    blame_at = None
                    await self._cancel_all(p, cause, skip=ended)
            if len(ended) == len(p["parties"]):
                return cause

    async def _cancel_all(self, p: dict[str, Any], reason: str, skip: Collection[int] = frozenset()
                          ) -> None:
        async def one(party: dict[str, Any]) -> None:
            try:
                await self.network.call("POST", party, f"/peer/v1/jobs/{p['job_id']}/cancel",
                                 {"reason": reason})
            except ParleyError:
                pass  # unknown job there, or unreachable: nothing more we can do from here

        await asyncio.gather(*(one(q) for q in p["parties"] if q["rank"] not in skip))


def _no_estimate() -> dict[str, Any]:
    return {"seconds": None, "rounds": None, "bytes": None, "basis": "not known"}


def _width(schema: dict[str, Any], key: str) -> int | None:
    shape = (schema.get(key) or [{}])[0].get("shape") or []
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def _expectation_problems(p: dict[str, Any], schemas: dict[tuple[str, int], dict[str, Any]]
                          ) -> list[str]:
    """Bindings whose asset is not what the job expects of it, or cannot be described in a
    proposal (a model whose graph is too large)."""
    problems = []
    for b in p["bindings"]:
        schema = schemas.get((b["tag"], b["rank"]))
        if schema is None:
            continue  # schemas_of said why
        at = f"'{b['tag']}' at {proposals.party_of(p, b['rank'])['name']}"
        if b["kind"] == "model" and "architecture" in schema and schema["architecture"] is None:
            problems.append(f"the model {at} cannot be used in jobs: its graph without weights "
                            f"is too large to send in a proposal (over "
                            f"{architecture.MAX_BYTES // 1024} KB); publish a model that keeps "
                            f"its weights as initializers")
            continue
        problem = proposals.expectation_problem(b, schema, stated_only=True)
        if problem:
            problems.append(f"{at} {problem}")
    return problems


def _shape_problems(plan: dict[str, Any], schemas: dict[tuple[str, int], dict[str, Any]],
                    names: dict[int, str]) -> list[str]:
    """What cannot fit together in a plan, from the catalog schemas of its assets."""
    def schema(ref: dict[str, Any]) -> dict[str, Any]:
        return schemas[(ref["tag"], ref["rank"])]

    def at(ref: dict[str, Any]) -> str:
        return f"'{ref['tag']}' at {names[ref['rank']]}"

    problems = []
    if plan["kind"] == "inference":
        width, cols = _width(schema(plan["model"]), "inputs"), schema(plan["data"])["shape"][-1]
        if width is not None and width != cols:
            problems.append(f"the model {at(plan['model'])} takes {width} inputs, but "
                            f"{at(plan['data'])} has {cols} columns")
    elif plan["kind"] == "train":
        refs = plan["features"] + [plan["labels"]]
        rows = {at(r): schema(r)["shape"][0] for r in refs}
        if len(set(rows.values())) > 1:
            problems.append("the parties' rows differ (" + ", ".join(
                f"{k}: {v}" for k, v in rows.items()) + "); feature aggregation needs the same "
                "rows, in the same order, at every party")
    else:
        cols = {at(r): schema(r)["shape"][-1] for r in plan["data"]}
        if len(set(cols.values())) > 1:
            problems.append("the parties' columns differ (" + ", ".join(
                f"{k}: {v}" for k, v in cols.items()) + "); statistics over rows need the same "
                "columns at every party")
    return problems


def _failure_kind(state: dict[str, Any]) -> FailureKind | None:
    try:
        return FailureKind(state.get("detail", {}).get("failure_kind", ""))
    except ValueError:
        return None


def _primary_failure(states: dict[int, dict[str, Any]]) -> tuple[int, str] | None:
    """A party that failed on its own account (crashed, refused, ran out of a limit)."""
    for rank, state in sorted(states.items()):
        kind = _failure_kind(state)
        if state["state"] == JobState.FAILED and not (kind is not None and kind.secondary):
            return rank, state.get("reason") or state["state"]
    return None


def _root_cause(states: dict[int, dict[str, Any]]) -> tuple[int, str]:
    """Which party's end explains the others', from every party's state at first failure.

    A crashed party is named by its own node; the survivors' failure kinds say they only lost
    it (``FailureKind.secondary``). A party whose node stopped answering is the one that
    stopped. A frozen party says nothing: it is the one still 'running' while the others
    timed out on it."""
    failed = {r: s for r, s in states.items()
              if s["state"] in (JobState.FAILED, JobState.CANCELLED)}
    primary = _primary_failure(states)
    if primary is not None:
        return primary
    gone = sorted(r for r, s in states.items() if s["state"] == "unknown")
    if gone:
        return gone[0], "its node stopped answering (it stopped, or lost the network)"
    silent = sorted(r for r, s in states.items() if s["state"] == JobState.RUNNING)
    if silent and any(_failure_kind(s) is FailureKind.PEER_TIMEOUT for s in failed.values()):
        return silent[0], "stopped answering; the other parties timed out waiting for it"
    rank = sorted(failed)[0]
    return rank, failed[rank].get("reason") or failed[rank]["state"]
