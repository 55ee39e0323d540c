"""The node's two HTTP surfaces (aiohttp), JSON in and out, errors as RFC 9457 problems.

* **peer API** (``/peer/v1``), for other nodes: catalog, proposals, job control, events,
  results. Open on its address for now; node keys and pinned TLS come in a later layer, which
  is why handlers take what they need from the request body and never trust a caller identity.
* **admin API** (``/admin/v1``), for the owner's CLI and GUI: loopback only, and every request
  carries the local token from the data dir's node.json.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from node.core import PARTY, Node
from node.errors import ParleyError, ProposalError
from node.orchestrator import ORCH, Orchestrator

logger = logging.getLogger(__name__)
NODE = web.AppKey("node", Node)
ORCHESTRATOR = web.AppKey("orchestrator", Orchestrator)
TOKEN = web.AppKey("token", str)
MAX_BODY = 8 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str, ptype: str = "about:blank") -> web.Response:
    body = {"type": ptype, "title": title, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a problem document; never a bare 500 or a traceback."""
    try:
        return await handler(request)
    except ParleyError as exc:
        return problem(exc.http_status, type(exc).__name__, exc.message, exc.problem_type)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason, exc.text or exc.reason)
    except Exception:  # noqa: BLE001 - logged, and answered with a reason
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return problem(500, "Internal error", "the node hit an unexpected error; its log has "
                       "the details")


async def body_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ProposalError("the request body is not valid JSON") from None


def _query_float(request: web.Request, key: str, default: float, high: float) -> float:
    try:
        return min(max(float(request.query.get(key, default)), 0.0), high)
    except ValueError:
        raise ProposalError(f"query parameter {key} must be a number") from None


# -- peer API ------------------------------------------------------------------------------
async def peer_catalog(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].catalog(request.query.getall("tag", [])))


async def peer_propose(request: web.Request) -> web.Response:
    job = await request.app[NODE].receive_proposal(await body_json(request))
    return web.json_response(job.public(), status=201)


async def peer_job(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].jobs.get(request.match_info["job"], PARTY).public())


async def peer_start(request: web.Request) -> web.Response:
    body = await body_json(request)
    rendezvous = body.get("rendezvous") if isinstance(body, dict) else None
    out = await request.app[NODE].start_party(request.match_info["job"], rendezvous)
    return web.json_response(out)


async def peer_cancel(request: web.Request) -> web.Response:
    body = await body_json(request)
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    job = await request.app[NODE].cancel_party(request.match_info["job"], reason)
    return web.json_response(job.public())


async def peer_result(request: web.Request) -> web.Response:
    return web.json_response({"value": request.app[NODE].released_result(
        request.match_info["job"])})


async def events(request: web.Request) -> web.Response:
    node = request.app[NODE]
    after = int(_query_float(request, "after", 0, 2**62))
    timeout = _query_float(request, "timeout", 0, 30)
    found = await node.wait_events(after, request.query.get("job"), timeout)
    if request.app.get(TOKEN) is None:  # peers see party-role events only
        found = [e for e in found if e["role"] == PARTY]
    return web.json_response({"events": found})


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
        web.get("/peer/v1/events", events),
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
    node = request.app[NODE]
    return web.json_response({**node.identity(), "auto_approve": node.auto_approve,
                              "confinement": node.confinement,
                              "accept_reduced_isolation": node.accept_reduced_isolation,
                              "data_dir": str(node.data_dir),
                              "catalog_version": node.store.catalog_version()})


async def admin_assets(request: web.Request) -> web.Response:
    node = request.app[NODE]
    kind = request.query.get("kind")
    assets = node.store.list(request.query.getall("tag", []), kind=kind)
    return web.json_response({"assets": [a.public() for a in assets]})


async def admin_publish(request: web.Request) -> web.Response:
    body = await body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise ProposalError("expected {\"path\": \"/file.csv\", \"tags\": [...], ...}")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ProposalError("tags must be a list of strings")
    asset = await request.app[NODE].publish(
        body["path"], name=body.get("name"), tags=tags,
        description=str(body.get("description", "")), label_column=body.get("label_column"))
    return web.json_response(asset.public(), status=201)


async def admin_remove_asset(request: web.Request) -> web.Response:
    node = request.app[NODE]
    node.store.remove(request.match_info["asset"])
    node.notify()
    return web.json_response({"removed": request.match_info["asset"]})


