"""``parley bench``: the same workloads natively and through Parley, side by side.

One invocation runs every workload (node/bench/workloads.py) in two arms, interleaved
A/B/A/B: **native** (plain CrypTen, one process per party, launched the way a CrypTen user
launches them: node/bench/native.py and native_arm.py) and **Parley** (the same job source
submitted to real nodes: parley_arm.py). For each workload it reports the median of the
per-pair ratios Parley / native with a bootstrap 95% interval, for the whole job (submit to
result, against a cold native launch to result), warm (from the last approval, against native
after its imports) and the compute phase; an A/A comparison (native against native, same
invocation) says whether the machine was quiet enough for the ratios to mean anything. It
checks that both arms revealed the same results and that every party sent the same rounds and
bytes, and reports each phase, the CPU seconds of every process, the plaintext time and how
time and bytes grow with the problem size (compare.py, figures.py, output.py).

``parley bench --quick`` runs a few small workloads once and checks only that both arms agree
(results and fingerprint); it exits 1 and says what differs when they do not.

From Python (the GUI): ``run(workloads=..., pairs=..., parties=..., quick=...) -> dict``; the
dict is what ``--json`` prints and ``--out DIR`` writes as bench.json (with bench.png).
``benchmark_job`` benchmarks one finished job for the app (finished_job.py).

Errors: ``BenchError`` (a ``ParleyError``), with ``NativeRunError`` for a native party that
failed or hung; a Parley run that fails raises the client's ``JobFailed``.

This module is imported by the CLI to build its parser: nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from node.bench.compare import run
from node.bench.finished_job import benchmark_job
from node.bench.workloads import GROUPS, catalogue
from node.errors import BenchError, NativeRunError

__all__ = ["BenchError", "NativeRunError", "add_arguments", "benchmark_job", "main", "run"]


def _parties(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of party counts, e.g. 2,3"
                                         ) from None
    if not counts or any(c not in (2, 3) for c in counts):
        raise argparse.ArgumentTypeError("the workloads run at 2 or 3 parties: give 2, 3 or 2,3")
    return counts


def _pairs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of pairs (1 or more)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(catalogue())
    parser.add_argument("--quick", action="store_true",
                        help="a few small workloads, one pair: check only that both arms "
                             "agree on the results and on the rounds and bytes (exit 1 if not)")
    parser.add_argument("--pairs", type=_pairs, default=3, metavar="N",
                        help="A/B pairs per workload (default 3)")
    parser.add_argument("--workloads", metavar="LIST",
                        help=f"comma-separated workloads or groups (default: all). Workloads: "
                             f"{names}. Groups: {', '.join(GROUPS)}, 2p, 3p, all")
    parser.add_argument("--parties", type=_parties, default=(2, 3), metavar="2,3",
                        help="only workloads at these party counts (default 2,3)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="also write bench.json and bench.png (the chart) into DIR")
    parser.add_argument("--tls-cost", action="store_true",
                        help="also run every Parley job on a second set of nodes whose party "
                             "links are plain TCP (PARLEY_TLS_LINKS=0), interleaved: the time "
                             "and the bytes that TLS between the parties costs")
    parser.add_argument("--dp-accuracy", action="store_true",
                        help="instead: the statistics plan with differential privacy at "
                             "epsilon 0.1, 1 and 10, error against the exact answer "
                             "(node/bench/dp_accuracy.py)")


def main(args: argparse.Namespace) -> int:
    from node.bench.output import table

    if args.dp_accuracy:
        from node.bench import dp_accuracy

        found = dp_accuracy.run()
        print(json.dumps(found, indent=2) if args.json else dp_accuracy.table(found))
        return 0

    try:
        report = run(workloads=args.workloads, pairs=args.pairs, parties=args.parties,
                     quick=args.quick, out=args.out, tls_cost=args.tls_cost)
    except OSError as exc:
        raise BenchError(f"the benchmark stopped: {exc}") from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report))
    return _exit_status(report)


def _exit_status(report: dict[str, Any]) -> int:
    """1 when the arms disagree: on results always, and with ``--quick`` on the fingerprint
    too (the rounds and bytes each party sent)."""
    checks = report["checks"]
    failed = not checks["results_agree"] or (report["quick"] and not checks["fingerprints_equal"])
    if failed:
        print("parley bench: the arms differ:\n  " + "\n  ".join(checks["problems"]),
              file=sys.stderr)
    return 1 if failed else 0
