"""The node's two HTTP surfaces (aiohttp), JSON in and out, errors as RFC 9457 problems.

* **peer API** (``/peer/v1``), for other nodes: catalog, proposals, job control, events,
  results. TLS pinned both ways; every request but the pairing handshake is signed by a paired
  node, and handlers act for the node id that signed (``sender_of``).
* **admin API** (``/admin/v1``), for the owner's CLI and GUI: loopback only, and every request
  carries the local token from the data dir's node.json. Its contract with the GUI, event kinds
  included, is gui/CONTRACT.md.

Handlers run storage work (SQLite writes, fsyncs, the audit chain check) in threads, so one
slow disk write never stalls the other requests and the event stream.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node import settings
from node.address import format_address, parse_address
from node.core import PARTY, Node
from node.errors import AuthError, DiskFull, ParleyError, ProposalError, UnknownJob
from node.orchestrator import ORCH, Orchestrator
from node.wire import JsonTooDeep, loads_bounded

__all__ = ["MAX_BODY", "NODE", "ORCHESTRATOR", "SHUTDOWN", "TOKEN", "admin_app", "body_json",
           "owner_only", "peer_app", "problem", "problems", "sender_of"]

logger = logging.getLogger(__name__)
NODE = web.AppKey("node", Node)
ORCHESTRATOR = web.AppKey("orchestrator", Orchestrator)
TOKEN = web.AppKey("token", str)
SHUTDOWN = web.AppKey("shutdown", asyncio.Event)
MAX_BODY = 8 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC or a quota from the OS, or SQLite's 'database or disk is full'."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc) or getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"


def problem(status: int, title: str, detail: str, ptype: str = "about:blank") -> web.Response:
    body = {"type": ptype, "title": title, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a problem document; never a bare 500 or a traceback."""
    try:
        return await handler(request)
    except AuthError as exc:
        return problem(401, "Unauthorized", f"{exc.message} (reason: {exc.reason})",
                       exc.problem_type)
    except ParleyError as exc:
        return problem(exc.http_status, type(exc).__name__, exc.message, exc.problem_type)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason, exc.text or exc.reason)
    except RecursionError:  # a request nested past what a handler walks: one line, no traceback
        logger.warning("%s %s: nested too deeply to handle (RecursionError)", request.method,
                       request.path)
        return problem(400, "Nested too deeply", "the request is nested too deeply for the "
                       "node to read; send a flatter document", JsonTooDeep.problem_type)
    except (OSError, sqlite3.Error) as exc:
        if not _disk_full(exc):
            logger.exception("unexpected error in %s %s", request.method, request.path)
            return problem(500, "Internal error", "the node hit an unexpected error; its log "
                           "has the details")
        node = request.app.get(NODE)
        where = str(node.data_dir) if node is not None else "the node's data dir"
        logger.error("%s %s: the disk holding %s is full", request.method, request.path, where)
        return problem(507, "Disk full", f"the disk holding this node's data ({where}) is full, "
                       f"so nothing was saved; free some space there and try again",
                       DiskFull.problem_type)
    except Exception:  # logged, and answered with a reason
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return problem(500, "Internal error", "the node hit an unexpected error; its log has "
                       "the details")


async def body_json(request: web.Request) -> Any:
    """The request's JSON body; ``JsonTooDeep`` (400) past ``MAX_JSON_DEPTH`` levels."""
    try:
        return await request.json(loads=loads_bounded)
    except (ValueError, UnicodeDecodeError):
        raise ProposalError("the request body is not valid JSON") from None


def _query_float(request: web.Request, key: str, default: float, high: float) -> float:
    try:
        return min(max(float(request.query.get(key, default)), 0.0), high)
    except ValueError:
        raise ProposalError(f"query parameter {key} must be a number") from None


# -- peer API ------------------------------------------------------------------------------
async def sender_of(request: web.Request) -> str:
    """Every peer request but the pairing handshake is signed by a paired node."""
    return await request.app[NODE].authenticate(request)


