"""The statistics of ``parley bench``: ratios of pairs, their median and its bootstrap interval,
the A/A verdict, and the checks that both arms computed the same thing the same way.

A pair is one native run and the Parley run right after it, of one workload. Its ratio is
Parley / native; a workload's figure is the median over its pairs, with a 95% percentile
bootstrap interval (pairs resampled with replacement, a fixed seed: the same runs give the same
interval). The A/A comparison is the same statistic over pairs of native runs; it should land
in [0.9, 1.1]; when it does not, the machine was too noisy for ratios of about that size.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

__all__ = ["AA_BOUNDS", "ATOL", "BOOTSTRAP", "RTOL", "SEED", "aa_verdict", "as_array",
           "compare_fingerprints", "compare_results", "median_of", "medians", "ratio_figure"]

AA_BOUNDS = (0.9, 1.1)
BOOTSTRAP = 2000
SEED = 20240521
# Both arms decrypt the same fixed-point computation with different random shares, so their
# results differ by a few units of least precision (16 fractional bits: 1.5e-5) per truncation;
# measured: at most 2e-4 over tens of operations. The workloads whose iterations amplify it
# (exp) allow more, relative to the value (Workload.rtol).
ATOL = 2e-3
RTOL = 1e-3


def ratio_figure(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Median of per-pair ratios b / a with its bootstrap 95% interval; ``pairs`` of (a, b)."""
    ratios = [b / a for a, b in pairs if a > 0 and math.isfinite(b / a)]
    if not ratios:
        return {"median": None, "low": None, "high": None, "ratios": []}
    rng = random.Random(SEED)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios)))
                     for _ in range(BOOTSTRAP))
    low = medians[int(0.025 * BOOTSTRAP)]
    high = medians[min(BOOTSTRAP - 1, math.ceil(0.975 * BOOTSTRAP) - 1)]
    return {"median": statistics.median(ratios), "low": low, "high": high,
            "ratios": [round(r, 4) for r in ratios]}


def aa_verdict(figure: dict[str, Any]) -> dict[str, Any]:
    low, high = AA_BOUNDS
    median = figure.get("median")
    ok = median is not None and low <= median <= high
    text = (f"A/A ratio {median:.3f}: within {low}-{high}, the machine was quiet enough"
            if ok else
            f"A/A ratio {median:.3f} is outside {low}-{high}: TOO NOISY, ratios of that size "
            f"mean nothing on this run" if median is not None else "no A/A figure")
    return {"ok": ok, "verdict": text}


def median_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def medians(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: median_of([r.get(k) for r in rows]) for k in keys}


def as_array(value: Any) -> Any:
    """A result as a numpy array: Parley's (decoded already) or the native party's report."""
    import numpy as np

    if isinstance(value, dict) and "values" in value and "shape" in value:
        return np.asarray(value["values"], dtype=np.float64).reshape(value["shape"])
    return np.asarray(value, dtype=np.float64)


def compare_results(native: Any, parley: Any, plain: Any, rtol: float = RTOL
                    ) -> dict[str, Any]:
    """Whether both arms revealed the same result, within fixed-point tolerance; how far each
    is from the plaintext (for information: CrypTen's approximations are not exact)."""
    import numpy as np

    a, b = as_array(native), as_array(parley)
    out: dict[str, Any] = {"tolerance": f"|native - Parley| <= {ATOL} + {rtol:g} x |native|"}
    if a.shape != b.shape:
        out.update(agree=False, why=f"shapes differ: native {list(a.shape)}, Parley "
                                    f"{list(b.shape)}")
        return out
    diff = np.abs(a - b)
    bad = diff > ATOL + rtol * np.abs(a)
    out.update(agree=not bool(bad.any()), max_abs_diff=float(diff.max(initial=0.0)))
    if bad.any():
        at = np.unravel_index(int(np.argmax(diff - (ATOL + rtol * np.abs(a)))), a.shape)
        out["why"] = (f"{int(bad.sum())} of {a.size} values differ beyond the tolerance, e.g. at "
                      f"{list(map(int, at))}: native {a[at]:.6g}, Parley {b[at]:.6g}")
    p = as_array(plain)
    if p.shape == a.shape:
        out["native_vs_plaintext"] = float(np.abs(a - p).max(initial=0.0))
        out["parley_vs_plaintext"] = float(np.abs(b - p).max(initial=0.0))
    return out


def compare_fingerprints(native: list[dict[str, int]], parley: list[dict[str, int]]
                         ) -> dict[str, Any]:
    """Rounds and bytes each party sent, native against Parley: equal, or by how much not."""
    parties: list[dict[str, Any]] = []
    for rank, (n, p) in enumerate(zip(native, parley)):
        parties.append({"rank": rank, "native": n, "parley": p,
                        "extra_rounds": p["rounds"] - n["rounds"],
                        "extra_bytes": p["bytes"] - n["bytes"]})
    equal = len(native) == len(parley) and all(
        q["extra_rounds"] == 0 and q["extra_bytes"] == 0 for q in parties)
    out: dict[str, Any] = {"equal": equal, "parties": parties}
    if not equal:
        out["difference"] = "; ".join(
            f"rank {q['rank']}: Parley {q['parley']['rounds']} rounds / {q['parley']['bytes']} "
            f"bytes, native {q['native']['rounds']} / {q['native']['bytes']} "
            f"({q['extra_rounds']:+d} rounds, {q['extra_bytes']:+d} bytes)"
            for q in parties if q["extra_rounds"] or q["extra_bytes"])
    return out
