"""Job proposals: their shape, their validation, and how a party checks one against its store.

A proposal is JSON. The orchestrator sends the same proposal to every party; its hash is what
an owner approves. Shape (version 1)::

    {"version": 1, "job_id": "j-…", "title": "…",
     "orchestrator": {"name": "carol", "url": "https://…", "node_id": "n-…"},
     "parties": [{"name": "alice", "url": "https://…", "node_id": "n-…", "rank": 0}, …],
     "code": {"kind": "source", "source": "def run(crypten): …", "entry": "run"}
          or {"kind": "plan", "plan": {…}}  (node/plans.py; rendered to Python by each node),
     "bindings": [{"tag": "bc-model", "rank": 0, "kind": "model"},
                  {"tag": "bc-data", "rank": 1, "kind": "dataset",
                   "expect": {"shape": [null, 30], "labels": false}}],
     "reveal": {"to": [0],              ranks get_plain_text(dst=rank) may decrypt to
                "everyone": false,      whether get_plain_text() (to every party) is allowed
                "budget": 1000000,      elements a job may decrypt in all
                "result_to": [0]},      ranks whose return value goes back to the orchestrator
     "limits": {"time_s": 600, "op_timeout_s": 10, "rendezvous_timeout_s": 60},
     "crypten": {"precision_bits": 16}}     optional: CrypTen's fixed-point precision
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from node import plans
from node.errors import ProposalError, StoreError
from node.wire import digest

VERSION = 1
DEFAULT_LIMITS = {"time_s": 600.0, "op_timeout_s": 10.0, "rendezvous_timeout_s": 60.0,
                  "approval_s": 86400.0, "memory_mb": 8192.0}
DEFAULT_BUDGET = 1_000_000
_ID = re.compile(r"^j-[0-9a-f]{8,32}$")
_ENTRY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_SOURCE = 100_000


def new_job_id() -> str:
    return "j-" + uuid.uuid4().hex[:16]


def proposal_hash(proposal: dict[str, Any]) -> str:
    return digest(proposal)


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ProposalError(f"proposal {where}: {what}")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(p: Any) -> dict[str, Any]:
    """Check a proposal's shape; ``ProposalError`` naming the first field that is wrong."""
    _need(isinstance(p, dict), "", "must be a JSON object")
    _need(p.get("version") == VERSION, "version", f"must be {VERSION}")
    _need(isinstance(p.get("job_id"), str) and bool(_ID.match(p["job_id"])), "job_id",
          "must look like j-<hex>")
    _need(isinstance(p.get("title", ""), str) and len(p.get("title", "")) <= 200, "title",
          "must be a string of at most 200 characters")
    orch = p.get("orchestrator")
    _need(isinstance(orch, dict) and isinstance(orch.get("name"), str)
          and isinstance(orch.get("url"), str) and isinstance(orch.get("node_id"), str),
          "orchestrator", "needs a name, a url and a node id")
    parties = p.get("parties")
    _need(isinstance(parties, list) and 2 <= len(parties) <= 16, "parties",
          "must list 2 to 16 parties")
    for i, party in enumerate(parties):
        _need(isinstance(party, dict) and isinstance(party.get("name"), str)
              and isinstance(party.get("url"), str) and _int(party.get("rank"))
              and isinstance(party.get("node_id"), str),
              f"parties[{i}]", "needs a name, a url, a node id and an integer rank")
    ids = [party["node_id"] for party in parties]
    twice = next((i for i in ids if ids.count(i) > 1), None)
    _need(twice is None, "parties", f"node {twice} is named more than once; each party "
          f"plays one rank")
    ranks = sorted(party["rank"] for party in parties)
    _need(ranks == list(range(len(parties))), "parties", "ranks must be 0..n-1, each once")
    code = p.get("code")
    _need(isinstance(code, dict) and code.get("kind") in ("source", "plan"), "code.kind",
          "must be 'source' or 'plan'")
    if code["kind"] == "source":
        _need(set(code) == {"kind", "source", "entry"}, "code", "needs source and entry only")
        _need(isinstance(code.get("source"), str) and 0 < len(code["source"]) <= MAX_SOURCE,
              "code.source", f"must be non-empty text of at most {MAX_SOURCE} characters")
        _need(isinstance(code.get("entry"), str) and bool(_ENTRY.match(code["entry"])),
              "code.entry", "must be a function name")
    else:
        _need(set(code) == {"kind", "plan"}, "code", "needs the plan only")
        plans.validate(code.get("plan"), len(parties))
    bindings = p.get("bindings")
    _need(isinstance(bindings, list), "bindings", "must be a list")
    seen = set()
    for i, b in enumerate(bindings):
        where = f"bindings[{i}]"
        _need(isinstance(b, dict) and isinstance(b.get("tag"), str) and b["tag"], where,
              "needs a tag")
        _need(_int(b.get("rank")) and 0 <= b["rank"] < len(parties), where + ".rank",
              "must be one of the parties' ranks")
        _need(b.get("kind") in ("dataset", "model"), where + ".kind",
              "must be 'dataset' or 'model'")
        _need((b["tag"], b["rank"]) not in seen, where, f"'{b['tag']}' is bound twice at rank "
              f"{b['rank']}")
        seen.add((b["tag"], b["rank"]))
        expect = b.get("expect", {})
        _need(isinstance(expect, dict), where + ".expect", "must be an object")
        shape = expect.get("shape")
        _need(shape is None or (isinstance(shape, list) and all(d is None or _int(d)
                                                                 for d in shape)),
              where + ".expect.shape", "must be a list of integers or nulls")
    reveal = p.get("reveal")
    _need(isinstance(reveal, dict), "reveal", "must be an object")
    for key in ("to", "result_to"):
        _need(isinstance(reveal.get(key), list)
              and all(_int(r) and 0 <= r < len(parties) for r in reveal[key]),
              f"reveal.{key}", "must list ranks of the parties")
    _need(isinstance(reveal.get("everyone"), bool), "reveal.everyone", "must be true or false")
    _need(_int(reveal.get("budget")) and 0 <= reveal["budget"] <= 10**9, "reveal.budget",
          "must be a number of elements, 0..10^9")
    _need(set(reveal) <= {"to", "everyone", "budget", "result_to"}, "reveal",
          "unknown key")
    if code["kind"] == "plan":
        plan = code["plan"]
        key = lambda b: (b["tag"], b["rank"], b["kind"])  # noqa: E731
        _need(sorted(map(key, bindings)) == sorted(map(key, plans.bindings(plan))), "bindings",
              "must be the ones the plan implies")
        _need(reveal["to"] == [plan["output_to"]] and not reveal["everyone"], "reveal",
              "must reveal to the plan's output_to only")
    limits = p.get("limits", {})
    _need(isinstance(limits, dict), "limits", "must be an object")
    for key, value in limits.items():
        _need(key in DEFAULT_LIMITS and isinstance(value, (int, float)) and 0 < value <= 86400,
              f"limits.{key}", "unknown limit or out of range (0, 86400] s")
    options = p.get("crypten", {})
    _need(isinstance(options, dict) and set(options) <= {"precision_bits"}, "crypten",
          "may only set precision_bits")
    bits = options.get("precision_bits", 16)
    _need(_int(bits) and 8 <= bits <= 24, "crypten.precision_bits", "must be an integer 8..24")
    return p