async def peer_catalog(request: web.Request) -> web.Response:
    await sender_of(request)
    return web.json_response(await asyncio.to_thread(request.app[NODE].catalog,
                                                     request.query.getall("tag", [])))


async def peer_propose(request: web.Request) -> web.Response:
    sender = await sender_of(request)
    job = await request.app[NODE].receive_proposal(await body_json(request), sender)
    return web.json_response(job.for_orchestrator(), status=201)


async def peer_job(request: web.Request) -> web.Response:
    sender = await sender_of(request)
    return await _json_off_loop(request.app[NODE].job_for_orchestrator,
                                request.match_info["job"], sender)


async def peer_start(request: web.Request) -> web.Response:
    sender = await sender_of(request)
    body = await body_json(request)
    rendezvous = body.get("rendezvous") if isinstance(body, dict) else None
    out = await request.app[NODE].start_party(request.match_info["job"], rendezvous, sender)
    return web.json_response(out)


async def peer_cancel(request: web.Request) -> web.Response:
    sender = await sender_of(request)
    body = await body_json(request)
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    job = await request.app[NODE].cancel_party(request.match_info["job"], reason, sender)
    return web.json_response(job.for_orchestrator())


async def peer_result(request: web.Request) -> web.Response:
    sender = await sender_of(request)
    return await _json_off_loop(request.app[NODE].released_result, request.match_info["job"],
                                sender)


async def _json_off_loop(call: Callable[..., Any], *args: Any) -> web.Response:
    """``call(*args)`` as a JSON response, the call and the encoding on a thread: a result can
    be megabytes, and its audit record is written to disk (the loop serves every party)."""
    body = await asyncio.to_thread(lambda: json.dumps(call(*args)))
    return web.Response(text=body, content_type="application/json")


async def peer_events(request: web.Request) -> web.Response:
    """Events of the jobs the asking node orchestrates."""
    sender = await sender_of(request)
    node = request.app[NODE]
    found = await _wait_events(request, role=PARTY)

    def orchestrated_by_sender(job_ids: set[str]) -> set[str]:  # the jobs of these events only:
        mine = set()  # what an answer costs does not grow with the node's history
        for job_id in job_ids:
            try:
                job = node.job(job_id, PARTY)
            except UnknownJob:
                continue
            if job.proposal["orchestrator"].get("node_id") == sender:
                mine.add(job_id)
        return mine

    mine = await asyncio.to_thread(orchestrated_by_sender, {e["job_id"] for e in found})
    return web.json_response({"events": [e for e in found if e["job_id"] in mine]})


async def peer_whoami(request: web.Request) -> web.Response:
    """Unauthenticated and public, like an mDNS record: it proves nothing."""
    node = request.app[NODE]
    return web.json_response({"node_id": node.node_id, "name": node.name,
                              "catalog_version": node.catalog_version()})


async def pairing_hello(request: web.Request) -> web.Response:
    node = request.app[NODE]
    answer = await asyncio.to_thread(node.pairing_hello, await body_json(request),
                                     request.remote or "")
    return web.json_response(answer)


