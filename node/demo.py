"""``parley demo``: three local nodes compute on data none of them shares.

alice, bob and carol each run a real node (own process, own data dir, own store) on the
loopback and publish their part of the Wisconsin breast-cancer data (resources/). carol
orchestrates three jobs; every owner reviews and approves each proposal through its own
admin API, as `parley approve` would:

1. model hiding: alice's private model on bob's private data; carol knows neither, bob gets
   the predictions;
2. feature aggregation + data labelling: logistic regression trained on 15 columns at alice
   and 15 at bob, with the labels at carol;
3. dataset augmentation: statistics over rows split across all three.

Each result is printed next to the plaintext answer computed here from the same files.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from node.client import NodeClient, results, run_multiworkers
from node.localnet import LocalNode
from resources import path as resource

EPOCHS = 30
LEARNING_RATE = 1.0
# The model folds feature standardisation into its first layer, so small-valued features meet
# large weights and CrypTen's default 16-bit encoding of the inputs shows (max error ~1.2e-2).
INFERENCE_PRECISION_BITS = 20


# -- the jobs (their source is what the owners review) ---------------------------------------
def encrypted_inference(crypten):
    data = crypten.load("bc-inference", 1)         # only bob reads it; its shape is in the proposal
    model = crypten.load_model("bc-model")         # architecture in the proposal, weights encrypted
    logits = model(data)
    return logits.get_plain_text(dst=1)            # bob alone sees the predictions


def train_logistic_regression(crypten, torch):
    xa = crypten.load("bc-features-a", 0, standardize=True)   # 15 columns at alice
    xb = crypten.load("bc-features-b", 1, standardize=True)   # 15 columns at bob
    y = crypten.load("bc-labels", 2)                          # the diagnosis at carol
    x = crypten.cat([xa, xb], dim=1)
    n, d = x.size()
    w = crypten.cryptensor(torch.zeros(d, 1))
    b = crypten.cryptensor(torch.zeros(1))
    for _ in range(30):
        err = (x.matmul(w) + b).sigmoid() - y
        w = w - x.t().matmul(err) * (1.0 / n)
        b = b - err.sum() * (1.0 / n)
    pred = (x.matmul(w) + b) > 0
    wrong = pred + y - pred * y * 2
    accuracy = 1 - wrong.mean()
    return {"accuracy": accuracy.get_plain_text(dst=2), "weights": w.get_plain_text(dst=2)}


def row_statistics(crypten):
    x = crypten.cat([crypten.load("bc-rows", r) for r in range(3)], dim=0)
    y = crypten.cat([crypten.load("bc-rows", r, part="labels") for r in range(3)], dim=0)
    mean = x.mean(0)
    variance = ((x - mean) * (x - mean)).mean(0)
    return {"rows": x.size(0), "mean": mean.get_plain_text(dst=0),
            "variance": variance.get_plain_text(dst=0),
            "benign_share": y.mean().get_plain_text(dst=0)}


# -- plaintext answers -----------------------------------------------------------------------
def read_csv(name: str) -> tuple[list[str], np.ndarray]:
    with open(resource(name)) as f:
        header = f.readline().strip().split(",")
    return header, np.loadtxt(resource(name), delimiter=",", skiprows=1, ndmin=2)


def plain_inference() -> np.ndarray:
    import torch

    from node.compat import crypten

    with warnings.catch_warnings():  # CrypTen's converter warns about read-only numpy arrays
        warnings.simplefilter("ignore", UserWarning)
        model = crypten.nn.from_onnx(io.BytesIO(resource("alice_model.onnx").read_bytes()))
    _, x = read_csv("bob_inference.csv")
    return model(torch.tensor(x, dtype=torch.float32)).detach().numpy()


def standardize(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def plain_logistic_regression() -> float:
    x = np.hstack([standardize(read_csv("alice_features.csv")[1]),
                   standardize(read_csv("bob_features.csv")[1])])
    y = read_csv("carol_labels.csv")[1]
    n, d = x.shape
    w, b = np.zeros((d, 1)), 0.0
    for _ in range(EPOCHS):
        err = 1 / (1 + np.exp(-(x @ w + b))) - y
        w -= LEARNING_RATE * x.T @ err / n
        b -= LEARNING_RATE * err.sum() / n
    return float((((x @ w + b) > 0) == (y > 0.5)).mean())


def plain_statistics() -> dict[str, Any]:
    rows = np.vstack([read_csv(f"rows_{p}.csv")[1] for p in ("alice", "bob", "carol")])
    x, y = rows[:, :-1], rows[:, -1]
    return {"rows": len(rows), "mean": x.mean(0), "variance": x.var(0), "benign_share": y.mean()}


# -- running it ------------------------------------------------------------------------------
def approve_all(owners: list[LocalNode], job_id: str, timeout: float = 60) -> None:
    """Each owner finds the proposal in its inbox and approves the exact hash it reviewed."""
    for owner in owners:
        assert owner.client is not None
        deadline = time.monotonic() + timeout
        while True:
            inbox = [j for j in owner.client.jobs(role="party", states=["awaiting_approval"])
                     if j["id"] == job_id]
            if inbox:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{owner.name} never received {job_id}")
            time.sleep(0.05)
        owner.client.approve(job_id, inbox[0]["proposal_hash"])
        print(f"    {owner.name} reviewed {job_id} (hash {inbox[0]['proposal_hash'][:12]}) "
              f"and approved")


def run_phase(title: str, spec: dict[str, Any], orchestrator: NodeClient,
              parties: list[LocalNode], result_to: int) -> tuple[Any, float, dict[str, Any]]:
    print(f"\n== {title}")
    t0 = time.monotonic()
    job = orchestrator.submit(spec)
    approve_all(parties, job["id"])
    done = orchestrator.wait(job["id"], timeout=600)
    wall = time.monotonic() - t0
    value = results(done)[result_to]
    return value, wall, done


def party_line(done: dict[str, Any]) -> str:
    parts = []
    for _rank, party in sorted(done["detail"]["parties"].items()):
        t = party.get("timings", {})
        s = party.get("stats", {})
        start = (f"warm worker, start {t.get('imported_at_s', 0):.2f}s" if t.get("warm")
                 else f"cold start {t.get('imported_at_s', t.get('import_s', 0)):.1f}s")
        parts.append(f"{party['name']}: {start}, rendezvous "
                     f"{t.get('rendezvous_s', 0):.2f}s, load {t.get('load_s', 0):.2f}s, compute "
                     f"{t.get('compute_s', 0):.2f}s, {s.get('rounds', 0)} rounds, "
                     f"{s.get('bytes', 0) / 1e6:.2f} MB")
    return "\n    ".join(parts)


PUBLISHED = {
    "alice": [("alice_model.onnx", ["bc-model"], None),
              ("alice_features.csv", ["bc-features-a"], None),
              ("rows_alice.csv", ["bc-rows"], "diagnosis")],
    "bob": [("bob_inference.csv", ["bc-inference"], None),
            ("bob_features.csv", ["bc-features-b"], None),
            ("rows_bob.csv", ["bc-rows"], "diagnosis")],
    "carol": [("carol_labels.csv", ["bc-labels"], None),
              ("rows_carol.csv", ["bc-rows"], "diagnosis")],
}


def start_nodes(base: Path, say: Callable[[str], None] = print) -> list[LocalNode]:
    """alice, bob and carol on the loopback, paired with each other, their files published
    (the headless demo and the windows of gui/demo_windows.py start the same)."""
    nodes = [LocalNode(name, base / name) for name in ("alice", "bob", "carol")]
    alice, bob, carol = nodes
    t0 = time.monotonic()
    try:
        for node in nodes:
            node.start()
        say(f"three nodes up on the loopback in {time.monotonic() - t0:.1f}s: "
            + ", ".join(f"{n.name} {n.peer_url}" for n in nodes))
        for a, b in ((alice, bob), (alice, carol), (bob, carol)):
            a.pair_with(b)
        say("  paired alice-bob, alice-carol, bob-carol (both owners compared the 6-digit "
            "code and confirmed; TLS pinned, requests signed)")
        for node in nodes:
            files = PUBLISHED[node.name]
            for filename, tags, label in files:
                node.api.publish(resource(filename), tags=tags, label_column=label)
            say(f"  {node.name} published " + ", ".join(f for f, _, _ in files))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def job_specs(alice: LocalNode, bob: LocalNode, carol: LocalNode
              ) -> list[tuple[str, dict[str, Any], int]]:
    """The demo's three jobs as (title, the spec carol submits, the rank that gets the
    result): the same specs `parley submit` and the app's Compose view take."""
    def spec(title: str, fn: Callable[..., Any], parties: list[LocalNode],
             bindings: list[tuple[str, int, str]], result_to: int,
             precision_bits: int | None = None) -> tuple[str, dict[str, Any], int]:
        job = run_multiworkers([p.party for p in parties], client=carol.api,
                               bindings=bindings, result_to=[result_to], title=title,
                               precision_bits=precision_bits)(fn)
        return title, job.spec, result_to

    return [
        spec("1. encrypted inference: alice's model on bob's data (carol orchestrates)",
             encrypted_inference, [alice, bob],
             [("bc-model", 0, "model"), ("bc-inference", 1, "dataset")], 1,
             INFERENCE_PRECISION_BITS),
        spec("2. logistic regression: features at alice and bob, labels at carol",
             train_logistic_regression, [alice, bob, carol],
             [("bc-features-a", 0, "dataset"), ("bc-features-b", 1, "dataset"),
              ("bc-labels", 2, "dataset")], 2),
        spec("3. statistics over rows split across alice, bob and carol",
             row_statistics, [alice, bob, carol],
             [("bc-rows", r, "dataset") for r in range(3)], 0),
    ]


