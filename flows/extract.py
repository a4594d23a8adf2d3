"""Extract: plan batches of users and read each batch's legacy rows in bulk (COPY TO, CSV).

Every read runs in a read-only repeatable-read transaction that imports one exported snapshot,
so all batches of a run see the same source even while the legacy app keeps writing.

A row belongs to the batch of its *user key*: its own ``user_id``, else its session's, else
(for a session) the smallest user id its tagged models name. Rows with no user key at all go to
one last batch of their own (``user_key is null``), where the transforms quarantine them.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import polars as pl
import psycopg
from psycopg import sql

from flows import db, user_keys
from flows.batches import BatchRange as BatchRange
from flows.batches import uuid_array as uuid_array
from flows.inspect import CONFIG_TABLES, SOURCES, Inspection, inspect, row_text
from schemas import frames
from schemas.errors import SourceSchemaMismatch
from transforms.elements import saved_profile_elements
from transforms.normalise import decoded_json

LEGACY_TABLE_NAMES = SOURCES
"""The legacy sources a batch reads (``flows.inspect.SOURCES``; absent ones read as empty)."""


def check_source(
    conn: psycopg.Connection, schema: str, drop_columns: Iterable[str] = ()
) -> Inspection:
    """The inspected legacy schema (:mod:`flows.inspect`); raises ``SourceSchemaMismatch``
    (exit 4) naming every problem of every table at once, and where the legacy tables are when
    another schema holds them."""
    if not db.table_exists(conn, "auth", "users"):
        raise SourceSchemaMismatch("source has no auth.users table", table="auth.users")
    found = inspect(conn, schema, drop_columns)
    if not found.ok:
        from flows.legacy_locate import legacy_hint

        hint = legacy_hint(conn, schema)
        raise SourceSchemaMismatch(
            f"legacy schema {schema} cannot be migrated as it is: "
            + "; ".join(found.problems)
            + hint,
            problems=list(found.problems),
        )
    return found


def begin_snapshot(conn: psycopg.Connection) -> str:
    """Open a read-only repeatable-read transaction on ``conn`` (autocommit mode, idle) and
    export its snapshot."""
    conn.execute("begin isolation level repeatable read read only")
    row = conn.execute("select pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def use_snapshot(conn: psycopg.Connection, snapshot: str | None) -> None:
    """Start a read-only repeatable-read transaction on ``conn`` (autocommit mode, idle), in
    ``snapshot`` if given."""
    conn.execute("begin isolation level repeatable read read only")
    if snapshot:
        conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))


PLANNED_TABLES = (
    "user_sessions",
    "tagged_models",
    "user_profiles",
    "saved_profiles",
    *CONFIG_TABLES,
)
"""The source tables a batch's read is checked against, as the ledger names them: the legacy
tables (S2's metadata ``user_profiles`` counted as ``user_profiles``), the ``saved_profiles``
elements (a non-array ``saved_profiles`` counts as one malformed item) and the configuration
tables the app wrote."""

_COUNTED_AS = {"profile_metadata": "user_profiles"}


def _source_table(table: str) -> sql.Composable:
    """SQL: the ledger's source table of a row of legacy source ``table`` (aliased ``x``)."""
    if table == "app_configurations":
        return sql.SQL("x.source_table")
    return sql.Literal(_COUNTED_AS.get(table, table))


def _element_count(column: str) -> str:
    """SQL: the number of ``saved_profiles`` items the transform explodes a session into; null
    for a JSON string (the app's ``JSON.stringify``), which :func:`_string_element_counts`
    counts with the transform's own decoding."""
    deep = f"jsonb_path_exists({column}, 'strict $.**{{128 to last}}')"  # unreadable: 1 item
    return (
        f"(case when {column} is null then 0 when jsonb_typeof({column}) = 'array'"
        f" and not {deep} then jsonb_array_length({column})"
        f" when jsonb_typeof({column}) = 'string' then null else 1 end)"
    )


def _string_element_counts(conn: psycopg.Connection, schema: str | Inspection) -> pl.DataFrame:
    """Per user key, the ``saved_profiles`` items of sessions whose ``saved_profiles`` is a JSON
    string, counted as the transform decodes them (few rows: read whole)."""
    k = user_keys.keyed(schema, "user_sessions")
    query = sql.SQL(
        "select x.id::text, ({key})::text, x.saved_profiles::text from {rel} x {join}"
        " where jsonb_typeof(x.saved_profiles) = 'string'"
    ).format(key=k.key, rel=k.relation, join=k.join)
    rows = conn.execute(query).fetchall()
    sessions = pl.DataFrame(
        rows,
        schema={"id": pl.String, "user_key": pl.String, "saved_profiles": pl.String},
        orient="row",
    )
    items = saved_profile_elements(decoded_json(sessions, "saved_profiles"))
    per_session = items.group_by("session_id").len("n")
    return (
        sessions.join(per_session, left_on="id", right_on="session_id", how="left")
        .group_by("user_key")
        .agg(pl.col("n").fill_null(0).sum().cast(pl.Int64).alias("string_items"))
    )


def user_row_counts(conn: psycopg.Connection, schema: str | Inspection) -> pl.DataFrame:
    """Per user key (null: the rows with none), the legacy rows of each table it owns and its
    ``saved_profiles`` items, counted in SQL in the caller's snapshot: what a batch must read.
    Columns ``user_key`` and one per :data:`PLANNED_TABLES`, sorted by key (nulls last)."""
    parts = []
    for table in LEGACY_TABLE_NAMES:
        k = user_keys.keyed(schema, table)
        elements = (
            sql.SQL(_element_count("x.saved_profiles"))
            if table == "user_sessions"
            else sql.SQL("0")
        )
        parts.append(
            sql.SQL("select {key} as k, {t} as t, {e} as e from {rel} x {join}").format(
                key=k.key, t=_source_table(table), e=elements, rel=k.relation, join=k.join
            )
        )
    counted = [t for t in PLANNED_TABLES if t != "saved_profiles"]
    per_table = ", ".join(f"count(*) filter (where t = '{t}')::bigint as {t}" for t in counted)
    query = sql.SQL(
        "select k::text as user_key, {counts}, sum(e)::bigint as saved_profiles"
        " from ({rows}) r group by k order by k nulls last"
    ).format(counts=sql.SQL(per_table), rows=sql.SQL(" union all ").join(parts))
    schema_ = {"user_key": pl.String, **dict.fromkeys(PLANNED_TABLES, pl.Int64)}
    rows = conn.execute(query).fetchall()
    counts = pl.DataFrame(
        rows,
        schema={"user_key": pl.String, **dict.fromkeys([*counted, "saved_profiles"], pl.Int64)},
        orient="row",
    ).select(list(schema_))
    strings = _string_element_counts(conn, schema)
    if strings.height:
        counts = counts.join(strings, on="user_key", how="left", nulls_equal=True).select(
            *(c for c in counts.columns if c != "saved_profiles"),
            (pl.col("saved_profiles").fill_null(0) + pl.col("string_items").fill_null(0)).alias(
                "saved_profiles"
            ),
        )
    return counts.with_columns(pl.col("saved_profiles").fill_null(0)).select(list(schema_))


def has_orphans(conn: psycopg.Connection, schema: str | Inspection) -> bool:
    """Whether any legacy row has no user key at all (:mod:`flows.user_keys`)."""
    checks = []
    for table in LEGACY_TABLE_NAMES:
        k = user_keys.keyed(schema, table)
        checks.append(
            sql.SQL("exists (select 1 from {rel} x {join} where {key} is null)").format(
                rel=k.relation, join=k.join, key=k.key
            )
        )
    row = conn.execute(sql.SQL("select ") + sql.SQL(" or ").join(checks)).fetchone()
    return bool(row and row[0])


def plan_batches(
    conn: psycopg.Connection, schema: str | Inspection, batch_size: int
) -> list[BatchRange]:
    """Contiguous user-key ranges of ``batch_size`` users each, then the orphan batch if any
    row has no user key; each batch carries the rows it must read (:func:`user_row_counts`)."""
    counts = user_row_counts(conn, schema)
    keyed_users = counts.filter(pl.col("user_key").is_not_null())
    batches = []
    for no, start in enumerate(range(0, keyed_users.height, batch_size), start=1):
        part = keyed_users.slice(start, batch_size)
        batches.append(
            BatchRange(
                no, part["user_key"][0], part["user_key"][-1], part.height, planned=_sums(part)
            )
        )
    orphans = counts.filter(pl.col("user_key").is_null())
    if orphans.height:
        batches.append(BatchRange(len(batches) + 1, None, None, 0, planned=_sums(orphans)))
    return batches


def _sums(counts: pl.DataFrame) -> tuple[tuple[str, int], ...]:
    return tuple((t, int(counts[t].sum())) for t in PLANNED_TABLES)


def with_planned(batches: list[BatchRange], counts: pl.DataFrame) -> list[BatchRange]:
    """The batches, each carrying the rows its users own in ``counts``
    (:func:`user_row_counts`, read in the snapshot the batches will read)."""
    keyed_users = counts.filter(pl.col("user_key").is_not_null())
    keys = keyed_users["user_key"]
    out = []
    for batch in batches:
        if batch.orphans:
            mine = counts.filter(pl.col("user_key").is_null())
        elif batch.user_keys is not None:
            mine = keyed_users.filter(pl.col("user_key").is_in(list(batch.user_keys)))
        else:
            lo = keys.search_sorted(str(batch.user_from), side="left")
            hi = keys.search_sorted(str(batch.user_to), side="right")
            mine = keyed_users.slice(int(lo), int(hi) - int(lo))
        out.append(replace(batch, planned=_sums(mine)))
    return out


def _row_digests(schema: str | Inspection) -> sql.Composed:
    """SQL (user_key, source_table, id, row_md5): every legacy row with its user key and the md5
    of its row text."""
    parts = []
    for table in LEGACY_TABLE_NAMES:
        k = user_keys.keyed(schema, table)
        parts.append(
            sql.SQL(
                "select {key} as user_key, {t} as source_table, x.id, md5({text}) as row_md5"
                " from {rel} x {join}"
            ).format(
                key=k.key,
                t=sql.Literal(table),
                rel=k.relation,
                join=k.join,
                text=row_text(table),
            )
        )
    return sql.SQL(" union all ").join(parts)  # type: ignore[return-value]


def user_digests(conn: psycopg.Connection, schema: str | Inspection) -> dict[str, str]:
    """Per user key: the legacy digest of the user's rows (all three tables) and auth user.

    ``md5(md5(string_agg(source_table || ':' || md5(row text), '|' order by source_table, id))
    || '|auth:' || md5(auth.users row text, or ''))``: any change to what the user's batch
    would read changes it. :func:`batch_digests` computes the same from extracted rows."""
    query = sql.SQL(
        """
        with r as ({rows}),
        a as (
          select user_key, md5(string_agg(source_table || ':' || row_md5, '|'
                                          order by source_table collate "C", id)) as inner_md5
            from r where user_key is not null group by user_key
        )
        select a.user_key::text, md5(a.inner_md5 || '|auth:' || md5(coalesce(u::text, '')))
          from a left join auth.users u on u.id = a.user_key
        """
    ).format(rows=_row_digests(schema))
    # The ordered aggregate sorts ~100 bytes per legacy row: in memory, not on disk.
    row = conn.execute("select current_setting('work_mem')").fetchone()
    conn.execute("select set_config('work_mem', '256MB', false)")
    try:
        return {key: digest for key, digest in conn.execute(query).fetchall()}
    finally:
        conn.execute("select set_config('work_mem', %s, false)", [row[0] if row else "4MB"])


def with_digests(batches: list[BatchRange], digests: Mapping[str, str]) -> list[BatchRange]:
    """The batches, each carrying the digests of its own users (ranges: the keys inside)."""
    keys = sorted(digests)
    out = []
    for batch in batches:
        if batch.user_keys is not None:
            mine = [k for k in batch.user_keys if k in digests]
        elif batch.orphans:
            mine = []
        else:
            lo = bisect.bisect_left(keys, str(batch.user_from))
            hi = bisect.bisect_right(keys, str(batch.user_to))
            mine = keys[lo:hi]
        out.append(replace(batch, digests=tuple((k, digests[k]) for k in mine)))
    return out


@dataclass(frozen=True)
class IncrementalPlan:
    """What an incremental run does: the batches, and how many users changed or did not."""

    batches: list[BatchRange]
    new: int
    changed: int
    deleted: int
    unchanged: int

    def as_dict(self) -> dict[str, int]:
        """The counts, as recorded in the run's options (``plan``)."""
        return {
            "users_new": self.new,
            "users_changed": self.changed,
            "users_deleted": self.deleted,
            "users_unchanged": self.unchanged,
            "users_planned": self.new + self.changed + self.deleted,
        }


def plan_incremental(
    batch_size: int,
    current: Mapping[str, str],
    stored: Mapping[str, str],
    *,
    orphans: bool,
) -> IncrementalPlan:
    """Batches of explicit user lists: users whose digest differs from the one stored when they
    were last loaded, new users, and users gone from the legacy side; then the orphan batch
    when the source has rows with no user key (always re-run)."""
    new = sorted(k for k in current if k not in stored)
    changed = sorted(k for k in current if k in stored and stored[k] != current[k])
    deleted = sorted(k for k in stored if k not in current)
    todo = sorted([*new, *changed, *deleted])
    batches = []
    for no, start in enumerate(range(0, len(todo), batch_size), start=1):
        keys = tuple(todo[start : start + batch_size])
        batches.append(BatchRange(no, keys[0], keys[-1], len(keys), user_keys=keys))
    if orphans:
        batches.append(BatchRange(len(batches) + 1, None, None, 0))
    unchanged = len(current) - len(new) - len(changed)
    return IncrementalPlan(
        with_digests(batches, current), len(new), len(changed), len(deleted), unchanged
    )


# Timestamps the target and the CSV between the stages hold: finite, years 1 to 9999.
TS_RANGE = "'0001-01-01 00:00:00+00' and '9999-12-31 23:59:59.999999+00'"
# A number beyond this magnitude does not fit a float8: it reads as +-Infinity (NaN stays NaN).
FLOAT_LIMIT = "1e308"


def _in_range(col: sql.Composable) -> sql.Composed:
    return sql.SQL("{} between " + TS_RANGE).format(col)


def _float(col: sql.Composable) -> sql.Composed:
    """A numeric or float8 column as float8; never fails (NaN, +-Infinity kept or made)."""
    return sql.SQL(
        "(case when {c} is null then null::float8 when abs({c}) < "
        + FLOAT_LIMIT
        + " then {c}::float8 when {c} = 'NaN' then 'NaN'::float8 when {c} > 0"
        " then 'Infinity'::float8 else '-Infinity'::float8 end)"
    ).format(c=col)


def invalid_values(schema: Mapping[str, object], alias: str) -> sql.Composable:
    """SQL: the text naming each value of a row that no target column can hold (a timestamp
    outside years 1 to 9999 or infinite; ``computation_time`` beyond float8), or null."""
    items: list[sql.Composable] = []
    for name, dtype in schema.items():
        col = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))
        if dtype == frames.TS:
            bad: sql.Composable = sql.SQL("not {}").format(_in_range(col))
        elif name == "computation_time":
            bad = sql.SQL("({c} <> 'NaN' and abs({c}) >= " + FLOAT_LIMIT + ")").format(c=col)
        else:
            continue
        items.append(
            sql.SQL("case when {bad} then {n} || {c}::text end").format(
                bad=bad, n=sql.Literal(f"{name}="), c=col
            )
        )
    if not items:
        return sql.SQL("null::text")
    return sql.SQL("nullif(concat_ws(', ', {}), '')").format(sql.SQL(", ").join(items))


