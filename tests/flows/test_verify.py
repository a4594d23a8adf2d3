"""``verify`` against a real migration: it passes after a clean run and names the user when the
target or the source is changed behind the migration's back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import psycopg
import pytest

from flows import verify as verify_module
from flows.db import with_database
from flows.migrate import RunOptions, run_migration
from flows.verify import verify
from reports import verification as V
from reports.verification import DIFFERENCES, Verification
from schemas.errors import ConfigurationError
from tests.flows.conftest import target_digest

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
                                  num_points)
values ('{{u}}', 'Untitled circuit', '{PARAMS}', 1, 1000, 10, 100),
       ('{{u}}', 'Clamped', '{PARAMS}', 1, 1000, 40, 5),
       ('{{u}}', ' Clamped ', '{{"Rs": "120.5", "Ra": 800, "Ca": 2.5e-6, "Rb": 900,
                                  "Cb": 3.5e-6}}', 1, 1000, 25, 10);
insert into legacy.user_sessions (user_id, session_name, saved_profiles)
values ('{{u}}', 'edge session', '[{{"parameters": {PARAMS}, "frequencyRange": [1, 1000]}},
        {{"name": "  ", "parameters": {PARAMS}, "frequencyRange": [1, 1000]}},
        {{"name": "Only saved", "parameters": {PARAMS}}}]');
-- a model with no user of its own takes its session's
insert into legacy.tagged_models (user_id, session_id, model_id, tag_name, circuit_parameters)
select null, id, 'from-session', 'b', '{PARAMS}' from legacy.user_sessions
 where session_name = 'edge session';
"""


def sql(url: str, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or []).fetchall()


def users_named(result: Verification, check: str) -> set[str | None]:
    return set(result.differences.filter(pl.col("check") == check)["user_id"].to_list())


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


def check(url: str) -> Verification:
    return verify(url, url, source_schema="legacy")


def test_clean_run_verifies_and_verify_writes_nothing(migrated: tuple[str, str]) -> None:
    url, run_id = migrated
    before = target_digest(url)
    result = check(url)
    assert result.ok, result.differences
    assert result.differences.schema == pl.Schema(DIFFERENCES)
    assert result.run_id == run_id
    assert result.users_checked > USERS  # the seeded users, the recovered one, dangling ids
    assert target_digest(url) == before
    # the edge cases were really migrated as verify expects
    assert sql(
        url,
        "select name from circuit_configurations where user_id = %s",
        [RECOVERED_USER],
    ) == [("Recovered configuration",)]