async def pairing_reveal(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await asyncio.to_thread(node.pairing_reveal, request.match_info["pairing"],
                            await body_json(request))
    return web.json_response({"ok": True})


async def pairing_confirm(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.pairing_confirmed_by_peer(request.match_info["pairing"], request)
    return web.json_response({"ok": True})


async def peer_unpair(request: web.Request) -> web.Response:
    """A paired node unpaired this one and says so, signed: it is revoked here too."""
    peer = await request.app[NODE].unpaired_by_peer(request)
    return web.json_response({"ok": True, "revoked": peer.node_id})


async def _wait_events(request: web.Request, role: str | None = None) -> list[dict[str, Any]]:
    """Long poll: events after ``after``, waiting up to ``timeout`` s (at most 30)."""
    after = int(_query_float(request, "after", 0, 2**62))
    timeout = _query_float(request, "timeout", 0, 30)
    return await request.app[NODE].wait_events(after, timeout, request.query.get("job"),
                                               role or request.query.get("role"))


async def events(request: web.Request) -> web.Response:
    found = await _wait_events(request)
    last = found[-1]["seq"] if found else int(_query_float(request, "after", 0, 2**62))
    return web.json_response({"events": found, "last_seq": last})


def peer_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[problems], client_max_size=MAX_BODY)
    app[NODE] = node
    app.add_routes([
        web.get("/peer/v1/catalog", peer_catalog),
        web.post("/peer/v1/proposals", peer_propose),
        web.get("/peer/v1/jobs/{job}", peer_job),
        web.post("/peer/v1/jobs/{job}/start", peer_start),
        web.post("/peer/v1/jobs/{job}/cancel", peer_cancel),
        web.get("/peer/v1/jobs/{job}/result", peer_result),
        web.get("/peer/v1/events", peer_events),
        web.get("/peer/v1/whoami", peer_whoami),
        web.post("/peer/v1/pairing/hello", pairing_hello),
        web.post("/peer/v1/pairing/{pairing}/reveal", pairing_reveal),
        web.post("/peer/v1/pairing/{pairing}/confirm", pairing_confirm),
        web.post("/peer/v1/unpair", peer_unpair),
    ])
    return app


# -- admin API -----------------------------------------------------------------------------
@web.middleware
async def owner_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    remote = request.remote or ""
    try:
        loopback = ipaddress.ip_address(remote).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return problem(403, "Forbidden", "the admin API answers only on this machine")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), request.app[TOKEN].encode()):
        return problem(401, "Unauthorized", "missing or wrong admin token; the CLI reads it "
                       "from the node's data dir (node.json)")
    return await handler(request)


async def admin_status(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(request.app[NODE].status))


async def admin_assets(request: web.Request) -> web.Response:
    node = request.app[NODE]
    kind = request.query.get("kind")
    assets = await asyncio.to_thread(node.assets, request.query.getall("tag", []), kind)
    return web.json_response({"assets": [a.public() for a in assets]})


async def admin_publish(request: web.Request) -> web.Response:
    body = await body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise ProposalError("expected {\"path\": \"/file.csv\", \"tags\": [...], ...}")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ProposalError("tags must be a list of strings")
    import_id = body.get("import_id")
    privacy = body.get("privacy")
    if privacy is not None and (not isinstance(privacy, dict)
                                or set(privacy) - {"min_rows", "dp"}):
        raise ProposalError("privacy must be {\"min_rows\": n, \"dp\": {...} or null}")
    asset = await request.app[NODE].publish(
        body["path"], name=body.get("name"), tags=tags,
        description=str(body.get("description", "")), label_column=body.get("label_column"),
        import_id=str(import_id) if import_id else None, privacy=privacy)
    warnings = await asyncio.to_thread(request.app[NODE].tag_warnings, asset)
    return web.json_response({**asset.public(), "warnings": warnings}, status=201)


async def admin_cancel_import(request: web.Request) -> web.Response:
    import_id = request.match_info["import"]
    if not request.app[NODE].cancel_import(import_id):
        raise ProposalError(f"no import {import_id} is running (it may have finished)")
    return web.json_response({"cancelling": import_id})


async def admin_update_asset(request: web.Request) -> web.Response:
    body = await body_json(request)
    if not isinstance(body, dict):
        raise ProposalError("expected {\"name\": ..., \"tags\": [...], \"description\": ...}")
    changes = {k: body[k] for k in ("name", "tags", "description", "privacy")
               if body.get(k) is not None}
    if "tags" in changes and (not isinstance(changes["tags"], list) or not all(
            isinstance(t, str) for t in changes["tags"])):
        raise ProposalError("tags must be a list of strings")
    if "privacy" in changes and not isinstance(changes["privacy"], dict):
        raise ProposalError("privacy must be {\"min_rows\": n, \"dp\": {...} or null}")
    asset = await asyncio.to_thread(request.app[NODE].update_asset, request.match_info["asset"],
                                    **{k: v if k in ("tags", "privacy") else str(v)
                                       for k, v in changes.items()})
    return web.json_response(asset.public())


async def admin_preview_asset(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(request.app[NODE].preview,
                                                     request.match_info["asset"]))


