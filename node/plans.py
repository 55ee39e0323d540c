"""Plans: declarative jobs for the common cases, JSON in, readable Python out.

A plan says *what* to compute (encrypted inference, training a logistic regression or a
small MLP on features split across parties, statistics over rows split across parties) with
tags, ranks and numbers only. The receiving node validates it against the schema below and
renders it to Python with its own templates: that rendered code is what the owner reviews and
exactly what runs, under the same jail as any source. Nothing the orchestrator sent is ever
executed, so a policy may approve a plan kind without a person reading each one.

Schemas (``rank`` is a party rank; ``tag`` an asset tag)::

    {"kind": "inference", "model": {"tag", "rank"}, "data": {"tag", "rank"}, "output_to": r}
    {"kind": "train", "model": "logistic" | "mlp", "hidden": 8, "features": [{"tag", "rank"}, …],
     "labels": {"tag", "rank", "part": "features" | "labels"}, "epochs": 30,
     "learning_rate": 1.0, "output_to": r}
    {"kind": "statistics", "data": [{"tag", "rank"}, …], "stats": ["count", "sum", "mean",
     "variance", "histogram"], "histogram": {"column": 0, "edges": [0, 10, 20]},
     "dp": {"epsilon": 0.5}, "output_to": r}

``dp`` (statistics only): differential privacy. Each owner clips its rows to its dataset's
declared bounds and adds Laplace noise under encryption, scaled to them, before each reveal;
the job spends ``epsilon`` of the budget of every dataset with differential privacy on
(node/privacy.py), split evenly over the noisy statistics (the row count is public and exact).
"""

from __future__ import annotations

from typing import Any

from node.errors import ProposalError
from node.privacy import MAX_EPSILON
from node.store import TAG_RULE, is_tag

__all__ = ["KINDS", "STATS", "bindings", "epsilon_of", "render", "reveal_rows", "validate"]

KINDS = ("inference", "train", "statistics")
# what a standing approval (a policy) may cover: a plan kind, source code, or "any" job
POLICY_KINDS = (*KINDS, "source", "any")
STATS = ("count", "sum", "mean", "variance", "histogram")


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ProposalError(f"plan {where}: {what}")


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _ref(ref: Any, where: str, parties: int, parts: bool = False) -> dict[str, Any]:
    _need(isinstance(ref, dict), where, "must be {\"tag\": ..., \"rank\": ...}")
    _need(is_tag(ref.get("tag")), where + ".tag", f"must be a tag: {TAG_RULE}")
    _need(_int(ref.get("rank"), 0, parties - 1), where + ".rank", "must be a party's rank")
    _known(ref, {"tag", "rank", "part"} if parts else {"tag", "rank"}, where)
    if parts:
        _need(ref.get("part", "features") in ("features", "labels"), where + ".part",
              "must be 'features' or 'labels'")
    return ref


def _known(obj: dict[str, Any], keys: set[str], where: str) -> None:
    """Name the first key a plan has that its kind does not know (a typo, usually)."""
    unknown = sorted(str(k) for k in set(obj) - keys)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        kind = obj.get("kind")
        what = where or (f"a{'n' if kind == 'inference' else ''} {kind} plan"
                         if kind in KINDS else "")
        raise ProposalError(f"plan{' ' + where if where else ''}: unknown key {unknown[0]!r}"
                            f"{more}; {what or 'it'} takes {', '.join(sorted(keys))}")


