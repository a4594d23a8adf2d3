"""One line, always: the console command, in its own process, through the failures an adversary
found (an unwritable report folder, mixed case and quotes in schema names, tables another role
owns, a view on a legacy table, a database error no check foresaw): one ``error:`` line on
stderr, the README's exit code, nothing changed. The Supabase-faithful variants are in
test_supabase_runbook.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import typer

from flows import cli as cli_module
from flows import schema_ops
from flows.seed import seed_database
from tests.cli_process import cli, one_line


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))


@pytest.fixture(scope="module")
def mixed(make_db: Callable[[str], str]) -> str:
    """Legacy tables in schema ``Legacy``, the target schema applied in ``NewApp``."""
    url = make_db("mixedcase")
    seed_database(url, users=25, seed=2, source_schema="Legacy")
    schema_ops.apply_target(url, "NewApp")
    return url


def test_mixed_case_schemas_work_everywhere(mixed: str, tmp_path: Path) -> None:
    urls = ["--source-url", mixed, "--target-url", mixed, "--source-schema", "Legacy"]
    target = ["--target-schema", "NewApp"]
    run = cli("run", *urls, *target, "--report-dir", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert rows(mixed, 'select count(*) > 0 from "NewApp".tagged_models') == [(True,)]
    verified = cli("verify", *urls, *target, cwd=tmp_path)
    assert verified.returncode == 0 and "verification passed" in verified.stdout, verified.stderr


@pytest.mark.parametrize("schema", ['a"b', "new app", "NoSuch"])
def test_a_target_schema_that_is_not_there_is_named(
    mixed: str, tmp_path: Path, schema: str
) -> None:
    urls = ["--source-url", mixed, "--target-url", mixed, "--source-schema", "Legacy"]
    for command in ("run", "verify"):
        one_line(cli(command, *urls, "--target-schema", schema, cwd=tmp_path), 4, "schema apply")


def test_an_unwritable_report_folder_stops_the_run_before_it_starts(
    mixed: str, tmp_path: Path
) -> None:
    urls = ["--source-url", mixed, "--target-url", mixed, "--source-schema", "Legacy"]
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    runs = "select count(*) from migration.runs"
    before = rows(mixed, runs)
    result = cli("run", *urls, "--target-schema", "NewApp", "--report-dir", str(blocked / "r"),
                 cwd=tmp_path)  # fmt: skip
    one_line(result, 2, "--report-dir", "cannot be written")
    assert rows(mixed, runs) == before


@pytest.fixture
def other_role(make_db: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    """(admin URL, URL of a role that does not own the legacy tables but may read them)."""
    url = make_db("owners")
    seed_database(url, users=10, seed=4)
    role = f"cm_notowner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create role {role} login".encode())
        conn.execute(
            f"grant create on database {urlsplit(url).path.lstrip('/')} to {role}".encode()
        )
        conn.execute(f"grant usage on schema public, auth to {role}".encode())
        conn.execute(f"grant select on all tables in schema public, auth to {role}".encode())
    try:
        yield url, as_role(url, role)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop owned by {role}".encode())
            conn.execute(f"drop role {role}".encode())


def test_moving_tables_another_role_owns_is_refused_by_name(
    other_role: tuple[str, str], tmp_path: Path
) -> None:
    admin, url = other_role
    where = "select table_schema from information_schema.tables where table_name = 'user_sessions'"
    before = rows(admin, where)
    line = one_line(cli("stage-legacy", "--source-url", url, cwd=tmp_path), 4, "owner postgres")
    assert "public.user_sessions" in line and "nothing was changed" in line
    assert rows(admin, where) == before


def test_a_database_error_no_check_foresaw_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    @cli_module.clean_errors
    def ended() -> None:
        raise psycopg.OperationalError(
            "terminating connection due to administrator command\nSSL connection has been closed"
            " unexpectedly (postgresql://u:hunter2@h/db)"
        )

    @cli_module.clean_errors
    def denied() -> None:
        raise psycopg.errors.InsufficientPrivilege("permission denied for table user_sessions")

    for func, code in ((ended, 3), (denied, 4)):
        with pytest.raises(typer.Exit) as stopped:
            func()
        assert stopped.value.exit_code == code
        shown = capsys.readouterr().err
        assert len(shown.strip().splitlines()) == 1 and shown.startswith("error: "), shown
        assert "hunter2" not in shown
