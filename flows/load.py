"""Load: one batch's target and ledger frames into the target, in the caller's transaction.

Target tables, in the common case (a first load: the target holds no row of the batch's
users): COPY each frame straight into its table inside a savepoint; COPY parses the text into
the typed columns itself. Otherwise, or when that COPY meets an id already there, the staged
path: COPY each frame into a temporary staging table of text columns, delete the target rows of
the batch's users that the new result no longer holds, and ``INSERT ... ON CONFLICT (id) DO
UPDATE`` only the rows that changed. Both paths write the same rows, so reloading a batch
converges to the same target, whatever an earlier attempt left; both isolate the users whose
rows the database rejects.

Ledger: the batch's id_map, quarantine and repairs rows are deleted, then COPYed in with the
run id and batch number as columns; links are COPYed in when none of the batch's tagged models
has one yet, else upserted from a staging table.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl
import psycopg
from psycopg import sql

from flows import db
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
COPY_ROWS = 1000  # rows per CSV slice sent to COPY
# What makes the direct COPY give way to the staged path: an id (or another unique key) already
# taken, which the upsert may resolve; a text COPY cannot take (NUL), which the staging COPY
# raises as it always did.
STAGED_DECIDES = (psycopg.errors.UniqueViolation, psycopg.errors.CharacterNotInRepertoire)
# Bounded character types: the staged path's explicit casts cut longer texts to n characters.
_BOUNDED = re.compile(r"^(?:character varying|character)\((\d+)\)$")


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


def _copy(conn: psycopg.Connection, table: sql.Composable, frame: pl.DataFrame) -> int:
    """COPY ``frame`` (CSV) into ``table``'s columns of the same names; the rows written.

    Sent in slices of rows: the server parses one while the next is formatted."""
    copy = sql.SQL("copy {} ({}) from stdin (format csv)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, frame.columns))
    )
    cur = conn.cursor()
    with cur.copy(copy) as stream:
        for start in range(0, frame.height, COPY_ROWS):
            stream.write(_csv(frame.slice(start, COPY_ROWS)))
    return cur.rowcount


def _stage(conn: psycopg.Connection, name: str, frame: pl.DataFrame, schema: frames.Schema) -> None:
    """Create temp table ``name`` with the frame's columns as text and COPY the frame into it."""
    cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in schema)
    conn.execute(
        sql.SQL("create temp table {} ({}) on commit drop").format(sql.Identifier(name), cols)
    )
    _copy(conn, sql.Identifier(name), frames.conform(frame, schema))


def _typed(column: str, target_type: str) -> sql.Composed:
    return sql.SQL("{}::{}").format(sql.Identifier(column), sql.SQL(target_type))


