"""The migration flow end to end on generated data, against a real PostgreSQL and Prefect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from flows import extract, spill
from flows.cli import app
from flows.migrate import RunOptions, run_migration
from flows.report_files import read_run
from flows.verify import verify
from tests.flows.conftest import target_digest
from transforms.pipeline import transform

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS, SEED = 120, 7
OPTIONS = RunOptions(source_schema="legacy", batch_size=25, concurrency=2)


def ledger(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params or []).fetchall()


def expected_from_transforms(url: str) -> dict[str, set[str]]:
    """Target ids per table, computed in-process by extract + transform, batch by batch."""
    out: dict[str, set[str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        extract.use_snapshot(conn, None)
        for batch in extract.plan_batches(conn, "legacy", 1000):
            data = extract.extract_batch(conn, "legacy", batch)
            result = transform(
                data.auth_users, data.user_sessions, data.tagged_models, data.user_profiles
            )
            for table in ("user_profiles", "circuit_configurations", "user_sessions"):
                out.setdefault(table, set()).update(getattr(result, table)["id"].to_list())
            pairs = result.tagged_models.select(
                pl.concat_str("id", pl.lit(">"), "circuit_config_id")
            )
            out.setdefault("tagged_models", set()).update(pairs.to_series().to_list())
        conn.execute("rollback")
    return out


@pytest.fixture(scope="module")
def clean_run(seeded_db: Callable[[int, int], str]) -> tuple[str, str, dict[str, str]]:
    url = seeded_db(USERS, SEED)
    summary = run_migration(url, url, OPTIONS)
    return url, summary.run_id, target_digest(url)


def test_run_loads_exactly_what_the_transforms_produce(
    clean_run: tuple[str, str, dict[str, str]],
) -> None:
    url, run_id, _ = clean_run
    statuses = ledger(
        url,
        "select status, count(*) from migration.batches where run_id = %s group by status",
        [run_id],
    )
    assert statuses == [("succeeded", statuses[0][1])] and statuses[0][1] >= 5
    assert ledger(url, "select status from migration.runs where run_id = %s", [run_id]) == [
        ("succeeded",)
    ]
    expected = expected_from_transforms(url)
    for table in ("user_profiles", "circuit_configurations", "user_sessions"):
        ids = {str(r[0]) for r in ledger(url, f"select id from public.{table}")}
        assert ids == expected[table], table
    links = {
        f"{r[0]}>{r[1]}" for r in ledger(url, "select id, circuit_config_id from tagged_models")
    }
    assert links == expected["tagged_models"]
    # Ledger consistent: every tagged model has its link decision, pointing where it points.
    stray = ledger(
        url,
        "select count(*) from tagged_models t left join migration.links l"
        " on l.tagged_model_id = t.id"
        " where l.circuit_config_id is distinct from t.circuit_config_id",
    )
    assert stray == [(0,)]
    # The accounting identity per source table, summed over batches.
    for table, source, done in ledger(
        url,
        "select key, sum((value->>'source')::int),"
        " sum((value->>'migrated')::int + (value->>'merged')::int"
        " + (value->>'quarantined')::int)"
        " from migration.batches, jsonb_each(counts->'tables') where run_id = %s group by key",
        [run_id],
    ):
        assert source == done, table
    quarantined = ledger(
        url, "select count(*) from migration.quarantine where run_id = %s", [run_id]
    )
    assert quarantined[0][0] > 0  # the generator's messy rows were set aside, not loaded


def test_second_run_changes_nothing(clean_run: tuple[str, str, dict[str, str]]) -> None:
    url, _, digest = clean_run
    summary = run_migration(url, url, OPTIONS)
    assert summary.status == "succeeded"
    assert target_digest(url) == digest
    for batch in summary.batches:
        written = batch.counts["written"]
        assert set(written["upserted"].values()) == {0}, batch.batch_no
        assert set(written["deleted"].values()) == {0}, batch.batch_no


def test_dry_run_writes_no_target_row(seeded_db: Callable[[int, int], str]) -> None:
    url = seeded_db(30, 3)
    summary = run_migration(url, url, RunOptions(source_schema="legacy", dry_run=True))
    assert summary.status == "succeeded"
    assert set(target_digest(url).values()) == {"0:"}
    assert ledger(url, "select dry_run from migration.runs") == [(True,)]
    assert ledger(url, "select count(*) from migration.links") == [(0,)]
    assert ledger(url, "select count(*) > 0 from migration.quarantine") == [(True,)]


def test_failing_batch_is_recorded_and_retry_completes_it(
    seeded_db: Callable[[int, int], str],
    clean_run: tuple[str, str, dict[str, str]],
    tmp_path: Path,
) -> None:
    url = seeded_db(USERS, SEED)
    victim = ledger(url, "select min(user_id::text) from legacy.user_profiles")[0][0]
    with psycopg.connect(url) as conn:
        conn.execute(
            "create function refuse() returns trigger language plpgsql as $$ begin"
            f" if new.user_id = '{victim}' then raise exception 'refused for test'; end if;"
            " return new; end $$;"
            "create trigger refuse before insert on public.circuit_configurations"
            " for each row execute function refuse()"
        )
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--source-url",
            url,
            "--target-url",
            url,
            "--source-schema",
            "legacy",
            "--batch-size",
            "25",
            "--report-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "refused for test" in result.output and "circuit-migrate retry" in result.output
    run_id = ledger(url, "select run_id::text from migration.runs")[0][0]
    rows = ledger(
        url,
        "select status, attempts, error from migration.batches where run_id = %s order by batch_no",
        [run_id],
    )
    failed = [r for r in rows if r[0] == "failed"]
    assert len(failed) == 1 and failed[0][1] == 1 and "refused for test" in failed[0][2]
    assert sum(1 for r in rows if r[0] == "succeeded") == len(rows) - 1

    with psycopg.connect(url) as conn:
        conn.execute("drop trigger refuse on public.circuit_configurations")
    result = CliRunner().invoke(
        app,
        [
            "retry",
            run_id,
            "--source-url",
            url,
            "--target-url",
            url,
            "--report-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert target_digest(url) == clean_run[2]
    assert ledger(url, "select status from migration.runs") == [("succeeded",)]


def test_terminated_connection_is_retried(
    seeded_db: Callable[[int, int], str], clean_run: tuple[str, str, dict[str, str]]
) -> None:
    url = seeded_db(USERS, SEED)
    with psycopg.connect(url) as conn:
        # A sequence is not transactional: the backend is killed exactly once.
        conn.execute(
            "create sequence kill_once;"
            "create function kill_once() returns trigger language plpgsql as $$ begin"
            " if nextval('kill_once') = 1 then perform pg_terminate_backend(pg_backend_pid());"
            " end if; return null; end $$;"
            "create trigger kill_once after insert on public.tagged_models"
            " for each statement execute function kill_once()"
        )
    summary = run_migration(url, url, OPTIONS)
    assert summary.status == "succeeded"
    attempts = ledger(url, "select max(attempts) from migration.batches")
    assert attempts == [(2,)]
    assert target_digest(url) == clean_run[2]


def test_killed_process_resumes_with_retry(
    seeded_db: Callable[[int, int], str],
    clean_run: tuple[str, str, dict[str, str]],
    tmp_path: Path,
) -> None:
    url = seeded_db(USERS, SEED)
    with psycopg.connect(url) as conn:
        conn.execute(
            "create function slow() returns trigger language plpgsql as $$ begin"
            " perform pg_sleep(0.4); return null; end $$;"
            "create trigger slow after insert on public.tagged_models"
            " for each statement execute function slow()"
        )
    scratch = tmp_path / "tmp"  # the killed run's extract folder lands here, not in /tmp
    scratch.mkdir()
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "TMPDIR": str(scratch)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows",
            "run",
            "--source-url",
            url,
            "--target-url",
            url,
            "--source-schema",
            "legacy",
            "--batch-size",
            "10",
            "--concurrency",
            "1",
            "--report-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = ledger(url, "select count(*) from migration.batches where status = 'succeeded'")
            if done[0][0] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the killed run could not remove its extract folder; the next run's cleanup does
    (left_behind,) = scratch.glob(f"{spill.FOLDER_PREFIX}*")
    assert spill.remove_stale_folders(scratch) == [left_behind] and not left_behind.exists()
    (run_id,) = ledger(url, "select run_id::text from migration.runs")[0]
    left = ledger(url, "select count(*) from migration.batches where status <> 'succeeded'")
    assert left[0][0] > 0
    with psycopg.connect(url) as conn:
        conn.execute("drop trigger slow on public.tagged_models")
    summary = run_migration(url, url, OPTIONS, run_id=run_id, retry=True)
    assert summary.status == "succeeded"
    assert len(summary.batches) == left[0][0]
    assert target_digest(url) == clean_run[2]


def test_rows_the_database_rejects_quarantine_only_their_user(
    seeded_db: Callable[[int, int], str],
    clean_run: tuple[str, str, dict[str, str]],
    tmp_path: Path,
) -> None:
    url = seeded_db(USERS, SEED)
    victim = ledger(url, "select min(user_id::text) from legacy.user_profiles")[0][0]
    with psycopg.connect(url) as conn:
        # A rule the validation does not know: the database alone rejects the victim's rows.
        conn.execute(
            "alter table public.circuit_configurations add constraint not_the_victim"
            f" check (user_id <> '{victim}')"
        )
    summary = run_migration(url, url, OPTIONS)
    assert summary.status == "succeeded"
    assert sum(b.counts["rejected_users"] for b in summary.batches) == 1
    rejected = ledger(
        url,
        "select distinct detail from migration.quarantine where reason = 'database_rejected'",
    )
    assert len(rejected) == 1 and "not_the_victim" in rejected[0][0]
    for table in ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models"):
        assert ledger(url, f"select count(*) from public.{table} where user_id = %s", [victim]) == [
            (0,)
        ], table
    clean_url = clean_run[0]
    for table in ("circuit_configurations", "tagged_models"):
        others = f"select count(*) from public.{table} where user_id <> %s"
        assert ledger(url, others, [victim]) == ledger(clean_url, others, [victim]), table
    # Still every source row accounted for once.
    for table, source, done in ledger(
        url,
        "select key, sum((value->>'source')::int), sum((value->>'migrated')::int"
        " + (value->>'merged')::int + (value->>'quarantined')::int)"
        " from migration.batches, jsonb_each(counts->'tables') group by key",
    ):
        assert source == done, table
    # Never clean: the report says how many rows and why, verify names the user, exit 8.
    with psycopg.connect(url, autocommit=True) as conn:
        report = read_run(conn, summary.run_id).report
    rejected = report["rejected"]
    assert rejected["rows"] > 0 and list(rejected["by_constraint"]) == ["not_the_victim"]
    assert report["verdict"]["level"] == "failed"
    assert "rejected" in report["verdict"]["headline"]
    result = verify(url, url, source_schema="legacy")
    assert set(result.differences["user_id"]) == {victim}
    assert "decision.valid_quarantined" in set(result.differences["check"])
    cli = CliRunner().invoke(
        app,
        [
            "run",
            "--source-url",
            url,
            "--target-url",
            url,
            "--source-schema",
            "legacy",
            "--report-dir",
            str(tmp_path),
        ],
    )
    assert cli.exit_code == 8, cli.output
    assert "not_the_victim" in cli.output


def test_a_batch_run_again_after_its_commit_replaces_its_ledger_rows(
    seeded_db: Callable[[int, int], str], tmp_path: Path
) -> None:
    """A transient error after the commit (the acknowledgement lost) re-runs a batch whose
    load and ledger rows are already in: the re-run must replace them, not fail or double."""
    from flows import db, ledger
    from flows.migrate import run_batch

    url = seeded_db(40, 11)
    options = RunOptions(source_schema="legacy", batch_size=100)
    with db.connect(url, autocommit=True) as conn:
        extract.use_snapshot(conn, None)
        batch = extract.plan_batches(conn, "legacy", 100)[0]
        conn.execute("rollback")
    run_id = "00000000-0000-0000-0000-0000000000b1"
    with db.connect(url) as conn, conn.transaction():
        ledger.create_run(conn, run_id, dry_run=False, options={})
        ledger.add_batches(conn, run_id, [batch])

    def ledger_rows() -> tuple[int, int, int]:
        with db.connect(url) as conn:
            row = conn.execute(
                "select (select count(*) from migration.id_map where run_id = %(r)s),"
                " (select count(*) from migration.quarantine where run_id = %(r)s),"
                " (select count(*) from migration.repairs where run_id = %(r)s)",
                {"r": run_id},
            ).fetchone()
        assert row is not None
        return row

    with db.connect(url) as conn:
        assert not ledger.batch_loaded(conn, run_id, batch.batch_no)
    first = run_batch(run_id, batch, None, url, url, options)
    after_first = ledger_rows()
    with db.connect(url) as conn:
        assert ledger.batch_loaded(conn, run_id, batch.batch_no)
    second = run_batch(run_id, batch, None, url, url, options)
    assert ledger_rows() == after_first and after_first[0] > 0
    assert first["tables"] == second["tables"]
