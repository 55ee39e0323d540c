"""What an owner needs to decide on a proposal, computed by their own node.

For every proposal: the code that would run (the sent source, or the plan rendered by this
node) with line numbers; which assets it reads, by tag and holder, with what the proposal
states of each (a dataset's shape, a model's architecture: layers and parameter shapes, what
every party learns of it); every point where a value is decrypted and to whom; what goes
back to the orchestrator; the loops and a rough cost; a diff against the last version of
this job the owner approved; and warnings. The static check (layer 2 of the jail) runs here
first: a source it refuses is never shown for approval.

Some leaks are beyond any sandbox: revealing a single row, or two aggregates whose difference
is one person's value. The review makes reveals visible, with how many rows of each dataset
each one aggregates (counted before the run for a plan; for source, the party counts them at
run time and refuses what falls below a dataset's minimum: node/jail/lineage.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from node import architecture, plans
from node import proposal as proposals
from node.jail import static

__all__ = ["build", "render_text", "stated_text"]


def _recipient(names: dict[str, Any], dst: Any) -> str:
    if dst is None:
        return "every party"
    if dst == "dynamic":
        return "a rank computed at run time"
    name = names["parties"].get(str(dst))
    return f"rank {dst} ({name})" if name is not None else f"rank {dst} (no such party)"


def _total_iterations(loops: list[Any]) -> int | None:
    """Innermost body runs, summed over loop chains (bounds multiply along ``parent``);
    None when some loop has no literal bound."""
    if any(lp.bound is None for lp in loops):
        return None
    total = 0
    for i, lp in enumerate(loops):
        if any(other.parent == i for other in loops):
            continue  # not innermost
        runs, node = lp.bound, lp
        while node.parent is not None:
            node = loops[node.parent]
            runs *= node.bound
        total += runs
    return total


def build(p: dict[str, Any], rank: int, store: Any, last_approved: str | None,
          names: dict[str, Any], claims: Sequence[dict[str, Any]] = (),
          budgets: Sequence[str] = ()) -> dict[str, Any]:
    """Review material for the party of ``rank``; raises JailRejected for refused source.

    ``names`` is what this node calls the orchestrator and each rank (from its own peer
    book); ``claims`` are the names the proposal used instead, shown as warnings."""
    source, entry = proposals.job_code(p)
    info = static.check(source, entry)
    party_name = lambda r: names["parties"][str(r)]  # noqa: E731
    reads = []
    stated_warnings = []
    for b in p["bindings"]:
        item = {"tag": b["tag"], "kind": b["kind"], "rank": b["rank"],
                "holder": party_name(b["rank"]),
                "here": b["rank"] == rank, **_stated(b)}
        if item["here"]:
            asset = store.by_tag(b["tag"])
            item.update(asset_id=asset.id, name=asset.name,
                        schema={k: v for k, v in asset.schema.items() if k != "architecture"})
            if item.get("constants"):
                stated_warnings.append(
                    f"the model '{b['tag']}' holds {item['constants']:,} constant values in its "
                    f"graph: they are part of its architecture, which every party sees in the "
                    f"clear")
        reads.append(item)
    reveals = [{"line": r.line, "dst": r.dst, "to": _recipient(names, r.dst),
                "expr": r.expr_text} for r in info.reveals]
    refused = _rows_of_reveals(p, reveals, names)
    orchestrator = names["orchestrator"]
    released = [_recipient(names, r) for r in p["reveal"]["result_to"]]
    loops = [{"line": lp.line, "kind": lp.kind, "bound": lp.bound, "nesting": lp.nesting}
             for lp in info.loops]
    bound = _total_iterations(info.loops)
    warnings = [f"the proposal calls {c['field']} "
                f"'{c['claimed']}', but that key is known here as {c['known_as']}"
                for c in claims]
    warnings += stated_warnings
    warnings += refused
    warnings += list(info.warnings)
    if p["reveal"]["everyone"]:
        warnings.append("the reveal map lets get_plain_text() decrypt to every party")
    if rank in p["reveal"]["result_to"]:
        warnings.append(f"what this node's party returns goes to the orchestrator "
                        f"({orchestrator}): it sees every value revealed to rank {rank}")
    if any(r["dst"] == rank for r in reveals) and rank not in p["reveal"]["result_to"]:
        warnings.append("values revealed to this node stay here: its party's return value is "
                        "not released")
    diff = None
    if last_approved is not None and last_approved != source:
        diff = "".join(difflib.unified_diff(last_approved.splitlines(True),
                                            source.splitlines(True), "last approved",
                                            "this proposal"))
    return {
        "code_kind": proposals.code_kind(p),
        "entry": entry,
        "source": source,
        "numbered": [f"{i:4d}  {line}" for i, line in enumerate(source.splitlines(), 1)],
        "this_node": {"rank": rank, "name": party_name(rank)},
        "orchestrator": {"name": orchestrator, "node_id": p["orchestrator"]["node_id"],
                         "url": p["orchestrator"]["url"]},
        "parties": [{"rank": q["rank"], "name": party_name(q["rank"]),
                     "node_id": q["node_id"]} for q in p["parties"]],
        "reads": reads,
        "reveals": reveals,
        "released_to_orchestrator": released,
        "reveal_budget": p["reveal"]["budget"],
        "loops": loops,
        "cost": (f"loops run about {bound:,} times in all" if loops and bound
                 else "loops without a literal bound: cost unknown" if loops
                 else "no loops"),
        "limits": proposals.limits(p),
        "diff_from_last_approved": diff,
        "first_version": last_approved is None,
        "warnings": warnings,
        "budgets": list(budgets),  # differential privacy: what the job spends of each budget
    }


def _rows_of_reveals(p: dict[str, Any], reveals: list[dict[str, Any]],
                     names: dict[str, Any]) -> list[str]:
    """Put on each reveal what it aggregates (``rows``: words for the reviewer): for a plan,
    counted from the stated shapes before anything runs; for source, the rule the party
    enforces at run time (node/jail/lineage.py). The warnings for reveals a plan makes that
    the run would refuse."""
    datasets = {(b["tag"], b["rank"]): b for b in p["bindings"] if b["kind"] == "dataset"}
    if not datasets:
        return []
    code = p["code"]
    declared = plans.reveal_rows(code["plan"]) if code["kind"] == "plan" else None
    if declared is None or len(declared) != len(reveals):
        minimums = sorted({proposals.min_rows_of(b) for b in datasets.values()})
        rule = (f"each reveal to anyone but a dataset's owner must aggregate at least "
                f"{minimums[0]} of its rows" if len(minimums) == 1 else
                "each reveal to anyone but a dataset's owner must aggregate at least its "
                "minimum of rows (" + ", ".join(
                    f"{tag}: {proposals.min_rows_of(b)}" for (tag, _), b in datasets.items())
                + ")")
        for r in reveals:
            r["rows"] = f"rows counted at run time: {rule}"
        return []
    warnings = []
    for r, d in zip(reveals, declared):
        words, short = [], []
        for ref in d["refs"]:
            b = datasets.get((ref["tag"], ref["rank"]))
            if b is None:
                continue
            shape = b.get("expect", {}).get("shape")
            n = shape[0] if shape and shape[0] is not None else None
            holder = names["parties"].get(str(ref["rank"]), f"rank {ref['rank']}")
            count = 1 if d["per_row"] else n
            words.append(f"{'each of ' + str(n) + ' rows' if d['per_row'] else str(n or 'all')} "
                         f"{'' if d['per_row'] else 'rows '}of '{ref['tag']}' ({holder})")
            need = proposals.min_rows_of(b)
            to_owner = r["dst"] == ref["rank"]
            if count is not None and count < need and not to_owner:
                what = "one row" if d["per_row"] else f"{count} rows"
                short.append(f"line {r['line']} reveals {what} of '{ref['tag']}' to {r['to']}, "
                             f"below its owner's minimum of {need}: the run will refuse it")
        kind = "one value per row:" if d["per_row"] else f"{d.get('what', 'aggregate')} over"
        r["rows"] = f"{kind} {'; '.join(words)}" if words else ""
        warnings += short
    return warnings


def _stated(b: dict[str, Any]) -> dict[str, Any]:
    """What the proposal states of a bound asset, which every party learns: a dataset's shape
    and labels' shape; a model's architecture as short lines (layers and parameter shapes)."""
    expect = b.get("expect", {})
    if b["kind"] == "model":
        arch = expect.get("architecture")
        if arch is None:
            return {"architecture": None}
        described = architecture.describe(arch)
        return {"architecture": architecture.lines(described),
                "constants": described["constants"]}
    return {"shape": expect.get("shape"), "label_shape": expect.get("label_shape"),
            "min_rows": proposals.min_rows_of(b), "dp": bool(expect.get("dp"))}


def stated_text(item: dict[str, Any]) -> str:
    """A read's stated shape in a few words ('' for a model: its lines say it)."""
    if item["kind"] == "model":
        return "architecture not stated" if "architecture" in item and \
            item["architecture"] is None else ""
    if "shape" not in item:
        return ""  # review material from before proposals stated shapes
    shape = item["shape"]
    if shape is None:
        return "shape not stated"
    words = "shape " + " × ".join("any" if d is None else str(d) for d in shape)
    if item.get("label_shape") is not None:
        words += ", labels " + " × ".join("any" if d is None else str(d)
                                          for d in item["label_shape"])
    return words + privacy_words(item)


