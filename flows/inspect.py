"""Schema inspection: which state of the app's schema the legacy tables are in (DESIGN.md section
3, S1 to S4), and the fate of every legacy column: mapped to a target column, used as evidence,
taken from its default because it is absent, or dropped (only when the operator says so).

Everything a run reads goes through :meth:`Inspection.relation`: a subquery that gives each
legacy source the canonical columns of ``schemas.frames`` (an absent optional column reads as its
default), so extract, the plan and ``verify`` see one shape whatever the state. The sources:

- ``user_sessions``, ``tagged_models``: in every state (S2/S3 lack ``saved_profiles``, S2/S3
  lack ``is_interesting``; S2's ``configuration_id`` and S4's ``circuit_config_id`` are the app's
  links, read as ``explicit_config_id``; S4's ``current_circuit_config_id`` is kept as evidence);
- ``user_profiles``: circuit rows (S1, S3, S4), or, in S2, the users' profile metadata, read as
  the source ``profile_metadata`` (``user_profiles`` then reads as empty);
- ``app_configurations``: the configuration tables the app wrote itself (S2
  ``saved_configurations``, S4 ``circuit_configurations``), their REAL frequencies read as the
  shortest decimal of the float4 they hold (0.1, not 0.10000000149011612).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from schemas.errors import SourceSchemaMismatch
from schemas.tables import LEGACY_TABLES as LEGACY_DDL_TABLES

LEGACY_TABLES = ("user_sessions", "tagged_models", "user_profiles")
"""The legacy tables every state has."""
CONFIG_TABLES = ("saved_configurations", "circuit_configurations")
"""Configuration tables the app wrote itself (S2, S4); optional."""
SOURCES = (*LEGACY_TABLES, "app_configurations", "profile_metadata")
"""The canonical sources a run reads (``schemas.frames.LEGACY_FRAMES`` but ``auth_users``)."""


@dataclass(frozen=True)
class Column:
    """A legacy column the contract knows: ``fate`` is ``mapped`` (to ``target``) or
    ``evidence`` (read, not copied); ``default`` (SQL) is what an absent optional column reads
    as (a column without one is required); ``legacy`` names the legacy columns it reads, first
    found first (default: its own name)."""

    name: str
    fate: str
    target: str
    default: str | None = None
    legacy: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The legacy columns this canonical column reads."""
        return self.legacy or (self.name,)


def _m(name: str, target: str, default: str | None = None) -> Column:
    return Column(name, "mapped", target, default)


