"""Seeding a real PostgreSQL with synthetic legacy data: COPY, one transaction, truth apart; the
DDL of each schema state S1 to S4 and seeding in each."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl
import psycopg
import pytest
from typer.testing import CliRunner

from flows import schema_ops
from flows.cli import app
from flows.seed import SeedSummary, load_synthetic, seed_database
from schemas.errors import ConfigurationError, SourceSchemaMismatch, TargetSchemaMissing
from synthetic.app_states import SCHEMA_STATES, STATE_FRAMES, state_ddl
from synthetic.legacy_data import Rates, SyntheticLegacy, generate

JSON_COLUMNS = {
    "auth.users": ("raw_user_meta_data",),
    "user_sessions": (
        "environment_variables",
        "visualization_settings",
        "performance_settings",
        "saved_profiles",
    ),
    "tagged_models": ("circuit_parameters", "impedance_spectrum", "tagging_context"),
    "user_profiles": ("parameters", "computation_results"),
    "saved_configurations": ("circuit_parameters",),
    "circuit_configurations": ("circuit_parameters", "computation_results", "ui_settings"),
}


@pytest.fixture(scope="module")
def data() -> SyntheticLegacy:
    return generate(200, seed=5)


@pytest.fixture(scope="module")
def loaded(db_url: str, data: SyntheticLegacy) -> tuple[str, SeedSummary]:
    schema_ops.apply_legacy(db_url, "public")
    return db_url, load_synthetic(db_url, data)


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f"select count(*) from {table}").fetchone()[0])  # type: ignore[index]


def read_back(url: str, table: str, frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``table`` (the frame's columns, ordered by id), with jsonb parsed."""
    columns = ", ".join(frame.columns)
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(f"select {columns} from {table} order by id").fetchall()


def as_python(frame: pl.DataFrame, table: str) -> list[dict[str, Any]]:
    """The frame's rows ordered by id as the database returns them (jsonb parsed)."""
    rows = frame.sort("id").to_dicts()
    for row in rows:
        for column in JSON_COLUMNS[table.removeprefix("legacy.")]:
            if row.get(column) is not None:
                row[column] = json.loads(row[column])
    return rows


REAL = {"min_frequency", "max_frequency", "computation_time"}  # float4 in the configuration tables
REAL_TABLES = ("saved_configurations", "circuit_configurations")


def assert_reads_back_equal(url: str, table: str, frame: pl.DataFrame) -> None:
    actual = read_back(url, table, frame)
    expected = as_python(frame, table)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        for column, value in got.items():
            if isinstance(value, Decimal):  # numeric columns
                value = float(value)
            elif column.endswith("id") and value is not None:
                value = str(value)
            elif (
                table.endswith(REAL_TABLES)
                and value is not None
                and column
                in REAL
                | {
                    "min_freq",
                    "max_freq",
                }
            ):  # psycopg reads float4 as its decimal
                value = float(np.float32(value))
            assert value == want[column], (table, want["id"], column)


def test_counts_equal_frame_heights(loaded: tuple[str, SeedSummary], data: SyntheticLegacy) -> None:
    url, summary = loaded
    assert summary == SeedSummary(
        users=data.auth_users.height,
        user_profiles=data.user_profiles.height,
        user_sessions=data.user_sessions.height,
        tagged_models=data.tagged_models.height,
        seconds=summary.seconds,
    )
    assert summary.seconds > 0
    expected = {
        "auth.users": data.auth_users,
        "public.user_sessions": data.user_sessions,
        "public.user_profiles": data.user_profiles,
        "public.tagged_models": data.tagged_models,
        "seed_truth.links": data.truth_links,
        "seed_truth.quarantine": data.truth_quarantine,
        "seed_truth.duplicates": data.truth_duplicates,
    }
    for table, frame in expected.items():
        assert frame.height > 0, table
        assert count(url, table) == frame.height, table


