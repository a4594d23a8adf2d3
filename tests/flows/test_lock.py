"""One run at a time: the target's advisory lock refuses a second run, and records it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.lock import commit_key, guard_commit, guard_of, holder, lock_key, run_lock
from flows.migrate import RunOptions, run_migration
from flows.verify import verify
from schemas.errors import RunInProgress, RunLockLost
from tests.flows.conftest import target_digest
from tests.flows.test_signals import ledger, start_run, wait_for

pytestmark = pytest.mark.usefixtures("prefect_harness")

OPTIONS = RunOptions(source_schema="legacy", batch_size=20, concurrency=2)


def _run_args(url: str, report_dir: Path) -> list[str]:
    return [
        "run",
        "--source-url",
        url,
        "--target-url",
        url,
        "--source-schema",
        "legacy",
        "--batch-size",
        "20",
        "--report-dir",
        str(report_dir),
    ]


def test_second_run_is_refused_and_recorded(
    seeded_db: Callable[[int, int], str], tmp_path: Path
) -> None:
    url = seeded_db(30, 5)
    with psycopg.connect(url, autocommit=True) as other:  # "the first run"
        other.execute("select pg_advisory_lock(%s, %s)", list(lock_key("public")))
        assert holder(other, "public") is not None
        result = CliRunner().invoke(app, _run_args(url, tmp_path))
        assert result.exit_code == RunInProgress.exit_code == 6, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "another run is in progress" in lines[0], result.output
        with pytest.raises(RunInProgress):
            run_migration(url, url, OPTIONS)
        with psycopg.connect(url) as conn:
            runs = conn.execute(
                "select status, finished_at is not null from migration.runs"
            ).fetchall()
            batches = conn.execute("select count(*) from migration.batches").fetchone()
        assert runs == [("refused", True), ("refused", True)]
        assert batches == (0,)
        assert set(target_digest(url).values()) == {"0:"}
        # status and report cope with a refused run
        status = CliRunner().invoke(app, ["status", "--target-url", url])
        assert status.exit_code == 0 and "refused" in status.output
        with psycopg.connect(url) as conn:
            refused_id = conn.execute("select run_id::text from migration.runs limit 1").fetchone()
        assert refused_id is not None
        shown = CliRunner().invoke(
            app, ["report", refused_id[0], "--target-url", url, "--report-dir", str(tmp_path)]
        )
        assert shown.exit_code == 0, shown.output
        report = json.loads((tmp_path / refused_id[0] / "report.json").read_text())
        assert report["status"] == "refused" and report["verdict"]["level"] == "failed"
        assert report["verdict"]["headline"].startswith("Refused")
    # the holder's connection ended (as a crashed run's does): the lock is free again
    summary = run_migration(url, url, OPTIONS)
    assert summary.status == "succeeded"
    with psycopg.connect(url, autocommit=True) as conn:
        assert holder(conn, "public") is None  # released at the end of the run
        got = conn.execute("select pg_try_advisory_lock(%s, %s)", list(lock_key("public")))
        assert got.fetchone() == (True,)


def test_retry_takes_the_lock_too(seeded_db: Callable[[int, int], str], tmp_path: Path) -> None:
    url = seeded_db(20, 6)
    summary = run_migration(url, url, OPTIONS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "update migration.batches set status = 'failed' where run_id = %s and batch_no = 1",
            [summary.run_id],
        )
        conn.execute("select pg_advisory_lock(%s, %s)", list(lock_key("public")))
        result = CliRunner().invoke(
            app,
            ["retry", summary.run_id, "--source-url", url, "--target-url", url,
             "--report-dir", str(tmp_path)],
        )  # fmt: skip
        assert result.exit_code == 6, result.output
        refused = conn.execute(
            "select options->>'retry_of' from migration.runs where status = 'refused'"
        ).fetchall()
        assert refused == [(summary.run_id,)]
        conn.execute("select pg_advisory_unlock(%s, %s)", list(lock_key("public")))
        result = CliRunner().invoke(
            app,
            ["retry", summary.run_id, "--source-url", url, "--target-url", url,
             "--report-dir", str(tmp_path)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output


def test_lock_is_per_target_schema() -> None:
    assert lock_key("public") != lock_key("staging")
    assert lock_key("public") == lock_key("public")
    assert all(0 <= k < 2**31 for k in lock_key("public"))


def test_a_batch_commits_only_while_its_run_holds_the_lock(
    seeded_db: Callable[[int, int], str],
) -> None:
    url = seeded_db(20, 6)
    with psycopg.connect(url, autocommit=True) as coordinator:
        coordinator.execute("select pg_advisory_lock(%s, %s)", list(lock_key("public")))
        guard = guard_of(coordinator, "public")
        with psycopg.connect(url) as batch:
            guard_commit(batch, guard, "r")  # held: the batch may commit
        # a later backend that reuses the pid is not the run's
        elder = replace(guard, backend_start=guard.backend_start.replace(year=2000))
        with psycopg.connect(url) as batch, pytest.raises(RunLockLost, match="lost its run lock"):
            guard_commit(batch, elder, "r")
        coordinator.execute("select pg_advisory_unlock(%s, %s)", list(lock_key("public")))
        with psycopg.connect(url) as batch, pytest.raises(RunLockLost):
            guard_commit(batch, guard, "r")


def test_a_new_run_waits_for_a_commit_in_flight(seeded_db: Callable[[int, int], str]) -> None:
    url = seeded_db(20, 6)
    entered = threading.Event()

    def new_run() -> None:
        with run_lock(url, "public", str(uuid.uuid4())):
            entered.set()

    # a batch of a run that lost its lock, between its lock check and its commit
    with psycopg.connect(url) as batch:
        batch.execute("select pg_advisory_xact_lock_shared(%s, %s)", list(commit_key("public")))
        thread = threading.Thread(target=new_run)
        thread.start()
        deadline = time.monotonic() + 30
        waiting = False
        while not waiting and time.monotonic() < deadline:
            waiting = bool(
                ledger(
                    url,
                    "select count(*) > 0 from pg_locks where locktype = 'advisory'"
                    " and not granted and classid::bigint = %s and objid::bigint = %s and"
                    " database = (select oid from pg_database where datname = current_database())",
                    list(commit_key("public")),
                )[0][0]
            )
            time.sleep(0.02)
        assert waiting and not entered.is_set()  # it has the run lock, and waits
    thread.join(timeout=30)
    assert entered.is_set()


GATE = (0x7E57, 1)  # the test holds it: every insert into tagged_models waits


def test_a_run_that_loses_its_lock_commits_no_further_batch(
    seeded_db: Callable[[int, int], str], tmp_path: Path
) -> None:
    url = seeded_db(120, 8)
    with psycopg.connect(url) as conn:
        conn.execute(
            "create function gate() returns trigger language plpgsql as $$ begin"
            f" perform pg_advisory_xact_lock_shared({GATE[0]}, {GATE[1]}); return null; end $$;"
            "create trigger gate after insert on public.tagged_models"
            " for each statement execute function gate()"
        )
    first = start_run(url, tmp_path / "first", temporary_server=False)
    second = None
    try:
        wait_for(first, "select count(*) >= 2 from migration.batches where status = 'succeeded'")
        with psycopg.connect(url, autocommit=True) as gate:
            # closed once every load that passed it has ended; the others wait in it
            gate.execute("select pg_advisory_lock(%s, %s)", list(GATE))
            ((run_id,),) = ledger(url, "select run_id::text from migration.runs")
            terminated = ledger(
                url,
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = current_database()"
                " and application_name like 'circuit-migrate run %%'",
            )
            assert terminated == [(True,)]
            while holder(gate, "public") is not None:
                time.sleep(0.02)
            # as a new run does: no commit of the first is in flight past this point
            gate.execute("select pg_advisory_lock(%s, %s)", list(commit_key("public")))
            gate.execute("select pg_advisory_unlock(%s, %s)", list(commit_key("public")))
            done = (
                "select batch_no from migration.batches where run_id = %s"
                " and status = 'succeeded' order by 1"
            )
            before = ledger(url, done, [run_id])
            assert len(before) >= 2
            second = start_run(url, tmp_path / "second", temporary_server=False)
            # admitted while the first still runs (its loads wait at the gate), and can
            # record its run: the first can commit nothing any more
            wait_for(second, "select count(*) = 2 from migration.runs")
            assert first.proc.poll() is None
            gate.execute("select pg_advisory_unlock(%s, %s)", list(GATE))
        code = first.proc.wait(timeout=120)
        out, err = first.output()
        assert code == RunLockLost.exit_code == 1, (out, err)
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "lost its run lock" in errors[0], err
        assert ledger(url, done, [run_id]) == before
        assert ledger(url, "select status from migration.runs where run_id = %s", [run_id]) == [
            ("failed",)
        ]
        assert second.proc.wait(timeout=300) == 0, second.output()
    finally:
        for run in (first, second):
            if run is not None and run.proc.poll() is None:
                run.proc.kill()
    assert verify(url, url, source_schema="legacy").ok
