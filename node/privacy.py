"""What an owner lets each dataset reveal to others: a minimum aggregation, and optionally a
differential-privacy budget.

A dataset's settings live in its catalog schema under ``privacy`` (public: an orchestrator
states them in a proposal, every party enforces them the same way):

- ``min_rows``: a value revealed to anyone but the dataset's owner must aggregate at least
  this many of its rows (node/jail/lineage.py counts them at run time), and its rows must not
  differ from those of an earlier reveal by fewer than this many (differencing). 10 unless the
  owner says otherwise; 1 turns both checks off.
- ``dp`` (optional): ``{"epsilon": total budget, "bounds": [[low, high], ...] per column}``.
  Reveals from such a dataset to others get noise under encryption, calibrated to the bounds,
  and spend the budget; once it is spent the node refuses further reveals from it.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, TypeGuard

from node import db
from node.errors import BudgetSpent, StoreError

__all__ = ["DEFAULT_MIN_ROWS", "MAX_EPSILON", "MAX_MIN_ROWS", "RevealLedger", "check_dp",
           "check_min_rows", "key_of", "settings_of", "split_key"]

DEFAULT_MIN_ROWS = 10
MAX_MIN_ROWS = 1_000_000_000
MAX_EPSILON = 100.0


def key_of(tag: str, rank: int) -> str:
    """How a job's party names a bound dataset: its tag at its owner's rank."""
    return f"{tag}@{int(rank)}"


def split_key(key: str) -> tuple[str, int]:
    tag, _, rank = key.rpartition("@")
    return tag, int(rank)


def settings_of(schema: dict[str, Any]) -> dict[str, Any]:
    """A dataset's privacy settings (the defaults for one published before they existed)."""
    saved = schema.get("privacy") or {}
    return {"min_rows": int(saved.get("min_rows", DEFAULT_MIN_ROWS)), "dp": saved.get("dp")}


def check_min_rows(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_MIN_ROWS:
        raise StoreError(f"min_rows must be a whole number from 1 to {MAX_MIN_ROWS:,} (got "
                         f"{value!r}): the fewest rows of this dataset a value revealed to "
                         "someone else must aggregate; 1 turns the check off")
    return value


def check_dp(value: Any, columns: int) -> dict[str, Any] | None:
    """``None`` (off) or ``{"epsilon": e, "bounds": [[low, high]] * columns}``, checked."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"epsilon", "bounds"}:
        raise StoreError("dp must be {\"epsilon\": total budget, \"bounds\": [[low, high], ...] "
                         "one pair per column}")
    eps = value.get("epsilon")
    if not _number(eps) or not 0 < float(eps) <= MAX_EPSILON:
        raise StoreError(f"dp.epsilon must be a number in (0, {MAX_EPSILON:g}] (got {eps!r}): "
                         "the dataset's whole privacy budget; 1 to 3 is usual")
    bounds = value.get("bounds")
    if isinstance(bounds, list) and len(bounds) == 1 and columns > 1:
        bounds = bounds * columns  # one pair for every column
    if not isinstance(bounds, list) or len(bounds) != columns or not all(
            isinstance(b, list) and len(b) == 2 and all(map(_number, b)) and
            float(b[0]) < float(b[1]) for b in bounds):
        raise StoreError(f"dp.bounds must give [low, high] with low < high for each of the "
                         f"dataset's {columns} column(s), or one pair for all: values are "
                         "clipped to them, and the noise is scaled to high - low")
    return {"epsilon": float(eps), "bounds": [[float(lo), float(hi)] for lo, hi in bounds]}


def _number(x: Any) -> TypeGuard[int | float]:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)
            and math.isfinite(float(x)))


class RevealLedger:
    """The rows of each of this node's datasets that reveals to others covered, job after job:
    a later reveal whose rows differ from one of these in fewer than the dataset's
    ``min_rows`` is refused (node/jail/lineage.py). Kept by the owner's node only, in
    ``privacy.db``; the owner's party is given its datasets' history when a job starts."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS reveals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        asset_id TEXT NOT NULL, job_id TEXT NOT NULL, line INTEGER NOT NULL,
        rows TEXT NOT NULL, count INTEGER NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS reveals_asset ON reveals (asset_id, id);
    CREATE TABLE IF NOT EXISTS budget (
        asset_id TEXT NOT NULL, job_id TEXT NOT NULL, epsilon REAL NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (asset_id, job_id));
    """
    KEEP = 1000  # per dataset: the latest reveals a new one is compared with

    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._db = db.connect(data_dir / "privacy.db", self.SCHEMA)

    @db.off_loop
    def record(self, asset_id: str, job_id: str, line: int, rows: str, count: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO reveals (asset_id, job_id, line, rows, count, at) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (asset_id, job_id, int(line), rows, int(count), time.time()))

    @db.off_loop
    def history(self, asset_id: str) -> list[dict[str, Any]]:
        """The latest reveals of ``asset_id`` to others: packed rows, job and line."""
        with self._lock:
            found = self._db.execute(
                "SELECT rows, job_id, line FROM reveals WHERE asset_id = ? ORDER BY id DESC "
                "LIMIT ?", (asset_id, self.KEEP)).fetchall()
        return [{"rows": r, "job": j, "line": n} for r, j, n in found]

    @db.off_loop
    def spent(self, asset_id: str) -> float:
        """The differential-privacy budget (epsilon) approved jobs spent on ``asset_id``."""
        with self._lock:
            row = self._db.execute("SELECT sum(epsilon) FROM budget WHERE asset_id = ?",
                                   (asset_id,)).fetchone()
        return float(row[0] or 0.0)

    @db.off_loop
    def spend(self, asset_id: str, job_id: str, epsilon: float, total: float) -> float:
        """Spend ``epsilon`` of ``asset_id``'s ``total`` for ``job_id`` (once per job); what is
        left. BudgetSpent, and nothing spent, when too little is left."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = self._db.execute("SELECT 1 FROM budget WHERE asset_id = ? AND job_id = ?",
                                        (asset_id, job_id)).fetchone()
                spent = float(self._db.execute(
                    "SELECT sum(epsilon) FROM budget WHERE asset_id = ?",
                    (asset_id,)).fetchone()[0] or 0.0)
                if not done:
                    if spent + epsilon > total + 1e-9:
                        raise BudgetSpent(
                            f"its privacy budget has epsilon {max(total - spent, 0):g} of "
                            f"{total:g} left, and this job would spend {epsilon:g}")
                    self._db.execute("INSERT INTO budget VALUES (?, ?, ?, ?)",
                                     (asset_id, job_id, float(epsilon), time.time()))
                    spent += epsilon
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return max(total - spent, 0.0)

    def close(self) -> None:
        with self._lock:
            self._db.close()
