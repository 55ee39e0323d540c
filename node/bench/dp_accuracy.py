"""Accuracy against privacy: the statistics plan with differential privacy at several epsilons.

Three loopback nodes each hold the wages of one company (synthetic: 500 employees, columns
age 18-70, hours 10-60 a week, wage 20-200 k a year, declared as the dataset's bounds). Alice
asks for the mean of every column over all 1,500 rows, with noise, ``repeats`` times at each
epsilon; the error is the noisy mean against the plaintext mean, per column, as a share of the
column's range. ``parley bench --dp-accuracy`` prints the table the README quotes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from node.localnet import LocalNode

__all__ = ["BOUNDS", "COLUMNS", "ROWS", "companies", "run", "table"]

COLUMNS = ("age", "hours", "wage")
BOUNDS = [[18.0, 70.0], [10.0, 60.0], [20.0, 200.0]]
ROWS = 500


def companies(seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for shift in (0.0, 5.0, -5.0):
        age = np.clip(rng.normal(42 + shift / 2, 11, ROWS), 18, 70)
        hours = np.clip(rng.normal(38, 6, ROWS), 10, 60)
        wage = np.clip(rng.lognormal(np.log(55 + shift), 0.4, ROWS), 20, 200)
        out.append(np.round(np.stack([age, hours, wage], axis=1), 1))
    return out


def run(epsilons: tuple[float, ...] = (0.1, 1.0, 10.0), repeats: int = 5,
        say: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    base = Path(tempfile.mkdtemp(prefix="parley-dp-"))
    nodes = [LocalNode(n, base / n, auto_approve=True) for n in ("alice", "bob", "carol")]
    data = companies()
    exact = np.concatenate(data).mean(axis=0)
    ranges = np.array([hi - lo for lo, hi in BOUNDS])
    rows: list[dict[str, Any]] = []
    try:
        for node in nodes:
            node.start()
        for i, a in enumerate(nodes):
            for b in nodes[i + 1:]:
                a.pair_with(b)
        budget = round(repeats * sum(epsilons) + 0.5, 1)  # enough for every run below
        for node, values in zip(nodes, data):
            path = base / f"{node.name}.csv"
            np.savetxt(path, values, delimiter=",", header=",".join(COLUMNS), comments="",
                       fmt="%.1f")
            node.api.publish(path, tags=["wages"], dp={"epsilon": budget, "bounds": BOUNDS})
        client = nodes[0].api
        for eps in epsilons:
            errors, seconds = [], []
            for _ in range(repeats):
                plan = {"kind": "statistics", "stats": ["count", "mean"], "output_to": 0,
                        "data": [{"tag": "wages", "rank": r} for r in range(3)],
                        "dp": {"epsilon": eps}}
                t0 = time.monotonic()
                job = client.wait(client.submit({"title": "dp accuracy", "plan": plan,
                                                 "parties": [n.party.spec() for n in nodes]}
                                                )["id"], timeout=300)
                seconds.append(time.monotonic() - t0)
                if job["state"] != "succeeded":
                    raise RuntimeError(f"epsilon {eps}: {job['reason']}")
                from node.client import results

                got = np.array(results(job)[0]["mean"], dtype=float)
                errors.append(np.abs(got - exact))
            err = np.array(errors)
            n = 3 * ROWS
            rows.append({
                "epsilon": eps, "runs": repeats,
                "noise_scale": [float(ranges.sum() / (n * eps))] * len(COLUMNS),
                "mean_abs_error": dict(zip(COLUMNS, err.mean(axis=0).round(4).tolist())),
                "error_share_of_range": dict(zip(COLUMNS, (err.mean(axis=0) / ranges)
                                                 .round(5).tolist())),
                "seconds": float(np.median(seconds))})
            say(f"epsilon {eps:g}: mean abs error " + ", ".join(
                f"{c} {e:.3f}" for c, e in rows[-1]["mean_abs_error"].items()))
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {"rows": 3 * ROWS, "columns": list(COLUMNS), "bounds": BOUNDS,
            "exact_mean": dict(zip(COLUMNS, exact.round(3).tolist())), "table": rows}


def table(report: dict[str, Any]) -> str:
    """Markdown, as the README shows it."""
    cols = report["columns"]
    lines = [f"Mean of {report['rows']:,} rows over 3 parties, Laplace noise under encryption "
             f"(exact: " + ", ".join(f"{c} {v:g}" for c, v in report["exact_mean"].items())
             + ")", "",
             "| epsilon | " + " | ".join(f"{c}: mean abs error" for c in cols)
             + " | runs | seconds per job |",
             "|---|" + "---|" * (len(cols) + 2)]
    for row in report["table"]:
        lines.append(f"| {row['epsilon']:g} | " + " | ".join(
            f"{row['mean_abs_error'][c]:.3f} ({100 * row['error_share_of_range'][c]:.2f} % "
            f"of range)" for c in cols) + f" | {row['runs']} | {row['seconds']:.2f} |")
    return "\n".join(lines)
