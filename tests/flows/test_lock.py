"""One run at a time: the target's advisory lock refuses a second run, and records it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.lock import holder, lock_key
from flows.migrate import RunOptions, run_migration
from schemas.errors import RunInProgress
from tests.flows.conftest import target_digest

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
