"""Job proposals: their shape, their validation, and how a party checks one against its store.

A proposal is JSON. The orchestrator sends the same proposal to every party; its hash is what
an owner approves. Shape (version 1)::

    {"version": 1, "job_id": "j-…", "title": "…",
     "orchestrator": {"name": "carol", "url": "https://…", "node_id": "n-…"},
     "parties": [{"name": "alice", "url": "https://…", "node_id": "n-…", "rank": 0}, …],
     "code": {"kind": "source", "source": "def run(crypten): …", "entry": "run"}
          or {"kind": "plan", "plan": {…}}  (node/plans.py; rendered to Python by each node),
     "bindings": [{"tag": "bc-model", "rank": 0, "kind": "model",
                   "expect": {"architecture": "CAgSB…"}},
                  {"tag": "bc-data", "rank": 1, "kind": "dataset",
                   "expect": {"shape": [399, 30], "labels": true, "label_shape": [399]}}],
     "reveal": {"to": [0],              ranks get_plain_text(dst=rank) may decrypt to
                "everyone": false,      whether get_plain_text() (to every party) is allowed
                "budget": 1000000,      elements a job may decrypt in all
                "result_to": [0]},      ranks whose return value goes back to the orchestrator
     "limits": {"time_s": 600, "op_timeout_s": 10, "rendezvous_timeout_s": 60},
     "crypten": {"precision_bits": 16}}     optional: CrypTen's fixed-point precision

A binding's ``expect`` is what the job may assume of the asset, and the one rule for it: the
holder's node refuses the job when its asset differs (``check_against_store``, at arrival and
again at start), and every other party relies on it. The orchestrator fills it from the
holder's catalog when it submits (node/orchestrator.py): a dataset's ``shape`` (a null
dimension, in a proposal written by hand, means any), whether it has ``labels`` and their
``label_shape``; a model's ``architecture`` (node/architecture.py: its ONNX graph without
weights). With a dataset's shape and a model's architecture stated, the parties know them
without a word on the wire; see node/jail/job_api.py.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from node import architecture, plans
from node.errors import ProposalError, StoreError
from node.privacy import DEFAULT_MIN_ROWS, MAX_MIN_ROWS
from node.privacy import settings_of as privacy_settings
from node.store import TAG_RULE, is_tag
from node.wire import digest

__all__ = ["DEFAULT_BUDGET", "DEFAULT_LIMITS", "MAX_SOURCE", "VERSION", "check_against_store",
           "code_kind", "expectation_problem", "expectations", "job_code", "limits", "min_rows_of",
           "new_job_id", "party_entry", "party_of", "proposal_hash", "validate"]

VERSION = 1
DEFAULT_LIMITS = {"time_s": 600.0, "op_timeout_s": 10.0, "rendezvous_timeout_s": 60.0,
                  "approval_s": 86400.0, "memory_mb": 8192.0}
DEFAULT_BUDGET = 1_000_000
_ID = re.compile(r"^j-[0-9a-f]{8,32}$")
_ENTRY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_SOURCE = 100_000
_EXPECT = {"dataset": {"shape", "labels", "label_shape", "min_rows", "dp"},
           "model": {"architecture"}}


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
        _need(isinstance(b, dict) and is_tag(b.get("tag")), where + ".tag",
              f"needs a tag: {TAG_RULE}")
        _need(_int(b.get("rank")) and 0 <= b["rank"] < len(parties), where + ".rank",
              "must be one of the parties' ranks")
        _need(b.get("kind") in ("dataset", "model"), where + ".kind",
              "must be 'dataset' or 'model'")
        _need((b["tag"], b["rank"]) not in seen, where, f"'{b['tag']}' is bound twice at rank "
              f"{b['rank']}")
        seen.add((b["tag"], b["rank"]))
        expect = b.get("expect", {})
        _need(isinstance(expect, dict), where + ".expect", "must be an object")
        known = _EXPECT[b["kind"]]
        _need(set(expect) <= known, where + ".expect", f"a {b['kind']} binding may expect "
              f"{', '.join(sorted(known))} only")
        for key in ("shape", "label_shape"):
            shape = expect.get(key)
            _need(shape is None or (isinstance(shape, list) and len(shape) <= 8 and all(
                d is None or (_int(d) and 0 <= d < 2**40) for d in shape)),
                  f"{where}.expect.{key}", "must be a list of at most 8 integers or nulls")
        _need(isinstance(expect.get("labels", False), bool), where + ".expect.labels",
              "must be true or false")
        _need(expect.get("min_rows") is None or (_int(expect["min_rows"]) and
                                                 1 <= expect["min_rows"] <= MAX_MIN_ROWS),
              where + ".expect.min_rows", f"must be a whole number from 1 to {MAX_MIN_ROWS}")
        _need(isinstance(expect.get("dp", False), bool), where + ".expect.dp",
              "must be true or false")
        if "architecture" in expect:
            try:
                architecture.parse(expect["architecture"])
            except ProposalError as exc:
                raise ProposalError(f"proposal {where}.expect.architecture: "
                                    f"{exc.message}") from None
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
        ident = lambda b: (b["tag"], b["rank"], b["kind"])  # noqa: E731
        _need(sorted(map(ident, bindings)) == sorted(map(ident, plans.bindings(plan))),
              "bindings", "must be the ones the plan implies")
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
    it (a tag may be bound at several ranks: rows split across parties) with kind, what the
    proposal states of it (``party_entry``) and, for this party's own assets, the asset id.

    Raises ProposalError when this party's bindings do not match what it holds: another kind,
    another shape, no labels, another model than the one the proposal describes."""
    assets: dict[str, dict[str, dict[str, Any]]] = {}
    for b in p["bindings"]:
        entry = party_entry(b)
        if b["rank"] == rank:
            try:
                asset = store.by_tag(b["tag"])
            except StoreError as exc:
                raise ProposalError(f"this node cannot provide '{b['tag']}': "
                                    f"{exc.message}") from None
            if asset.kind != b["kind"]:
                raise ProposalError(f"'{b['tag']}' here is a {asset.kind}, but the job "
                                    f"expects a {b['kind']}")
            problem = expectation_problem(b, asset.schema)
            if problem:
                raise ProposalError(f"'{b['tag']}' here {problem}")
            entry["asset_id"] = asset.id
        assets.setdefault(b["tag"], {})[str(b["rank"])] = entry
    return assets


