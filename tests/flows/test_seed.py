"""Seeding a real PostgreSQL with synthetic legacy data: COPY, one transaction, truth apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import polars as pl
import psycopg
import pytest

from flows import schema_ops
from flows.seed import SeedSummary, load_synthetic, seed_database
from schemas.errors import ConfigurationError, SourceSchemaMismatch, TargetSchemaMissing
from synthetic.legacy_data import Rates, SyntheticLegacy, generate

JSON_COLUMNS = {
    "auth.users": ("raw_user_meta_data",),
    "user_sessions": (
        "environment_variables",
        "visualization_settings",
        "performance_settings",
        "saved_profiles",
    ),
    "tagged_models": ("circuit_parameters",),
    "user_profiles": ("parameters", "computation_results"),
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
        for column in JSON_COLUMNS[table]:
            if row[column] is not None:
                row[column] = json.loads(row[column])
    return rows


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
    actual = read_back(url, table, frame)
    expected = as_python(frame, table)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        for column, value in got.items():
            if isinstance(value, Decimal):  # numeric columns
                value = float(value)
            elif column in ("id", "user_id", "session_id") and value is not None:
                value = str(value)
            assert value == want[column], (table, want["id"], column)


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
            "select tagged_model_id::text, true_source_table, true_source_id, indistinguishable"
            " from seed_truth.links"
        ).fetchall()
        quarantine = conn.execute("select * from seed_truth.quarantine").fetchall()
        duplicates = conn.execute("select * from seed_truth.duplicates").fetchall()
    assert set(links) == set(data.truth_links.iter_rows())
    assert set(quarantine) == set(data.truth_quarantine.iter_rows())
    assert set(duplicates) == set(data.truth_duplicates.iter_rows())


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
