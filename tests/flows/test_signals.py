"""SIGINT, SIGTERM and SIGKILL on a real ``python -m flows run`` (DESIGN.md section 6): a clean
stop within 10 s, nothing wrongly recorded as done, no process left behind, and ``retry``
completes the run into exactly what a clean run loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.settings import PREFECT_API_URL

from flows import spill
from flows.migrate import RunOptions, run_migration
from flows.verify import verify
from tests.flows.conftest import target_digest

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS, SEED = 120, 7


def ledger(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params or []).fetchall()


@pytest.fixture(scope="module")
def clean_digest(seeded_db: Callable[[int, int], str]) -> dict[str, str]:
    url = seeded_db(USERS, SEED)
    run_migration(url, url, RunOptions(source_schema="legacy", batch_size=25, concurrency=2))
    return target_digest(url)


def slowed_db(seeded_db: Callable[[int, int], str], seconds: float) -> str:
    """A seeded database whose target inserts into tagged_models each take ``seconds``."""
    url = seeded_db(USERS, SEED)
    with psycopg.connect(url) as conn:
        conn.execute(
            "create function slow() returns trigger language plpgsql as $$ begin"
            f" perform pg_sleep({seconds}); return null; end $$;"
            "create trigger slow after insert on public.tagged_models"
            " for each statement execute function slow()"
        )
    return url


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and parent pid of ``pid`` (None: no such process)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``, with its command line."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            parents.setdefault(stat[1], []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found[child] = cmd
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def wait_gone(pids: Iterator[int] | list[int], seconds: float = 10) -> list[int]:
    """The processes of ``pids`` still alive after up to ``seconds``."""
    left = list(pids)
    deadline = time.monotonic() + seconds
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if alive(pid)]
        time.sleep(0.05)
    return [pid for pid in left if alive(pid)]


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    url: str
    scratch: Path
    stderr: Path
    stdout: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()


def start_run(
    url: str, tmp_path: Path, *, temporary_server: bool = True, new_session: bool = False
) -> Run:
    """``python -m flows run`` in batches of 10 users, 2 at once; with ``temporary_server``
    Prefect starts its temporary API server for the run (no PREFECT_API_URL), else it uses
    the test harness's. The extract folder goes under ``tmp_path / "scratch"``."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    env.pop("PREFECT_API_URL", None)
    if not temporary_server:
        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows", "run", "--source-url", url, "--target-url", url,
         "--source-schema", "legacy", "--batch-size", "10", "--concurrency", "2",
         "--report-dir", str(tmp_path / "reports")],
        env=env,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        start_new_session=new_session,
    )  # fmt: skip
    return Run(proc, url, scratch, err, out)