def privacy_words(item: dict[str, Any]) -> str:
    """A dataset read's minimum of rows per reveal and differential privacy, as the end of
    what the review says of it ('' for material from before they existed)."""
    words = ""
    if item.get("min_rows") is not None:
        words += (f"; reveals to others aggregate at least {item['min_rows']} rows"
                  if item["min_rows"] > 1 else "; no minimum of rows per reveal")
    if item.get("dp"):
        words += "; differential privacy on"
    return words


def render_text(job: dict[str, Any]) -> str:
    """The review as `parley show` prints it."""
    r = job["detail"].get("review")
    if not r:
        return f"job {job['id']}: {job['state']} (no review material)"
    lines = [
        f"job {job['id']} from {r['orchestrator']['name']} ({r['orchestrator']['url']})",
        f"state: {job['state']}" + (f" ({job['reason']})" if job["reason"] else ""),
        f"proposal hash: {job['proposal_hash']}",
        f"this node plays rank {r['this_node']['rank']}; parties: "
        + ", ".join(f"{q['rank']}={q['name']}" for q in r["parties"]),
        f"code: {r['code_kind']}" + (" (rendered by this node from the plan)"
                                     if r["code_kind"] != "source"
                                     else " (sent by the orchestrator)"),
        "reads:",
    ]
    for item in r["reads"]:
        where = "HERE" if item["here"] else f"at {item['holder']}"
        extra = f" = {item['name']}" if item["here"] else ""
        stated = stated_text(item)
        lines.append(f"  {item['tag']} ({item['kind']}, rank {item['rank']}, {where}){extra}"
                     + (f": {stated}" if stated else ""))
        lines += [f"      {line}" for line in item.get("architecture") or []]
    lines.append("reveals:")
    for rv in r["reveals"] or [{"line": "-", "to": "nothing is decrypted", "expr": ""}]:
        lines.append(f"  line {rv['line']}: to {rv['to']}  {rv['expr']}")
        if rv.get("rows"):
            lines.append(f"      {rv['rows']}")
    lines.append("results released to the orchestrator by ranks: "
                 + ", ".join(str(x) for x in job["proposal"]["reveal"]["result_to"]))
    lines.append(f"reveal budget: {r['reveal_budget']:,} elements; {r['cost']}")
    for b in r.get("budgets", []):
        lines.append(f"PRIVACY: {b}")
    for w in r["warnings"]:
        lines.append(f"WARNING: {w}")
    if r["diff_from_last_approved"]:
        lines += ["changes since the version you last approved:",
                  *r.get("diff_lines", r["diff_from_last_approved"].splitlines())]
    elif not r["first_version"]:
        lines.append("identical to the version you last approved")
    lines.append("source:")
    lines += r["numbered"]
    return "\n".join(lines)