@pytest.mark.parametrize("table", ["auth.users", "user_sessions", "user_profiles", "tagged_models"])
def test_every_row_reads_back_equal(
    loaded: tuple[str, SeedSummary], data: SyntheticLegacy, table: str
) -> None:
    url, _ = loaded
    frame = data.auth_users if table == "auth.users" else getattr(data, table)
    assert_reads_back_equal(url, table, frame)


def test_messy_values_survive_the_load(loaded: tuple[str, SeedSummary]) -> None:
    url, _ = loaded
    with psycopg.connect(url) as conn:
        not_arrays = conn.execute(
            "select count(*) from user_sessions where jsonb_typeof(saved_profiles) <> 'array'"
        ).fetchone()
        dangling = conn.execute(
            "select count(*) from tagged_models t where t.user_id is not null"
            " and not exists (select 1 from auth.users u where u.id = t.user_id)"
        ).fetchone()
        legacy_key = conn.execute(
            "select count(*) from tagged_models where circuit_parameters ? 'Rs'"
        ).fetchone()
        # The replica mode was local to the seeding transaction.
        role = conn.execute("show session_replication_role").fetchone()
    assert not_arrays and not_arrays[0] > 0
    assert dangling and dangling[0] > 0
    assert legacy_key and legacy_key[0] > 0
    assert role == ("origin",)


def test_truth_reads_back_equal(loaded: tuple[str, SeedSummary], data: SyntheticLegacy) -> None:
    url, _ = loaded
    with psycopg.connect(url) as conn:
        links = conn.execute(
            "select tagged_model_id::text, true_source_table, true_source_id, indistinguishable,"
            " explicit_link from seed_truth.links"
        ).fetchall()
        quarantine = conn.execute("select * from seed_truth.quarantine").fetchall()
        duplicates = conn.execute("select * from seed_truth.duplicates").fetchall()
        circuits = conn.execute(
            "select source_table, source_id, user_id::text, min_freq, max_freq, num_points"
            " from seed_truth.circuits"
        ).fetchall()
        state = conn.execute("select * from seed_truth.state").fetchall()
    assert set(links) == set(data.truth_links.iter_rows())
    assert set(quarantine) == set(data.truth_quarantine.iter_rows())
    assert set(duplicates) == set(data.truth_duplicates.iter_rows())
    assert set(circuits) == set(data.truth()["circuits"].iter_rows())
    assert state == [("S1",)]