_TS = "null::timestamptz"
CONTRACT: Mapping[str, tuple[Column, ...]] = {
    "user_sessions": (
        _m("id", "user_sessions.id"),
        _m("user_id", "user_sessions.user_id"),
        _m("session_name", "user_sessions.session_name"),
        _m("description", "user_sessions.description", "null::text"),
        _m("environment_variables", "user_sessions.environment_variables", "'{}'::jsonb"),
        _m("visualization_settings", "user_sessions.visualization_settings", "'{}'::jsonb"),
        _m("performance_settings", "user_sessions.performance_settings", "'{}'::jsonb"),
        Column(
            "saved_profiles", "evidence", "circuit_configurations (its elements)", "null::jsonb"
        ),
        _m("is_active", "user_sessions.is_active", "true"),
        _m("last_accessed", "user_sessions.last_accessed", _TS),
        _m("created_at", "user_sessions.created_at", _TS),
        _m("updated_at", "user_sessions.updated_at", _TS),
        Column(
            "current_circuit_config_id",
            "evidence",
            "user_sessions.current_circuit_config_id (kept when the user's own)",
            "null::uuid",
        ),
    ),
    "tagged_models": (
        _m("id", "tagged_models.id"),
        _m("user_id", "tagged_models.user_id"),
        _m("session_id", "tagged_models.session_id"),
        _m("model_id", "tagged_models.model_id"),
        _m("tag_name", "tagged_models.tag_name"),
        _m("tag_category", "tagged_models.tag_category", "'user'::varchar"),
        _m("circuit_parameters", "tagged_models.circuit_parameters"),
        _m("resnorm_value", "tagged_models.resnorm_value", "null::float8"),
        _m("tagged_at", "tagged_models.tagged_at", _TS),
        _m("notes", "tagged_models.notes", "null::text"),
        _m("is_interesting", "tagged_models.is_interesting", "false"),
        Column(
            "explicit_config_id",
            "evidence",
            "tagged_models.circuit_config_id (the app's own link: method explicit)",
            "null::uuid",
            ("circuit_config_id", "configuration_id"),
        ),
    ),
    "user_profiles": (
        _m("id", "circuit_configurations.id"),
        _m("user_id", "circuit_configurations.user_id"),
        _m("name", "circuit_configurations.name"),
        _m("description", "circuit_configurations.description", "null::text"),
        _m("parameters", "circuit_configurations.circuit_parameters"),
        _m("grid_size", "circuit_configurations.grid_size", "null::int"),
        _m("min_freq", "circuit_configurations.min_freq", "null::numeric"),
        _m("max_freq", "circuit_configurations.max_freq", "null::numeric"),
        _m("num_points", "circuit_configurations.num_points", "null::int"),
        _m("is_computed", "circuit_configurations.is_computed", "false"),
        _m("computation_time", "circuit_configurations.computation_time", "null::numeric"),
        _m("total_points", "circuit_configurations.total_points", "null::int"),
        _m("valid_points", "circuit_configurations.valid_points", "null::int"),
        _m("computation_results", "circuit_configurations.computation_results", "null::jsonb"),
        _m("created_at", "circuit_configurations.created_at", _TS),
        _m("updated_at", "circuit_configurations.updated_at", _TS),
    ),
    "profile_metadata": (
        _m("id", "user_profiles.user_id"),
        _m("username", "user_profiles.username", "null::text"),
        _m("full_name", "user_profiles.full_name", "null::text"),
        _m("avatar_url", "user_profiles.avatar_url", "null::text"),
        _m("created_at", "user_profiles.created_at", _TS),
        _m("updated_at", "user_profiles.updated_at", _TS),
    ),
    "app_configurations": (
        _m("id", "circuit_configurations.id"),
        _m("user_id", "circuit_configurations.user_id"),
        _m("name", "circuit_configurations.name"),
        _m("description", "circuit_configurations.description", "null::text"),
        _m("is_public", "circuit_configurations.is_public", "false"),
        _m("grid_size", "circuit_configurations.grid_size", "null::int"),
        Column(
            "min_freq",
            "mapped",
            "circuit_configurations.min_freq",
            None,
            ("min_freq", "min_frequency"),
        ),
        Column(
            "max_freq",
            "mapped",
            "circuit_configurations.max_freq",
            None,
            ("max_freq", "max_frequency"),
        ),
        _m("num_points", "circuit_configurations.num_points", "null::int"),
        _m("circuit_parameters", "circuit_configurations.circuit_parameters"),
        _m("is_computed", "circuit_configurations.is_computed", "false"),
        _m("computation_time", "circuit_configurations.computation_time", "null::numeric"),
        _m("total_points", "circuit_configurations.total_points", "null::int"),
        _m("valid_points", "circuit_configurations.valid_points", "null::int"),
        _m("computation_results", "circuit_configurations.computation_results", "null::jsonb"),
        _m("ui_settings", "circuit_configurations.ui_settings", "null::jsonb"),
        _m("created_at", "circuit_configurations.created_at", _TS),
        _m("updated_at", "circuit_configurations.updated_at", _TS),
    ),
}
"""The canonical columns of each source, in the order the frames read them, and the legacy
columns they read."""

METADATA_MARK = "username"  # a user_profiles with this column and no ``parameters`` is S2's
TARGET_MARK = "default_grid_size"  # a user_profiles with this column is the new target table

