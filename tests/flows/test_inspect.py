"""Schema inspection: every legacy column's fate, every problem of every table at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from flows import schema_ops
from flows.cli import app
from flows.extract import check_source
from flows.inspect import inspect
from schemas.errors import SourceSchemaMismatch

Conn = psycopg.Connection[Any]


@pytest.fixture
def url(make_db: Callable[[str], str]) -> str:
    db_url = make_db("inspect")
    schema_ops.apply_legacy(db_url, "legacy")
    return db_url


@pytest.fixture
def conn(url: str) -> Iterator[Conn]:
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def fates(conn: Conn, drop: tuple[str, ...] = ()) -> dict[str, str]:
    return {f"{f.table}.{f.column}": f.fate for f in inspect(conn, "legacy", drop).fates}


def test_state_s1_maps_every_column(conn: Conn) -> None:
    found = inspect(conn, "legacy")
    assert found.ok and found.state == "S1"
    absent = {column for column, fate in fates(conn).items() if fate == "default"}
    # only the evidence later states have (S4's own links) is absent from S1
    assert absent == {"user_sessions.current_circuit_config_id", "tagged_models.explicit_config_id"}
    assert set(fates(conn).values()) == {"mapped", "evidence", "default"}
    assert fates(conn)["user_sessions.saved_profiles"] == "evidence"


def test_optional_columns_may_be_absent(conn: Conn) -> None:
    conn.execute("alter table legacy.user_sessions drop column saved_profiles")
    conn.execute("alter table legacy.tagged_models drop column is_interesting")
    found = inspect(conn, "legacy")
    assert found.ok, found.problems
    assert fates(conn)["user_sessions.saved_profiles"] == "default"
    assert fates(conn)["tagged_models.is_interesting"] == "default"


def test_every_problem_of_every_table_in_one_refusal(conn: Conn) -> None:
    conn.execute("alter table legacy.tagged_models drop column circuit_parameters")
    conn.execute("alter table legacy.tagged_models drop column model_id")
    conn.execute("alter table legacy.user_profiles drop column parameters")
    conn.execute("alter table legacy.user_sessions add column total_computations int")
    conn.execute("alter table legacy.tagged_models add column ml_relevance_score float8")
    with pytest.raises(SourceSchemaMismatch) as caught:
        check_source(conn, "legacy")
    text = str(caught.value)
    for part in (
        "tagged_models lacks required columns model_id, circuit_parameters",
        "user_profiles lacks required columns parameters",
        "user_sessions.total_computations (0 rows hold a value)",
        "tagged_models.ml_relevance_score (0 rows hold a value)",
        "--drop-column",
    ):
        assert part in text, text
    assert caught.value.exit_code == 4


def test_extra_columns_are_dropped_only_when_named(conn: Conn) -> None:
    conn.execute("alter table legacy.user_sessions add column total_computations int")
    conn.execute(
        "insert into auth.users (id) values ('00000000-0000-0000-0000-000000000001');"
        " insert into legacy.user_sessions (user_id, session_name, total_computations)"
        " values ('00000000-0000-0000-0000-000000000001', 's', 7)"
    )
    assert not inspect(conn, "legacy").ok
    found = inspect(conn, "legacy", ["user_sessions.total_computations"])
    assert found.ok, found.problems
    (dropped,) = found.dropped()
    assert (dropped.column, dropped.non_null) == ("total_computations", 1)
    bogus = inspect(conn, "legacy", ["user_sessions.nope"])
    assert any("names no unmapped column: user_sessions.nope" in p for p in bogus.problems)


def test_inspect_command_lists_fates_and_exits_4_on_problems(url: str, conn: Conn) -> None:
    result = CliRunner().invoke(app, ["inspect", "--source-url", url, "--source-schema", "legacy"])
    assert result.exit_code == 0, result.output
    assert "state S1" in result.output and "saved_profiles" in result.output
    conn.execute("alter table legacy.tagged_models add column tagging_context jsonb")
    result = CliRunner().invoke(app, ["inspect", "--source-url", url, "--source-schema", "legacy"])
    assert result.exit_code == 4
    assert "tagging_context" in result.output


@pytest.mark.usefixtures("prefect_harness")
def test_a_state_without_optional_columns_migrates_and_verifies(
    seeded_db: Callable[[int, int], str],
) -> None:
    """S3's shape: sessions without saved_profiles but with statistics, tagged models without
    is_interesting but with ML columns. Refused until the extra columns are dropped knowingly;
    then migrated with the target's defaults, verified, and the drop recorded."""
    from flows.migrate import RunOptions, run_migration
    from flows.verify import verify

    url = seeded_db(60, 41)
    with psycopg.connect(url) as c:
        c.execute("alter table legacy.user_sessions drop column saved_profiles")
        c.execute("alter table legacy.user_sessions add column total_computations int default 3")
        c.execute("alter table legacy.tagged_models drop column is_interesting")
        c.execute("alter table legacy.tagged_models add column ml_relevance_score float8")
    options = RunOptions(source_schema="legacy", batch_size=20)
    with pytest.raises(SourceSchemaMismatch, match="total_computations"):
        run_migration(url, url, options)
    dropped = ("user_sessions.total_computations", "tagged_models.ml_relevance_score")
    summary = run_migration(url, url, RunOptions(**{**options.__dict__, "drop_columns": dropped}))
    assert summary.status == "succeeded"
    assert verify(url, url, source_schema="legacy").ok
    with psycopg.connect(url) as c:
        (recorded,) = c.execute(
            "select options->'inspection' from migration.runs where run_id = %s",
            [summary.run_id],
        ).fetchone()  # type: ignore[misc]
        interesting = c.execute("select distinct is_interesting from public.tagged_models")
        assert interesting.fetchall() == [(False,)]
    assert recorded["state"] == "S3"
    assert recorded["dropped"]["user_sessions.total_computations"] > 0
    assert "user_sessions.saved_profiles" in recorded["defaults"]
