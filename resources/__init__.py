"""resources: the demo's sample data and model, shipped with Parley.

All files are derived from the Wisconsin Diagnostic Breast Cancer data (see LICENSE-data.md);
make_samples.py regenerates them from breast_cancer.csv.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """Path of a shipped file, e.g. ``path("alice_features.csv")``."""
    if not name or Path(name).name != name:
        raise ValueError(f"expected a plain file name in resources/, got {name!r}")
    result = _HERE / name
    if not result.is_file():
        shipped = sorted(p.name for p in _HERE.iterdir() if p.suffix in {".csv", ".onnx"})
        raise FileNotFoundError(
            f"no sample file {name!r} in {_HERE}; shipped: {', '.join(shipped)}"
        )
    return result