def main(keep: bool = False) -> int:
    t_all = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="parley-demo-"))
    nodes = start_nodes(base)
    alice, bob, carol = nodes
    failures = 0
    try:
        orchestrator = carol.client
        assert orchestrator is not None
        specs = job_specs(alice, bob, carol)

        value, wall, done = run_phase(specs[0][0], specs[0][1], orchestrator, [alice, bob], 1)
        plain = plain_inference()
        err = float(np.abs(np.asarray(value) - plain).max())
        agree = float((np.asarray(value).argmax(1) == plain.argmax(1)).mean())
        print(f"    {len(plain)} rows: max |encrypted - plaintext| = {err:.2e}, same class for "
              f"{agree:.1%}; wall {wall:.1f}s\n    {party_line(done)}")
        failures += err >= 1e-2

        value, wall, done = run_phase(specs[1][0], specs[1][1], orchestrator,
                                      [alice, bob, carol], 2)
        acc = float(np.asarray(value["accuracy"]))
        plain_acc = plain_logistic_regression()
        print(f"    training accuracy: encrypted {acc:.1%}, plaintext {plain_acc:.1%} "
              f"(same {EPOCHS} epochs of gradient descent); wall {wall:.1f}s\n"
              f"    {party_line(done)}")
        failures += abs(acc - plain_acc) > 0.02

        value, wall, done = run_phase(specs[2][0], specs[2][1], orchestrator,
                                      [alice, bob, carol], 0)
        truth = plain_statistics()
        mean_err = float(np.abs(np.asarray(value["mean"]) - truth["mean"]).max())
        var_err = np.abs(np.asarray(value["variance"]) - truth["variance"])
        # Relative error only where the variance is well above fixed-point resolution (2**-16):
        # some columns here have variances near 1e-5, which 16 fractional bits cannot hold.
        big = truth["variance"] > 1e-2
        var_rel = float((var_err[big] / truth["variance"][big]).max())
        share = float(np.asarray(value["benign_share"]))
        share_err = abs(share - truth["benign_share"])
        print(f"    {value['rows']} rows (plaintext {truth['rows']}): max mean error "
              f"{mean_err:.2e}; variance: max abs error {float(var_err.max()):.2e}, max relative "
              f"error {var_rel:.2e} over the {int(big.sum())} columns with variance > 0.01; "
              f"benign share {share:.4f} (plaintext {truth['benign_share']:.4f}); "
              f"wall {wall:.1f}s\n    {party_line(done)}")
        failures += mean_err > 1e-2 or var_rel > 1e-2 or share_err > 1e-3
    finally:
        for node in nodes:
            node.stop()
        if not keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"data dirs kept in {base}")
    print(f"\ndemo {'finished' if not failures else 'FAILED'} in {time.monotonic() - t_all:.1f}s;"
          f" all nodes stopped")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