def _column_types(
    conn: psycopg.Connection, schema: str, tables: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    """Each table's columns and their SQL types (``format_type``), in one catalog query."""
    rows = conn.execute(
        "select c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
        " from pg_attribute a join pg_class c on c.oid = a.attrelid"
        " where a.attrelid = any(%s::regclass[]) and a.attnum > 0 and not a.attisdropped",
        [[db.qualified(schema, table) for table in tables]],
    ).fetchall()
    types: dict[str, dict[str, str]] = {table: {} for table in tables}
    for table, name, kind in rows:
        types[table][name] = kind
    return types


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


def _holds_rows(conn: psycopg.Connection, target_schema: str, users: BatchUsers) -> bool:
    """Whether any target table holds a row of the batch's users (their user_id indexes)."""
    query = sql.SQL("select {}").format(
        sql.SQL(" or ").join(
            sql.SQL("exists (select 1 from {s}.{t} t where {owned})").format(
                s=sql.Identifier(target_schema), t=sql.Identifier(table), owned=_owned(users, "t")
            )
            for table in TARGET_ORDER
        )
    )
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def _fitted(frame: pl.DataFrame, schema: frames.Schema, types: Mapping[str, str]) -> pl.DataFrame:
    """``frame`` conformed to ``schema``, texts cut to their column's ``varchar(n)`` length as
    the staged path's explicit casts do: COPY would refuse them instead."""
    frame = frames.conform(frame, schema)
    cuts = []
    for column in schema:
        bounded = _BOUNDED.match(types.get(column, ""))
        if bounded:
            cuts.append(pl.col(column).str.slice(0, int(bounded.group(1))))
    return frame.with_columns(cuts) if cuts else frame


def _stage_target(conn: psycopg.Connection, tables: Mapping[str, pl.DataFrame]) -> None:
    for table in TARGET_ORDER:
        _stage(conn, f"stage_{table}", tables[table], frames.TARGET_FRAMES[table])


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


def _copy_target(
    conn: psycopg.Connection,
    target_schema: str,
    fitted: Mapping[str, pl.DataFrame],
    only_users: list[str] | None,
) -> dict[str, int]:
    """COPY the frames (the rows of ``only_users`` if given) into the target; rows written."""
    copied: dict[str, int] = {}
    for table in TARGET_ORDER:
        frame = fitted[table]
        if only_users is not None:
            frame = frame.filter(pl.col("user_id").is_in(only_users))
        target = sql.SQL("{}.{}").format(sql.Identifier(target_schema), sql.Identifier(table))
        copied[table] = _copy(conn, target, frame)
    return copied


def _first_load(
    conn: psycopg.Connection,
    target_schema: str,
    users: BatchUsers,
    tables: Mapping[str, pl.DataFrame],
) -> tuple[dict[str, dict[str, str]], dict[str, pl.DataFrame] | None]:
    """The target's column types, and the frames to COPY straight in when the target holds no
    row of the batch's users (else None: the staged path)."""
    types = _column_types(conn, target_schema, TARGET_ORDER)
    if _holds_rows(conn, target_schema, users):
        return types, None
    fitted = {
        table: _fitted(tables[table], frames.TARGET_FRAMES[table], types[table])
        for table in TARGET_ORDER
    }
    return types, fitted


def write_target(
    conn: psycopg.Connection,
    target_schema: str,
    users: BatchUsers,
    tables: Mapping[str, pl.DataFrame],
) -> LoadCounts:
    """Converge the target rows of the batch's users to ``tables`` (TARGET_FRAMES frames).

    Raises the database's error when it rejects any row."""
    types, fitted = _first_load(conn, target_schema, users, tables)
    nothing_deleted = dict.fromkeys(reversed(TARGET_ORDER), 0)
    if fitted is not None:
        try:
            with conn.transaction():
                copied = _copy_target(conn, target_schema, fitted, None)
            return LoadCounts(upserted=copied, deleted=nothing_deleted)
        except STAGED_DECIDES:
            pass  # e.g. an id already in the target (another user's row): upsert it
    _stage_target(conn, tables)
    deleted = _delete_missing(conn, target_schema, users)
    return LoadCounts(upserted=_upsert(conn, target_schema, types, None), deleted=deleted)


REJECTIONS = (psycopg.errors.IntegrityError, psycopg.errors.DataError)


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc).strip().splitlines()[0]
    return f"{text} ({diag.constraint_name})" if diag.constraint_name else text


def _isolating(
    conn: psycopg.Connection,
    tables: Mapping[str, pl.DataFrame],
    write: Callable[[list[str] | None], dict[str, int]],
    passing: tuple[type[Exception], ...],
) -> tuple[dict[str, int], dict[str, str]]:
    """Run ``write`` (all users, or a list of them) in savepoints, bisecting the batch's users
    while the database rejects rows; the rows written per table and the rejected users with the
    server's message. Errors of ``passing`` and non-rejections raise."""
    totals: dict[str, int] = dict.fromkeys(TARGET_ORDER, 0)
    rejected: dict[str, str] = {}

    def attempt(group: list[str] | None) -> None:
        try:
            with conn.transaction():
                counts = write(group)
        except passing:
            raise
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
    return totals, rejected


def _delete_rejected(
    conn: psycopg.Connection, target_schema: str, rejected: Mapping[str, str]
) -> dict[str, int]:
    deleted = dict.fromkeys(reversed(TARGET_ORDER), 0)
    if rejected:
        for table in reversed(TARGET_ORDER):
            cur = conn.execute(
                sql.SQL("delete from {s}.{t} where user_id = any(%s::uuid[])").format(
                    s=sql.Identifier(target_schema), t=sql.Identifier(table)
                ),
                [sorted(rejected)],
            )
            deleted[table] = cur.rowcount
    return deleted


def write_target_isolating(
    conn: psycopg.Connection,
    target_schema: str,
    users: BatchUsers,
    tables: Mapping[str, pl.DataFrame],
) -> tuple[LoadCounts, dict[str, str]]:
    """Like :func:`write_target`, but when the database rejects rows, bisect the batch's users
    inside savepoints, load every user it accepts, and return the rejected ones with the
    server's message (their target rows removed). Other errors still raise."""
    types, fitted = _first_load(conn, target_schema, users, tables)
    if fitted is not None:
        first = fitted
        try:
            with conn.transaction():
                copied, rejected = _isolating(
                    conn,
                    tables,
                    lambda group: _copy_target(conn, target_schema, first, group),
                    STAGED_DECIDES,
                )
                deleted = _delete_rejected(conn, target_schema, rejected)
            return LoadCounts(upserted=copied, deleted=deleted), rejected
        except STAGED_DECIDES:
            pass  # e.g. an id already in the target (another user's row): upsert it
    _stage_target(conn, tables)
    deleted = _delete_missing(conn, target_schema, users)
    upserted, rejected = _isolating(
        conn, tables, lambda group: _upsert(conn, target_schema, types, group), ()
    )
    for table, n in _delete_rejected(conn, target_schema, rejected).items():
        deleted[table] += n
    return LoadCounts(upserted=upserted, deleted=deleted), rejected


