"""Connections and orchestration of ``verify``: read-only, in one snapshot per database.

Nothing is read row by row unless it differs. Per part (``reports.verification.PARTS``), each
side computes inside PostgreSQL a count and a digest (a sum of 64-bit row hashes: no sort, and
it aggregates in parallel workers) per bucket of users; only buckets that differ are read per
user, and only users that differ row by row, where ``reports.verification`` compares with the
float tolerance and the renaming rule. The source parts run on connections of their own in one
exported snapshot, the target on one more, all at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from flows import db
from flows.inspect import LEGACY_TABLES, Inspection, inspect
from flows.ledger import require_ledger
from flows.verify import source as src_sql
from flows.verify import target as dst_sql
from flows.verify.common import ALL, BUCKET_DIGITS, PROBE, Hashing, Scope, in_relations
from reports import verification as V


def _read(
    conn: psycopg.Connection,
    query: sql.Composed,
    params: Mapping[str, Any] | None,
    schema: V.Schema,
) -> pl.DataFrame:
    """The rows of ``query`` as a frame of ``schema`` (values in binary: floats exact, NaN and
    Infinity included; parameters bound by the server)."""
    with conn.cursor(binary=True) as cursor:
        cursor.execute(query, params, prepare=False)
        rows = cursor.fetchall()
    return pl.DataFrame(rows, schema=dict(schema), orient="row")


@contextmanager
def _read_only(url: str, snapshot: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection in one read-only repeatable-read transaction (in the exported ``snapshot``,
    if given), rolled back at the end."""
    with db.connect(url, autocommit=True) as conn:
        conn.execute("begin transaction isolation level repeatable read read only")
        try:
            if snapshot is not None:
                conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
            conn.execute("set local extra_float_digits = 1")  # float8 text is exact
            conn.execute("set local jit = off")  # compiling these expressions costs more
            conn.execute("set local work_mem = '64MB'")  # hash, not sort, the per-user groups
            conn.execute("set local timezone = 'UTC'")
            yield conn
        finally:
            conn.execute("rollback")


def _snapshot(conn: psycopg.Connection) -> str:
    """The snapshot of ``conn``'s transaction, exported for another connection to share."""
    return str(conn.execute("select pg_export_snapshot()").fetchone()[0])  # type: ignore[index]


def _concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """The results of ``calls``, each run on a thread of its own (one per connection)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


@dataclass(frozen=True)
class _Side:
    """One side: its connections (one per part, or one for all) and CTE builder."""

    conns: Mapping[str, psycopg.Connection]
    ctes: Callable[[Scope], sql.Composed]
    params: Mapping[str, Any]
    hashing: Hashing

    def _run(
        self, part: str, scope: Scope, select: str, schema: V.Schema, values: Sequence[str]
    ) -> pl.DataFrame:
        query = self.ctes(scope) + sql.SQL(select)
        return _read(self.conns[part], query, {**self.params, "scope": list(values)}, schema)

    def _hashed(self, part: str) -> str:
        row = self.hashing.row(V.PARTS[part])
        return f"select user_id, {row} as h from {part}_rows"

    def buckets(self) -> pl.DataFrame:
        """``BUCKETS`` of every part, for every user: one statement, so the CTEs every part
        shares (the parsed tagged models, the circuit members) are computed once."""
        select = " union all ".join(
            f"select '{part}', left(user_id, {BUCKET_DIGITS}), count(*), sum(h)::text"
            f" from ({self._hashed(part)}) x group by 2"
            for part in V.PARTS
        )
        # Users per bucket (for "N users checked"): every user with a row has a profile or,
        # when none of its rows migrates, a quarantined row.
        select += (
            f" union all select '{V.USERS_PART}', left(user_id, {BUCKET_DIGITS}), count(*), null"
            " from (select user_id from user_profiles_rows union select user_id"
            " from quarantine_rows) u where user_id <> '' group by 2"
        )
        return self._run(next(iter(V.PARTS)), ALL, select, V.BUCKETS, ())

    def users(self, buckets: Sequence[str]) -> pl.DataFrame:
        """``USERS`` of every part for the users of ``buckets`` (one statement)."""
        if not buckets:
            return pl.DataFrame(schema=dict(V.USERS))
        select = " union all ".join(
            f"select '{part}', user_id, count(*), sum(h)::text"
            f" from ({self._hashed(part)}) x group by 2"
            for part in V.PARTS
        )
        return self._run(next(iter(V.PARTS)), Scope("buckets"), select, V.USERS, buckets)

    def rows(self, part: str, users: Sequence[str]) -> pl.DataFrame:
        """The rows of ``part`` of ``users`` (its ``PARTS`` columns)."""
        schema = V.PARTS[part]
        if not users:
            return pl.DataFrame(schema=dict(schema))
        columns = ", ".join(f'"{c}"' for c in schema)
        return self._run(part, Scope("users"), f"select {columns} from {part}_rows", schema, users)


def _latest_run(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "select run_id::text from migration.runs where status <> 'refused' and not dry_run"
        " order by started_at desc limit 1"
    ).fetchone()
    return None if row is None else str(row[0])


# Values that may be JSON strings holding a container: ``<table>:<id>`` key and the string's text.
_STRINGS = """
select 'tagged_models:' || id, circuit_parameters #>> '{}' from @tagged_models@ t
 where jsonb_typeof(circuit_parameters) = 'string'
