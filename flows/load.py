"""Load: one batch's target and ledger frames into the target, in the caller's transaction.

Per batch: COPY each frame into a temporary staging table, delete the target rows of the
batch's users that the new result no longer holds, ``INSERT ... ON CONFLICT (id) DO UPDATE``
only the rows that changed, and replace the batch's ledger rows. Reloading a batch therefore
converges to the same target, whatever an earlier attempt left.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl
import psycopg
from psycopg import sql

from schemas import frames

# Parents first for upserts; deletes go the other way.
TARGET_ORDER = ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models")
JSONB_COLUMNS = {
    "circuit_parameters",
    "computation_results",
    "ui_settings",
    "environment_variables",
    "visualization_settings",
    "performance_settings",
    "evidence",
    "payload",
}
UUID_COLUMNS = {
    "id",
    "user_id",
    "session_id",
    "circuit_config_id",
    "current_circuit_config_id",
    "tagged_model_id",
    "target_id",
}


@dataclass(frozen=True)
class BatchUsers:
    """Which target users a batch owns: a user-id range, an explicit list of user ids
    (``user_keys``, an incremental batch), or none (the orphan batch)."""

    user_from: str | None
    user_to: str | None
    user_keys: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LoadCounts:
    """Rows written per target table: inserted or changed, and deleted."""

    upserted: Mapping[str, int] = field(default_factory=dict)
    deleted: Mapping[str, int] = field(default_factory=dict)


def _csv(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    # Null is an unquoted empty field, an empty string is "": COPY's CSV rules, no marker.
    frame.write_csv(buffer, include_header=False)
    return buffer.getvalue()


def _stage(conn: psycopg.Connection, name: str, frame: pl.DataFrame, schema: frames.Schema) -> None:
    """Create temp table ``name`` with the frame's columns as text and COPY the frame into it."""
    cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in schema)
    conn.execute(
        sql.SQL("create temp table {} ({}) on commit drop").format(sql.Identifier(name), cols)
    )
    copy = sql.SQL("copy {} from stdin (format csv)").format(sql.Identifier(name))
    data = _csv(frames.conform(frame, schema))
    with conn.cursor().copy(copy) as stream:
        step = 8 << 20
        for start in range(0, len(data), step):
            stream.write(data[start : start + step])


def _typed(column: str, target_type: str) -> sql.Composed:
    return sql.SQL("{}::{}").format(sql.Identifier(column), sql.SQL(target_type))


def _column_types(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
        " where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped",
        [f'"{schema}"."{table}"'],
    ).fetchall()
    return {name: kind for name, kind in rows}


def _owned(users: BatchUsers, alias: str) -> sql.Composable:
    if users.user_keys is not None:
        return sql.SQL("{}.user_id = any({}::uuid[])").format(
            sql.Identifier(alias), sql.Literal("{" + ",".join(users.user_keys) + "}")
        )
    if users.user_from is None:
        return sql.SQL("false")
    return sql.SQL("{}.user_id between {}::uuid and {}::uuid").format(
        sql.Identifier(alias), sql.Literal(users.user_from), sql.Literal(users.user_to)
    )


def _stage_target(
    conn: psycopg.Connection, target_schema: str, tables: Mapping[str, pl.DataFrame]
) -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for table in TARGET_ORDER:
        _stage(conn, f"stage_{table}", tables[table], frames.TARGET_FRAMES[table])
        types[table] = _column_types(conn, target_schema, table)
    return types


def _delete_missing(
    conn: psycopg.Connection, target_schema: str, users: BatchUsers
) -> dict[str, int]:
    deleted: dict[str, int] = {}
    for table in reversed(TARGET_ORDER):
        cur = conn.execute(
            sql.SQL(
                "delete from {s}.{t} t where {owned}"
                " and not exists (select 1 from {stage} x where x.id::uuid = t.id)"
            ).format(
                s=sql.Identifier(target_schema),
                t=sql.Identifier(table),
                owned=_owned(users, "t"),
                stage=sql.Identifier(f"stage_{table}"),
            )
        )
        deleted[table] = cur.rowcount
    return deleted


def _upsert(
    conn: psycopg.Connection,
    target_schema: str,
    types: Mapping[str, Mapping[str, str]],
    only_users: list[str] | None,
) -> dict[str, int]:
    """Upsert the staged rows (of ``only_users`` if given); counts rows inserted or changed."""
    upserted: dict[str, int] = {}
    for table in TARGET_ORDER:
        columns = list(frames.TARGET_FRAMES[table])
        updates = [c for c in columns if c != "id"]
        query = sql.SQL(
            "insert into {s}.{t} as t ({names}) select {values} from {stage} x where {only}"
            " on conflict (id) do update set {sets}"
            " where ({old}) is distinct from ({new})"
        ).format(
            s=sql.Identifier(target_schema),
            t=sql.Identifier(table),
            names=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join(_typed(c, types[table][c]) for c in columns),
            stage=sql.Identifier(f"stage_{table}"),
            only=sql.SQL("true" if only_users is None else "x.user_id = any(%(users)s)"),
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in updates
            ),
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in updates),
            new=sql.SQL(", ").join(
                sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in updates
            ),
        )
        params = {"users": only_users} if only_users is not None else None
        upserted[table] = conn.execute(query, params).rowcount
    return upserted


