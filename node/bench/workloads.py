"""What ``parley bench`` computes: each workload is one job source, its inputs and their owners.

The computation is written once, as the job a Parley user would submit
(``def run(crypten, torch)``, loading by tag). Parley's arm submits that source to real nodes;
the native arm runs the very same text in plain CrypTen processes (node/bench/native.py), where
``crypten.load`` is the owner reading its file and ``crypten.cryptensor(x, src=owner)``. The
operations, and so the rounds and bytes, can only differ by what Parley adds around them.

Workloads (``--workloads`` takes names and these groups):

* ``micro``: CrypTen's function microbenchmarks (add, mul, matmul, relu, sigmoid, exp) on
  100 x 100 tensors, ten times each, as CrypTen's own benchmark times them; x at rank 0, y at 1;
* ``models``: an MLP and a small CNN (ONNX, owned by rank 0) applied to rank 1's rows, and the
  MLP at three parties (rows at ranks 1 and 2);
* ``training``: logistic regression, features at rank 0 and labels at rank 1; at three
  parties, features split between ranks 0 and 1 and labels at rank 2;
* ``scaling``: the MLP and the logistic regression at 100, 400 and 1600 rows.

``--quick`` runs mul, mlp and logreg-3p at small sizes (20 x 20 twice, 50 rows, 2 epochs).

This module imports nothing heavy: the CLI reads the names to build its help.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

__all__ = ["AA_PREFERRED", "BINARY", "CNN", "EPOCHS", "FEATURES", "GROUPS", "INFERENCE",
           "INFERENCE_3P", "Input", "LOGREG", "LOGREG_3P", "LOGREG_BODY", "LOGREG_FEATURES",
           "MICRO_BINARY", "MICRO_OPS", "MICRO_UNARY", "QUICK", "Workload", "architecture_only",
           "catalogue", "generate", "groups_of", "select"]

MICRO_OPS = ("add", "mul", "matmul", "relu", "sigmoid", "exp")
BINARY = ("add", "mul", "matmul")
GROUPS = ("micro", "models", "training", "scaling", "long")
QUICK = ("mul", "mlp", "logreg-3p")
AA_PREFERRED = ("mlp", "logreg", "mul")
FEATURES = 30  # the MLP's input width, as in the demo's breast-cancer data
LOGREG_FEATURES = 10
EPOCHS = 10


@dataclass(frozen=True)
class Input:
    """One input of a workload at one party: a dataset (an array) or a model (ONNX)."""

    name: str  # its placeholder in the source
    rank: int
    kind: str  # "dataset" | "model"
    make: Callable[[Any], Any]  # numpy Generator -> array, or -> torch module (a model)
    example: tuple[int, ...] = ()  # a model's input shape (one row), for the export


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    group: str
    parties: int
    size: str  # the problem size in words, for tables
    source: str  # the job: a Template over the inputs' names
    inputs: tuple[Input, ...]
    result_to: int
    rows: int = 0  # for the scaling table
    family: str = ""  # workloads of one family differ in size only
    precision_bits: int = 16
    rtol: float = 1e-3  # how far the arms' results may differ, relative (see figures.py)

    def tag(self, name: str) -> str:
        return f"bench-{self.name}-{name}"

    def job_source(self) -> str:
        """The job's text with every input's tag filled in: what both arms run."""
        return Template(self.source).substitute({i.name: self.tag(i.name) for i in self.inputs})

    def file(self, data_dir: Path, item: Input, suffix: str = "") -> Path:
        ext = "onnx" if item.kind == "model" else "npy"
        return data_dir / f"{self.name}-{item.name}-r{item.rank}{suffix}.{ext}"


# -- the jobs ----------------------------------------------------------------------------------
MICRO_BINARY = """def run(crypten, torch):
    x = crypten.load("$x", 0)
    y = crypten.load("$y", 1)
    z = x.OP(y)
    for _ in range(REPEAT):
        z = x.OP(y)
    return z.get_plain_text(dst=0)
"""

MICRO_UNARY = """def run(crypten, torch):
    x = crypten.load("$x", 0)
    z = x.OP()
    for _ in range(REPEAT):
        z = x.OP()
    return z.get_plain_text(dst=0)
"""

INFERENCE = """def run(crypten, torch):
    data = crypten.load("$data", 1)
    model = crypten.load_model("$model")
    return model(data).get_plain_text(dst=1)
"""

INFERENCE_3P = """def run(crypten, torch):
    data = crypten.cat([crypten.load("$data", 1), crypten.load("$data", 2)], dim=0)
    model = crypten.load_model("$model")
    return model(data).get_plain_text(dst=1)
