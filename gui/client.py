"""The GUI's one seam to its node: every admin API call returns at once, answers with a signal.

Why an asyncio loop on a thread with aiohttp, and not QNetworkAccessManager: the node's event
stream is a long poll that must survive the node stopping, restarting on another port (its
node.json changes) and freezing; with aiohttp these are ordinary timeouts and retries in one
coroutine, the same client code the node itself uses for peers, and a slow or frozen node costs
the GUI thread nothing (PLATFORM.md: a handler on the Qt loop stalls the window; a loop on its
own thread with Qt signals across does not). Results cross into Qt only through a future's
done-callback that emits a signal; Qt queues it to the GUI thread.

    conn = NodeConnection(data_dir)
    conn.get("/admin/v1/assets").then(self._on_assets, self._on_error)
    conn.sig_event_received.connect(self._on_event)
    conn.start()

Errors arrive as the specific ``ParleyError`` subclass of the node's problem document
(``node.errors.error_from_problem``); an unreachable node is ``NodeUnreachable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import aiohttp
import shiboken6
from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from node.errors import NodeUnreachable, ParleyError, error_from_problem
from node.paths import data_dir as resolve_data_dir

logger = logging.getLogger(__name__)

EVENT_POLL_S = 20.0
HEARTBEAT_S = 3.0
__all__ = ["NodeConnection", "Reply", "read_node_info"]


def read_node_info(data_dir: Path) -> dict[str, Any] | None:
    """What a running node of ``data_dir`` wrote about itself (admin URL, token, pid)."""
    try:
        info = json.loads((data_dir / "node.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "admin_url" in info and "token" in info else None


class Reply(QObject):
    """One admin call in flight. Exactly one of the two signals fires, on the GUI thread."""

    sig_finished = Signal(object)
    """The call succeeded: the decoded JSON answer."""
    sig_failed = Signal(object)
    """The call failed: a ParleyError (a specific subclass where the node said which)."""

    def __init__(self, connection: NodeConnection) -> None:
        super().__init__()
        self._connection = connection

    def then(self, on_ok: Callable[[Any], None] | None = None,
             on_error: Callable[[ParleyError], None] | None = None,
             owner: QObject | None = None) -> Reply:
        """Where the answer goes; a failure without ``on_error`` goes to the connection's
        ``sig_error_raised`` (the window shows it), so none is lost. With ``owner`` (the view
        the callbacks belong to), an answer that arrives after that view was deleted is
        dropped: a lambda, unlike a bound slot, is not disconnected when its view goes."""
        def guarded(callback: Callable[[Any], None]) -> Callable[[Any], None]:
            if owner is None:
                return callback
            return lambda value: callback(value) if shiboken6.isValid(owner) else None

        if on_ok is not None:
            self.sig_finished.connect(guarded(on_ok))
        self.sig_failed.connect(guarded(on_error) if on_error is not None
                                else self._connection.sig_error_raised.emit)
        return self


class NodeConnection(QObject):
    """The admin API of the node that runs on one data dir, from the GUI thread."""

    sig_event_received = Signal(dict)
    """A node event (``{"seq", "kind", "job_id", "role", "data"}``), in order."""
    sig_connection_changed = Signal(bool, str)
    """The node started (True) or stopped (False) answering, with a sentence for people. Every
    call tells: the newest call to end decides, counted by when it was sent, so an answer that
    was on its way when the node stopped does not say it is back."""
    sig_error_raised = Signal(object)
    """A call without its own error handler failed: the ParleyError, for the status bar."""
    _sig_deliver = Signal(object, object)
    """Internal: (emit, value) from the loop thread, run on the GUI thread (queued)."""

    def __init__(self, data_dir: str | Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir = resolve_data_dir(data_dir)
        self.cursor = 0
        self.connected: bool | None = None
        self._verdict_sent = 0.0  # when the call that last decided ``connected`` was sent
        self._info: dict[str, Any] | None = None
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._replies: set[Reply] = set()
        self._tasks: list[Future[Any]] = []
        self._sig_deliver.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        self._thread = threading.Thread(target=self._run_loop, name="parley-gui-io", daemon=True)
        self._thread.start()

    # -- the loop thread ------------------------------------------------------------------
    @Slot(object, object)
    def _deliver(self, emit: Callable[..., None], value: Any) -> None:
        if isinstance(value, tuple):
            emit(*value)
        else:
            emit(value)

    def _to_gui(self, emit: Callable[..., None], value: Any) -> None:
        """Called on the loop thread: ``emit(value)`` happens on the GUI thread."""
        self._sig_deliver.emit(emit, value)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _admin(self) -> tuple[str, str]:
        """The admin URL and token, re-read when the node restarts (node.json changes)."""
        info = read_node_info(self.data_dir)
        if info is None:
            raise NodeUnreachable(f"no node is running for {self.data_dir}; start it from this "
                                  f"window or with `parley node --data-dir {self.data_dir}`")
        self._info = info
        return str(info["admin_url"]).rstrip("/"), str(info["token"])

    async def _call(self, method: str, path: str, body: Any, timeout: float) -> Any:
        sent = time.monotonic()
        try:
            url, token = self._admin()
        except NodeUnreachable as exc:
            self._set_connected(False, exc.message, sent)
            raise
        session = await self._http()
        try:
            async with session.request(
                    method, url + path, json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text) if text else None
                except ValueError:
                    data = None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            what = "did not answer in time" if isinstance(exc, asyncio.TimeoutError) else \
                "is not answering"
            message = (f"the node of {self.data_dir} {what}; it may have stopped or be frozen. "
                       "Start it again from this window.")
            self._set_connected(False, message, sent)
            raise NodeUnreachable(message) from None
        self._set_connected(True, "connected to the node", sent)  # it answered, even a refusal
        if resp.status >= 400:
            raise error_from_problem(data, resp.status)
        return data

    # -- calls from the GUI thread ------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Reply:
        """Start one admin call (``path`` from ``/admin/v1/...``); returns at once."""
        reply = Reply(self)
        if self._loop.is_closed():  # a late timer of a closing view: answer, never raise
            QTimer.singleShot(0, lambda: reply.sig_failed.emit(NodeUnreachable(
                "the window's connection to the node is closed")))
            return reply
        self._replies.add(reply)  # kept alive until it has answered
        reply.sig_finished.connect(lambda _=None, r=reply: self._replies.discard(r))
        reply.sig_failed.connect(lambda _=None, r=reply: self._replies.discard(r))

        def done(future: Future[Any]) -> None:  # on the loop thread: only emit
            if future.cancelled():
                return  # the connection is closing
            exc = future.exception()
            if exc is None:
                self._to_gui(reply.sig_finished.emit, future.result())
            elif isinstance(exc, ParleyError):
                self._to_gui(reply.sig_failed.emit, exc)
            else:
                logger.error("admin call %s %s failed: %r", method, path, exc)
                self._to_gui(reply.sig_failed.emit, ParleyError(
                    f"the call to the node failed unexpectedly ({type(exc).__name__})"))

        self._submit(self._call(method, path, body, timeout)).add_done_callback(done)
        return reply

    def get(self, path: str, timeout: float = 30) -> Reply:
        return self.request("GET", "/admin/v1" + path, None, timeout)

    def post(self, path: str, body: Any = None, timeout: float = 30) -> Reply:
        return self.request("POST", "/admin/v1" + path, {} if body is None else body, timeout)

    def patch(self, path: str, body: Any) -> Reply:
        return self.request("PATCH", "/admin/v1" + path, body)

    def put(self, path: str, body: Any) -> Reply:
        return self.request("PUT", "/admin/v1" + path, body)

    def delete(self, path: str, body: Any = None) -> Reply:
        return self.request("DELETE", "/admin/v1" + path, body)

    @property
    def info(self) -> dict[str, Any] | None:
        """The node's node.json as last read (admin URL, pid, ...), or None."""
        return self._info or read_node_info(self.data_dir)

    # -- the event stream and the heartbeat ---------------------------------------------------
    def start(self, after: int | None = None) -> None:
        """Follow the node's events from ``after`` (default: the cursor) and watch that it
        answers; both keep going across node restarts until ``close()``."""
        if after is not None:
            self.cursor = after
        if not self._tasks:
            self._tasks = [self._submit(self._follow()), self._submit(self._heartbeat())]

    def _set_connected(self, up: bool, message: str, sent: float) -> None:
        """On the loop thread, when a call sent at ``sent`` ended: answered (``up``) or not.
        A call sent before the one that last decided says nothing new."""
        if sent < self._verdict_sent:
            return
        self._verdict_sent = sent
        if up != self.connected:
            self.connected = up
            self._to_gui(self.sig_connection_changed.emit, (up, message))

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._call("GET", "/admin/v1/status", None, HEARTBEAT_S)
            except ParleyError:
                pass  # the call has told sig_connection_changed
            except Exception:  # a bug must not stop the watch: the banner depends on it
                logger.exception("the GUI's heartbeat call failed unexpectedly")
            await asyncio.sleep(HEARTBEAT_S)

    async def _follow(self) -> None:
        while True:
            try:
                answer = await self._call(
                    "GET", f"/admin/v1/events?after={self.cursor}&timeout={EVENT_POLL_S:.0f}",
                    None, EVENT_POLL_S + HEARTBEAT_S)
                events = list(answer.get("events", []))
            except Exception as exc:  # noqa: BLE001 - the stream must outlive any one answer
                if not isinstance(exc, ParleyError):
                    logger.exception("the GUI's event stream failed unexpectedly")
                await asyncio.sleep(0.5)  # the heartbeat tells the person; retry quietly
                continue
            for event in events:
                self.cursor = max(self.cursor, int(event["seq"]))
                self._to_gui(self.sig_event_received.emit, event)

    @Slot()
    def close(self) -> None:
        """Stop the stream and the loop thread (the node itself keeps running)."""
        if not self._loop.is_running():
            return

        async def shutdown() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            if self._session is not None:
                await self._session.close()

        try:
            self._submit(shutdown()).result(timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            logger.debug("closing the GUI's node connection", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
