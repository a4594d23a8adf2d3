"""Stopping a run cleanly on SIGINT or SIGTERM (DESIGN.md section 6).

The CLI keeps the main thread for signals and runs the flow in a worker thread
(:func:`run_in_thread`), so Prefect never sees a signal. The first SIGINT or SIGTERM only sets
a flag the flow reads: no new batch starts, a batch that has not begun its load stops at its
next stage, a load may still commit for ``LOAD_GRACE`` seconds before its statements are
cancelled (it rolls back), and reads are cancelled at once (:func:`cancel_on_stop`). A signal
that comes before the flow runs raises :class:`Interrupted`. A second signal ends the process at
once: the server rolls back what was in flight and the ledger still shows what ``retry`` must
re-run.
"""

from __future__ import annotations

import contextvars
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeVar

import psycopg

from schemas.errors import Interrupted

LOAD_GRACE = 3.0  # seconds a started load may still take to commit after the first signal
CANCEL_EVERY = 0.2  # seconds between cancel requests to a connection past its grace
HANDLED = (signal.SIGINT, signal.SIGTERM)

R = TypeVar("R")


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ..."""
    return signal.Signals(signum).name


@dataclass
class _State:
    event: threading.Event = field(default_factory=threading.Event)
    signum: int = 0
    at: float = 0.0
    flow_running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: dict[int, tuple[psycopg.Connection, float]] = field(default_factory=dict)
    run_id: str | None = None  # set once the run and its batches are in the ledger
    at_exit: list[Callable[[], None]] = field(default_factory=list)


_state = _State()


def requested() -> bool:
    """Whether a SIGINT or SIGTERM asked the run to stop."""
    return _state.event.is_set()


def signal_number() -> int:
    """The signal that asked the run to stop (0: none)."""
    return _state.signum


def reason() -> str:
    """``interrupted by SIGTERM`` (the signal that asked the run to stop)."""
    return f"interrupted by {signal_name(_state.signum)}" if _state.signum else "interrupted"


def check() -> None:
    """Raise :class:`Interrupted` if a signal asked the run to stop."""
    if requested():
        raise Interrupted(_state.signum, reason())


def wait(seconds: float) -> bool:
    """Sleep ``seconds`` or until a stop is requested; returns whether one was."""
    return _state.event.wait(seconds)


def resumable(run_id: str) -> None:
    """Note that ``run_id`` and its batches are in the ledger (``retry`` can resume it)."""
    _state.run_id = run_id


def at_hard_stop(action: Callable[[], None]) -> None:
    """Run ``action`` (quick, best effort) before a second signal ends the process."""
    _state.at_exit.append(action)


@contextmanager
def cancel_on_stop(conn: psycopg.Connection, grace: float = 0.0) -> Iterator[None]:
    """While the block runs, cancel ``conn``'s statements from ``grace`` seconds after a stop
    request on (repeatedly, so a statement started late is cancelled too)."""
    key = id(conn)
    with _state.lock:
        _state.connections[key] = (conn, grace)
    try:
        yield
    finally:
        with _state.lock:
            _state.connections.pop(key, None)


def _cancel_loop(event: threading.Event) -> None:
    while event.is_set() and _state.event is event:
        now = time.monotonic()
        with _state.lock:
            due = [c for c, grace in _state.connections.values() if now >= _state.at + grace]
        for conn in due:
            # a connection that is closing or gone has nothing left to cancel
            with suppress(Exception):
                conn.cancel_safe(timeout=2)
        time.sleep(CANCEL_EVERY)


def _say(line: str) -> None:
    os.write(2, (line + "\n").encode())  # safe in a signal handler, unlike buffered streams


def _hard_stop(signum: int) -> None:
    first = _state.signum or signum
    resume = (
        f"resume with: circuit-migrate retry {_state.run_id}"
        if _state.run_id
        else "no batch was recorded: run it again"
    )
    _say(f"stopped at once by a second {signal_name(signum)}; {resume}")
    for action in _state.at_exit:
        with suppress(Exception):  # best effort: the process ends now whatever happens
            action()
    os._exit(128 + first)


def _handle(signum: int, _frame: FrameType | None) -> None:
    if _state.event.is_set():
        _hard_stop(signum)
        return
    _state.signum, _state.at = signum, time.monotonic()
    _state.event.set()
    threading.Thread(
        target=_cancel_loop, args=(_state.event,), name="cancel-on-stop", daemon=True
    ).start()
    if not _state.flow_running:
        raise Interrupted(signum, f"interrupted by {signal_name(signum)} before the run started")
    _say(
        f"{signal_name(signum)}: stopping; no new batch starts, running batches commit or roll"
        " back (a second Ctrl-C or SIGTERM stops at once)"
    )


@contextmanager
def handling_signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as described above while the block runs (main thread only;
    elsewhere the block runs with the handlers it has)."""
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.event.clear()  # stops a previous command's cancel loop
    _state = _State()
    previous = {signum: signal.signal(signum, _handle) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_in_thread(func: Callable[[], R]) -> R:
    """Call ``func`` in a worker thread (with this thread's context variables), so that this
    (main) thread stays free to handle signals; returns its result or raises its error."""
    context = contextvars.copy_context()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = context.run(func)
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, name="circuit-migrate-run", daemon=True)
    _state.flow_running = True
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
    finally:
        _state.flow_running = False
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