def _select_list(schema: Mapping[str, object], alias: str) -> sql.Composed:
    """Columns cast to what COPY CSV renders and Polars reads back exactly; a value no target
    column can hold reads as null and is named in ``invalid_values`` (when the frame has it)."""
    parts = []
    for name, dtype in schema.items():
        col = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))
        if name == "invalid_values":
            expr: sql.Composable = invalid_values(schema, alias)
        elif dtype == pl.Boolean:
            expr = sql.SQL("{}::int").format(col)
        elif dtype == frames.TS:
            expr = sql.SQL(
                "(case when {} then (extract(epoch from {}) * 1000000)::bigint end)"
            ).format(_in_range(col), col)
        elif dtype == pl.Float64:
            expr = _float(col)
        elif dtype == pl.Int32:
            expr = sql.SQL("{}::int").format(col)
        else:
            expr = sql.SQL("{}::text").format(col)
        parts.append(sql.SQL("{} as {}").format(expr, sql.Identifier(name)))
    return sql.SQL(", ").join(parts)


def _read_csv(data: bytes, schema: Mapping[str, object]) -> pl.DataFrame:
    raw_types = {
        name: (
            pl.Int64
            if dtype in (pl.Boolean, frames.TS, pl.Int32)
            else pl.Float64
            if dtype == pl.Float64
            else pl.String
        )
        for name, dtype in schema.items()
    }
    if not data:
        return frames.empty(schema)  # type: ignore[arg-type]
    raw = pl.read_csv(
        io.BytesIO(data),
        has_header=False,
        schema=raw_types,
    )
    casts = []
    for name, dtype in schema.items():
        if dtype == pl.Boolean:
            casts.append(pl.col(name).cast(pl.Boolean))
        elif dtype == frames.TS:
            casts.append(pl.from_epoch(pl.col(name), "us").dt.replace_time_zone("UTC"))
        else:
            casts.append(pl.col(name).cast(dtype))  # type: ignore[arg-type]
    return raw.select(casts)


