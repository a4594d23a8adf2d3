"""Prefect in the CLI process: a temporary API server that dies with the process, and console
logs without tracebacks for the errors the CLI reports itself.

With no ``PREFECT_API_URL``, Prefect starts a temporary API server (a uvicorn subprocess) on
first use, in the caller's process group and with no tie to the caller's life: Ctrl-C in a
terminal killed it mid-run (every later Prefect call failed), and SIGKILL left it running.
:func:`start_temporary_server` starts it first, the same way, but in a session of its own (a
terminal's Ctrl-C does not reach it; the CLI stops it at exit) and, on Linux, with a
parent-death signal, so it dies with the CLI even on SIGKILL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from schemas.errors import MigrationError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STARTUP_SECONDS = 60  # at least, to start the temporary server (Prefect's default: 20)


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _die_with(parent: int, libc: Any) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def start_temporary_server() -> int | None:
    """Start Prefect's temporary API server now, tied to this process (above), unless
    ``PREFECT_API_URL`` names a server or temporary servers are disabled; returns its process
    id. Call from the main thread (the parent-death signal follows the thread that forks)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    if (
        os.name != "posix"
        or PREFECT_API_URL.value()
        or not PREFECT_SERVER_EPHEMERAL_ENABLED.value()
    ):
        return None  # Prefect starts its own when first needed, or uses the one named

    class TiedServer(SubprocessASGIServer):
        """Prefect's SubprocessASGIServer, its process in a new session and killed with ours."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # The command and environment of Prefect 3's SubprocessASGIServer, plus the tie.
            import prefect
            from prefect.settings import get_current_settings

            assert self.port is not None
            return subprocess.Popen(
                args=[
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env={
                    **os.environ,
                    "PREFECT_UI_ENABLED": "0",
                    "PREFECT__SERVER_EPHEMERAL": "1",
                    "PREFECT__SERVER_FINAL": "1",
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
                # silent: it logs only errors, like its own traceback when stopped while starting
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with(os.getpid(), _libc()),
            )

    # Prefect asks SubprocessASGIServer() for "the" temporary server: this one, already up.
    server = TiedServer()
    try:
        server.start(
            timeout=max(STARTUP_SECONDS, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        )
    except RuntimeError as exc:  # Prefect's "Timed out while attempting to connect ..."
        raise MigrationError(
            f"Prefect's temporary API server did not start ({str(exc).splitlines()[0]}): set"
            " PREFECT_API_URL to a running Prefect server, or raise"
            " PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        ) from None
    return server.server_process.pid if server.server_process else None


_NOTICES = ("Starting temporary server", "Stopping temporary server")


class _QuietMigrationErrors(logging.Filter):
    """Drops log records that carry a MigrationError (the CLI prints it as one line) and the
    temporary server's start and stop notices (the CLI owns that server)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MigrationError):
            return False
        return not str(record.msg).startswith(_NOTICES)


def quiet_migration_errors() -> None:
    """Keep Prefect's console handler from printing a flow's MigrationError with its traceback
    (the record still reaches the Prefect API, where the flow run's logs live)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in (None, "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _QuietMigrationErrors) for f in handler.filters
            ):
                handler.addFilter(_QuietMigrationErrors())