async def admin_remove_asset(request: web.Request) -> web.Response:
    await asyncio.to_thread(request.app[NODE].remove_asset, request.match_info["asset"])
    return web.json_response({"removed": request.match_info["asset"]})


async def admin_jobs(request: web.Request) -> web.Response:
    role = request.query.get("role")
    states = request.query.getall("state", [])
    jobs = await asyncio.to_thread(request.app[NODE].job_list, role, states)
    return web.json_response({"jobs": [j.public() for j in jobs]})


async def admin_job(request: web.Request) -> web.Response:
    role = request.query.get("role")
    job = await asyncio.to_thread(request.app[NODE].job, request.match_info["job"], role)
    return web.json_response(job.public(with_result=True))


async def admin_review(request: web.Request) -> web.Response:
    """What the owner reviews before deciding: the code, reads, reveals, warnings, diff."""
    job = await asyncio.to_thread(request.app[NODE].job, request.match_info["job"], PARTY)
    material = job.detail.get("review")
    if material is None:
        raise UnknownJob(f"job {job.id} has no review material")
    info = job.public()
    return web.json_response({**material, "job_id": job.id, "state": job.state,
                              "reason": job.reason, "proposal_hash": job.proposal_hash,
                              "title": info["title"], "kind": info["kind"],
                              "result_to": job.proposal["reveal"]["result_to"]})


async def admin_approve(request: web.Request) -> web.Response:
    body = await body_json(request) if request.can_read_body else {}
    body = body if isinstance(body, dict) else {}
    job = await asyncio.to_thread(request.app[NODE].approve, request.match_info["job"],
                                  str(body.get("proposal_hash") or ""),
                                  bool(body.get("always")))
    return web.json_response(job.public())


async def admin_reject(request: web.Request) -> web.Response:
    body = await body_json(request) if request.can_read_body else {}
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    job = await asyncio.to_thread(request.app[NODE].reject, request.match_info["job"], reason)
    return web.json_response(job.public())


async def admin_job_dry_run(request: web.Request) -> web.Response:
    """A received proposal run here alone, on mock data shaped like the real assets."""
    node = request.app[NODE]
    job = await asyncio.to_thread(node.job, request.match_info["job"], PARTY)
    network = request.app[ORCHESTRATOR].network
    shapes = await network.schemas_elsewhere(job.proposal, job.party_rank)
    return web.json_response(await node.dry_run_proposal(job.id, shapes))


async def admin_submit(request: web.Request) -> web.Response:
    job = await request.app[ORCHESTRATOR].submit(await body_json(request))
    return web.json_response(job.public(), status=201)


async def admin_cancel(request: web.Request) -> web.Response:
    body = await body_json(request) if request.can_read_body else {}
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    job = await request.app[ORCHESTRATOR].cancel(request.match_info["job"], reason)
    return web.json_response(job.public())


async def admin_result(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return await _json_off_loop(lambda: node.job(request.match_info["job"], ORCH).public(
        with_result=True))


async def admin_policies(request: web.Request) -> web.Response:
    return web.json_response({"policies": await asyncio.to_thread(request.app[NODE].policies)})


def _policy_body(body: Any) -> tuple[str, str]:
    from node.plans import POLICY_KINDS

    kinds = ", ".join(POLICY_KINDS)
    if not isinstance(body, dict) or not isinstance(body.get("orchestrator"), str) or \
            not body["orchestrator"]:
        raise ProposalError(f"name the orchestrator (a paired peer's name or node id) and a "
                            f"job kind ({kinds})")
    if body.get("kind") not in POLICY_KINDS:
        raise ProposalError(f"the job kind must be one of {kinds}, not "
                            f"{str(body.get('kind') or 'nothing')!r}")
    return body["orchestrator"], body["kind"]


async def admin_add_policy(request: web.Request) -> web.Response:
    orchestrator, kind = _policy_body(await body_json(request))
    out = await asyncio.to_thread(request.app[NODE].add_policy, orchestrator, kind)
    return web.json_response(out, status=201)


async def admin_remove_policy(request: web.Request) -> web.Response:
    orchestrator, kind = _policy_body(await body_json(request))
    out = await asyncio.to_thread(request.app[NODE].remove_policy, orchestrator, kind)
    return web.json_response({"removed": out})


async def admin_dry_run(request: web.Request) -> web.Response:
    body = await body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("source"), str):
        raise ProposalError("expected {\"source\": \"def run(crypten): ...\", \"entry\": \"run\"}")
    entry = body.get("entry") or "run"
    time_s = body.get("time_s", 180)
    if not isinstance(time_s, (int, float)) or isinstance(time_s, bool) or not 0 < time_s <= 86400:
        raise ProposalError("time_s: a number of seconds in (0, 86400]")
    schemas = await request.app[ORCHESTRATOR].network.schemas_of_tags(body["source"], str(entry))
    return web.json_response(await request.app[NODE].dry_run(body["source"], str(entry),
                                                             time_s=float(time_s),
                                                             schemas=schemas))