"""

CNN = """def run(crypten, torch):
    images = crypten.load("$images", 1)
    model = crypten.load_model("$model")
    logits = model(images.reshape(images.size(0), 1, 8, 8))
    return logits.get_plain_text(dst=1)
"""

LOGREG_BODY = """    n = x.size(0)
    w = crypten.cryptensor(torch.zeros(x.size(1), 1))
    b = crypten.cryptensor(torch.zeros(1))
    for _ in range(EPOCHS):
        err = (x.matmul(w) + b).sigmoid() - y
        w = w - x.t().matmul(err) * (1.0 / n)
        b = b - err.sum() * (1.0 / n)
    return crypten.cat([w.reshape(-1), b]).get_plain_text(dst=RESULT)
"""

LOGREG = """def run(crypten, torch):
    x = crypten.load("$x", 0)
    y = crypten.load("$y", 1)
""" + LOGREG_BODY

LOGREG_3P = """def run(crypten, torch):
    x = crypten.cat([crypten.load("$xa", 0), crypten.load("$xb", 1)], dim=1)
    y = crypten.load("$y", 2)
""" + LOGREG_BODY


# -- the data ----------------------------------------------------------------------------------
def _uniform(shape: tuple[int, ...]) -> Callable[[Any], Any]:
    return lambda rng: rng.uniform(-2.0, 2.0, size=shape).astype("float32")


def _normal(shape: tuple[int, ...]) -> Callable[[Any], Any]:
    return lambda rng: rng.standard_normal(shape).astype("float32")


def _logreg_data(rows: int, features: int) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Features and labels of one problem (labels from a fixed linear rule plus noise): both
    come from one seed of their own, so they match whichever party holds which."""
    def problem() -> tuple[Any, Any]:
        import numpy as np

        rng = np.random.default_rng([7, rows, features])
        x = rng.standard_normal((rows, features)).astype("float32")
        w = np.linspace(-1.0, 1.0, features).astype("float32")
        y = (x @ w + 0.3 * rng.standard_normal(rows)) > 0
        return x, y.astype("float32").reshape(-1, 1)

    return (lambda _rng: problem()[0]), (lambda _rng: problem()[1])


def _mlp(rng: Any) -> Any:
    import torch

    torch.manual_seed(int(rng.integers(1 << 31)))
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def _cnn(rng: Any) -> Any:
    import torch

    torch.manual_seed(int(rng.integers(1 << 31)))
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 10))


# -- the catalogue -----------------------------------------------------------------------------
def _micro(op: str, side: int, repeat: int) -> Workload:
    shape = (side, side)
    template = (MICRO_BINARY if op in BINARY else MICRO_UNARY).replace("OP", op)
    template = template.replace("REPEAT", str(repeat - 1))
    inputs = [Input("x", 0, "dataset", _uniform(shape))]
    if op in BINARY:
        inputs.append(Input("y", 1, "dataset", _uniform(shape)))
    # exp squares (1 + x/256) eight times: each square's truncation error (one unit of least
    # precision, different in each arm) doubles with every later one, so at exp(2) the arms
    # differ by up to ~1% (measured: 0.7%)
    return Workload(op, f"{op} ({side}x{side}, {repeat} times)", "micro", 2,
                    f"{side}x{side} x{repeat}", template, tuple(inputs), 0,
                    rtol=2e-2 if op == "exp" else 1e-3)


def _inference(name: str, rows: int, family: bool = True) -> Workload:
    return Workload(name, f"MLP {FEATURES}-32-16-2 on {rows} rows", "models", 2,
                    f"{rows} rows", INFERENCE,
                    (Input("model", 0, "model", _mlp, (1, FEATURES)),
                     Input("data", 1, "dataset", _normal((rows, FEATURES)))),
                    1, rows=rows, family="MLP inference" if family else "")


def _logreg(name: str, rows: int, epochs: int, group: str = "training") -> Workload:
    features, labels = _logreg_data(rows, LOGREG_FEATURES)
    source = LOGREG.replace("EPOCHS", str(epochs)).replace("RESULT", "1")
    return Workload(name, f"logistic regression, {rows} rows x {LOGREG_FEATURES}, {epochs} "
                    f"epochs, labels at rank 1", group, 2,
                    f"{rows}x{LOGREG_FEATURES} x{epochs}ep", source,
                    (Input("x", 0, "dataset", features), Input("y", 1, "dataset", labels)),
                    1, rows=rows,
                    family="logistic regression training" if group == "training" else "")