union all
select 'user_profiles:' || id, parameters #>> '{}' from @user_profiles@ p
 where jsonb_typeof(parameters) = 'string'
union all
select 'user_sessions:' || id, saved_profiles #>> '{}' from @user_sessions@ s
 where jsonb_typeof(saved_profiles) = 'string'
union all
select 'saved_profiles:' || s.id || '#' || (e.n - 1), e.value->'parameters' #>> '{}'
  from @user_sessions@ s
 cross join lateral jsonb_array_elements(case when jsonb_typeof(s.saved_profiles) = 'array'
       then s.saved_profiles else '[]'::jsonb end) with ordinality e(value, n)
 where jsonb_typeof(e.value->'parameters') = 'string'
"""


def _strict_json(text: str) -> bool:
    """Whether ``text`` is JSON PostgreSQL's jsonb accepts (no NaN or Infinity, no NUL)."""

    def refuse(constant: str) -> object:
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return False
    return "\\u0000" not in text


def _looks_like_container(text: str | None) -> bool:
    return text is not None and text.strip(" \t\n\r\f\v")[:1] in ("{", "[")


def _undecodable(source_url: str, legacy: Inspection) -> list[str]:
    """The JSON strings that look like a JSON object or array but do not parse (the slow path,
    taken only when the fast one met one), the parameters of elements inside a
    ``saved_profiles`` that is itself a JSON string included."""
    with _read_only(source_url) as conn:
        relations = {t: legacy.relation(t) for t in LEGACY_TABLES}
        rows = conn.execute(in_relations(_STRINGS, relations)).fetchall()
    bad = set()
    for key, text in rows:
        if _looks_like_container(text) and not _strict_json(text):
            bad.add(key)
        elif key.startswith("user_sessions:") and _looks_like_container(text):
            session = key.partition(":")[2]
            elements = json.loads(text)
            for index, element in enumerate(elements if isinstance(elements, list) else []):
                params = element.get("parameters") if isinstance(element, dict) else None
                if (
                    isinstance(params, str)
                    and _looks_like_container(params)
                    and not _strict_json(params)
                ):
                    bad.add(f"saved_profiles:{session}#{index}")
    return sorted(bad)


