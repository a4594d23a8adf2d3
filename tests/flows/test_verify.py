"""``verify`` against real migrations: it passes after every clean run (and after incremental
runs), and fails, naming the user, on each kind of tampering with the target or the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import psycopg
import pytest

from flows.db import with_database
from flows.migrate import RunOptions, run_migration
from flows.verify import values as verify_values
from flows.verify import verify
from reports.verification import DIFFERENCES, Verification
from tests.flows.conftest import target_digest
from transforms.ids import stable_uuid

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS, SEED = 200, 5
OPTIONS = RunOptions(source_schema="legacy", batch_size=40, concurrency=2)

RECOVERED_USER = "00000000-0000-4000-8000-00000000e001"
PARAMS = '{"Rsh": 120.5, "Ra": 800, "Ca": 2.5e-6, "Rb": 900, "Cb": 3.5e-6}'
# Edge cases the generator does not make, added to the legacy data before the run; verify must
# agree with the migration on each (``{u}`` is an existing user).
EDGE_CASES = f"""
insert into auth.users (id, email) values ('{RECOVERED_USER}', 'recovered@example.org');
-- tagged models, no circuit at all: one recovered configuration
insert into legacy.tagged_models (user_id, model_id, tag_name, circuit_parameters, resnorm_value)
values ('{RECOVERED_USER}', 'r1', 'a', '{PARAMS}', 1.5),
       ('{RECOVERED_USER}', 'r2', 'a', '{{"Rs": " 130 ", "Ra": "7e2", "Ca": 3e-6, "Rb": 950,
                                          "Cb": "4e-6"}}', null);
-- unnamed elements (null and blank name) equal to a legacy row named like the default: one
-- configuration; a clamped grid equal to another row's grid after clamping: one more
insert into legacy.user_profiles (user_id, name, parameters, min_freq, max_freq, grid_size,
                                  num_points, description, computation_results, updated_at)
values ('{{u}}', 'Untitled circuit', '{PARAMS}', 1, 1000, 10, 100, null, null, now()),
       ('{{u}}', 'Clamped', '{PARAMS}', 1, 1000, 40, 5, 'older', '{{"grid": [1, 2]}}',
        now() - interval '2 days'),
       ('{{u}}', ' Clamped ', '{{"Rs": "120.5", "Ra": 800, "Ca": 2.5e-6, "Rb": 900,
                                  "Cb": 3.5e-6}}', 1, 1000, 25, 10, 'newer', null,
        now() - interval '1 day');
insert into legacy.user_sessions (user_id, session_name, saved_profiles)
values ('{{u}}', 'edge session', '[{{"parameters": {PARAMS}, "frequencyRange": [1, 1000]}},
        {{"name": "  ", "parameters": {PARAMS}, "frequencyRange": [1, 1000],
          "createdAt": "2024-02-30T00:00:00Z"}},
        {{"name": "Only saved", "parameters": {PARAMS},
          "createdAt": "2024-05-01T10:00:00.123Z"}}]');
-- a model with no user of its own takes its session's
insert into legacy.tagged_models (user_id, session_id, model_id, tag_name, circuit_parameters)
select null, id, 'from-session', 'b', '{PARAMS}' from legacy.user_sessions
 where session_name = 'edge session';
