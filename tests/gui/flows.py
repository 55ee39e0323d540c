"""Helpers for the GUI flow tests: a wait on the orchestrator's events for a job to end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import JOB_TIMEOUT

ENDED = ("succeeded", "failed", "rejected", "cancelled")


@contextmanager
def job_ends(qtbot, conn, job_id: str, timeout_s: float = JOB_TIMEOUT  # noqa: ANN001
             ) -> Iterator[dict[str, Any]]:
    """Waits on the orchestrator's events (no polling) until its orchestration of ``job_id``
    ends; the yielded dict then holds the final ``{state, reason}``."""
    end: dict[str, Any] = {}

    def ended(event: dict[str, Any]) -> bool:
        data = event.get("data") or {}
        if (event.get("kind") == "job.state" and event.get("job_id") == job_id
                and event.get("role") == "orchestrator" and data.get("state") in ENDED):
            end.update(data)
            return True
        return False

    with qtbot.waitSignal(conn.sig_event_received, check_params_cb=ended,
                          timeout=int(timeout_s * 1000)):
        yield end