def verify(
    source_url: str,
    target_url: str,
    *,
    source_schema: str = "public",
    target_schema: str = "public",
) -> V.Verification:
    """Verify the target against the source, after any sequence of runs: read-only; raises
    ``SourceSchemaMismatch`` / ``TargetSchemaMissing`` when a side lacks its tables."""
    try:
        return _verify(source_url, target_url, source_schema, target_schema, [])
    except psycopg.errors.InvalidTextRepresentation:  # a JSON string that does not parse
        with _read_only(source_url) as conn:
            legacy = inspect(conn, source_schema, reading_only=True)
        undecodable = _undecodable(source_url, legacy)
        return _verify(source_url, target_url, source_schema, target_schema, undecodable)


def _verify(
    source_url: str,
    target_url: str,
    source_schema: str,
    target_schema: str,
    undecodable: list[str],
) -> V.Verification:
    same = db.libpq_url(source_url) == db.libpq_url(target_url)
    parts = list(V.PARTS)
    with ExitStack() as stack:
        dst = stack.enter_context(_read_only(target_url))
        require_ledger(dst, target_schema)
        run_id = _latest_run(dst)
        merged = [r[0] for r in dst.execute(dst_sql.merged_ids(target_schema)).fetchall()]
        snapshot = _snapshot(dst) if same else None
        first = stack.enter_context(_read_only(source_url, snapshot))
        legacy = inspect(first, source_schema, reading_only=True)
        legacy.raise_for_problems()
        probes = {conn.execute(PROBE).fetchone() for conn in (first, dst)}
        hashing = Hashing(portable=len(probes) > 1)
        shared = _snapshot(first)
        src_conns = {parts[0]: first} | {
            part: stack.enter_context(_read_only(source_url, shared)) for part in parts[1:]
        }
        source = _Side(
            src_conns,
            lambda scope: src_sql.source_ctes(legacy, scope),
            {"merged": merged, "undecodable": undecodable},
            hashing,
        )
        target = _Side(
            dict.fromkeys(parts, dst),
            lambda scope: dst_sql.target_ctes(target_schema, scope),
            {},
            hashing,
        )
        return _compare(source, target, dst, target_schema, run_id)


def _compare(
    source: _Side, target: _Side, dst: psycopg.Connection, schema: str, run_id: str | None
) -> V.Verification:
    parts = list(V.PARTS)

    def target_side() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        buckets = target.buckets()
        if dst.execute(dst_sql.links_hold(schema, target.hashing)).fetchone()[0]:  # type: ignore[index]
            link_rows = pl.DataFrame(schema=dict(V.LINK_ROWS))
        else:
            link_rows = _read(dst, dst_sql.links(schema), None, V.LINK_ROWS)
        return buckets, link_rows, _read(dst, dst_sql.merge_problems(schema), None, V.MERGE_ROWS)

    e_buckets, (a_buckets, link_rows, merges) = _concurrently(source.buckets, target_side)
    drilled = V.buckets_to_drill(e_buckets, a_buckets)
    e_users, a_users = _concurrently(lambda: source.users(drilled), lambda: target.users(drilled))
    detailed = V.users_to_detail(e_users, a_users)
    e_rows = dict(
        zip(
            parts,
            _concurrently(*[lambda part=part: source.rows(part, detailed[part]) for part in parts]),
            strict=True,
        )
    )
    a_rows = {part: target.rows(part, detailed[part]) for part in parts}
    differences = V.compare(V.Rows(e_rows), V.Rows(a_rows), detailed, link_rows, merges)
    checked = _users_checked(e_buckets, a_buckets, e_users, a_users, drilled)
    return V.verification(differences, checked, run_id)


def _users_checked(
    e_buckets: pl.DataFrame,
    a_buckets: pl.DataFrame,
    e_users: pl.DataFrame,
    a_users: pl.DataFrame,
    drilled: Sequence[str],
) -> int:
    """Users seen: those of the drilled buckets counted exactly, the others by the expected
    side's count per bucket (``USERS_PART``)."""
    exact = V.users_checked(e_users, a_users)
    users = e_buckets.filter(
        (pl.col("part") == V.USERS_PART) & ~pl.col("bucket").is_in(list(drilled))
    )
    return exact + int(users["rows"].sum())