def validate(plan: Any, parties: int) -> dict[str, Any]:
    _need(isinstance(plan, dict), "", "must be a JSON object")
    kind = plan.get("kind")
    _need(kind in KINDS, "kind", f"must be one of {', '.join(KINDS)}")
    _need(_int(plan.get("output_to"), 0, parties - 1), "output_to", "must be a party's rank")
    if kind == "inference":
        _known(plan, {"kind", "model", "data", "output_to"}, "")
        _ref(plan.get("model"), "model", parties)
        _ref(plan.get("data"), "data", parties)
    elif kind == "train":
        _known(plan, {"kind", "model", "hidden", "features", "labels", "epochs",
                      "learning_rate", "output_to"}, "")
        _need(plan.get("model") in ("logistic", "mlp"), "model", "must be 'logistic' or 'mlp'")
        _need(_int(plan.get("hidden", 8), 1, 256), "hidden", "must be 1..256")
        features = plan.get("features")
        _need(isinstance(features, list) and 1 <= len(features) <= 16, "features",
              "must list 1 to 16 {tag, rank}")
        for i, ref in enumerate(features):
            _ref(ref, f"features[{i}]", parties)
        _ref(plan.get("labels"), "labels", parties, parts=True)
        _need(_int(plan.get("epochs", 30), 1, 1000), "epochs", "must be 1..1000")
        lr = plan.get("learning_rate", 1.0)
        _need(isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr <= 100,
              "learning_rate", "must be a number in (0, 100]")
    else:
        _known(plan, {"kind", "data", "stats", "histogram", "dp", "output_to"}, "")
        if "dp" in plan:
            dp = plan["dp"]
            _need(isinstance(dp, dict) and set(dp) == {"epsilon"} and isinstance(
                dp["epsilon"], (int, float)) and not isinstance(dp["epsilon"], bool)
                and 0 < dp["epsilon"] <= MAX_EPSILON, "dp",
                  f"must be {{\"epsilon\": e}} with 0 < e <= {MAX_EPSILON:g}")
        data = plan.get("data")
        _need(isinstance(data, list) and 1 <= len(data) <= 16, "data",
              "must list 1 to 16 {tag, rank}")
        for i, ref in enumerate(data):
            _ref(ref, f"data[{i}]", parties)
        stats = plan.get("stats")
        _need(isinstance(stats, list) and bool(stats) and all(s in STATS for s in stats), "stats",
              f"must list some of {', '.join(STATS)}")
        if "histogram" in stats:
            hist = plan.get("histogram")
            _need(isinstance(hist, dict) and _int(hist.get("column"), 0, 10_000)
                  and isinstance(hist.get("edges"), list) and 2 <= len(hist["edges"]) <= 64
                  and all(isinstance(e, (int, float)) and not isinstance(e, bool)
                          for e in hist["edges"])
                  and hist["edges"] == sorted(hist["edges"]), "histogram",
                  "needs a column and 2 to 64 increasing edges")
    return plan