def catalogue(quick: bool = False) -> dict[str, Workload]:
    """Every workload, by name, at its default sizes (``quick``: small ones)."""
    side, repeat = (20, 2) if quick else (100, 10)
    rows = 50 if quick else 400
    epochs = 2 if quick else EPOCHS
    images = 8 if quick else 64
    items = [_micro(op, side, repeat) for op in MICRO_OPS]
    items.append(_inference("mlp", rows))
    items.append(Workload(
        "mlp-3p", f"MLP {FEATURES}-32-16-2 on {rows} rows split between ranks 1 and 2",
        "models", 3, f"2x{rows // 2} rows", INFERENCE_3P,
        (Input("model", 0, "model", _mlp, (1, FEATURES)),
         Input("data", 1, "dataset", _normal((rows // 2, FEATURES))),
         Input("data", 2, "dataset", _normal((rows // 2, FEATURES)))), 1))
    items.append(Workload(
        "cnn", f"CNN conv3x3(4)-relu-avgpool-linear on {images} 8x8 images", "models", 2,
        f"{images} images", CNN,
        (Input("model", 0, "model", _cnn, (1, 1, 8, 8)),
         Input("images", 1, "dataset", _normal((images, 64)))), 1))
    items.append(_logreg("logreg", rows, epochs))
    half = LOGREG_FEATURES // 2
    features, labels = _logreg_data(rows, LOGREG_FEATURES)
    items.append(Workload(
        "logreg-3p", f"logistic regression, {rows} rows, {half}+{half} features at ranks 0 "
        f"and 1, labels at rank 2, {epochs} epochs", "training", 3,
        f"{rows}x{half}+{half} x{epochs}ep",
        LOGREG_3P.replace("EPOCHS", str(epochs)).replace("RESULT", "2"),
        (Input("xa", 0, "dataset", lambda rng: features(rng)[:, :half]),
         Input("xb", 1, "dataset", lambda rng: features(rng)[:, half:]),
         Input("y", 2, "dataset", labels)), 2))
    if not quick:
        for size, scaled in (("small", 100), ("large", 1600)):
            items.append(_inference(f"mlp-{size}", scaled))
            items.append(_logreg(f"logreg-{size}", scaled, epochs))
        # a job of 5 s or more natively: where a fixed cost no longer hides a per-operation one
        items.append(_logreg("logreg-long", 1600, 8 * epochs, group="long"))
    return {w.name: w for w in items}


def groups_of(w: Workload) -> tuple[str, ...]:
    scaling = ("scaling",) if w.family else ()
    return (w.group, *scaling, f"{w.parties}p")


def select(names: str | None, parties: tuple[int, ...] = (2, 3), quick: bool = False
           ) -> list[Workload]:
    """The workloads named (names or groups, comma-separated; all when None), in catalogue
    order. ``ValueError`` naming what is unknown."""
    every = catalogue(quick)
    if not names:
        chosen = [every[n] for n in QUICK] if quick else list(every.values())
    else:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = set(every) | set(GROUPS) | {"all", "2p", "3p"}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"unknown workload(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(every)} or the groups {', '.join(GROUPS)}, 2p, 3p, "
                             f"all")
        chosen = [w for w in every.values()
                  if "all" in wanted or w.name in wanted or set(groups_of(w)) & set(wanted)]
    return [w for w in chosen if w.parties in parties]


def generate(workloads: list[Workload], data_dir: Path, seed: int = 0
             ) -> dict[tuple[str, str, int], Any]:
    """Write every input's file (the model's architecture with dummy weights too, for the other
    parties of the native arm); return the plaintext inputs (arrays and torch modules) for the
    plaintext twin. One seed per input: the same files every run."""
    import numpy as np

    from node.compat import onnx_bytes_from_pytorch

    plain: dict[tuple[str, str, int], Any] = {}
    for w in workloads:
        for item in w.inputs:
            rng = np.random.default_rng([seed, zlib.crc32(f"{w.name}/{item.name}/{item.rank}"
                                                          .encode())])
            if item.kind == "model":
                import torch

                module = item.make(rng).eval()
                real = onnx_bytes_from_pytorch(module, torch.zeros(item.example))
                w.file(data_dir, item).write_bytes(real)
                w.file(data_dir, item, ".arch").write_bytes(architecture_only(real))
                plain[(w.name, item.name, item.rank)] = module
            else:
                array = np.ascontiguousarray(item.make(rng), dtype=np.float32)
                np.save(w.file(data_dir, item), array, allow_pickle=False)
                plain[(w.name, item.name, item.rank)] = array
    return plain


def architecture_only(model_bytes: bytes) -> bytes:
    """The ONNX graph with every weight zeroed: what a party that does not own the model has."""
    import numpy as np
    import onnx

    model = onnx.load_model_from_string(model_bytes)
    for init in model.graph.initializer:
        zeros = np.zeros_like(onnx.numpy_helper.to_array(init))
        init.CopyFrom(onnx.numpy_helper.from_array(zeros, init.name))
    return model.SerializeToString()