def expectation_problem(b: dict[str, Any], schema: dict[str, Any], stated_only: bool = False
                        ) -> str:
    """How the asset of catalog ``schema`` differs from what binding ``b`` expects, as the end
    of a sentence about the asset ('' when it does not): the one check of every ``expect``.
    ``stated_only``: what the binding states only (an orchestrator checking a job before it
    states the rest); otherwise an unstated minimum of rows means the default, which every
    party enforces, so the owner refuses it when its dataset asks for another."""
    expect = b.get("expect", {})
    if b["kind"] == "model":
        want = expect.get("architecture")
        if want is None:
            return ""
        have = schema.get("architecture")
        if have is None:
            return ("has no architecture a proposal can carry (it was published by an older "
                    "Parley, or its graph is too large): publish it again")
        if not architecture.same(want, have):
            return ("is not the model the job was proposed with: its architecture differs (it "
                    "was published again, or replaced, since); send the job again")
        return ""
    privacy = privacy_settings(schema)
    if (not stated_only or "min_rows" in expect) and min_rows_of(b) != privacy["min_rows"]:
        return (f"lets a value revealed to others aggregate no fewer than {privacy['min_rows']} "
                f"of its rows, but the job was proposed for {min_rows_of(b)}: send it again")
    if "dp" in expect and bool(expect["dp"]) != (privacy["dp"] is not None):
        return (f"has differential privacy {'on' if privacy['dp'] else 'off'}, but the job was "
                f"proposed with it {'on' if expect['dp'] else 'off'}: send it again")
    shape = schema["shape"]
    want = expect.get("shape")
    if want is not None and not _fits(want, shape):
        shown = ["any" if w is None else w for w in want]
        return f"has shape {shape}, but the job expects {shown}"
    label = schema.get("label")
    want = expect.get("label_shape")
    if not label:
        if expect.get("labels") or want is not None:
            return "has no label column, but the job expects labels"
    elif want is not None and not _fits(want, label.get("shape") or [shape[0]]):
        shown = ["any" if w is None else w for w in want]
        return (f"has labels of shape {label.get('shape') or [shape[0]]}, but the job expects "
                f"{shown}")
    return ""


def _fits(want: list[Any], shape: list[int]) -> bool:
    return len(want) == len(shape) and all(w is None or w == s for w, s in zip(want, shape))


def _concrete(shape: Any) -> bool:
    return isinstance(shape, list) and all(_int(d) for d in shape)


def party_entry(b: dict[str, Any]) -> dict[str, Any]:
    """What a party process is told of binding ``b`` (node/jail/job_api.py): its rank and kind, and
    what the proposal states of the asset, which every party then knows without asking its
    owner: a dataset's concrete ``shapes`` (part -> shape; a part missing there does not
    exist), a model's ``architecture``. A binding that states neither (a null dimension, or no
    ``expect``) leaves the owner to say it at run time."""
    entry: dict[str, Any] = {"rank": b["rank"], "kind": b["kind"]}
    expect = b.get("expect", {})
    if b["kind"] == "model":
        if "architecture" in expect:
            entry["architecture"] = expect["architecture"]
    else:
        entry["min_rows"] = min_rows_of(b)
        if _concrete(expect.get("shape")):
            entry["shapes"] = {"features": expect["shape"]}
            if _concrete(expect.get("label_shape")):
                entry["shapes"]["labels"] = expect["label_shape"]
    return entry


def min_rows_of(b: dict[str, Any]) -> int:
    """The minimum aggregation every party enforces for a dataset binding: what the proposal
    states (the owner's node refuses a proposal that states another than its own), the
    default when it states none."""
    return int(b.get("expect", {}).get("min_rows") or DEFAULT_MIN_ROWS)


def expectations(kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``expect`` of a binding to the asset of catalog ``schema``: what the orchestrator
    states in a proposal (see the module docstring)."""
    if kind == "model":
        return {"architecture": schema["architecture"]}
    label = schema.get("label")
    privacy = privacy_settings(schema)
    out: dict[str, Any] = {"shape": list(schema["shape"]), "labels": bool(label),
                           "min_rows": privacy["min_rows"], "dp": privacy["dp"] is not None}
    if label:
        out["label_shape"] = list(label.get("shape") or [schema["shape"][0]])
    return out


def party_of(p: dict[str, Any], rank: int) -> dict[str, Any]:
    return next(party for party in p["parties"] if party["rank"] == rank)