def bindings(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The asset bindings a plan implies (what each party must hold)."""
    kind = plan["kind"]
    if kind == "inference":
        return [{"tag": plan["model"]["tag"], "rank": plan["model"]["rank"], "kind": "model"},
                {"tag": plan["data"]["tag"], "rank": plan["data"]["rank"], "kind": "dataset"}]
    refs = plan["features"] + [plan["labels"]] if kind == "train" else plan["data"]
    out: list[dict[str, Any]] = []
    for ref in refs:
        entry = {"tag": ref["tag"], "rank": ref["rank"], "kind": "dataset"}
        if ref.get("part") == "labels":
            entry["expect"] = {"labels": True}
        if not any(b["tag"] == entry["tag"] and b["rank"] == entry["rank"] for b in out):
            out.append(entry)
    return out


def render(plan: dict[str, Any]) -> tuple[str, str]:
    """The plan as Python (source, entry): what the owner reads and the party runs."""
    kind = plan["kind"]
    out = plan["output_to"]
    if kind == "inference":
        return (f'''def run_inference(crypten):
    """Plan: encrypted inference. The model's owner (rank {plan["model"]["rank"]}) shares only the
    architecture; its weights and the data stay encrypted. Output revealed to rank {out} only."""
    data = crypten.load({plan["data"]["tag"]!r}, {plan["data"]["rank"]})
    model = crypten.load_model({plan["model"]["tag"]!r})
    return model(data).get_plain_text(dst={out})
''', "run_inference")
    if kind == "train":
        loads = "\n".join(f"    x{i} = crypten.load({r['tag']!r}, {r['rank']}, standardize=True)"
                          for i, r in enumerate(plan["features"]))
        xs = ", ".join(f"x{i}" for i in range(len(plan["features"])))
        labels = plan["labels"]
        part = labels.get("part", "features")
        y = (f"    y = crypten.load({labels['tag']!r}, {labels['rank']}, part='labels')"
             f".unsqueeze(1)" if part == "labels"
             else f"    y = crypten.load({labels['tag']!r}, {labels['rank']})")
        epochs, lr = plan.get("epochs", 30), float(plan.get("learning_rate", 1.0))
        if plan["model"] == "logistic":
            body = f'''    w = crypten.cryptensor(torch.zeros(d, 1))
    b = crypten.cryptensor(torch.zeros(1))
    for _ in range({epochs}):
        err = (x.matmul(w) + b).sigmoid() - y
        w = w - x.t().matmul(err) * ({lr!r} / n)
        b = b - err.sum() * ({lr!r} / n)
    pred = (x.matmul(w) + b) > 0
    wrong = pred + y - pred * y * 2
    accuracy = 1 - wrong.mean()
    return {{"accuracy": accuracy.get_plain_text(dst={out}),
            "weights": w.get_plain_text(dst={out}), "bias": b.get_plain_text(dst={out})}}
'''
        else:
            hidden = plan.get("hidden", 8)
            body = f'''    model = crypten.nn.Sequential(crypten.nn.Linear(d, {hidden}), crypten.nn.ReLU(),
                                  crypten.nn.Linear({hidden}, 1))
    model.encrypt(src=0)
    model.train()
    loss_fn = crypten.nn.BCEWithLogitsLoss()
    optimizer = crypten.optim.SGD(model.parameters(), lr={lr!r})
    for _ in range({epochs}):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pred = model(x) > 0
    wrong = pred + y - pred * y * 2
    accuracy = 1 - wrong.mean()
    return {{"accuracy": accuracy.get_plain_text(dst={out}),
            "loss": loss.get_plain_text(dst={out})}}
'''  # noqa: E501 - the job's source, one statement per line as reviewers read it
        return (f'''def run_training(crypten):
    """Plan: train a {plan["model"]} model on features split across parties, labels at rank
    {labels["rank"]}. Each owner standardises its own columns before sharing. Revealed to rank
    {out}: the training accuracy and the trained parameters (the model itself)."""
{loads}
{y}
    x = crypten.cat([{xs}], dim=1)
    n, d = x.size()
{body}''', "run_training")
    eps = epsilon_of(plan)
    clip = ", clip=True" if eps is not None else ""
    loads = "\n".join(f"    x{i} = crypten.load({r['tag']!r}, {r['rank']}{clip})"
                      for i, r in enumerate(plan["data"]))
    xs = ", ".join(f"x{i}" for i in range(len(plan["data"])))
    stats = plan["stats"]
    noisy = [s for s in ("sum", "mean", "variance", "histogram") if s in stats]
    share = eps / len(noisy) if eps is not None and noisy else None

    def plus_noise(stat: str, size: str) -> str:
        """Each owner's Laplace noise for its own rows, encrypted at its source."""
        if share is None:
            return ""
        return "".join(f" + crypten.laplace_noise({r['tag']!r}, {r['rank']}, {stat!r}, n, "
                       f"{share!r}, {size})" for r in plan["data"])

    lines = ["    x = crypten.cat([" + xs + "], dim=0)", "    n, d = x.size()",
             '    result = {"count": n}']
    if share is not None:
        lines.append(f'    result["dp"] = {{"epsilon": {eps!r}, "per_statistic": {share!r}, '
                     f'"noise": "Laplace, from each owner, scaled to its declared bounds"}}')
    if "sum" in stats:
        lines.append(f'    result["sum"] = (x.sum(0){plus_noise("sum", "d")})'
                     f'.get_plain_text(dst={out})')
    if "mean" in stats or "variance" in stats:
        lines.append("    mean = x.mean(0)")
    if "mean" in stats:
        lines.append(f'    result["mean"] = (mean{plus_noise("mean", "d")})'
                     f'.get_plain_text(dst={out})')
    if "variance" in stats:
        lines.append(f'    result["variance"] = (((x - mean) * (x - mean)).mean(0)'
                     f'{plus_noise("variance", "d")}).get_plain_text(dst={out})')
    if "histogram" in stats:
        hist = plan["histogram"]
        edges = [float(e) for e in hist["edges"]]
        lines += [f"    column = x[:, {hist['column']}]",
                  f"    edges = {edges!r}",
                  "    at_least = [(column >= edge).sum() for edge in edges]",
                  "    counts = [at_least[i] - at_least[i + 1] for i in range(len(edges) - 1)]",
                  f'    result["histogram"] = (crypten.stack(counts)'
                  f'{plus_noise("histogram", str(len(edges) - 1))}).get_plain_text(dst={out})',
                  '    result["edges"] = edges']
    body = "\n".join(lines)
    dp = (f" With differential privacy: each owner clips its rows to its declared bounds\n"
          f"    and adds Laplace noise before each reveal; epsilon {eps:g} in all, "
          f"{share:g} per statistic." if share is not None else "")
    return (f'''def run_statistics(crypten):
    """Plan: statistics over rows split across parties. Revealed to rank {out}: only the
    aggregates below (the row count is public).{dp}"""
{loads}
{body}
    return result
''', "run_statistics")


def epsilon_of(plan: dict[str, Any]) -> float | None:
    """The privacy budget a statistics plan spends on each dataset with differential privacy
    on (None: the plan adds no noise)."""
    dp = plan.get("dp") if plan.get("kind") == "statistics" else None
    return float(dp["epsilon"]) if dp else None


def reveal_rows(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """What each reveal of the rendered plan aggregates, in source order: per reveal, the
    data it is computed from (``{"tag", "rank"}``) and whether it is one value per row
    (``per_row``) or an aggregate over every row of them. The review turns this into "mean
    over 399 rows of ..." before anything runs (node/review.py)."""
    kind = plan["kind"]
    if kind == "inference":
        return [{"refs": [plan["data"]], "per_row": True}]
    if kind == "train":
        refs = [*plan["features"], plan["labels"]]
        names = (["accuracy", "weights", "bias"] if plan["model"] == "logistic"
                 else ["accuracy", "loss"])
        return [{"refs": refs, "per_row": False, "what": n} for n in names]
    order = [s for s in ("sum", "mean", "variance", "histogram") if s in plan["stats"]]
    return [{"refs": plan["data"], "per_row": False, "what": s} for s in order]
