"""The CLI's promises: one clear line and an exit code for bad input, never a traceback;
stage-legacy / unstage-legacy move the legacy tables and refuse to overwrite."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from flows import schema_ops
from flows.cli import app
from flows.legacy_locate import legacy_hint, legacy_schemas_found

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def tables_in(url: str, schema: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select table_name from information_schema.tables where table_schema = %s order by 1",
            [schema],
        ).fetchall()
    return [r[0] for r in rows]


def test_stage_and_unstage_legacy(make_db: Callable[[str], str]) -> None:
    url = make_db("stage")
    schema_ops.apply_legacy(url, "public")
    with psycopg.connect(url) as conn:
        conn.execute("insert into auth.users (id) values ('00000000-0000-0000-0000-000000000001')")
        conn.execute(
            "insert into public.user_profiles (user_id, name, parameters)"
            " values ('00000000-0000-0000-0000-000000000001', 'p', '{}')"
        )
    code, out = invoke("stage-legacy", "--source-url", url)
    assert code == 0, out
    legacy = ["tagged_models", "user_profiles", "user_sessions"]
    assert tables_in(url, "legacy") == legacy and tables_in(url, "public") == []
    with psycopg.connect(url) as conn:
        assert conn.execute("select name from legacy.user_profiles").fetchall() == [("p",)]

    code, out = invoke("stage-legacy", "--source-url", url)  # nothing left in public
    assert code == 4 and "no legacy table public.user_sessions" in out

    schema_ops.apply_target(url)  # the new tables now take the public names
    code, out = invoke("unstage-legacy", "--source-url", url)
    assert code == 4 and "would be overwritten" in out and "Traceback" not in out
    assert tables_in(url, "legacy") == legacy  # nothing moved

    with psycopg.connect(url) as conn:
        for table in ("tagged_models", "user_sessions", "circuit_configurations", "user_profiles"):
            conn.execute(f"drop table public.{table}")
    code, out = invoke("unstage-legacy", "--source-url", url)
    assert code == 0, out
    assert tables_in(url, "public") == legacy and tables_in(url, "legacy") == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["run", "--source-url", "mysql://x/y", "--target-url", "mysql://x/y"],
            2,
            "not a PostgreSQL URL",
        ),
        (["run", "--target-url", "postgresql://u@127.0.0.1/x"], 2, "pass --source-url"),
        (
            [
                "run",
                "--source-url",
                "postgresql://u:hunter2@127.0.0.1:1/x",
                "--target-url",
                "postgresql://u:hunter2@127.0.0.1:1/x",
            ],
            3,
            "cannot connect",
        ),
        (["status", "--target-url", "postgresql://u:hunter2@127.0.0.1:1/x"], 3, "cannot connect"),
        (
            ["retry", "not-a-uuid", "--target-url", "postgresql://u@127.0.0.1:1/x"],
            3,
            "cannot connect",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(args: list[str], code: int, message: str) -> None:
    exit_code, out = invoke(*args)
    assert exit_code == code, out
    assert message in out and "Traceback" not in out and "hunter2" not in out
    assert len(out.strip().splitlines()) <= 2


def test_missing_target_tables_and_legacy_mismatch(make_db: Callable[[str], str]) -> None:
    url = make_db("cli_errors")
    code, out = invoke("run", "--source-url", url, "--target-url", url)
    assert code == 4 and "schema apply" in out, out
    schema_ops.apply_target(url)
    code, out = invoke("run", "--source-url", url, "--target-url", url, "--source-schema", "nope")
    assert code == 4 and "no legacy table nope.user_sessions" in out, out
    schema_ops.apply_legacy(url, "legacy")
    with psycopg.connect(url) as conn:
        conn.execute("alter table legacy.user_profiles drop column parameters")
    code, out = invoke("run", "--source-url", url, "--target-url", url, "--source-schema", "legacy")
    assert code == 4 and "lacks required columns parameters" in out, out
    # the new tables in public, the legacy ones in legacy: the error says where they are
    code, out = invoke("run", "--source-url", url, "--target-url", url)
    assert code == 4 and "legacy tables are in schema legacy: pass --source-schema legacy" in out
    code, out = invoke("retry", "not-a-uuid", "--target-url", url)
    assert code == 2 and "not a run id" in out, out
    code, out = invoke("status", "00000000-0000-0000-0000-000000000000", "--target-url", url)
    assert code == 2 and "no run" in out, out


def test_help_shows_env_variables_and_defaults_and_one_line_per_command() -> None:
    code, out = invoke("run", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for needle in ("[env var: SOURCE_DATABASE_URL]", "[env var: TARGET_DATABASE_URL]",
                   "[env var: SOURCE_SCHEMA; default: (public)]", "[default: 2500; x>=1]",
                   "[default: migration-reports]"):  # fmt: skip
        assert needle in flat, needle
    code, out = invoke("--help")
    commands = out[out.index("Commands:") :].splitlines()[1:]
    assert commands and all(line.startswith("  ") and line.split()[0] for line in commands)
    names = [line.split()[0] for line in commands if line.strip()]
    assert {"run", "status", "report", "verify"} <= set(names)
    assert len(names) == len([line for line in commands if line.strip()])  # no wrapped lines


RUNS = (
    ("00000000-0000-4000-8000-000000000001", "succeeded", "2025-01-01 10:00+00", False),
    ("00000000-0000-4000-8000-000000000002", "failed", "2025-01-02 10:00+00", True),
    ("00000000-0000-4000-8000-000000000003", "refused", "2025-01-03 10:00+00", False),
)


@pytest.fixture(scope="module")
def ledger_url(make_db: Callable[[str], str]) -> str:
    """A target with three runs in its ledger (the newest one refused)."""
    url = make_db("cli_runs")
    schema_ops.apply_target(url)
    with psycopg.connect(url) as conn:
        for run_id, status, started, dry_run in RUNS:
            conn.execute(
                "insert into migration.runs (run_id, status, started_at, finished_at, dry_run,"
                " options) values (%s, %s, %s, %s::timestamptz + interval '75 seconds', %s,"
                " '{\"incremental\": true}')",
                [run_id, status, started, started, dry_run],
            )
        conn.execute(
            "insert into migration.batches (run_id, batch_no, status, attempts, error, counts)"
            " values (%s, 1, 'succeeded', 1, null, '{\"users\": 3, \"rows\": 9}'),"
            " (%s, 2, 'failed', 2, 'boom', '{\"users\": 4}')",
            [RUNS[1][0], RUNS[1][0]],
        )
    return url


def test_status_prints_whole_run_ids_and_latest_skips_refused_runs(ledger_url: str) -> None:
    code, out = invoke("status", "--target-url", ledger_url)
    assert code == 0, out
    for run_id, *_ in RUNS:
        assert run_id in out, out  # whole, at 80 columns
    code, out = invoke("status", "latest", "--target-url", ledger_url)
    assert code == 0 and f"run {RUNS[1][0]}: failed" in out and "boom" in out, out
    code, out = invoke("status", "LATEST", "--target-url", ledger_url, "--json")
    document = json.loads(out)
    assert document["run_id"] == RUNS[1][0] and document["mode"] == "incremental"
    assert document["batches"] == {"total": 2, "succeeded": 1, "failed": 1}
    assert [b["error"] for b in document["batch_list"]] == [None, "boom"]
    assert document["seconds"] == 75.0 and document["dry_run"] is True
    code, out = invoke("status", "--target-url", ledger_url, "--json", "--limit", "2")
    assert [r["run_id"] for r in json.loads(out)] == [RUNS[2][0], RUNS[1][0]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "bogus"], "not a run id: 'bogus'"),
        (["report", "00000000-0000-4000-8000-0000000000ff"], "no run 00000000-0000-4000-8000"),
        (["report", RUNS[0][0], "--compare", "123"], "not a run id: '123'"),
        (["status", "123"], "not a run id"),
        (["retry", "123"], "not a run id"),
    ],
)
def test_a_malformed_or_unknown_run_id_is_exit_2(
    ledger_url: str, args: list[str], message: str, tmp_path: Path
) -> None:
    extra = ["--report-dir", str(tmp_path)] if args[0] == "report" else []
    code, out = invoke(*args, "--target-url", ledger_url, *extra)
    assert code == 2 and message in out and "Traceback" not in out, out


def test_latest_on_an_empty_ledger_is_exit_2(make_db: Callable[[str], str]) -> None:
    url = make_db("cli_empty")
    schema_ops.apply_target(url)
    code, out = invoke("status", "latest", "--target-url", url)
    assert code == 2 and "no run in the ledger yet" in out, out
    code, out = invoke("status", "--target-url", url, "--json")
    assert code == 0 and json.loads(out) == []


def test_legacy_tables_are_found_in_the_schema_that_holds_them(
    make_db: Callable[[str], str],
) -> None:
    url = make_db("locate")
    schema_ops.apply_target(url)  # public holds the new tables, with the same names
    schema_ops.apply_legacy(url, "legacy")
    with psycopg.connect(url) as conn:
        assert legacy_schemas_found(conn) == ["legacy"]
        hint = legacy_hint(conn, "public")
        assert "schema legacy: pass --source-schema legacy" in hint, hint
        assert legacy_hint(conn, "legacy") == ""
        conn.execute("alter schema legacy rename to legacy_archive")
        assert "restore-legacy" in legacy_hint(conn, "public")
        for table, column in (("user_profiles", "parameters"), ("user_sessions", "saved_profiles")):
            conn.execute(f"alter table legacy_archive.{table} drop column {column}")
        assert legacy_schemas_found(conn) == []  # no column only the legacy tables have
        conn.execute("alter table legacy_archive.user_sessions add column total_computations int")
        assert legacy_schemas_found(conn) == ["legacy_archive"]  # S2 and S3 have it