async def admin_jobs(request: web.Request) -> web.Response:
    role = request.query.get("role")
    states = request.query.getall("state", [])
    jobs = request.app[NODE].jobs.list(role=role, states=states)
    return web.json_response({"jobs": [j.public() for j in jobs]})


async def admin_job(request: web.Request) -> web.Response:
    role = request.query.get("role")
    job = request.app[NODE].jobs.get(request.match_info["job"], role)
    return web.json_response(job.public(with_result=True))


async def admin_approve(request: web.Request) -> web.Response:
    body = await body_json(request) if request.can_read_body else {}
    phash = body.get("proposal_hash") if isinstance(body, dict) else None
    job = request.app[NODE].approve(request.match_info["job"], phash)
    return web.json_response(job.public())


async def admin_reject(request: web.Request) -> web.Response:
    body = await body_json(request) if request.can_read_body else {}
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    job = request.app[NODE].reject(request.match_info["job"], reason)
    return web.json_response(job.public())


async def admin_submit(request: web.Request) -> web.Response:
    job = await request.app[ORCHESTRATOR].submit(await body_json(request))
    return web.json_response(job.public(), status=201)


async def admin_cancel(request: web.Request) -> web.Response:
    body = await body_json(request) if request.can_read_body else {}
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    job = await request.app[ORCHESTRATOR].cancel(request.match_info["job"], reason)
    return web.json_response(job.public())


async def admin_result(request: web.Request) -> web.Response:
    job = request.app[NODE].jobs.get(request.match_info["job"], ORCH)
    return web.json_response(job.public(with_result=True))


async def admin_policies(request: web.Request) -> web.Response:
    return web.json_response({"policies": request.app[NODE].jobs.policies()})


def _policy_body(body: Any) -> tuple[str, str]:
    from node.plans import KINDS

    if not isinstance(body, dict) or not isinstance(body.get("orchestrator"), str) or \
            body.get("kind") not in (*KINDS, "source"):
        raise ProposalError("expected {\"orchestrator\": name, \"kind\": one of "
                            f"{', '.join((*KINDS, 'source'))}}}")
    return body["orchestrator"], body["kind"]


async def admin_add_policy(request: web.Request) -> web.Response:
    orchestrator, kind = _policy_body(await body_json(request))
    request.app[NODE].jobs.add_policy(orchestrator, kind)
    return web.json_response({"orchestrator": orchestrator, "kind": kind}, status=201)


async def admin_remove_policy(request: web.Request) -> web.Response:
    orchestrator, kind = _policy_body(await body_json(request))
    if not request.app[NODE].jobs.remove_policy(orchestrator, kind):
        raise ProposalError(f"no policy approves {kind} jobs from {orchestrator}")
    return web.json_response({"removed": {"orchestrator": orchestrator, "kind": kind}})


async def admin_dry_run(request: web.Request) -> web.Response:
    body = await body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("source"), str):
        raise ProposalError("expected {\"source\": \"def run(crypten): ...\", \"entry\": \"run\"}")
    entry = body.get("entry") or "run"
    return web.json_response(await request.app[NODE].dry_run(body["source"], str(entry)))


def admin_app(node: Node, orchestrator: Orchestrator, token: str) -> web.Application:
    app = web.Application(middlewares=[problems, owner_only], client_max_size=MAX_BODY)
    app[NODE] = node
    app[ORCHESTRATOR] = orchestrator
    app[TOKEN] = token
    app.add_routes([
        web.get("/admin/v1/status", admin_status),
        web.get("/admin/v1/assets", admin_assets),
        web.post("/admin/v1/assets", admin_publish),
        web.delete("/admin/v1/assets/{asset}", admin_remove_asset),
        web.get("/admin/v1/jobs", admin_jobs),
        web.get("/admin/v1/jobs/{job}", admin_job),
        web.post("/admin/v1/jobs/{job}/approve", admin_approve),
        web.post("/admin/v1/jobs/{job}/reject", admin_reject),
        web.post("/admin/v1/orchestrations", admin_submit),
        web.post("/admin/v1/orchestrations/{job}/cancel", admin_cancel),
        web.get("/admin/v1/orchestrations/{job}", admin_result),
        web.get("/admin/v1/events", events),
        web.get("/admin/v1/policies", admin_policies),
        web.post("/admin/v1/policies", admin_add_policy),
        web.delete("/admin/v1/policies", admin_remove_policy),
        web.post("/admin/v1/dry-run", admin_dry_run),
    ])
    return app

