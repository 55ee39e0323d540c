"""Ordinary jobs, written the way a data scientist writes them, run unchanged in real parties.

Each job is what CrypTen's tutorials and examples do (Tutorial 1's arithmetic and comparisons,
Tutorial 3's feature aggregation and linear SVM, Tutorial 5's reading of a layer's encrypted
weights, Tutorial 7's training loop with a per-epoch progress line), adapted only to Parley's
loading and reveal calls. Every one goes through two real ``parley node`` processes, each
starting a fresh party process for it (nothing warms torch up first), with every jail layer on,
and every one is checked against the same computation in plaintext.

alice (rank 0) holds three feature columns of 24 rows; bob (rank 1) holds two more columns of
the same rows and their binary label.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from node.client import results
from node.jail import static
from node.localnet import LocalNode
from tests.conftest import JOB_TIMEOUT, parties_writing_under, wait_until

ROWS = 24
_rng = np.random.default_rng(11)
ALICE = _rng.normal(size=(ROWS, 3)).round(4).astype(np.float32)
BOB = _rng.normal(size=(ROWS, 2)).round(4).astype(np.float32)
LABELS = (ALICE[:, 0] + BOB[:, 1] > 0).astype(np.float32)
JOINT = np.concatenate([ALICE, BOB], axis=1)


@dataclass(frozen=True)
class BenignJob:
    name: str
    source: str
    check: Callable[[Any], None]
    reveal_everyone: bool = False   # the proposal's reveal map: rank 0 only, unless this


def close(actual: Any, expected: Any, atol: float) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64), atol=atol, rtol=0)


# -- 1, 2: the first call of torch.full / torch.where imports torch from the job's frame ------
TORCH_FULL_FIRST = '''
def run(crypten):
    half = torch.full((3,), 0.5)
    x = crypten.load("alice-x", 0)
    return {"half": half.tolist(), "scaled_sums": (x * half).sum(0).get_plain_text(dst=0)}
'''


def check_torch_full_first(out: Any) -> None:
    assert out["half"] == [0.5, 0.5, 0.5]
    close(out["scaled_sums"], 0.5 * ALICE.sum(0), 1e-3)


TORCH_WHERE_FIRST = '''
def run(crypten):
    grid = torch.linspace(0, 1, 5)
    w = torch.where(grid > 0.5, grid, torch.zeros_like(grid))
    x = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1)
    return {"w": w.tolist(), "scores": x.matmul(w).get_plain_text(dst=0)}
'''


def check_torch_where_first(out: Any) -> None:
    assert out["w"] == [0.0, 0.0, 0.0, 0.75, 1.0]
    close(out["scores"], JOINT @ np.array([0, 0, 0, 0.75, 1.0]), 1e-3)


# -- 3: matrix products of two parties' features (Tutorial 3's feature aggregation) ---------
CROSS_PRODUCTS = '''
def run(crypten):
    a = crypten.load("alice-x", 0)
    b = crypten.load("bob-x", 1)
    n = a.size(0)
    cross = a.t().matmul(b)
    cov = cross / n - a.mean(0).unsqueeze(1).matmul(b.mean(0).unsqueeze(0))
    return {"n": n, "cross": cross.get_plain_text(dst=0), "cov": cov.get_plain_text(dst=0)}
'''


def check_cross_products(out: Any) -> None:
    assert out["n"] == ROWS
    close(out["cross"], ALICE.T.astype(np.float64) @ BOB, 5e-3)
    cov = ALICE.T.astype(np.float64) @ BOB / ROWS - np.outer(ALICE.mean(0), BOB.mean(0))
    close(out["cov"], cov, 1e-3)


# -- 4: column statistics: mean, variance, standard deviation, counts ------------------------
COLUMN_STATISTICS = '''
def run(crypten):
    x = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1)
    n = x.size(0)
    mean = x.mean(0)
    var = x.var(0)
    std = var.sqrt()
    positives = (x > 0).sum(0)
    extremes = (x.abs() > 1.8 * std).sum(0)
    return {"n": n, "mean": mean.get_plain_text(dst=0), "var": var.get_plain_text(dst=0),
            "std": std.get_plain_text(dst=0), "positives": positives.get_plain_text(dst=0),
            "extremes": extremes.get_plain_text(dst=0)}
'''


def check_column_statistics(out: Any) -> None:
    assert out["n"] == ROWS
    close(out["mean"], JOINT.mean(0), 1e-3)
    close(out["var"], JOINT.var(0, ddof=1), 2e-3)       # var(dim) divides by n - 1
    close(out["std"], JOINT.std(0, ddof=1), 5e-3)
    close(out["positives"], (JOINT > 0).sum(0), 1e-3)
    bound = 1.8 * JOINT.std(0, ddof=1)
    assert np.abs(np.abs(JOINT) - bound).min() > 1e-2, "a value sits on the bound: change it"
    close(out["extremes"], (np.abs(JOINT) > bound).sum(0), 1e-3)


# -- 5: Tutorial 7's training loop, a progress line per epoch, the layer's weights read -----
TRAIN_SEQUENTIAL_MSE = '''
def run(crypten):
    x = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1)
    y = crypten.load("bob-x", 1, part="labels").unsqueeze(1)
    torch.manual_seed(0)
    layer = crypten.nn.Linear(5, 1)
    start = {"weight": layer.weight.tolist(), "bias": layer.bias.tolist()}
    model = crypten.nn.Sequential(layer)
    model.encrypt(src=0)
    model.train()
    loss_fn = crypten.nn.MSELoss()
    epochs = 8
    losses = []
    for epoch in range(epochs):
        out = model(x)
        loss = loss_fn(out, y)
        model.zero_grad()
        loss.backward()
        model.update_parameters(0.1)
        value = loss.get_plain_text(dst=0)
        losses.append(value)
        print(f"epoch {epoch + 1}/{epochs}: loss {value}")
    return {"start": start, "losses": losses, "weight": layer.weight.get_plain_text(dst=0),
            "bias": layer.bias.get_plain_text(dst=0)}
'''


def _plain_linear(start_w: Any, start_b: Any) -> torch.nn.Linear:
    layer = torch.nn.Linear(5, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(start_w))
        layer.bias.copy_(torch.tensor(start_b))
    return layer


def check_train_sequential_mse(out: Any) -> None:
    layer = _plain_linear(out["start"]["weight"], out["start"]["bias"])
    x, y = torch.from_numpy(JOINT), torch.from_numpy(LABELS).unsqueeze(1)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.mse_loss(layer(x), y)
        layer.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in layer.parameters():
                p -= 0.1 * p.grad
        losses.append(loss.item())
    close([float(v) for v in out["losses"]], losses, 5e-3)
    close(out["weight"], layer.weight.detach().numpy(), 5e-3)
    close(out["bias"], layer.bias.detach().numpy(), 5e-3)
    assert losses[-1] < losses[0]


# -- 6: crypten.optim.SGD with a logistic loss; the trained layer's weights revealed --------
TRAIN_OPTIM_BCE = '''
def run(crypten):
    x = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1)
    y = crypten.load("bob-x", 1, part="labels").unsqueeze(1)
    torch.manual_seed(1)
    first = crypten.nn.Linear(5, 1)
    start_weight = first.weight.tolist()
    start_bias = first.bias.tolist()
    model = crypten.nn.Sequential(first)
    model.encrypt(src=0)
    model.train()
    loss_fn = crypten.nn.BCEWithLogitsLoss()
    optimizer = crypten.optim.SGD(model.parameters(), lr=0.5)
    for epoch in range(6):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return {"start_weight": start_weight, "start_bias": start_bias,
            "weight": first.weight.get_plain_text(dst=0),
            "bias": first.bias.get_plain_text(dst=0)}
'''


def check_train_optim_bce(out: Any) -> None:
    layer = _plain_linear(out["start_weight"], out["start_bias"])
    x, y = torch.from_numpy(JOINT), torch.from_numpy(LABELS).unsqueeze(1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(6):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(layer(x), y).backward()
        optimizer.step()
    close(out["weight"], layer.weight.detach().numpy(), 2e-2)
    close(out["bias"], layer.bias.detach().numpy(), 2e-2)
    assert np.abs(np.asarray(out["weight"]) - np.asarray(out["start_weight"])).max() > 0.1


# -- 7: logistic regression by hand (gradient descent on the sigmoid) ------------------------
LOGISTIC_BY_HAND = '''
def run(crypten):
    x = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1)
    y = crypten.load("bob-x", 1, part="labels").unsqueeze(1)
    n, d = x.size()
    w = crypten.cryptensor(torch.zeros(d, 1))
    b = crypten.cryptensor(torch.zeros(1))
    lr = 0.5
    for _ in range(10):
        err = (x.matmul(w) + b).sigmoid() - y
        w = w - x.t().matmul(err) * (lr / n)
        b = b - err.sum() * (lr / n)
    predicted = (x.matmul(w) + b) > 0
    accuracy = (predicted == y).mean()
    return {"w": w.get_plain_text(dst=0), "b": b.get_plain_text(dst=0),
            "accuracy": accuracy.get_plain_text(dst=0)}
'''


def check_logistic_by_hand(out: Any) -> None:
    x, y = JOINT.astype(np.float64), LABELS[:, None].astype(np.float64)
    w, b = np.zeros((5, 1)), 0.0
    for _ in range(10):
        err = 1 / (1 + np.exp(-(x @ w + b))) - y
        w, b = w - x.T @ err * (0.5 / ROWS), b - err.sum() * (0.5 / ROWS)
    close(out["w"], w, 1e-2)
    close(out["b"], [b], 1e-2)
    close(out["accuracy"], (((x @ w + b) > 0) == y).mean(), 1.5 / ROWS)


# -- 8: sigmoid and softmax -----------------------------------------------------------------
SIGMOID_SOFTMAX = '''
def run(crypten):
    x = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1)
    probs = x.softmax(1)
    return {"sigmoid": x.sigmoid().get_plain_text(dst=0), "softmax": probs.get_plain_text(dst=0),
            "row_sums": probs.sum(1).get_plain_text(dst=0)}
'''


def check_sigmoid_softmax(out: Any) -> None:
    x = torch.from_numpy(JOINT)
    close(out["sigmoid"], torch.sigmoid(x).numpy(), 1e-2)
    close(out["softmax"], torch.softmax(x, 1).numpy(), 1e-2)
    close(out["row_sums"], np.ones(ROWS), 2e-2)


# -- 9: comparisons, argmax and where (Tutorial 1) -------------------------------------------
COMPARISONS_ARGMAX = '''
def run(crypten):
    a = crypten.load("alice-x", 0)
    b = crypten.load("bob-x", 1)
    x = crypten.cat([a, b], dim=1)
    best = x.argmax(dim=1)
    alice_ahead = (a[:, 0] > b[:, 0]).sum()
    relu = crypten.where(x > 0, x, 0.0)
    return {"best": best.get_plain_text(dst=0), "alice_ahead": alice_ahead.get_plain_text(dst=0),
            "relu_sums": relu.sum(0).get_plain_text(dst=0),
            "row_max": x.max(dim=1)[0].get_plain_text(dst=0)}
'''


def check_comparisons_argmax(out: Any) -> None:
    np.testing.assert_array_equal(out["best"], np.eye(5)[JOINT.argmax(1)])  # one-hot rows
    assert float(out["alice_ahead"]) == pytest.approx((ALICE[:, 0] > BOB[:, 0]).sum(), abs=1e-3)
    close(out["relu_sums"], np.maximum(JOINT, 0).sum(0), 1e-3)
    close(out["row_max"], JOINT.max(1), 1e-3)


# -- 10: a report built with f-strings: specs, nested widths, conversions, `=` ---------------
FSTRING_REPORT = '''
def run(crypten):
    a = crypten.load("alice-x", 0)
    b = crypten.load("bob-x", 1)
    n = a.size(0)
    means = crypten.cat([a, b], dim=1).mean(0).get_plain_text()
    names = ["a", "b", "c", "d", "e"]
    width = 6
    lines = [f"{'column':<{width}}|{'mean':>{width + 2}}"]
    for i, name in enumerate(names):
        lines.append(f"{name!s:<{width}}|{means[i]:>{width + 2}.3f}")
    lines.append(f"{n=} rows, {len(names)!r} columns")
    return "\\n".join(lines)
'''


def check_fstring_report(out: Any) -> None:
    lines = out.split("\n")
    assert lines[0] == "column|    mean"
    assert lines[-1] == "n=24 rows, 5 columns"
    assert [line[:7] for line in lines[1:-1]] == [f"{c:<6}|" for c in "abcde"]
    assert all(re.fullmatch(r" *-?\d+\.\d{3}", line[7:]) and len(line) == 15
               for line in lines[1:-1]), lines
    close([float(line[7:]) for line in lines[1:-1]], JOINT.mean(0), 2e-3)


# -- 11: building plain tensors: arange, full, cat, stack, eye, ones_like --------------------
PLAIN_TORCH_BUILDERS = '''
def run(crypten):
    steps = torch.arange(5).float()
    ramp = torch.cat([steps[:3], torch.full((2,), -1.0)])
    weights = torch.stack([ramp, torch.ones_like(ramp)]).t()
    x = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1)
    proj = x.matmul(weights)
    centred = proj - proj.mean(0)
    return {"weights": weights.tolist(), "trace": torch.eye(5).trace().item(),
            "proj": proj.get_plain_text(dst=0),
            "spread": centred.square().mean(0).get_plain_text(dst=0)}
'''


def check_plain_torch_builders(out: Any) -> None:
    weights = np.array([[0, 1], [1, 1], [2, 1], [-1, 1], [-1, 1]], dtype=np.float64)
    assert out["weights"] == weights.tolist()
    assert out["trace"] == 5.0
    proj = JOINT.astype(np.float64) @ weights
    close(out["proj"], proj, 2e-3)
    close(out["spread"], proj.var(0), 5e-3)


# -- 12: CrypTen's linear SVM example (examples/mpc_linear_svm), features as rows ------------
LINEAR_SVM = '''
def run(crypten):
    features = crypten.cat([crypten.load("alice-x", 0), crypten.load("bob-x", 1)], dim=1).t()
    labels = crypten.load("bob-x", 1, part="labels") * 2 - 1
    torch.manual_seed(3)
    w0 = torch.randn(1, features.size(0))
    b0 = torch.randn(1)
    w = features.new(w0)
    b = features.new(b0)
    lr = 0.5
    for epoch in range(10):
        label_predictions = w.matmul(features).add(b).sign()
        correct = label_predictions.mul(labels)
        accuracy = correct.add(1).div(2).mean()
        print(f"Epoch {epoch} --- Training Accuracy {accuracy.get_plain_text(dst=0)}")
        loss_grad = -labels * (1 - correct) * 0.5
        b_grad = loss_grad.mean()
        w_grad = loss_grad.matmul(features.t()).div(loss_grad.size(1))
        w -= w_grad * lr
        b -= b_grad * lr
    return {"w0": w0.tolist(), "b0": b0.tolist(), "w": w.get_plain_text(dst=0),
            "b": b.get_plain_text(dst=0), "accuracy": accuracy.get_plain_text(dst=0)}
'''


def check_linear_svm(out: Any) -> None:
    features, labels = JOINT.T.astype(np.float64), LABELS.astype(np.float64) * 2 - 1
    w, b = np.array(out["w0"], dtype=np.float64), np.array(out["b0"], dtype=np.float64)
    for _ in range(10):
        score = w @ features + b
        assert np.abs(score).min() > 1e-2, "a row sits on the margin: pick another seed"
        correct = np.where(score < 0, -1.0, 1.0) * labels          # CrypTen's sign(0) is 1
        accuracy = ((correct + 1) / 2).mean()
        loss_grad = -labels * (1 - correct) * 0.5
        w, b = w - loss_grad @ features.T / ROWS * 0.5, b - loss_grad.mean() * 0.5
    close(out["w"], w, 1e-2)
    close(out["b"], b, 1e-2)
    close(out["accuracy"], accuracy, 1e-3)


JOBS = [
    BenignJob("torch-full-first", TORCH_FULL_FIRST, check_torch_full_first),
    BenignJob("torch-where-first", TORCH_WHERE_FIRST, check_torch_where_first),
    BenignJob("two-party-cross-products", CROSS_PRODUCTS, check_cross_products),
    BenignJob("column-statistics", COLUMN_STATISTICS, check_column_statistics),
    BenignJob("train-sequential-mse-progress", TRAIN_SEQUENTIAL_MSE, check_train_sequential_mse),
    BenignJob("train-optim-bce-layer-weights", TRAIN_OPTIM_BCE, check_train_optim_bce),
    BenignJob("logistic-regression-by-hand", LOGISTIC_BY_HAND, check_logistic_by_hand),
    BenignJob("sigmoid-softmax", SIGMOID_SOFTMAX, check_sigmoid_softmax),
    BenignJob("comparisons-argmax-where", COMPARISONS_ARGMAX, check_comparisons_argmax),
    BenignJob("fstring-report", FSTRING_REPORT, check_fstring_report, reveal_everyone=True),
    BenignJob("plain-torch-builders", PLAIN_TORCH_BUILDERS, check_plain_torch_builders),
    BenignJob("linear-svm-example", LINEAR_SVM, check_linear_svm),
]


def write_csv(path: Path, values: np.ndarray, header: str) -> Path:
    rows = [header] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalNode, LocalNode]]:
    """alice and bob: two real nodes, paired, each holding its part of the rows."""
    base = tmp_path_factory.mktemp("benign")
    alice = LocalNode("alice", base / "alice", auto_approve=True)
    bob = LocalNode("bob", base / "bob", auto_approve=True)
    try:
        alice.start()
        bob.start()
        alice.pair_with(bob)
        assert alice.client is not None and bob.client is not None
        alice.client.publish(write_csv(base / "alice.csv", ALICE, "a,b,c"), tags=["alice-x"])
        # bob lets alice see his values row by row (a minimum of 1 row): four of these
        # tutorial jobs reveal results per row of his data to her (sigmoid and softmax per row,
        # comparisons, a row maximum), which the default minimum of 10 rows refuses
        # (tests/test_reveal_rows.py); alice's data keeps the default, and the jobs that
        # reveal aggregates of his rows would pass it too
        bob.client.publish(write_csv(base / "bob.csv", np.column_stack([BOB, LABELS]), "d,e,y"),
                           tags=["bob-x"], label_column="y", min_rows=1)
        yield alice, bob
    finally:
        alice.stop()
        bob.stop()
    wait_until(lambda: not parties_writing_under(base), 15,
               "every party process to end (none may be left behind)")


def submit(network: tuple[LocalNode, LocalNode], job: BenignJob) -> dict[str, Any]:
    alice, bob = network
    assert alice.client is not None
    spec = {"title": job.name, "source": job.source, "entry": "run",
            "parties": [alice.party.spec(), bob.party.spec()],
            "bindings": [{"tag": "alice-x", "rank": 0, "kind": "dataset"},
                         {"tag": "bob-x", "rank": 1, "kind": "dataset"}],
            "result_to": [0], "reveal_to": [0, 1] if job.reveal_everyone else [0],
            "reveal_everyone": job.reveal_everyone}
    submitted = alice.client.submit(spec)
    return alice.client.wait(submitted["id"], timeout=JOB_TIMEOUT)


def test_the_jobs_are_the_benign_suite() -> None:
    assert len(JOBS) >= 12
    assert len({j.name for j in JOBS}) == len(JOBS)
    for job in JOBS:  # each passes the static layer on its own, with nothing to add
        info = static.check(job.source, "run")
        assert info.reveals, job.name


@pytest.mark.parametrize("job", JOBS, ids=[j.name for j in JOBS])
def test_benign_job_runs_unchanged_in_real_parties(network: tuple[LocalNode, LocalNode],
                                                   job: BenignJob) -> None:
    done = submit(network, job)
    assert done["state"] == "succeeded", f"{job.name}: {done['reason']}"
    job.check(results(done)[0])