"""


def sql(url: str, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(query, params or [])
        return cur.fetchall() if cur.description else []


def checks_of(result: Verification) -> set[tuple[str, str]]:
    return set(result.differences.select("user_id", "check").iter_rows())


def check(url: str) -> Verification:
    return verify(url, url, source_schema="legacy")


@pytest.fixture(scope="module")
def migrated(seeded_db: Callable[[int, int], str]) -> tuple[str, str]:
    """(URL, run id) of a seeded database with edge cases, migrated cleanly."""
    url = seeded_db(USERS, SEED)
    user = sql(url, "select min(user_id::text) from legacy.user_profiles")[0][0]
    with psycopg.connect(url) as conn:
        conn.execute(EDGE_CASES.replace("{u}", user).encode())
    summary = run_migration(url, url, OPTIONS)
    assert summary.status == "succeeded"
    return url, summary.run_id


@pytest.fixture
def clone(migrated: tuple[str, str], pg_server: str) -> Iterator[str]:
    """A copy of the migrated database, to change freely; dropped afterwards."""
    name = f"cm_verify_{uuid.uuid4().hex[:10]}"
    source = migrated[0].rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'create database "{name}" template "{source}"')
    yield with_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


def test_clean_run_verifies_and_verify_writes_nothing(migrated: tuple[str, str]) -> None:
    url, run_id = migrated
    before = target_digest(url)
    result = check(url)
    assert result.ok, result.differences
    assert result.differences.schema == pl.Schema(DIFFERENCES)
    assert result.run_id == run_id
    assert result.users_checked > USERS  # the seeded users and the recovered one
    assert target_digest(url) == before
    # the edge cases were really migrated as verify expects
    assert sql(url, "select name from circuit_configurations where user_id = %s", [RECOVERED_USER])
    # merged circuit: the newer description, and the older member's results kept
    assert sql(
        url,
        "select description, computation_results::text from circuit_configurations"
        " where name = 'Clamped'",
    ) == [("newer", '{"grid": [1, 2]}')]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_generated_worlds_verify_after_a_clean_run(
    seeded_db: Callable[[int, int], str], seed: int
) -> None:
    """Every kind of mess the generator makes (other users' sessions included), several seeds:
    the transform and verify's own rules agree."""
    url = seeded_db(150, seed)
    assert run_migration(url, url, OPTIONS).status == "succeeded"
    result = check(url)
    assert result.ok, result.differences
    dropped = sql(url, "select count(*) from migration.repairs where kind = 'dropped_session'")
    assert dropped[0][0] > 0  # the worlds do hold models pointing at other users' sessions


def test_derived_ids_are_the_same_in_sql(migrated: tuple[str, str]) -> None:
    url, _ = migrated
    keys = ["a", "00000000-0000-4000-8000-00000000e001/x#3", "é ünïcode", ""]
    for key in keys:
        query = (
            f"select {verify_values.stable_uuid('user_profiles', 'k')} from (select %s::text k) x"
        )
        assert sql(url, query, [key])[0][0] == stable_uuid("user_profiles", key)


def pick_model(url: str) -> tuple[str, str]:
    """A target tagged model whose user has two configurations or more: (id, user id)."""
    row = sql(
        url,
        "select t.id::text, t.user_id::text from tagged_models t where (select count(*)"
        " from circuit_configurations c where c.user_id = t.user_id) > 1 order by t.id limit 1",
    )
    return row[0][0], row[0][1]


def test_deleted_tagged_model(clone: str) -> None:
    model, user = pick_model(clone)
    sql(clone, "delete from tagged_models where id = %s", [model])
    result = check(clone)
    assert checks_of(result) == {(user, "tagged_models.ids")}
    assert model in result.differences["expected"][0]


@pytest.mark.parametrize(
    ("change", "check_name"),
    [
        ("notes = coalesce(notes, '') || ' (edited)'", "tagged_models.notes"),
        (
            "circuit_parameters = jsonb_set(circuit_parameters, '{Ra}',"
            " to_jsonb((circuit_parameters->>'Ra')::float8 * 1.001))",
            "tagged_models.Ra",
        ),
        ("tagged_at = tagged_at + interval '1 second'", "tagged_models.tagged_at"),
        (
            "circuit_parameters = circuit_parameters || '{\"extra\": 1}'",
            "tagged_models.parameter_keys",
        ),
    ],
)
def test_altered_tagged_model(clone: str, change: str, check_name: str) -> None:
    model, user = pick_model(clone)
    sql(clone, f"update tagged_models set {change} where id = %s", [model])
    result = check(clone)
    assert checks_of(result) == {(user, check_name)}
    assert result.differences["expected"][0].startswith(model)


def test_change_within_the_tolerance_is_no_difference(clone: str) -> None:
    model, _ = pick_model(clone)
    sql(
        clone,
        "update tagged_models set circuit_parameters = jsonb_set(circuit_parameters, '{Cb}',"
        " to_jsonb((circuit_parameters->>'Cb')::float8 * (1 + 1e-12))),"
        " resnorm_value = resnorm_value * (1 - 1e-12) where id = %s",
        [model],
    )
    result = check(clone)
    assert result.ok, result.differences


def test_relinked_tagged_model(clone: str) -> None:
    model, user = pick_model(clone)
    sql(
        clone,
        "update tagged_models t set circuit_config_id = (select c.id from circuit_configurations c"
        " where c.user_id = t.user_id and c.id <> t.circuit_config_id order by c.id limit 1)"
        " where t.id = %s",
        [model],
    )
    result = check(clone)
    assert checks_of(result) == {(user, "tagged_models.circuit_config_id")}
    assert "(migration.links)" in result.differences["expected"][0]


def test_valid_row_moved_into_the_quarantine(clone: str) -> None:
    """A valid row the ledger says is quarantined (as the database rejecting it would): verify
    derives the decision itself and names the disagreement."""
    model, user = pick_model(clone)
    sql(
        clone,
        "insert into migration.quarantine (run_id, batch_no, source_table, source_id, reason,"
        " detail, user_key) select c.run_id, c.batch_no, 'tagged_models', %s,"
        " 'database_rejected', 'violates a check', c.user_key from migration.user_runs c"
        " where c.user_key = %s",
        [model, user],
    )
    sql(clone, "delete from tagged_models where id = %s", [model])
    result = check(clone)
    assert checks_of(result) == {
        (user, "decision.valid_quarantined"),
        (user, "tagged_models.ids"),
    }
    decision = result.differences.filter(pl.col("check") == "decision.valid_quarantined")
    assert "database_rejected" in decision["actual"][0]


def test_invalid_row_migrated(clone: str) -> None:
    """A row verify finds invalid (here: its parameters) that is in the target and that the
    ledger does not hold as quarantined."""
    model, user = pick_model(clone)
    sql(
        clone,
        "update legacy.tagged_models set circuit_parameters = (case when jsonb_typeof("
        "circuit_parameters) = 'string' then (circuit_parameters #>> '{}')::jsonb"
        " else circuit_parameters end) - 'Cb' where id = %s",
        [model],
    )
    result = check(clone)
    assert checks_of(result) == {
        (user, "decision.invalid_migrated"),
        (user, "tagged_models.ids"),
    }
    assert "invalid_parameters" in result.differences["expected"][0]


def test_configuration_whose_results_were_dropped(clone: str) -> None:
    config, user = sql(
        clone,
        "select id::text, user_id::text from circuit_configurations"
        " where computation_results is not null order by id limit 1",
    )[0]
    sql(
        clone,
        "update circuit_configurations set computation_results = null where id = %s",
        [config],
    )
    result = check(clone)
    assert checks_of(result) == {(user, "circuit_configurations.computation_results")}


@pytest.mark.parametrize(
    ("statement", "check_name"),
    [
        (
            "update user_sessions set description = 'changed' where id = (select min(id::text)"
            "::uuid from user_sessions) returning user_id::text",
            "user_sessions.description",
        ),
        (
            "update user_profiles set username = 'someone else' where user_id = (select"
            " min(user_id::text)::uuid from user_profiles) returning user_id::text",
            "user_profiles.username",
        ),
        (
            "update circuit_configurations set grid_size = mod(grid_size, 20) + 3"
            " where id = (select min(id::text)::uuid from circuit_configurations)"
            " returning user_id::text",
            "circuit_configurations.grid_size",
        ),
    ],
)
def test_altered_session_profile_and_configuration(
    clone: str, statement: str, check_name: str
) -> None:
    user = sql(clone, statement)[0][0]
    result = check(clone)
    assert checks_of(result) == {(user, check_name)}


def test_deleted_session(clone: str) -> None:
    session, user = sql(
        clone, "select id::text, user_id::text from user_sessions order by id limit 1"
    )[0]
    sql(clone, "delete from user_sessions where id = %s", [session])
    result = check(clone)
    assert (user, "user_sessions.ids") in checks_of(result)
    assert {u for u, _ in checks_of(result)} == {user}


def test_legacy_rows_inserted_after_the_run(clone: str) -> None:
    user = sql(clone, "select max(user_id::text) from user_profiles")[0][0]
    sql(
        clone,
        "insert into legacy.tagged_models (user_id, model_id, tag_name, circuit_parameters)"
        f" values (%s, 'late', 'late', '{PARAMS}')",
        [user],
    )
    sql(
        clone,
        "insert into legacy.user_profiles (user_id, name, parameters)"
        f" values (%s, 'Added later', '{PARAMS}')",
        [user],
    )
    result = check(clone)
    assert {"tagged_models.ids", "circuit_configurations.ids"} <= {c for _, c in checks_of(result)}
    assert {u for u, _ in checks_of(result)} == {user}


def test_user_deleted_from_legacy_is_unexpected_in_the_target(clone: str) -> None:
    user = sql(clone, "select max(user_id::text) from user_profiles")[0][0]
    with psycopg.connect(clone) as conn:
        for table in ("tagged_models", "user_profiles", "user_sessions"):
            conn.execute(f"delete from legacy.{table} where user_id = %s", [user])
    result = check(clone)
    assert {u for u, _ in checks_of(result)} == {user}
    assert (user, "user_profiles.ids") in checks_of(result)


def test_row_with_no_user_that_the_ledger_did_not_quarantine(clone: str) -> None:
    sql(
        clone,
        "insert into legacy.tagged_models (user_id, model_id, tag_name, circuit_parameters)"
        f" values (null, 'nobody', 'x', '{PARAMS}')",
    )
    result = check(clone)
    assert checks_of(result) == {("", "decision.invalid_migrated")}
    assert "no_user" in result.differences["expected"][0]


def test_incremental_runs_verify_as_they_go(clone: str) -> None:
    """The ledger carries each user's state forward: verify needs no full run first."""
    user = sql(clone, "select max(user_id::text) from user_profiles")[0][0]
    sql(
        clone,
        "insert into legacy.tagged_models (user_id, model_id, tag_name, circuit_parameters)"
        " values (%s, 'late', 'late', '{\"Rsh\": 1}')",  # invalid: quarantined
        [user],
    )
    sql(clone, "update legacy.user_sessions set description = 'new' where user_id = %s", [user])
    incremental = RunOptions(source_schema="legacy", batch_size=40, incremental=True)
    summary = run_migration(clone, clone, incremental)
    assert summary.status == "succeeded" and summary.plan["users_planned"] == 1
    result = check(clone)
    assert result.ok, result.differences
    assert run_migration(clone, clone, incremental).plan["users_planned"] == 0
    assert check(clone).ok
