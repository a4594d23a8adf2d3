"""Every schema state the real app went through (DESIGN.md section 3, S1 to S4), built from SQL
written after reading the app's files and filled with rows shaped as the app writes them: a dry
run, a run and ``verify`` pass; every source row is accounted for, per source table; no
explicit link the app wrote is replaced by a guess; no row is quarantined for being a JSON
string; extra columns are dropped only when named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from flows import schema_ops
from flows.inspect import inspect
from flows.migrate import RunOptions, run_migration
from flows.seed import seed_database
from flows.verify import verify
from schemas.errors import SourceSchemaMismatch

pytestmark = pytest.mark.usefixtures("prefect_harness")

EXTRA = {
    "S1": (),
    "S2": (
        "user_sessions.total_computations",
        "user_sessions.total_models_generated",
        "user_sessions.total_computation_time",
        "tagged_models.impedance_spectrum",
        "tagged_models.tagging_context",
        "tagged_models.ml_relevance_score",
        "tagged_models.is_ml_training_data",
    ),
    "S4": (),
}
EXTRA["S3"] = EXTRA["S2"]
CONFIG_TABLE = {"S2": "saved_configurations", "S4": "circuit_configurations"}
LINK_COLUMN = {"S2": "configuration_id", "S4": "circuit_config_id"}


def rows(url: str, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or []).fetchall()


@pytest.fixture(scope="module", params=["S1", "S2", "S3", "S4"])
def state(request: pytest.FixtureRequest, make_db: Callable[[str], str]) -> tuple[str, str]:
    """(state, URL) of a database holding that state's legacy tables in schema ``legacy`` and
    the target schema in ``public``, migrated by a dry run and then a run."""
    name = str(request.param)
    url = make_db(f"state{name}")
    seed_database(url, users=80, seed=7, source_schema="legacy", schema_state=name)
    schema_ops.apply_target(url)
    options = RunOptions(source_schema="legacy", batch_size=30, drop_columns=EXTRA[name])
    dry = run_migration(url, url, RunOptions(**{**options.__dict__, "dry_run": True}))
    assert dry.status == "succeeded"
    assert run_migration(url, url, options).status == "succeeded"
    return name, url


def test_inspection_names_the_state(state: tuple[str, str]) -> None:
    name, url = state
    with psycopg.connect(url) as conn:
        assert inspect(conn, "legacy", EXTRA[name]).state == name
        if EXTRA[name]:
            with pytest.raises(SourceSchemaMismatch, match="--drop-column"):
                inspect(conn, "legacy").raise_for_problems()


def test_verify_passes(state: tuple[str, str]) -> None:
    _, url = state
    result = verify(url, url, source_schema="legacy")
    assert result.ok, result.differences


def test_every_source_row_is_accounted_for_per_table(state: tuple[str, str]) -> None:
    name, url = state
    per_table = rows(
        url,
        "select key, sum((value->>'source')::int), sum((value->>'migrated')::int"
        " + (value->>'merged')::int + (value->>'quarantined')::int)"
        " from migration.batches b join migration.runs r using (run_id)"
        " cross join jsonb_each(b.counts->'tables') where not r.dry_run group by key",
    )
    totals = {table: (source, done) for table, source, done in per_table}
    for table, (source, done) in totals.items():
        assert source == done, table
    if name in CONFIG_TABLE:
        (count,) = rows(url, f"select count(*) from legacy.{CONFIG_TABLE[name]}")[0]
        assert totals[CONFIG_TABLE[name]][0] == count > 0


def test_no_explicit_link_is_replaced_by_a_guess(state: tuple[str, str]) -> None:
    name, url = state
    if name not in LINK_COLUMN:  # S1, S3: the app wrote no link, so none is explicit
        assert rows(url, "select count(*) from migration.links where method = 'explicit'") == [(0,)]
        return
    table, column = CONFIG_TABLE[name], LINK_COLUMN[name]
    ((guessed, explicit),) = rows(
        url,
        "select count(*) filter (where l.method <> 'explicit'), count(*) from"
        f" legacy.tagged_models t join legacy.{table} c on c.id = t.{column}"
        " join public.tagged_models n on n.id = t.id"
        " join migration.links l on l.tagged_model_id = t.id",
    )
    assert explicit > 0 and guessed == 0


def test_no_row_is_quarantined_for_being_a_json_string(state: tuple[str, str]) -> None:
    _, url = state
    unexpected = rows(
        url,
        "select q.source_table, q.source_id, q.reason from migration.quarantine q"
        " join migration.runs r using (run_id) where not r.dry_run"
        " and q.reason <> 'database_rejected'"
        " and (q.source_table, q.source_id) not in"
        " (select source_table, source_id from seed_truth.quarantine)"
        " and q.source_table <> 'saved_profiles'",
    )
    assert unexpected == []


def test_one_database_s4_stages_the_apps_own_table_and_names_its_dependents(
    make_db: Callable[[str], str],
) -> None:
    """The app's half-applied new schema lives in public: schema apply refuses its
    circuit_configurations, stage-legacy moves it with the legacy tables and names the view
    that follows it; then the migration runs and verifies."""
    url = make_db("stages4")
    seed_database(url, users=30, seed=3, source_schema="public", schema_state="S4")
    with pytest.raises(Exception, match="stage-legacy"):
        schema_ops.apply_target(url)
    moved = schema_ops.stage_legacy(url)
    assert "legacy.circuit_configurations" in moved.tables
    assert any(d.startswith("view public.session_with_config") for d in moved.dependents)
    schema_ops.apply_target(url)
    assert run_migration(url, url, RunOptions(source_schema="legacy")).status == "succeeded"
    assert verify(url, url, source_schema="legacy").ok
