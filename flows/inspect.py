"""Schema inspection: which state of the app's schema the legacy tables are in (DESIGN.md section
3, S1 to S4), and the fate of every legacy column: mapped to a target column, used as evidence,
taken from its default because it is absent, or dropped (only when the operator says so).

Everything a run reads goes through :func:`Inspection.relation`: a subquery that gives each
legacy table the canonical columns of ``schemas.frames`` (an absent optional column reads as
its default), so extract, the plan and ``verify`` see one shape whatever the state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from schemas.errors import SourceSchemaMismatch

LEGACY_TABLES = ("user_sessions", "tagged_models", "user_profiles")


@dataclass(frozen=True)
class Column:
    """A legacy column the contract knows: ``fate`` is ``mapped`` (to ``target``) or
    ``evidence`` (read, not copied); ``default`` (SQL) is what an absent optional column reads
    as; a column without one is required."""

    name: str
    fate: str
    target: str
    default: str | None = None


def _m(name: str, target: str, default: str | None = None) -> Column:
    return Column(name, "mapped", target, default)


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
        _m("last_accessed", "user_sessions.last_accessed", "null::timestamptz"),
        _m("created_at", "user_sessions.created_at", "null::timestamptz"),
        _m("updated_at", "user_sessions.updated_at", "null::timestamptz"),
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
        _m("tagged_at", "tagged_models.tagged_at", "null::timestamptz"),
        _m("notes", "tagged_models.notes", "null::text"),
        _m("is_interesting", "tagged_models.is_interesting", "false"),
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
        _m("created_at", "circuit_configurations.created_at", "null::timestamptz"),
        _m("updated_at", "circuit_configurations.updated_at", "null::timestamptz"),
    ),
}
"""The legacy columns of DESIGN.md section 3 (state S1), in the order the frames read them."""

STATE_MARKS: Mapping[str, tuple[str, str]] = {
    "user_sessions.total_computations": ("S2/S3", "session statistics (S2, S3)"),
    "user_sessions.total_models_generated": ("S2/S3", "session statistics (S2, S3)"),
    "user_sessions.total_computation_time": ("S2/S3", "session statistics (S2, S3)"),
    "tagged_models.impedance_spectrum": ("S2/S3", "ML columns (S2, S3)"),
    "tagged_models.tagging_context": ("S2/S3", "ML columns (S2, S3)"),
    "tagged_models.ml_relevance_score": ("S2/S3", "ML columns (S2, S3)"),
    "tagged_models.is_ml_training_data": ("S2/S3", "ML columns (S2, S3)"),
    "tagged_models.configuration_id": ("S2", "the app's link to saved_configurations (S2)"),
    "tagged_models.circuit_config_id": ("S4", "the app's link to its circuit_configurations"),
    "user_sessions.current_circuit_config_id": ("S4", "the app's current configuration (S4)"),
}
"""Columns other states of the app's schema have, and what they are (for the inspection text)."""


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

    def relation(self, table: str) -> sql.Composed:
        """``(select ctid as _ctid, <canonical columns> from schema.table)``: absent optional
        columns read as their default, unmapped columns are left out (``_ctid`` lets a reader
        scan page ranges)."""
        present = self.present.get(table, frozenset())
        items = [sql.SQL("ctid as _ctid")] + [
            sql.Identifier(c.name)
            if c.name in present
            else sql.SQL("{} as {}").format(sql.SQL(c.default or "null"), sql.Identifier(c.name))
            for c in CONTRACT[table]
        ]
        return sql.SQL("(select {} from {}.{})").format(
            sql.SQL(", ").join(items), sql.Identifier(self.schema), sql.Identifier(table)
        )

    def lines(self) -> list[str]:
        """The inspection as text lines, for the terminal and the reports."""
        out = [f"legacy schema {self.schema}: state {self.state}"]
        for table in LEGACY_TABLES:
            out.append(f"  {table}")
            for f in (f for f in self.fates if f.table == table):
                count = "" if f.non_null is None else f" ({f.non_null:,} rows hold a value)"
                out.append(f"    {f.column:26s} {f.fate:9s} {f.target}{count}")
        out += [f"  problem: {p}" for p in self.problems]
        return out


def _columns(conn: psycopg.Connection, schema: str) -> dict[str, list[str]]:
    rows = conn.execute(
        "select table_name, column_name from information_schema.columns"
        " where table_schema = %s and table_name = any(%s) order by ordinal_position",
        [schema, list(LEGACY_TABLES)],
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
    if "parameters" not in profiles and "username" in profiles:
        return "S2"
    if "circuit_config_id" in models or "current_circuit_config_id" in sessions:
        return "S4"
    if "saved_profiles" not in sessions and "total_computations" in sessions:
        return "S3"
    return "S1"


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
    for table in LEGACY_TABLES:
        columns = found.get(table)
        if not columns:
            problems.append(f"no legacy table {schema}.{table}")
            continue
        known = {c.name: c for c in CONTRACT[table]}
        missing = [c.name for c in CONTRACT[table] if c.name not in columns and c.default is None]
        if missing:
            problems.append(f"{schema}.{table} lacks required columns {', '.join(missing)}")
        for c in CONTRACT[table]:
            if c.name in columns:
                fates.append(Fate(table, c.name, c.fate, c.target))
            elif c.default is None:
                fates.append(Fate(table, c.name, "missing", "required"))
            else:
                fates.append(Fate(table, c.name, "default", f"absent: {c.target} = {c.default}"))
        unmapped += [(table, name) for name in columns if name not in known]
    counts = _non_null(conn, schema, unmapped) if unmapped else {}
    refused = []
    if reading_only:
        drop |= {f"{t}.{c}" for t, c in unmapped}
    for table, name in unmapped:
        what = STATE_MARKS.get(f"{table}.{name}", ("", "not in the contract"))[1]
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
    """The legacy ``table`` to read, with the canonical columns and ``_ctid``: ``source``'s
    normalising subquery, or, given only a schema name (a source in the shape of DESIGN.md
    section 3), the same over all the contract's columns."""
    if isinstance(source, Inspection):
        return source.relation(table)
    names = {c.name for c in CONTRACT[table]}
    return Inspection(source, "S1", (), (), {table: frozenset(names)}).relation(table)


def base_table(source: str | Inspection, table: str) -> sql.Composed:
    """The legacy table itself (for sizes and page counts)."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema_of(source)), sql.Identifier(table))


def row_text(table: str, alias: str = "x") -> sql.Composed:
    """SQL: the text of a legacy row's canonical columns (what its digest is the md5 of)."""
    return sql.SQL("row({})::text").format(
        sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c.name))
            for c in CONTRACT[table]
        )
    )


def schema_of(source: str | Inspection) -> str:
    """The schema name of ``source``."""
    return source.schema if isinstance(source, Inspection) else source