STATE_MARKS: Mapping[str, str] = {
    "user_sessions.total_computations": "session statistics (S2, S3)",
    "user_sessions.total_models_generated": "session statistics (S2, S3)",
    "user_sessions.total_computation_time": "session statistics (S2, S3)",
    "tagged_models.impedance_spectrum": "ML columns (S2, S3)",
    "tagged_models.tagging_context": "ML columns (S2, S3)",
    "tagged_models.ml_relevance_score": "ML columns (S2, S3)",
    "tagged_models.is_ml_training_data": "ML columns (S2, S3)",
}
"""Columns other states of the app's schema have that the target has no place for."""


@dataclass(frozen=True)
class Fate:
    """What becomes of one legacy column."""

    table: str
    column: str
    fate: str  # mapped | evidence | default (absent) | dropped | unmapped | missing
    target: str
    non_null: int | None = None  # rows holding a value (unmapped and dropped columns)


@dataclass(frozen=True)
class Inspection:
    """The legacy schema as found: its state, every column's fate, and what is wrong."""

    schema: str
    state: str
    fates: tuple[Fate, ...]
    problems: tuple[str, ...]
    present: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether a run may read this schema (nothing missing, nothing dropped unasked)."""
        return not self.problems

    @property
    def metadata_profiles(self) -> bool:
        """Whether ``user_profiles`` holds the users' metadata (S2), not circuits."""
        columns = self.present.get("user_profiles", frozenset())
        return METADATA_MARK in columns and "parameters" not in columns

    def raise_for_problems(self) -> None:
        """Raise ``SourceSchemaMismatch`` (exit 4) naming every problem of every table."""
        if self.problems:
            raise SourceSchemaMismatch(
                f"legacy schema {self.schema} ({self.state}) cannot be migrated as it is: "
                + "; ".join(self.problems),
                problems=list(self.problems),
            )

    def summary(self) -> dict[str, object]:
        """What a run records of the inspection (``options.inspection``)."""
        return {
            "schema": self.schema,
            "state": self.state,
            "dropped": {f"{f.table}.{f.column}": f.non_null for f in self.dropped()},
            "defaults": sorted(f"{f.table}.{f.column}" for f in self.fates if f.fate == "default"),
        }

    def dropped(self) -> list[Fate]:
        """The columns the operator dropped, with their non-null counts."""
        return [f for f in self.fates if f.fate == "dropped"]

    def _select(self, source: str, table: str) -> sql.Composed:
        """``select ctid as _ctid, <canonical columns of source> from schema.table``."""
        present = self.present.get(table, frozenset())
        items: list[sql.Composable] = [sql.SQL("ctid as _ctid")]
        if source == "app_configurations":
            items.append(sql.SQL("{}::text as source_table").format(sql.Literal(table)))
        for c in CONTRACT[source]:
            found = [n for n in c.names if n in present]
            if found:
                value: sql.Composable = sql.SQL("coalesce({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, found))
                )
                if c.name in ("min_freq", "max_freq", "computation_time") and source == (
                    "app_configurations"
                ):
                    value = sql.SQL("{}::numeric").format(value)  # a REAL's shortest decimal
            else:
                value = sql.SQL(c.default or "null")
            items.append(sql.SQL("{} as {}").format(value, sql.Identifier(c.name)))
        return sql.SQL("select {} from {}.{}").format(
            sql.SQL(", ").join(items), sql.Identifier(self.schema), sql.Identifier(table)
        )

    def relation(self, source: str) -> sql.Composed:
        """``(select _ctid, <canonical columns> ...)`` of ``source`` (one of :data:`SOURCES`):
        absent optional columns read as their default, unmapped columns are left out, a source
        this state does not have reads as no rows (``_ctid`` lets a reader scan page ranges)."""
        tables: list[str] = []
        if source == "app_configurations":
            tables = [t for t in CONFIG_TABLES if t in self.present]
        elif source == "profile_metadata":
            tables = ["user_profiles"] if self.metadata_profiles else []
        elif source == "user_profiles":
            tables = [] if self.metadata_profiles else ["user_profiles"]
        else:
            tables = [source]
        if not tables:
            return _empty(source)
        return sql.SQL("({})").format(
            sql.SQL(" union all ").join(self._select(source, t) for t in tables)
        )

    def lines(self) -> list[str]:
        """The inspection as text lines, for the terminal and the reports."""
        out = [f"legacy schema {self.schema}: state {self.state}"]
        for table in (*LEGACY_TABLES, *CONFIG_TABLES):
            mine = [f for f in self.fates if f.table == table]
            if not mine:
                continue
            out.append(f"  {table}")
            for f in mine:
                count = "" if f.non_null is None else f" ({f.non_null:,} rows hold a value)"
                out.append(f"    {f.column:26s} {f.fate:9s} {f.target}{count}")
        out += [f"  problem: {p}" for p in self.problems]
        return out