def test_a_failed_load_leaves_nothing_behind(
    loaded: tuple[str, SeedSummary], data: SyntheticLegacy
) -> None:
    url, _ = loaded
    before = {t: count(url, t) for t in ("auth.users", "tagged_models", "seed_truth.links")}
    extra = generate(20, seed=99)
    # New users and sessions, but one tagged model collides with an already loaded id: the
    # whole load (users and sessions copied before it) must roll back.
    clash = extra.tagged_models.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(data.tagged_models["id"][0]))
        .otherwise(pl.col("id"))
        .alias("id")
    )
    broken = SyntheticLegacy(
        auth_users=extra.auth_users,
        user_sessions=extra.user_sessions,
        tagged_models=clash,
        user_profiles=extra.user_profiles,
        truth_links=extra.truth_links,
        truth_quarantine=extra.truth_quarantine,
        truth_duplicates=extra.truth_duplicates,
        truth_circuits=extra.truth_circuits,
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        load_synthetic(url, broken)
    assert {t: count(url, t) for t in before} == before


def test_truth_schema_must_be_apart(loaded: tuple[str, SeedSummary], data: SyntheticLegacy) -> None:
    url, _ = loaded
    with pytest.raises(ConfigurationError):
        load_synthetic(url, data, truth_schema="public")


def test_seed_database_into_a_legacy_schema(make_db: Callable[[str], str]) -> None:
    url = make_db("seedlegacy")
    summary = seed_database(
        url, users=60, seed=2, rates=Rates.zero(), source_schema="legacy", truth_schema="truth"
    )
    data = generate(60, seed=2, rates=Rates.zero())
    assert summary.users == 60
    assert summary.tagged_models == data.tagged_models.height
    assert count(url, "legacy.user_profiles") == data.user_profiles.height
    assert count(url, "legacy.user_sessions") == data.user_sessions.height
    assert count(url, "legacy.tagged_models") == data.tagged_models.height
    assert count(url, "truth.links") == data.truth_links.height
    assert count(url, "truth.quarantine") == 0
    with psycopg.connect(url) as conn:
        public = conn.execute("select to_regclass('public.tagged_models')").fetchone()
    assert public == (None,)


def test_seed_database_needs_the_auth_shim(make_db: Callable[[str], str]) -> None:
    url = make_db("seednoauth")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop schema auth cascade")
    with pytest.raises(TargetSchemaMissing):
        seed_database(url, users=5)


def test_seed_database_without_create_schema_needs_the_tables(
    make_db: Callable[[str], str],
) -> None:
    url = make_db("seednotables")
    with pytest.raises(SourceSchemaMismatch):
        seed_database(url, users=5, create_schema=False)
    schema_ops.apply_legacy(url, "public")
    assert seed_database(url, users=5, create_schema=False).users == 5


def test_seed_database_refuses_an_unknown_state(make_db: Callable[[str], str]) -> None:
    with pytest.raises(ConfigurationError, match="S1, S2, S3, S4"):
        seed_database("postgresql://nowhere.invalid/x", users=5, schema_state="S9")


# --- schema states S1 to S4 -------------------------------------------------------------------

# The columns the app's SQL gives each legacy table in each state (the facts, not the frames).
S1_SESSIONS = {
    "id", "user_id", "session_name", "description", "environment_variables",
    "visualization_settings", "performance_settings", "saved_profiles", "is_active",
    "last_accessed", "created_at", "updated_at",
}  # fmt: skip
S1_MODELS = {
    "id", "user_id", "session_id", "model_id", "tag_name", "tag_category", "circuit_parameters",
    "resnorm_value", "tagged_at", "notes", "is_interesting",
}  # fmt: skip
CIRCUIT_ROWS = {
    "id", "user_id", "name", "description", "parameters", "grid_size", "min_freq", "max_freq",
    "num_points", "is_computed", "computation_time", "total_points", "valid_points",
    "computation_results", "created_at", "updated_at",
}  # fmt: skip
STATS = {"total_computations", "total_models_generated", "total_computation_time"}
ML = {"impedance_spectrum", "tagging_context", "ml_relevance_score", "is_ml_training_data"}
CONFIG = {
    "id", "user_id", "name", "description", "is_public", "created_at", "updated_at",
    "grid_size", "num_points", "circuit_parameters", "is_computed", "computation_time",
    "total_points", "valid_points",
}  # fmt: skip
EXPECTED_COLUMNS: dict[str, dict[str, set[str]]] = {
    "S1": {"user_sessions": S1_SESSIONS, "tagged_models": S1_MODELS, "user_profiles": CIRCUIT_ROWS},
    "S2": {
        "user_profiles": {"id", "username", "full_name", "avatar_url", "created_at", "updated_at"},
        "saved_configurations": CONFIG | {"min_frequency", "max_frequency"},
        "user_sessions": S1_SESSIONS - {"saved_profiles"} | STATS,
        "tagged_models": S1_MODELS - {"is_interesting"} | ML | {"configuration_id"},
    },
    "S3": {
        "user_sessions": S1_SESSIONS - {"saved_profiles"} | STATS,
        "tagged_models": S1_MODELS - {"is_interesting"} | ML,
        "user_profiles": CIRCUIT_ROWS,
    },
    "S4": {
        "user_sessions": S1_SESSIONS | {"current_circuit_config_id"},
        "tagged_models": S1_MODELS | {"circuit_config_id"},
        "user_profiles": CIRCUIT_ROWS,
        "circuit_configurations": CONFIG
        | {"min_freq", "max_freq", "computation_results", "ui_settings"},
        "session_with_config": {
            "session_id",
            "user_id",
            "session_name",
            "current_circuit_config_id",
            "config_name",
            "config_last_modified",
            "last_accessed",
            "is_active",
        },
    },
}


def columns_of(url: str, schema: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Per table of ``schema``: column -> (data type, nullable)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select table_name, column_name, data_type, is_nullable"
            " from information_schema.columns where table_schema = %s",
            [schema],
        ).fetchall()
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for table, column, kind, nullable in rows:
        out.setdefault(table, {})[column] = (kind, nullable)
    return out


@pytest.mark.parametrize("state", SCHEMA_STATES)
def test_each_states_ddl_has_the_apps_columns(make_db: Callable[[str], str], state: str) -> None:
    url = make_db(f"ddl{state}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(state_ddl(state, "legacy").encode())  # type: ignore[arg-type]
        conn.execute(state_ddl(state, "legacy").encode())  # type: ignore[arg-type]  # idempotent
    found = columns_of(url, "legacy")
    assert {t: set(c) for t, c in found.items()} == EXPECTED_COLUMNS[state]
    for table, frame in STATE_FRAMES[state].items():  # type: ignore[index]
        if table != "auth_users":
            assert set(frame) == set(found[table]), table
    sessions, models = found["user_sessions"], found["tagged_models"]
    assert sessions["user_id"][1] == models["user_id"][1] == models["session_id"][1] == "YES"
    if state in ("S2", "S3"):
        assert sessions["total_computation_time"][0] == "interval"
        assert sessions["total_models_generated"][0] == "bigint"
    if state == "S2":
        assert found["user_profiles"]["id"][1] == "NO"
        assert found["saved_configurations"]["min_frequency"][0] == "real"
        assert models["configuration_id"] == ("uuid", "YES")
    if state == "S4":
        assert found["circuit_configurations"]["min_freq"][0] == "real"
        assert models["circuit_config_id"] == ("uuid", "YES")
        assert sessions["current_circuit_config_id"] == ("uuid", "YES")
    if state != "S2":
        assert found["user_profiles"]["min_freq"][0] == "numeric"


def test_the_apps_constraints_hold_in_the_ddl(make_db: Callable[[str], str]) -> None:
    """S2's tagged_models are unique per (user, session, model, tag); the configuration tables
    refuse a jsonb string, a missing key and an inverted range; S4's view is a plain view."""
    url = make_db("ddlchecks")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(state_ddl("S2", "s2").encode())
        conn.execute(state_ddl("S4", "s4").encode())
        user = conn.execute("insert into auth.users default values returning id").fetchone()
        good = '{"Rsh": 1, "Ra": 1, "Ca": 1e-6, "Rb": 1, "Cb": 1e-6, "frequency_range": [0.1, 10]}'
        insert = (
            "insert into s4.circuit_configurations (user_id, name, grid_size, min_freq, max_freq,"
            " num_points, circuit_parameters) values (%s, 'c', 5, %s, %s, 100, %s::jsonb)"
        )
        conn.execute(insert, [user[0], 0.1, 10, good])  # type: ignore[index]
        for lo, hi, params in (
            (10, 0.1, good),
            (0.1, 10, json.dumps(good)),
            (0.1, 10, good.replace('"Rsh"', '"Rs"')),
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(insert, [user[0], lo, hi, params])  # type: ignore[index]
        row = conn.execute(
            "select min_freq::float8, min_freq::text from s4.circuit_configurations"
        ).fetchone()
        assert row == (0.10000000149011612, "0.1")
        options = conn.execute(
            "select reloptions from pg_class where oid = 's4.session_with_config'::regclass"
        ).fetchone()
        assert options == (None,)
        unique = conn.execute(
            "select count(*) from pg_constraint where conrelid = 's2.tagged_models'::regclass"
            " and contype = 'u'"
        ).fetchone()
        assert unique == (1,)


@pytest.mark.parametrize("state", SCHEMA_STATES)
def test_seed_each_state(make_db: Callable[[str], str], state: str) -> None:
    url = make_db(f"seed{state}")
    summary = seed_database(url, users=120, seed=6, source_schema="legacy", schema_state=state)
    data = generate(120, seed=6, schema_state=state)
    assert summary.schema_state == state
    assert summary.saved_configurations == (
        data.saved_configurations.height if data.saved_configurations is not None else 0
    )
    assert summary.circuit_configurations == (
        data.circuit_configurations.height if data.circuit_configurations is not None else 0
    )
    for name, frame in data.legacy_tables().items():
        table = "auth.users" if name == "auth_users" else f"legacy.{name}"
        assert frame.height > 0, name
        assert count(url, table) == frame.height, name
        if name != "auth_users":
            assert_reads_back_equal(url, table, frame)
    assert count(url, "seed_truth.links") == data.truth_links.height
    assert count(url, "seed_truth.circuits") == data.truth()["circuits"].height
    with psycopg.connect(url) as conn:
        strings = conn.execute(
            "select count(*) from legacy.tagged_models"
            " where jsonb_typeof(circuit_parameters) = 'string'"
        ).fetchone()
        links = conn.execute(
            "select count(*) from seed_truth.links l join legacy.tagged_models t"
            " on t.id = l.tagged_model_id where l.explicit_link"
        ).fetchone()
    assert strings and strings[0] > 0.4 * data.tagged_models.height
    assert links and (links[0] > 0) == (state in ("S2", "S4"))


def test_real_columns_round_trip(make_db: Callable[[str], str]) -> None:
    """REAL columns read back as float8 exactly as the frames hold them (0.1 -> float4)."""
    url = make_db("seedreal")
    seed_database(url, users=80, seed=3, schema_state="S2")
    data = generate(80, seed=3, schema_state="S2")
    assert data.saved_configurations is not None
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select id::text, min_frequency::float8, max_frequency::float8, min_frequency::text"
            " from saved_configurations order by id"
        ).fetchall()
    frame = data.saved_configurations.sort("id")
    assert [r[1] for r in rows] == frame["min_frequency"].to_list()
    assert [r[2] for r in rows] == frame["max_frequency"].to_list()
    decimals = {float(r[3]) for r in rows}
    assert 0.1 in decimals and not np.isin(0.1, frame["min_frequency"].to_numpy())


def test_seeding_another_state_over_tables_refuses(make_db: Callable[[str], str]) -> None:
    url = make_db("seedmismatch")
    seed_database(url, users=5, schema_state="S1")
    with pytest.raises(SourceSchemaMismatch):  # S1's user_profiles is no metadata table
        seed_database(url, users=5, seed=1, schema_state="S2", create_schema=False)
    # S4's DDL upgrades S1 tables in place (as the app's own scripts did).
    assert seed_database(url, users=5, seed=2, schema_state="s4").circuit_configurations > 0


def test_cli_seed_with_a_schema_state(make_db: Callable[[str], str]) -> None:
    url = make_db("seedcli")
    runner = CliRunner()
    result = runner.invoke(
        app, ["seed", "--users", "30", "--target-url", url, "--schema-state", "S2"]
    )
    assert result.exit_code == 0, result.output
    assert "S2" in result.output and "saved_configurations" in result.output
    assert count(url, "public.saved_configurations") > 0
    bad = runner.invoke(app, ["seed", "--target-url", url, "--schema-state", "S7"])
    assert bad.exit_code != 0
    default = runner.invoke(app, ["seed", "--users", "10", "--target-url", make_db("seedcli1")])
    assert default.exit_code == 0, default.output
    assert "saved_configurations" not in default.output