async def admin_check_source(request: web.Request) -> web.Response:
    """The static check alone, for an editor that marks problems as the owner types."""
    from node.jail import static

    body = await body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("source"), str):
        raise ProposalError("expected {\"source\": \"def run(crypten): ...\", \"entry\": \"run\"}")
    try:
        await asyncio.to_thread(static.check, body["source"], str(body.get("entry") or "run"))
    except static.JailRejected as exc:
        return web.json_response({"problems": [{"line": exc.line, "col": getattr(exc, "col", 0),
                                                "rule": exc.rule, "message": exc.detail}]})
    return web.json_response({"problems": []})


async def admin_compose_check(request: web.Request) -> web.Response:
    """A job spec checked before it is sent: what every party would review, what cannot work,
    and what it may cost."""
    return web.json_response(await request.app[ORCHESTRATOR].check(await body_json(request)))


async def admin_benchmark(request: web.Request) -> web.Response:
    """The same computation as a finished job, run here as plain CrypTen and as plaintext."""
    from node.bench import benchmark_job

    job = await asyncio.to_thread(request.app[NODE].job, request.match_info["job"], ORCH)
    return web.json_response(await benchmark_job(request.app[ORCHESTRATOR], job))


async def admin_peers(request: web.Request) -> web.Response:
    return web.json_response({"peers": await asyncio.to_thread(request.app[NODE].peers)})


async def admin_pair(request: web.Request) -> web.Response:
    body = await body_json(request)
    node = request.app[NODE]
    target = body.get("peer") if isinstance(body, dict) else None
    if not isinstance(target, str):
        raise ProposalError("expected {\"peer\": NAME or HOST:PORT}")
    pairing = await node.pair(target)
    return web.json_response(pairing.public(node.node_id), status=201)


async def admin_pairings(request: web.Request) -> web.Response:
    return web.json_response({"pairings": request.app[NODE].pairings()})


async def admin_pairing_decide(request: web.Request) -> web.Response:
    node = request.app[NODE]
    pairing_id, action = request.match_info["pairing"], request.match_info["action"]
    if action not in ("confirm", "reject"):
        raise web.HTTPNotFound()
    pairing = await node.decide_pairing(pairing_id, action == "confirm")
    return web.json_response(pairing.public(node.node_id))


async def admin_unpair(request: web.Request) -> web.Response:
    peer = await asyncio.to_thread(request.app[NODE].unpair, request.match_info["peer"])
    return web.json_response(peer.public())


async def admin_add_peer(request: web.Request) -> web.Response:
    body = await body_json(request)
    host, port = parse_address(body.get("address") if isinstance(body, dict) else None)
    node = request.app[NODE]
    await asyncio.to_thread(node.add_manual_peer, format_address(host, port))
    await request.app[ORCHESTRATOR].network.probe_manual()
    return web.json_response({"added": format_address(host, port)}, status=201)


async def admin_search(request: web.Request) -> web.Response:
    tags = request.query.getall("tag", [])
    wait = _query_float(request, "timeout", 3.0, 30)
    return web.json_response(await request.app[ORCHESTRATOR].network.search(tags, wait))