def _empty(source: str) -> sql.Composed:
    """A relation with ``source``'s canonical columns and no rows."""
    items = ["null::tid as _ctid"]
    if source == "app_configurations":
        items.append("null::text as source_table")
    for c in CONTRACT[source]:
        default = c.default or _REQUIRED_TYPES[c.name]
        items.append(f'{default} as "{c.name}"')
    return sql.SQL("(select {} where false)").format(sql.SQL(", ".join(items)))


_REQUIRED_TYPES = {
    "id": "null::uuid",
    "user_id": "null::uuid",
    "name": "null::text",
    "parameters": "null::jsonb",
    "circuit_parameters": "null::jsonb",
    "min_freq": "null::numeric",
    "max_freq": "null::numeric",
}


def _columns(conn: psycopg.Connection, schema: str) -> dict[str, list[str]]:
    rows = conn.execute(
        "select table_name, column_name from information_schema.columns"
        " where table_schema = %s and table_name = any(%s) order by ordinal_position",
        [schema, [*LEGACY_TABLES, *CONFIG_TABLES]],
    ).fetchall()
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(str(table), []).append(str(column))
    return found


def _non_null(
    conn: psycopg.Connection, schema: str, columns: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Rows holding a value, per (table, column) (one scan per table)."""
    by_table: dict[str, list[str]] = {}
    for table, column in columns:
        by_table.setdefault(table, []).append(column)
    counts: dict[tuple[str, str], int] = {}
    for table, names in by_table.items():
        query = sql.SQL("select {} from {}.{}").format(
            sql.SQL(", ").join(sql.SQL("count({})").format(sql.Identifier(n)) for n in names),
            sql.Identifier(schema),
            sql.Identifier(table),
        )
        row = conn.execute(query).fetchone()
        for name, n in zip(names, row or (), strict=True):
            counts[(table, name)] = int(n)
    return counts


def _state(found: Mapping[str, Sequence[str]]) -> str:
    sessions = set(found.get("user_sessions", ()))
    models = set(found.get("tagged_models", ()))
    profiles = set(found.get("user_profiles", ()))
    if "saved_configurations" in found or (
        METADATA_MARK in profiles and "parameters" not in profiles
    ):
        return "S2"
    if (
        "circuit_configurations" in found
        or "circuit_config_id" in models
        or "current_circuit_config_id" in sessions
    ):
        return "S4"
    if "saved_profiles" not in sessions and "total_computations" in sessions:
        return "S3"
    return "S1"


def _contract_of(table: str, columns: Sequence[str]) -> tuple[str, tuple[Column, ...]]:
    """The source a legacy table feeds, and its canonical columns."""
    if table in CONFIG_TABLES:
        return "app_configurations", CONTRACT["app_configurations"]
    if table == "user_profiles" and METADATA_MARK in columns and "parameters" not in columns:
        return "profile_metadata", CONTRACT["profile_metadata"]
    return table, CONTRACT[table]


def inspect(
    conn: psycopg.Connection,
    schema: str,
    drop_columns: Iterable[str] = (),
    *,
    reading_only: bool = False,
) -> Inspection:
    """Inspect the legacy tables of ``schema``. ``drop_columns`` (``table.column``) are the
    unmapped columns the operator acknowledged: dropped, the rest refuse the run.
    ``reading_only`` (``verify``, which writes nothing): unmapped columns are no problem."""
    found = _columns(conn, schema)
    drop = set(drop_columns)
    fates: list[Fate] = []
    problems: list[str] = []
    unmapped: list[tuple[str, str]] = []
    if TARGET_MARK in found.get("user_profiles", ()):
        problems.append(
            f"schema {schema} holds circuit-migrate's new tables (user_profiles has"
            f" {TARGET_MARK}), not the legacy ones"
        )
        return Inspection(schema, "target", (), tuple(problems), {})
    for table in (*LEGACY_TABLES, *CONFIG_TABLES):
        columns = found.get(table)
        if not columns:
            if table in LEGACY_TABLES:
                problems.append(f"no legacy table {schema}.{table}")
            continue
        _, contract = _contract_of(table, columns)
        missing = [
            c.names[0]
            for c in contract
            if c.default is None and not any(n in columns for n in c.names)
        ]
        if missing:
            problems.append(f"{schema}.{table} lacks required columns {', '.join(missing)}")
        known: set[str] = set()
        for c in contract:
            hit = [n for n in c.names if n in columns]
            known |= set(c.names)
            if hit:
                fates += [Fate(table, n, c.fate, c.target) for n in hit]
            elif c.default is None:
                fates.append(Fate(table, c.names[0], "missing", "required"))
            else:
                fates.append(Fate(table, c.name, "default", f"absent: {c.target} = {c.default}"))
        unmapped += [(table, name) for name in columns if name not in known]
    counts = _non_null(conn, schema, unmapped) if unmapped else {}
    if reading_only:
        drop |= {f"{t}.{c}" for t, c in unmapped}
    refused = []
    for table, name in unmapped:
        what = STATE_MARKS.get(f"{table}.{name}", "not in the contract")
        n = counts[(table, name)]
        if f"{table}.{name}" in drop:
            fates.append(Fate(table, name, "dropped", f"{what}; dropped (--drop-column)", n))
        else:
            fates.append(Fate(table, name, "unmapped", what, n))
            refused.append(f"{table}.{name} ({n:,} rows hold a value)")
    if refused:
        problems.append(
            "columns the target has no place for would be lost: "
            + ", ".join(refused)
            + "; pass --drop-column TABLE.COLUMN for each to drop it knowingly (the legacy"
            " rows keep it until cleanup --drop)"
        )
    unknown = sorted(drop - {f"{t}.{c}" for t, c in unmapped})
    if unknown:
        problems.append(f"--drop-column names no unmapped column: {', '.join(unknown)}")
    present = {table: frozenset(columns) for table, columns in found.items()}
    return Inspection(schema, _state(found), tuple(fates), tuple(problems), present)


def relation(source: str | Inspection, table: str) -> sql.Composable:
    """The legacy source ``table`` to read, with the canonical columns and ``_ctid``:
    ``source``'s normalising subquery, or, given only a schema name (a source in the shape of
    DESIGN.md section 3, state S1), the same over the contract's own columns."""
    if isinstance(source, Inspection):
        return source.relation(table)
    present = {t.name: frozenset(t.c.keys()) for t in LEGACY_DDL_TABLES}
    return Inspection(source, "S1", (), (), present).relation(table)


def schema_of(source: str | Inspection) -> str:
    """The schema name of ``source``."""
    return source.schema if isinstance(source, Inspection) else source


def base_tables(source: str | Inspection, table: str) -> list[sql.Composed]:
    """The legacy tables a source reads (for sizes and page counts)."""
    schema = sql.Identifier(schema_of(source))
    if table == "app_configurations":
        names = (
            [t for t in CONFIG_TABLES if t in source.present]
            if isinstance(source, Inspection)
            else []
        )
    elif table == "profile_metadata":
        names = (
            ["user_profiles"] if isinstance(source, Inspection) and source.metadata_profiles else []
        )
    else:
        names = [table]
    return [sql.SQL("{}.{}").format(schema, sql.Identifier(n)) for n in names]


def row_text(table: str, alias: str = "x") -> sql.Composed:
    """SQL: the text of a legacy row's canonical columns (what its digest is the md5 of)."""
    columns = [c.name for c in CONTRACT[table]]
    if table == "app_configurations":
        columns = ["source_table", *columns]
    return sql.SQL("row({})::text").format(
        sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in columns
        )
    )