def copy_frame(
    conn: psycopg.Connection, query: sql.Composable, schema: frames.Schema
) -> pl.DataFrame:
    """Run ``COPY (query) TO STDOUT`` as CSV and read the whole stream into a typed frame."""
    # CSV's own null (an unquoted empty field; an empty string arrives quoted): no marker
    # string that legacy text could collide with.
    copy = sql.SQL("copy ({}) to stdout (format csv)").format(query)
    buffer = bytearray()
    with conn.cursor().copy(copy) as stream:
        for chunk in stream:
            buffer += chunk
    return _read_csv(bytes(buffer), schema)


KEY_MAP: frames.Schema = {"source_table": pl.String, "source_id": pl.String, "user_key": pl.String}
"""Which user key each legacy row of a batch was read under (null: none, the orphan batch)."""


@dataclass(frozen=True)
class LegacyBatch:
    """The legacy frames of one batch (schemas.frames.LEGACY_FRAMES) and the user key of each
    legacy row (``keys``, shape ``KEY_MAP``)."""

    auth_users: pl.DataFrame
    user_sessions: pl.DataFrame
    tagged_models: pl.DataFrame
    user_profiles: pl.DataFrame
    app_configurations: pl.DataFrame
    profile_metadata: pl.DataFrame
    keys: pl.DataFrame

    def rows(self) -> int:
        """Source rows in the batch (legacy tables only)."""
        return self.user_sessions.height + self.tagged_models.height + self.user_profiles.height

    def read(self) -> dict[str, int]:
        """Rows read per source table, as :data:`PLANNED_TABLES` names them (but elements)."""
        configs = self.app_configurations["source_table"]
        return {
            "user_sessions": self.user_sessions.height,
            "tagged_models": self.tagged_models.height,
            "user_profiles": self.user_profiles.height + self.profile_metadata.height,
            **{t: int((configs == t).sum()) for t in CONFIG_TABLES},
        }


