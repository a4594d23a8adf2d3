"""Seeding a database with synthetic legacy data and its ground truth.

The legacy tables are those of one schema state of the app (``synthetic.app_states``: S1, the
DESIGN.md section 3 schema, by default; S2 to S4 the app's later ones). Everything loads through
COPY (CSV written by Polars, sent in chunks) in one transaction. The truth goes to its own schema
(``seed_truth`` by default), which the migration never reads: ``links``, ``quarantine``,
``duplicates``, ``circuits`` (each valid circuit's canonical source and grid) and ``state``.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace

import polars as pl
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from flows import db, schema_ops
from schemas.errors import ConfigurationError, SourceSchemaMismatch, TargetSchemaMissing
from synthetic.app_states import SchemaState, state_ddl, state_tables
from synthetic.app_states import schema_state as parse_state
from synthetic.legacy_data import Rates, SyntheticLegacy, generate

LEGACY_TABLES = ("user_sessions", "user_profiles", "tagged_models")
"""The legacy tables of S1 (every state has these names; S2 adds saved_configurations, S4
circuit_configurations)."""

# Rows per COPY chunk: bounds the CSV buffer (a few tens of MB) without slowing the stream.
_CHUNK_ROWS = 100_000

_TRUTH_DDL = """
create schema if not exists {schema};
create table if not exists {schema}.links (
  tagged_model_id uuid primary key,
  true_source_table text not null,
  true_source_id text not null,
  indistinguishable boolean not null,
  explicit_link boolean not null default false
);
alter table {schema}.links add column if not exists explicit_link boolean not null default false;
create table if not exists {schema}.quarantine (
  source_table text not null,
  source_id text not null,
  reason text not null,
  primary key (source_table, source_id)
);
create table if not exists {schema}.duplicates (
  source_table text not null,
  source_id text not null,
  duplicate_of_table text not null,
  duplicate_of_id text not null,
  primary key (source_table, source_id)
);
create table if not exists {schema}.circuits (
  source_table text not null,
  source_id text not null,
  user_id uuid not null,
  min_freq double precision not null,
  max_freq double precision not null,
  num_points integer not null,
  primary key (source_table, source_id)
);
create table if not exists {schema}.state (schema_state text primary key);
"""


@dataclass(frozen=True)
class SeedSummary:
    """Rows loaded per table, and the wall time taken."""

    users: int
    user_profiles: int
    user_sessions: int
    tagged_models: int
    seconds: float
    saved_configurations: int = 0
    circuit_configurations: int = 0
    schema_state: SchemaState = "S1"


def _copy(
    cur: psycopg.Cursor[object], table: sql.Composable, frame: pl.DataFrame, key: list[str]
) -> None:
    """COPY ``frame`` into ``table`` (its columns by name) as CSV, in chunks.

    Rows go in primary-key order (``key``): B-tree inserts then append to the right edge
    instead of landing at random pages, which loads uuid-keyed tables noticeably faster. A
    writer thread sends each chunk while the next one is formatted.
    """
    frame = frame.sort(key).with_columns(  # intervals as text PostgreSQL reads
        pl.format("{} microseconds", pl.col(c).dt.total_microseconds()).alias(c)
        for c, dtype in frame.schema.items()
        if isinstance(dtype, pl.Duration)
    )
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in frame.columns)
    statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(table, columns)
    with cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        for start in range(0, frame.height, _CHUNK_ROWS):
            buffer = io.BytesIO()
            # Nulls are unquoted empty fields; empty strings are written quoted, so they stay "".
            frame.slice(start, _CHUNK_ROWS).write_csv(buffer, include_header=False)
            copy.write(buffer.getbuffer())


def _check_target(
    conn: psycopg.Connection, url: str, source_schema: str, data: SyntheticLegacy
) -> None:
    """Refuse unless ``auth.users`` and the state's tables, with the frames' columns, exist."""
    if not db.table_exists(conn, "auth", "users"):
        raise TargetSchemaMissing(
            f"{db.redact(url)} has no auth.users (apply the Supabase auth shim first)",
            url=db.redact(url),
        )
    tables = state_tables(data.schema_state)
    missing = [t for t in tables if not db.table_exists(conn, source_schema, t)]
    if missing:
        raise SourceSchemaMismatch(
            f"legacy tables {missing} missing in schema {source_schema!r} of {db.redact(url)}; "
            "seed with create_schema=True or apply the legacy DDL first",
            url=db.redact(url),
        )
    frames = data.legacy_tables()
    for table in tables:
        rows = conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = %s and table_name = %s",
            [source_schema, table],
        ).fetchall()
        absent = sorted(set(frames[table].columns) - {name for (name,) in rows})
        if absent:
            raise SourceSchemaMismatch(
                f"{source_schema}.{table} of {db.redact(url)} lacks the columns {absent} of "
                f"schema state {data.schema_state}: it holds another state's tables",
                url=db.redact(url),
            )


def load_synthetic(
    url: str,
    data: SyntheticLegacy,
    *,
    source_schema: str = "public",
    truth_schema: str = "seed_truth",
) -> SeedSummary:
    """Load ``data`` into the legacy tables of ``source_schema`` and ``auth.users``, and its
    truth into ``truth_schema`` (created if missing), all in one transaction, through COPY.
    ``seconds`` is the time of the load alone."""
    if truth_schema in (source_schema, "auth"):
        raise ConfigurationError(f"truth_schema must be a schema of its own, not {truth_schema!r}")
    started = time.perf_counter()
    source = sql.Identifier(source_schema)
    truth = sql.Identifier(truth_schema)
    with db.transaction(url) as conn:
        _check_target(conn, url, source_schema, data)
        cur = conn.cursor()
        try:
            # The legacy data holds user ids that point at no auth user, on purpose: replica
            # mode skips the FK triggers for this transaction only (needs a superuser).
            cur.execute("set local session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                "seeding needs a superuser (session_replication_role = replica lets dangling "
                f"user ids past the legacy foreign keys): {exc}"
            ) from None
        cur.execute(sql.SQL(_TRUTH_DDL).format(schema=truth))
        cur.execute(
            sql.SQL("insert into {}.state values (%s) on conflict do nothing").format(truth),
            [data.schema_state],
        )
        pk = ["source_table", "source_id"]
        tables: list[tuple[sql.Composable, pl.DataFrame, list[str]]] = [
            (
                sql.SQL("auth.users")
                if name == "auth_users"
                else sql.SQL("{}.{}").format(source, sql.Identifier(name)),
                frame,
                ["id"],
            )
            for name, frame in data.legacy_tables().items()
        ]
        keys = {"links": ["tagged_model_id"]}
        tables += [
            (sql.SQL("{}.{}").format(truth, sql.Identifier(name)), frame, keys.get(name, pk))
            for name, frame in data.truth().items()
        ]
        for table, frame, key in tables:
            _copy(cur, table, frame, key)
    return SeedSummary(
        users=data.auth_users.height,
        user_profiles=data.user_profiles.height,
        user_sessions=data.user_sessions.height,
        tagged_models=data.tagged_models.height,
        seconds=time.perf_counter() - started,
        saved_configurations=_height(data.saved_configurations),
        circuit_configurations=_height(data.circuit_configurations),
        schema_state=data.schema_state,
    )


def _height(frame: pl.DataFrame | None) -> int:
    return 0 if frame is None else frame.height


def seed_database(
    url: str,
    *,
    users: int,
    seed: int = 0,
    rates: Rates | None = None,
    source_schema: str = "public",
    truth_schema: str = "seed_truth",
    create_schema: bool = True,
    schema_state: str = "S1",
) -> SeedSummary:
    """Generate synthetic legacy data in ``schema_state`` (S1 to S4) for ``users`` users and
    load it (see ``load_synthetic``).

    With ``create_schema`` the state's legacy tables are created in ``source_schema`` when
    missing (the Supabase auth shim must exist: ``TargetSchemaMissing`` otherwise); S4's DDL
    also upgrades S1 tables in place. ``seconds`` covers generation and loading.
    """
    try:
        state = parse_state(schema_state)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    started = time.perf_counter()
    if create_schema:
        with db.transaction(url) as conn:
            present = all(db.table_exists(conn, source_schema, t) for t in state_tables(state))
            has_auth = db.table_exists(conn, "auth", "users")
        if not present and state == "S1":
            schema_ops.apply_legacy(url, source_schema)
        elif not present:
            if not has_auth:
                raise TargetSchemaMissing(
                    f"{db.redact(url)} has no auth.users (apply the Supabase auth shim first)",
                    url=db.redact(url),
                )
            db.run_script(url, state_ddl(state, source_schema))
    data = generate(
        users, seed=seed, rates=rates if rates is not None else Rates(), schema_state=state
    )
    summary = load_synthetic(url, data, source_schema=source_schema, truth_schema=truth_schema)
    return replace(summary, seconds=time.perf_counter() - started)