LINKS_PROBE = 64  # tagged models looked up to tell a first load of links from a reload
LEDGER_FRAME_TABLES = {"id_map": "id_map", "quarantine": "quarantine", "repairs": "repairs"}


def _links_exist(conn: psycopg.Connection, frame: pl.DataFrame) -> bool:
    """Whether migration.links holds a row of some of ``frame``'s first tagged models: a
    reloaded batch does; a first load does not (and a miss only costs a failed COPY)."""
    ids = frame["tagged_model_id"].head(LINKS_PROBE).drop_nulls().to_list()
    if not ids:
        return False
    row = conn.execute(
        "select exists (select 1 from migration.links where tagged_model_id = any(%s::uuid[]))",
        [ids],
    ).fetchone()
    return bool(row and row[0])


def with_user_keys(frame: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (source_table, source_id, ...) with the ``user_key`` each source row was read
    under (``keys``: ``flows.extract.KEY_MAP``): a saved_profiles element's is its session's,
    an auth user's (a profile the target rejected) is its own id."""
    row = (
        pl.when(pl.col("source_table") == "saved_profiles")
        .then(
            pl.struct(
                pl.lit("user_sessions").alias("t"),
                pl.col("source_id").str.split("#").list.first().alias("i"),
            )
        )
        .otherwise(pl.struct(pl.col("source_table").alias("t"), pl.col("source_id").alias("i")))
    )
    lookup = keys.select(
        pl.struct(pl.col("source_table").alias("t"), pl.col("source_id").alias("i")).alias("_row"),
        pl.col("user_key").alias("_key"),
    ).unique("_row")
    out = frame.with_columns(row.alias("_row")).join(
        lookup, on="_row", how="left", maintain_order="left"
    )
    key = pl.when(pl.col("source_table") == "auth_users").then("source_id").otherwise("_key")
    return out.with_columns(key.alias("user_key")).drop("_row", "_key")


def write_ledger(
    conn: psycopg.Connection,
    run_id: str,
    batch_no: int,
    ledger: Mapping[str, pl.DataFrame],
    *,
    keys: pl.DataFrame,
    links: bool,
    replace: bool = True,
) -> None:
    """Replace the batch's id_map, quarantine and repairs rows, each with the user key of its
    source row (``keys``: ``flows.extract.KEY_MAP``, :func:`with_user_keys`); upsert its links
    if asked. ``replace=False`` skips deleting the batch's earlier rows: the caller knows there
    are none (the delete finds them through ``run_id`` alone, a scan of the whole run's rows)."""
    for name, table in LEDGER_FRAME_TABLES.items():
        if replace:
            conn.execute(
                sql.SQL("delete from migration.{} where run_id = %s and batch_no = %s").format(
                    sql.Identifier(table)
                ),
                [run_id, batch_no],
            )
        frame = with_user_keys(frames.conform(ledger[name], frames.LEDGER_FRAMES[name]), keys)
        frame = frame.with_columns(
            pl.lit(run_id, pl.String).alias("run_id"), pl.lit(batch_no, pl.Int64).alias("batch_no")
        )
        _copy(conn, sql.SQL("migration.{}").format(sql.Identifier(table)), frame)
    if links:
        frame = frames.conform(ledger["links"], frames.LINKS).with_columns(
            pl.lit(run_id, pl.String).alias("run_id")
        )
        if not _links_exist(conn, frame):
            try:
                with conn.transaction():
                    _copy(conn, sql.SQL("migration.links"), frame)
                return
            except psycopg.errors.UniqueViolation:
                pass  # a tagged model past the probe has its link already: upsert them all
        _upsert_links(conn, run_id, ledger["links"])


def _upsert_links(conn: psycopg.Connection, run_id: str, frame: pl.DataFrame) -> None:
    schema = frames.LINKS
    _stage(conn, "stage_ledger_links", frame, schema)
    columns = list(schema)
    kept = [*(c for c in columns if c != "tagged_model_id"), "run_id"]
    conn.execute(
        sql.SQL(
            "insert into migration.links ({names}, run_id)"
            " select {values}, %s from stage_ledger_links"
            " on conflict (tagged_model_id) do update set {sets}, run_id = excluded.run_id"
            # Rows already holding exactly these values (binary images: a jsonb or real that
            # only compares equal, 1.0 and 1.00, 0 and -0, is still rewritten) are left alone.
            " where not (row({old})::record *= row({new})::record)"
        ).format(
            names=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join(_ledger_cast(c) for c in columns),
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
                for c in columns
                if c != "tagged_model_id"
            ),
            old=sql.SQL(", ").join(
                sql.SQL("migration.links.{}").format(sql.Identifier(c)) for c in kept
            ),
            new=sql.SQL(", ").join(sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in kept),
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
