"""The CLI's promises: one clear line and an exit code for bad input, never a traceback;
stage-legacy / unstage-legacy move the legacy tables and refuse to overwrite."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from typer.testing import CliRunner

from flows import schema_ops
from flows.cli import app

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
    assert code == 4 and "lacks columns parameters" in out, out
    code, out = invoke("retry", "not-a-uuid", "--target-url", url)
    assert code == 1 and "not a run id" in out, out
    code, out = invoke("status", "00000000-0000-0000-0000-000000000000", "--target-url", url)
    assert code == 1 and "no run" in out, out
