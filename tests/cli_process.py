"""The console command in a process of its own, as an operator runs it, for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``circuit-migrate ARGS`` in its own process (no database URL or Prefect API inherited)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for name in ("SOURCE_DATABASE_URL", "TARGET_DATABASE_URL", "PREFECT_API_URL"):
        env.pop(name, None)
    command = "from flows.cli import app; app(prog_name='circuit-migrate')"
    return subprocess.run(
        [sys.executable, "-c", command, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The single ``error:`` line on stderr of a command that exited ``code``, holding each of
    ``words``."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