def write_target(
    conn: psycopg.Connection,
    target_schema: str,
    users: BatchUsers,
    tables: Mapping[str, pl.DataFrame],
) -> LoadCounts:
    """Converge the target rows of the batch's users to ``tables`` (TARGET_FRAMES frames).

    Raises the database's error when it rejects any row."""
    types = _stage_target(conn, target_schema, tables)
    deleted = _delete_missing(conn, target_schema, users)
    return LoadCounts(upserted=_upsert(conn, target_schema, types, None), deleted=deleted)


REJECTIONS = (psycopg.errors.IntegrityError, psycopg.errors.DataError)


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc).strip().splitlines()[0]
    return f"{text} ({diag.constraint_name})" if diag.constraint_name else text


def write_target_isolating(
    conn: psycopg.Connection,
    target_schema: str,
    users: BatchUsers,
    tables: Mapping[str, pl.DataFrame],
) -> tuple[LoadCounts, dict[str, str]]:
    """Like :func:`write_target`, but when the database rejects rows, bisect the batch's users
    inside savepoints, load every user it accepts, and return the rejected ones with the
    server's message (their target rows removed). Other errors still raise."""
    types = _stage_target(conn, target_schema, tables)
    deleted = _delete_missing(conn, target_schema, users)
    totals: dict[str, int] = dict.fromkeys(TARGET_ORDER, 0)
    rejected: dict[str, str] = {}

    def attempt(group: list[str] | None) -> None:
        try:
            with conn.transaction():
                counts = _upsert(conn, target_schema, types, group)
        except REJECTIONS as exc:
            if group is None:
                owners: set[str] = set()
                for table in TARGET_ORDER:
                    owners.update(tables[table]["user_id"].drop_nulls().to_list())
                group = sorted(owners)
            if len(group) <= 1:
                rejected.update(dict.fromkeys(group, _message(exc)))
                return
            half = len(group) // 2
            attempt(group[:half])
            attempt(group[half:])
            return
        for table, n in counts.items():
            totals[table] += n

    attempt(None)
    if rejected:
        for table in reversed(TARGET_ORDER):
            cur = conn.execute(
                sql.SQL("delete from {s}.{t} where user_id = any(%s::uuid[])").format(
                    s=sql.Identifier(target_schema), t=sql.Identifier(table)
                ),
                [sorted(rejected)],
            )
            deleted[table] += cur.rowcount
    return LoadCounts(upserted=totals, deleted=deleted), rejected


LEDGER_FRAME_TABLES = {"id_map": "id_map", "quarantine": "quarantine", "repairs": "repairs"}


def write_ledger(
    conn: psycopg.Connection,
    run_id: str,
    batch_no: int,
    ledger: Mapping[str, pl.DataFrame],
    *,
    links: bool,
) -> None:
    """Replace the batch's id_map, quarantine and repairs rows; upsert its links if asked."""
    for name, table in LEDGER_FRAME_TABLES.items():
        conn.execute(
            sql.SQL("delete from migration.{} where run_id = %s and batch_no = %s").format(
                sql.Identifier(table)
            ),
            [run_id, batch_no],
        )
        schema = frames.LEDGER_FRAMES[name]
        stage = f"stage_ledger_{name}"
        _stage(conn, stage, ledger[name], schema)
        columns = list(schema)
        conn.execute(
            sql.SQL(
                "insert into migration.{t} (run_id, batch_no, {names})"
                " select %s, %s, {values} from {stage}"
            ).format(
                t=sql.Identifier(table),
                names=sql.SQL(", ").join(map(sql.Identifier, columns)),
                values=sql.SQL(", ").join(_ledger_cast(c) for c in columns),
                stage=sql.Identifier(stage),
            ),
            [run_id, batch_no],
        )
    if links:
        schema = frames.LINKS
        _stage(conn, "stage_ledger_links", ledger["links"], schema)
        columns = list(schema)
        conn.execute(
            sql.SQL(
                "insert into migration.links ({names}, run_id)"
                " select {values}, %s from stage_ledger_links"
                " on conflict (tagged_model_id) do update set {sets}, run_id = excluded.run_id"
            ).format(
                names=sql.SQL(", ").join(map(sql.Identifier, columns)),
                values=sql.SQL(", ").join(_ledger_cast(c) for c in columns),
                sets=sql.SQL(", ").join(
                    sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
                    for c in columns
                    if c != "tagged_model_id"
                ),
            ),
            [run_id],
        )


def _ledger_cast(column: str) -> sql.Composed:
    if column in JSONB_COLUMNS:
        return _typed(column, "jsonb")
    if column in UUID_COLUMNS:
        return _typed(column, "uuid")
    if column == "confidence":
        return _typed(column, "real")
    if column == "needs_review":
        return _typed(column, "boolean")
    return sql.SQL("{}").format(sql.Identifier(column))