async def admin_audit(request: web.Request) -> web.Response:
    """The log, its chain verified; ``kind``, ``peer`` and ``job`` filter the entries shown."""
    return web.json_response(await asyncio.to_thread(
        request.app[NODE].audit_report, int(_query_float(request, "after", 0, 2**62)),
        request.query.get("kind") or None, request.query.get("peer") or None,
        request.query.get("job") or None))


async def admin_settings(request: web.Request) -> web.Response:
    node = request.app[NODE]
    saved = await asyncio.to_thread(settings.load, node.data_dir)
    return web.json_response({"saved": saved, "running": {
        "name": node.name, "host": node.host, "port": node.peer_port,
        "data_dir": str(node.data_dir)}})


async def admin_put_settings(request: web.Request) -> web.Response:
    node = request.app[NODE]
    saved = await asyncio.to_thread(settings.save, node.data_dir, await body_json(request))
    return web.json_response({"saved": saved, "applies": "when the node restarts"})


async def admin_shutdown(request: web.Request) -> web.Response:
    """The owner quits the app and asks the node to stop too (jobs running here end)."""
    request.app[SHUTDOWN].set()
    return web.json_response({"stopping": True})


def admin_app(node: Node, orchestrator: Orchestrator, token: str,
              shutdown: asyncio.Event | None = None) -> web.Application:
    app = web.Application(middlewares=[problems, owner_only], client_max_size=MAX_BODY)
    app[NODE] = node
    app[ORCHESTRATOR] = orchestrator
    app[TOKEN] = token
    app[SHUTDOWN] = shutdown or asyncio.Event()
    app.add_routes([
        web.get("/admin/v1/status", admin_status),
        web.get("/admin/v1/assets", admin_assets),
        web.post("/admin/v1/assets", admin_publish),
        web.delete("/admin/v1/assets/{asset}", admin_remove_asset),
        web.patch("/admin/v1/assets/{asset}", admin_update_asset),
        web.get("/admin/v1/assets/{asset}/preview", admin_preview_asset),
        web.post("/admin/v1/imports/{import}/cancel", admin_cancel_import),
        web.get("/admin/v1/jobs", admin_jobs),
        web.get("/admin/v1/jobs/{job}", admin_job),
        web.post("/admin/v1/jobs/{job}/approve", admin_approve),
        web.post("/admin/v1/jobs/{job}/reject", admin_reject),
        web.get("/admin/v1/jobs/{job}/review", admin_review),
        web.post("/admin/v1/jobs/{job}/dry-run", admin_job_dry_run),
        web.post("/admin/v1/orchestrations", admin_submit),
        web.post("/admin/v1/orchestrations/{job}/cancel", admin_cancel),
        web.get("/admin/v1/orchestrations/{job}", admin_result),
        web.get("/admin/v1/events", events),
        web.get("/admin/v1/policies", admin_policies),
        web.post("/admin/v1/policies", admin_add_policy),
        web.delete("/admin/v1/policies", admin_remove_policy),
        web.post("/admin/v1/dry-run", admin_dry_run),
        web.post("/admin/v1/check-source", admin_check_source),
        web.post("/admin/v1/compose/check", admin_compose_check),
        web.post("/admin/v1/orchestrations/{job}/benchmark", admin_benchmark),
        web.get("/admin/v1/peers", admin_peers),
        web.post("/admin/v1/peers", admin_add_peer),
        web.delete("/admin/v1/peers/{peer}", admin_unpair),
        web.post("/admin/v1/pairings", admin_pair),
        web.get("/admin/v1/pairings", admin_pairings),
        web.post("/admin/v1/pairings/{pairing}/{action}", admin_pairing_decide),
        web.get("/admin/v1/search", admin_search),
        web.get("/admin/v1/audit", admin_audit),
        web.get("/admin/v1/settings", admin_settings),
        web.put("/admin/v1/settings", admin_put_settings),
        web.post("/admin/v1/shutdown", admin_shutdown),
    ])
    return app