def key_map(keyed: Mapping[str, pl.DataFrame], key: str) -> pl.DataFrame:
    """``KEY_MAP`` of legacy frames that carry their user key in column ``key``."""
    return pl.concat(
        [
            keyed[t].select(
                (
                    pl.col("source_table")
                    if t == "app_configurations"
                    else pl.lit(_COUNTED_AS.get(t, t))
                ).alias("source_table"),
                pl.col("id").alias("source_id"),
                pl.col(key).alias("user_key"),
            )
            for t in LEGACY_TABLE_NAMES
        ]
    )


def owner_ids(frames_: Mapping[str, pl.DataFrame]) -> pl.Series:
    """The user ids the legacy frames of a batch name (their auth users are read)."""
    return pl.concat(
        [
            frames_[t].select(pl.col("id" if t == "profile_metadata" else "user_id").alias("u"))
            for t in LEGACY_TABLE_NAMES
        ]
    )["u"]


def _batch_queries(schema: str | Inspection, key_filter: sql.Composable) -> dict[str, sql.Composed]:
    """Per legacy table, the query for the rows whose user key passes ``key_filter``, with the
    key as column ``_user_key``."""
    out = {}
    for table in LEGACY_TABLE_NAMES:
        k = user_keys.keyed(schema, table)
        out[table] = sql.SQL(
            "select {cols}, ({key})::text as _user_key from {rel} x {join}"
            " where {key} {cond} order by x.id"
        ).format(
            cols=_select_list(frames.LEGACY_FRAMES[table], "x"),
            key=k.key,
            rel=k.relation,
            join=k.join,
            cond=key_filter,
        )
    return out


def extract_batch(
    conn: psycopg.Connection, schema: str | Inspection, batch: BatchRange
) -> LegacyBatch:
    """All legacy rows of the batch's users, and their auth users, in bulk."""
    key_filter = batch.key_filter()
    keyed = {
        table: copy_frame(conn, query, {**frames.LEGACY_FRAMES[table], "_user_key": pl.String})
        for table, query in _batch_queries(schema, key_filter).items()
    }
    out = {t: frame.drop("_user_key") for t, frame in keyed.items()}
    if batch.orphans:
        out["auth_users"] = frames.empty(frames.AUTH_USERS)
    else:
        users_query = sql.SQL("select {cols} from auth.users x where x.id {} order by x.id").format(
            key_filter, cols=_select_list(frames.AUTH_USERS, "x")
        )
        # Every user key of the batch is the user_id of one of its rows (see plan_batches).
        present = owner_ids(out)
        users = copy_frame(conn, users_query, frames.AUTH_USERS)
        out["auth_users"] = users.filter(pl.col("id").is_in(present.drop_nulls().implode()))
    return LegacyBatch(**out, keys=key_map(keyed, "_user_key"))