def job_code(p: dict[str, Any]) -> tuple[str, str]:
    """(source, entry) that runs: the sent source, or the plan rendered by this node."""
    code = p["code"]
    if code["kind"] == "plan":
        return plans.render(code["plan"])
    return code["source"], code["entry"]


def code_kind(p: dict[str, Any]) -> str:
    """'source', or the plan's kind ('inference', 'train', 'statistics')."""
    code = p["code"]
    return code["plan"]["kind"] if code["kind"] == "plan" else "source"


def limits(p: dict[str, Any]) -> dict[str, float]:
    return {**DEFAULT_LIMITS, **p.get("limits", {})}


def check_against_store(p: dict[str, Any], rank: int, store: Any
                        ) -> dict[str, dict[str, dict[str, Any]]]:
    """What the party of ``rank`` needs to run ``p``: for every bound tag, the ranks that hold
    it (a tag may be bound at several ranks: rows split across parties) with kind and, for
    this party's own assets, the asset id.

    Raises ProposalError when this party's bindings do not match what it holds."""
    assets: dict[str, dict[str, dict[str, Any]]] = {}
    for b in p["bindings"]:
        entry: dict[str, Any] = {"rank": b["rank"], "kind": b["kind"]}
        if b["rank"] == rank:
            try:
                asset = store.by_tag(b["tag"])
            except StoreError as exc:
                raise ProposalError(f"this node cannot provide '{b['tag']}': {exc.message}") from None
            if asset.kind != b["kind"]:
                raise ProposalError(f"'{b['tag']}' here is a {asset.kind}, but the job "
                                    f"expects a {b['kind']}")
            if asset.kind == "dataset":
                shape = asset.schema["shape"]
                want = b.get("expect", {}).get("shape")
                if want is not None and (len(want) != len(shape) or any(
                        w is not None and w != s for w, s in zip(want, shape))):
                    shown = ["any" if w is None else w for w in want]
                    raise ProposalError(f"'{b['tag']}' here has shape {shape}, but the job "
                                        f"expects {shown}")
                label = asset.schema.get("label")
                if b.get("expect", {}).get("labels") and not label:
                    raise ProposalError(f"'{b['tag']}' here has no label column, but the job "
                                        f"expects labels")
            entry["asset_id"] = asset.id
        assets.setdefault(b["tag"], {})[str(b["rank"])] = entry
    return assets


def party_of(p: dict[str, Any], rank: int) -> dict[str, Any]:
    return next(party for party in p["parties"] if party["rank"] == rank)