def wait_for(run: Run, sql: str, seconds: float = 180) -> None:
    """Poll the ledger until ``sql`` (one boolean) holds; fail if the run ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, f"the run ended first: {run.output()}"
        with psycopg.connect(run.url, autocommit=True) as conn:
            try:
                row = conn.execute(sql).fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
        if row and row[0]:
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for: {sql}")


SUCCEEDED_2 = "select count(*) >= 2 from migration.batches where status = 'succeeded'"


def signal_and_wait(run: Run, signum: int, *, group: bool = False) -> tuple[int, float]:
    """Send ``signum`` to the run (to its process group, as Ctrl-C in a terminal does, when
    ``group``); return its exit code and the seconds it took to exit."""
    sent = time.monotonic()
    if group:
        os.killpg(run.proc.pid, signum)
    else:
        run.proc.send_signal(signum)
    try:
        code = run.proc.wait(timeout=60)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    return code, time.monotonic() - sent


def check_interrupted(run: Run, code: int, expected: int, seconds: float) -> str:
    """The common checks of a run stopped by a signal; returns its run id."""
    out, err = run.output()
    assert code == expected, (out, err)
    assert seconds < 10, (seconds, out, err)
    assert "Traceback" not in err + out and "Crash detected" not in err, err
    ((run_id, status),) = ledger(run.url, "select run_id::text, status from migration.runs")
    assert status == "interrupted"
    resume = [
        line for line in (out + err).splitlines() if f"circuit-migrate retry {run_id}" in line
    ]
    assert len(resume) == 1, (out, err)
    # a batch recorded succeeded read exactly what the plan counted for it
    for no, counts in ledger(
        run.url, "select batch_no, counts from migration.batches where status = 'succeeded'"
    ):
        planned = counts["planned"]
        read = {t: counts["tables"][t]["source"] for t in counts["tables"]}
        assert all(read[t] == planned[t] for t in read), (no, read, planned)
    left = ledger(run.url, "select count(*) from migration.batches where status <> 'succeeded'")
    assert left[0][0] > 0
    assert not list(run.scratch.glob(f"{spill.FOLDER_PREFIX}*")), "extract folder left behind"
    return str(run_id)


def retry_completes(run: Run, run_id: str, clean_digest: dict[str, str], tmp_path: Path) -> None:
    with psycopg.connect(run.url) as conn:
        conn.execute("drop trigger slow on public.tagged_models")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    retried = subprocess.run(
        [sys.executable, "-m", "flows", "retry", run_id, "--source-url", run.url,
         "--target-url", run.url, "--report-dir", str(tmp_path / "reports")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    assert ledger(run.url, "select status from migration.runs") == [("succeeded",)]
    assert target_digest(run.url) == clean_digest
    assert verify(run.url, run.url, source_schema="legacy").ok


def test_sigterm_stops_cleanly_and_retry_completes(
    seeded_db: Callable[[int, int], str], clean_digest: dict[str, str], tmp_path: Path
) -> None:
    run = start_run(slowed_db(seeded_db, 0.4), tmp_path)
    wait_for(run, SUCCEEDED_2)
    children = descendants(run.proc.pid)
    assert any("uvicorn" in cmd for cmd in children.values()), children  # the temporary server
    code, seconds = signal_and_wait(run, signal.SIGTERM)
    run_id = check_interrupted(run, code, 143, seconds)
    assert wait_gone(list(children)) == [], children
    retry_completes(run, run_id, clean_digest, tmp_path)


def test_ctrl_c_stops_cleanly_and_retry_completes(
    seeded_db: Callable[[int, int], str], clean_digest: dict[str, str], tmp_path: Path
) -> None:
    # Ctrl-C in a terminal: SIGINT to the whole foreground process group
    run = start_run(slowed_db(seeded_db, 0.4), tmp_path, new_session=True)
    wait_for(run, SUCCEEDED_2)
    children = descendants(run.proc.pid)
    code, seconds = signal_and_wait(run, signal.SIGINT, group=True)
    run_id = check_interrupted(run, code, 130, seconds)
    _, err = run.output()
    assert "EventsWorker" not in err and "ConnectError" not in err, err
    assert wait_gone(list(children)) == [], children
    retry_completes(run, run_id, clean_digest, tmp_path)


def test_a_second_ctrl_c_stops_at_once(
    seeded_db: Callable[[int, int], str], clean_digest: dict[str, str], tmp_path: Path
) -> None:
    run = start_run(slowed_db(seeded_db, 4), tmp_path, new_session=True)
    wait_for(run, "select count(*) >= 1 from migration.batches where status = 'succeeded'")
    children = descendants(run.proc.pid)
    os.killpg(run.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    while "SIGINT: stopping" not in run.stderr.read_text():  # the first one is handled
        assert time.monotonic() < deadline and run.proc.poll() is None, run.output()
        time.sleep(0.02)
    code, seconds = signal_and_wait(run, signal.SIGINT, group=True)
    out, err = run.output()
    assert code == 130 and seconds < 3, (code, seconds, out, err)
    assert "Traceback" not in err and "stopped at once" in err, err
    ((run_id,),) = ledger(run.url, "select run_id::text from migration.runs")
    assert f"circuit-migrate retry {run_id}" in err
    assert wait_gone(list(children)) == [], children
    assert not list(run.scratch.glob(f"{spill.FOLDER_PREFIX}*"))
    retry_completes(run, run_id, clean_digest, tmp_path)


def test_sigkill_leaves_no_prefect_server_behind(
    seeded_db: Callable[[int, int], str], tmp_path: Path
) -> None:
    run = start_run(slowed_db(seeded_db, 0.4), tmp_path)
    wait_for(run, "select count(*) >= 1 from migration.batches where status = 'succeeded'")
    children = descendants(run.proc.pid)
    assert any("uvicorn" in cmd for cmd in children.values()), children
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(timeout=30)
    assert wait_gone(list(children)) == [], children  # the server died with the run
