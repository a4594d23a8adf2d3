"""``cleanup`` refuses on a dirty state (no run, only a dry run, a failed batch, a target that
no longer verifies), archives and restores on a clean one, and drops only with both flags."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from typer.testing import CliRunner

from flows.cleanup import ARCHIVE_SCHEMA
from flows.cli import app
from flows.lock import lock_key
from flows.migrate import RunOptions, run_migration
from schemas.errors import CleanupRefused

pytestmark = pytest.mark.usefixtures("prefect_harness")

runner = CliRunner()
OPTIONS = RunOptions(source_schema="legacy", batch_size=10, concurrency=2)
LEGACY = ["tagged_models", "user_profiles", "user_sessions"]


def cleanup(url: str, *flags: str) -> tuple[int, str]:
    args = ["cleanup", "--source-url", url, "--target-url", url, "--source-schema", "legacy"]
    result = runner.invoke(app, [*args, *flags])
    return result.exit_code, result.output


def tables_in(url: str, schema: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select table_name from information_schema.tables where table_schema = %s order by 1",
            [schema],
        ).fetchall()
    return [r[0] for r in rows]


def execute(url: str, statement: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(statement)


def assert_refused(url: str, message: str) -> None:
    for flags in ((), ("--confirm",), ("--confirm", "--drop")):
        code, out = cleanup(url, *flags)
        assert code == CleanupRefused.exit_code, out
        assert message in out and "Traceback" not in out and len(out.strip().splitlines()) == 1
    assert tables_in(url, "legacy") == LEGACY and tables_in(url, ARCHIVE_SCHEMA) == []


def test_refuses_on_a_dirty_state(seeded_db: Callable[[int, int], str]) -> None:
    url = seeded_db(20, 21)
    assert_refused(url, "records no migration run")
    run_migration(url, url, RunOptions(source_schema="legacy", batch_size=10, dry_run=True))
    assert_refused(url, "records no migration run")  # a dry run does not count

    run_id = run_migration(url, url, OPTIONS).run_id
    execute(url, f"update migration.batches set status = 'failed' where run_id = '{run_id}'")
    execute(url, f"update migration.runs set status = 'failed' where run_id = '{run_id}'")
    assert_refused(url, f"circuit-migrate retry {run_id}")

    execute(url, f"update migration.batches set status = 'succeeded' where run_id = '{run_id}'")
    execute(url, f"update migration.runs set status = 'succeeded' where run_id = '{run_id}'")
    assert cleanup(url)[0] == 0  # clean again: only says what it would do
    with psycopg.connect(url, autocommit=True) as other:  # a run holds the run lock
        other.execute("select pg_advisory_lock(%s, %s)", list(lock_key("public")))
        assert_refused(url, "a run is in progress")
    execute(
        url,
        "delete from public.tagged_models where id = (select id from public.tagged_models"
        " order by id limit 1)",
    )
    assert_refused(url, "verification fails now")


def test_archives_restores_and_drops_only_with_both_flags(
    seeded_db: Callable[[int, int], str],
) -> None:
    url = seeded_db(20, 22)
    run_id = run_migration(url, url, OPTIONS).run_id

    code, out = cleanup(url)
    assert code == 0 and f"run {run_id}" in out and "would move legacy." in out, out
    assert "nothing changed" in out and tables_in(url, "legacy") == LEGACY
    code, out = cleanup(url, "--drop")  # --drop alone only says what it would do
    assert code == 0 and "would drop legacy_archive." in out and tables_in(url, "legacy") == LEGACY

    code, out = cleanup(url, "--confirm")
    assert code == 0 and "done: move legacy." in out and "restore-legacy" in out, out
    assert tables_in(url, "legacy") == [] and tables_in(url, ARCHIVE_SCHEMA) == LEGACY
    code, out = cleanup(url, "--confirm")  # the archive still verifies: nothing left to do
    assert code == 0 and "already in schema legacy_archive" in out, out

    result = runner.invoke(app, ["restore-legacy", "--source-url", url])
    assert result.exit_code == 0 and "back into schema legacy" in result.output, result.output
    assert tables_in(url, "legacy") == LEGACY and tables_in(url, ARCHIVE_SCHEMA) == []
    result = runner.invoke(app, ["restore-legacy", "--source-url", url])
    assert result.exit_code == 2 and "nothing to restore" in result.output

    code, out = cleanup(url, "--confirm", "--drop")
    assert code == 0 and "done: drop legacy_archive." in out, out
    assert tables_in(url, "legacy") == [] and tables_in(url, ARCHIVE_SCHEMA) == []
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "select count(*) from pg_namespace where nspname = %s", [ARCHIVE_SCHEMA]
        ).fetchone() == (0,)
        assert conn.execute("select count(*) from public.tagged_models").fetchone() != (0,)