def test_clean_run_digests_agree_in_every_part(
    migrated: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two sides hash what they read alike, edge cases included (numbers in strings, ``Rs``,
    unnamed elements, a model whose user is its session's): no bucket differs but the recovered
    user's, and forced to compare every user, no digest differs but its configurations'."""
    url, _ = migrated
    drilled: list[list[str]] = []
    drill = V.buckets_to_drill

    def record(expected: pl.DataFrame, actual: pl.DataFrame) -> list[str]:
        drilled.append(drill(expected, actual))
        return drilled[-1]

    monkeypatch.setattr(V, "buckets_to_drill", record)
    assert check(url).ok
    assert drilled == [[RECOVERED_USER[: verify_module.BUCKET_DIGITS]]]

    detailed: dict[str, list[str]] = {}
    to_detail = V.users_to_detail

    def record_detail(expected: pl.DataFrame, actual: pl.DataFrame, table: str) -> list[str]:
        detailed[table] = to_detail(expected, actual, table)
        return detailed[table]

    def every_bucket(expected: pl.DataFrame, actual: pl.DataFrame) -> list[str]:
        return sorted(set(expected["bucket"]) | set(actual["bucket"]))

    monkeypatch.setattr(V, "buckets_to_drill", every_bucket)
    monkeypatch.setattr(V, "users_to_detail", record_detail)
    result = check(url)
    assert result.ok, result.differences
    assert detailed == {"tagged_models": [], "sessions": [], "circuits": [RECOVERED_USER]}


def test_portable_hashes_give_the_same_verdict(clone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers that hash differently (another byte order) are compared by md5 of text."""
    model, user = pick_model(clone)
    sql(clone, "update tagged_models set notes = 'edited' where id = %s returning id", [model])
    fast = check(clone)
    monkeypatch.setattr(verify_module, "_hashing", lambda *_: verify_module._Hashing(True))
    portable = check(clone)
    assert portable.differences.equals(fast.differences)
    assert portable.users_checked == fast.users_checked
    assert fast.differences.select("user_id", "check").rows() == [(user, "tagged_models.payload")]


def test_content_key_is_the_numeric_rounding(migrated: tuple[str, str]) -> None:
    """The content key, computed in float8 where that is safe, is the value's numeric rounded to
    FLOAT_SIG_DIGITS digits, as float8, ties and near-ties included (those take the numeric
    path), and tells apart exactly the values the numeric rounding tells apart."""
    url, _ = migrated
    key = verify_module._sig("x")
    exact = "(case when x = 0 then 0 else round(x::numeric, (8 - floor(log(abs(x))))::int) end)"
    values = """
      select (m * 10::numeric ^ e)::float8 as x
        from generate_series(-300, 299) e,
             unnest('{1, 1.234567885, 1.2345678849999999, 1.2345678850000001, 9.9999999949,
                      9.999999995, 9.9999999951, 0.99999999999999, 5.5, 3.14159265358979,
                      -2.5, -7.7777777775, 1.00000000049, 1.0000000005}'::numeric[]) m
      union all
      select x from unnest('{0, -0, 1e-300, 1e300, 2.2250738585072014e-308}'::float8[]) x"""
    rows = sql(
        url,
        f"select count(*), count(*) filter (where {key} is distinct from {exact}::float8),"
        f" count(distinct {key}), count(distinct {exact}) from ({values}) v",
    )
    n, differ, keys, exact_keys = rows[0]
    assert n > 8000 and differ == 0 and keys == exact_keys


def test_separate_source_connection_and_explicit_run(migrated: tuple[str, str]) -> None:
    url, run_id = migrated
    other = url + ("&" if "?" in url else "?") + "application_name=verify-source"
    result = verify(other, url, source_schema="legacy", run_id=run_id)
    assert result.ok, result.differences
    with pytest.raises(ConfigurationError, match="no migration run"):
        verify(url, url, source_schema="legacy", run_id=str(uuid.uuid4()))


def test_ledger_read_in_the_database_or_bound_as_parameters_gives_one_verdict(clone: str) -> None:
    """The source SQL reads the ledger from its tables when source and target are one database,
    else from parameters: with quarantined rows and mapped circuits taken out of the ledger
    (so they are now due in the target), both find the same differences."""
    with psycopg.connect(clone) as conn:
        removed = conn.execute(
            "delete from migration.quarantine where (source_table, source_id) in ("
            " select distinct on (source_table) source_table, source_id from migration.quarantine"
            " where source_table in ('user_sessions', 'tagged_models', 'saved_profiles')"
            " order by source_table, source_id) returning source_table"
        ).fetchall()
        removed += conn.execute(
            "delete from migration.id_map where (source_table, source_id) in ("
            " select source_table, source_id from migration.id_map"
            " where target_table = 'circuit_configurations' and source_id <> target_id::text"
            " order by source_id limit 1) returning 'id_map'"
        ).fetchall()
    assert sorted(r[0] for r in removed) == [
        "id_map",
        "saved_profiles",
        "tagged_models",
        "user_sessions",
    ]
    in_database = check(clone)
    other = clone + ("&" if "?" in clone else "?") + "application_name=verify-source"
    bound = verify(other, clone, source_schema="legacy")
    assert not in_database.ok
    assert bound.differences.equals(in_database.differences)
    assert bound.users_checked == in_database.users_checked


def test_default_run_is_the_latest_succeeded_real_run(
    migrated: tuple[str, str], clone: str
) -> None:
    _, run_id = migrated
    for status, dry in (("failed", False), ("succeeded", True)):
        sql(
            clone,
            "insert into migration.runs (run_id, started_at, status, dry_run)"
            " values (%s, now() + interval '1 day', %s, %s) returning run_id",
            [str(uuid.uuid4()), status, dry],
        )
    result = check(clone)
    assert result.ok and result.run_id == run_id


def pick_model(url: str) -> tuple[str, str]:
    """(id, user) of a target tagged model whose user has two configurations or more."""
    row = sql(
        url,
        "select t.id::text, t.user_id::text from tagged_models t where (select count(*)"
        " from circuit_configurations c where c.user_id = t.user_id) > 1 order by t.id limit 1",
    )
    return row[0][0], row[0][1]


def test_deleted_tagged_model(clone: str) -> None:
    model, user = pick_model(clone)
    sql(clone, "delete from tagged_models where id = %s returning id", [model])
    result = check(clone)
    assert not result.ok
    assert users_named(result, "tagged_models.ids") == {user}
    row = result.differences.filter(pl.col("check") == "tagged_models.ids").row(0, named=True)
    assert model in row["expected"] and "not in target" in row["expected"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("notes = coalesce(notes, '') || ' (edited)'", "notes="),
        (
            "circuit_parameters = jsonb_set(circuit_parameters, '{Ra}',"
            " to_jsonb((circuit_parameters->>'Ra')::float8 * 1.001))",
            "Ra=",
        ),
        ("tagged_at = tagged_at + interval '1 second'", "tagged_at="),
    ],
)
def test_altered_tagged_model(clone: str, change: str, field: str) -> None:
    model, user = pick_model(clone)
    sql(clone, f"update tagged_models set {change} where id = %s returning id", [model])
    result = check(clone)
    assert result.differences.select("user_id", "check").rows() == [(user, "tagged_models.payload")]
    row = result.differences.row(0, named=True)
    assert row["expected"].startswith(model) and field in row["expected"] and field in row["actual"]


def test_change_within_the_tolerance_is_no_difference(clone: str) -> None:
    model, _ = pick_model(clone)
    sql(
        clone,
        "update tagged_models set circuit_parameters = jsonb_set(circuit_parameters, '{Cb}',"
        " to_jsonb((circuit_parameters->>'Cb')::float8 * (1 + 1e-12))),"
        " resnorm_value = resnorm_value * (1 - 1e-12) where id = %s returning id",
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
        " where t.id = %s returning t.id",
        [model],
    )
    result = check(clone)
    assert result.differences.select("user_id", "check").rows() == [
        (user, "tagged_models.circuit_config_id")
    ]
    assert "(migration.links)" in result.differences["expected"][0]


def test_deleted_session(clone: str) -> None:
    session, user = sql(
        clone, "select id::text, user_id::text from user_sessions order by id limit 1"
    )[0]
    sql(clone, "delete from user_sessions where id = %s returning id", [session])
    result = check(clone)
    assert users_named(result, "sessions.ids") == {user}
    assert session in result.differences.filter(pl.col("check") == "sessions.ids")["expected"][0]
    # its tagged models lost their session (on delete set null): their payload differs too
    assert users_named(result, "tagged_models.payload") <= {user}


def test_deleted_configuration(clone: str) -> None:
    config, user, models = sql(
        clone,
        "select c.id::text, c.user_id::text, count(t.id) from circuit_configurations c"
        " join tagged_models t on t.circuit_config_id = c.id group by c.id order by c.id limit 1",
    )[0]
    sql(clone, "delete from circuit_configurations where id = %s returning id", [config])
    result = check(clone)
    assert set(result.differences["user_id"]) == {user}
    assert {"circuits.count", "tagged_models.ids"} <= set(result.differences["check"])
    ids = result.differences.filter(pl.col("check") == "tagged_models.ids").row(0, named=True)
    assert f"{models} ids" in ids["expected"] or "not in target" in ids["expected"]


@pytest.mark.parametrize(
    ("insert", "expected_checks"),
    [
        (
            "insert into legacy.tagged_models (user_id, model_id, tag_name, circuit_parameters)"
            f" values (%s, 'late', 'late', '{PARAMS}')",
            {"tagged_models.ids"},
        ),
        (
            "insert into legacy.user_profiles (user_id, name, parameters)"
            f" values (%s, 'Added later', '{PARAMS}')",
            {"circuits.count", "circuits.ids"},
        ),
        (
            "insert into legacy.user_sessions (user_id, session_name) values (%s, 'late session')",
            {"sessions.ids"},
        ),
    ],
)
def test_legacy_row_inserted_after_the_run(
    clone: str, insert: str, expected_checks: set[str]
) -> None:
    user = sql(clone, "select max(user_id::text) from user_profiles")[0][0]
    sql(clone, insert + " returning id", [user])
    result = check(clone)
    assert set(result.differences["user_id"]) == {user}
    assert set(result.differences["check"]) == expected_checks


def test_recovered_user_gaining_a_circuit_after_the_run(clone: str) -> None:
    row = sql(
        clone,
        "insert into legacy.user_profiles (user_id, name, parameters)"
        f" values (%s, 'Real one', '{PARAMS}') returning id::text",
        [RECOVERED_USER],
    )
    result = check(clone)
    # still one configuration, but not the one the new circuit must become
    assert result.differences.select("user_id", "check").rows() == [
        (RECOVERED_USER, "circuits.ids")
    ]
    assert row[0][0] in result.differences["expected"][0]


def test_user_deleted_from_legacy_is_unexpected_in_the_target(clone: str) -> None:
    user = sql(clone, "select max(user_id::text) from user_profiles")[0][0]
    with psycopg.connect(clone) as conn:
        for table in ("tagged_models", "user_profiles", "user_sessions"):
            conn.execute(f"delete from legacy.{table} where user_id = %s", [user])
    result = check(clone)
    assert set(result.differences["user_id"]) == {user}
    assert "user.unexpected" in set(result.differences["check"])


def test_row_with_no_user_that_the_ledger_did_not_quarantine(clone: str) -> None:
    sql(
        clone,
        "insert into legacy.tagged_models (user_id, model_id, tag_name, circuit_parameters)"
        f" values (null, 'nobody', 'x', '{PARAMS}') returning id",
    )
    result = check(clone)
    assert result.differences.select("user_id", "check").rows() == [(None, "unowned.rows")]


def test_text_that_looks_like_a_null_marker_survives(seeded_db: Callable[[int, int], str]) -> None:
    url = seeded_db(10, 1)
    user = sql(url, "select min(user_id::text) from legacy.user_profiles")[0][0]
    sql(
        url,
        "insert into legacy.tagged_models (user_id, model_id, tag_name, tag_category, notes,"
        f" circuit_parameters) values (%s, 'm', 't', '\\N', '\\N', '{PARAMS}') returning id",
        [user],
    )
    assert run_migration(url, url, OPTIONS).status == "succeeded"
    result = check(url)
    assert result.ok, result.differences
