"""Helpers for the GUI flow tests: views that go away before their connection does, and a
wait on the orchestrator's events for a job to end."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import pytest
import shiboken6
from PySide6.QtWidgets import QWidget

from tests.conftest import JOB_TIMEOUT

W = TypeVar("W", bound=QWidget)
ENDED = ("succeeded", "failed", "rejected", "cancelled")


@pytest.fixture
def keep(connect, dispose) -> Iterator[Callable[[W], W]]:  # noqa: ANN001
    """``keep(widget)``: the widget is shown, and deleted (with the dialogs it opened) at
    teardown before the connections close, so no timer of it calls a closed connection."""
    made: list[QWidget] = []

    def add(widget: W) -> W:
        made.append(widget)
        widget.show()
        return widget

    yield add
    for widget in reversed(made):
        if shiboken6.isValid(widget):
            dispose(widget)


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
