"""What the Compose view can build: the four CrypTen use cases and custom code, as templates.

A template names the inputs (roles) a job needs and the plan kind it becomes. The view binds
each role to an asset (a tag at a party) and asks this module for the job spec, the same JSON
that ``POST /admin/v1/orchestrations`` and ``parley submit job.json`` take; ``read_plan`` goes
the other way when a saved job is opened. Nothing here touches Qt or the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_TIME_S", "STATS", "TEMPLATES", "Binding", "Role", "Template", "build_plan",
           "read_plan", "starter_source", "template", "template_for"]

STATS = ("count", "sum", "mean", "variance", "histogram")
DEFAULT_TIME_S = 600
DEFAULT_PRECISION_BITS = 16


@dataclass(frozen=True)
class Role:
    """One input a template needs."""

    key: str
    label: str
    kind: str  # "model", "dataset", or "" (custom code: the bound asset's kind)
    hint: str
    repeat: bool = False  # the job takes several (feature columns, rows)


@dataclass(frozen=True)
class Template:
    key: str
    title: str
    summary: str
    kind: str  # plan kind, or "source" for custom code
    roles: tuple[Role, ...]
    initial: tuple[str, ...]  # role keys of the input rows a new job starts with
    output_role: str = ""  # whose holder gets the result unless the orchestrator says
    model: str = ""  # train: "logistic" or "mlp"
    precision_bits: int = DEFAULT_PRECISION_BITS

    def role(self, key: str) -> Role:
        return next((r for r in self.roles if r.key == key), self.roles[0])


@dataclass
class Binding:
    """One input row: a role bound to ``tag`` at the party ``holder`` (a party key)."""

    role: str
    kind: str
    tag: str = ""
    holder: str | None = None
    part: str = ""  # "labels" reads a dataset's label column
    asset: dict[str, Any] | None = field(default=None, compare=False)


_MODEL = Role("model", "Model", "model", "the private model (ONNX); its weights stay encrypted")
_DATA = Role("data", "Data", "dataset", "the private rows the model is applied to")
_FEATURES = Role("features", "Features", "dataset",
                 "columns of the same rows, one party's share each", repeat=True)
_LABELS = Role("labels", "Labels", "dataset",
               "the label of each row: a one-column dataset, or a dataset's label column")
_ROWS = Role("data", "Rows", "dataset", "rows with the same columns, one party's share each",
             repeat=True)
_INPUT = Role("input", "Input", "", "an asset the code loads by its tag", repeat=True)

TEMPLATES: tuple[Template, ...] = (
    Template("inference", "Model hiding (encrypted inference)",
             "One party's private model applied to another party's private rows. The model "
             "owner learns nothing about the rows; the data owner gets the predictions and "
             "never sees the weights.",
             "inference", (_MODEL, _DATA), ("model", "data"), output_role="data",
             precision_bits=20),
    Template("feature-aggregation", "Feature aggregation (logistic regression)",
             "Parties hold different columns of the same rows (in the same order). A logistic "
             "regression is trained on all columns together; the trained weights and the "
             "accuracy go to one party.",
             "train", (_FEATURES, _LABELS), ("features", "features", "labels"),
             output_role="labels", model="logistic"),
    Template("data-labelling", "Data labelling (labels at another party)",
             "Features at some parties, the labels at another, who has no features. Trains a "
             "logistic regression; the labels never leave their owner in the clear.",
             "train", (_FEATURES, _LABELS), ("features", "features", "labels"),
             output_role="labels", model="logistic"),
    Template("mlp", "MLP training (features split across parties)",
             "Like feature aggregation, with a small neural network (one hidden layer) instead "
             "of a logistic regression.",
             "train", (_FEATURES, _LABELS), ("features", "features", "labels"),
             output_role="labels", model="mlp"),
    Template("statistics", "Dataset augmentation (statistics with a histogram)",
             "Parties hold different rows with the same columns. Count, sum, mean, variance "
             "and a histogram over all rows together; only these aggregates are revealed.",
             "statistics", (_ROWS,), ("data", "data")),
    Template("custom", "Custom code",
             "Your own job function. Every party reviews exactly this code before anything "
             "runs; the static check marks what the jail would refuse as you type.",
             "source", (_INPUT,), ()),
)


def template(key: str) -> Template:
    return next((t for t in TEMPLATES if t.key == key), TEMPLATES[0])


def template_for(spec: dict[str, Any]) -> Template:
    """The template a saved job spec came from (a plan's kind and, for training, where the
    labels are)."""
    plan = spec.get("plan")
    if not isinstance(plan, dict):
        return template("custom")
    kind = plan.get("kind")
    if kind == "inference":
        return template("inference")
    if kind == "statistics":
        return template("statistics")
    if plan.get("model") == "mlp":
        return template("mlp")
    labels = plan.get("labels") if isinstance(plan.get("labels"), dict) else {}
    feature_ranks = {f.get("rank") for f in plan.get("features") or [] if isinstance(f, dict)}
    return template("feature-aggregation" if labels.get("rank") in feature_ranks
                    else "data-labelling")


def _ref(b: Binding, ranks: dict[str, int]) -> dict[str, Any]:
    ref: dict[str, Any] = {"tag": b.tag, "rank": ranks[str(b.holder)]}
    return ref


def build_plan(t: Template, inputs: list[Binding], ranks: dict[str, int], output_to: int,
               params: dict[str, Any]) -> dict[str, Any]:
    """The plan JSON (node/plans.py) for a template's bound inputs; ``ranks`` maps a party
    key to its rank. Every input must be bound (the view checks that first)."""
    by_role: dict[str, list[Binding]] = {}
    for b in inputs:
        by_role.setdefault(b.role, []).append(b)
    if t.kind == "inference":
        return {"kind": "inference", "model": _ref(by_role["model"][0], ranks),
                "data": _ref(by_role["data"][0], ranks), "output_to": output_to}
    if t.kind == "train":
        plan: dict[str, Any] = {"kind": "train", "model": t.model}
        if t.model == "mlp":
            plan["hidden"] = int(params.get("hidden", 8))
        labels_binding = by_role["labels"][0]
        labels = _ref(labels_binding, ranks)
        if labels_binding.part == "labels":
            labels["part"] = "labels"
        plan.update({"features": [_ref(b, ranks) for b in by_role.get("features", [])],
                     "labels": labels, "epochs": int(params.get("epochs", 30)),
                     "learning_rate": float(params.get("learning_rate", 1.0)),
                     "output_to": output_to})
        return plan
    stats = [s for s in STATS if s in params.get("stats", STATS)]
    plan = {"kind": "statistics", "data": [_ref(b, ranks) for b in by_role.get("data", [])],
            "stats": stats}
    if "histogram" in stats:
        plan["histogram"] = {"column": int(params.get("column", 0)),
                             "edges": list(params.get("edges", []))}
    plan["output_to"] = output_to
    return plan


def read_plan(t: Template, plan: dict[str, Any]) -> tuple[list[tuple[str, str, int, str]],
                                                          int | None, dict[str, Any]]:
    """A plan back into (role, tag, rank, part) rows, its output rank and its parameters."""
    rows: list[tuple[str, str, int, str]] = []

    def add(role: str, ref: Any) -> None:
        if isinstance(ref, dict):
            rows.append((role, str(ref.get("tag", "")), int(ref.get("rank", -1)),
                         str(ref.get("part", "")) if ref.get("part") == "labels" else ""))

    params: dict[str, Any] = {}
    if t.kind == "inference":
        add("model", plan.get("model"))
        add("data", plan.get("data"))
    elif t.kind == "train":
        for ref in plan.get("features") or []:
            add("features", ref)
        add("labels", plan.get("labels"))
        params = {"epochs": plan.get("epochs", 30),
                  "learning_rate": plan.get("learning_rate", 1.0),
                  "hidden": plan.get("hidden", 8)}
    else:
        for ref in plan.get("data") or []:
            add("data", ref)
        params = {"stats": list(plan.get("stats") or STATS)}
        hist = plan.get("histogram")
        if isinstance(hist, dict):
            params["column"] = hist.get("column", 0)
            params["edges"] = list(hist.get("edges") or [])
    out = plan.get("output_to")
    return rows, out if isinstance(out, int) else None, params


EXAMPLE_SOURCE = '''def run(crypten):
    # crypten.load(tag, rank) secret-shares a dataset that only that rank reads;
    # crypten.load_model(tag) shares a model's architecture and encrypts its weights.
    x = crypten.load("TAG", 1)
    return x.mean(dim=0).get_plain_text(dst=0)   # revealed to rank 0 only
'''


def starter_source(bound: list[tuple[str, str, int]], reveal_to: int) -> str:
    """Example code for custom code that already uses the bound inputs, ``(kind, tag, rank)``,
    and reveals only to rank ``reveal_to``: something that runs, to edit from."""
    models = [(tag, rank) for kind, tag, rank in bound if kind == "model"]
    datasets = [(tag, rank) for kind, tag, rank in bound if kind == "dataset"]
    if not datasets:
        return EXAMPLE_SOURCE
    lines = ["def run(crypten):"]
    names = []
    for i, (tag, rank) in enumerate(datasets):
        name = "x" if len(datasets) == 1 else f"x{i}"
        names.append(name)
        lines.append(f"    {name} = crypten.load({tag!r}, {rank})  # only rank {rank} reads it")
    if models:
        lines.append(f"    model = crypten.load_model({models[0][0]!r})  # its weights stay "
                     f"encrypted")
        lines.append(f"    return model({names[0]}).get_plain_text(dst={reveal_to})  # to rank "
                     f"{reveal_to} only")
    elif len(names) == 1:
        lines.append(f"    return x.mean(dim=0).get_plain_text(dst={reveal_to})  # column means, "
                     f"to rank {reveal_to} only")
    else:
        lines.append("    return {")
        lines += [f"        {n!r}: {n}.mean(dim=0).get_plain_text(dst={reveal_to})," for n in names]
        lines.append(f"    }}  # column means of each input, to rank {reveal_to} only")
    return "\n".join(lines) + "\n"
