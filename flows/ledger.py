"""The run and batch bookkeeping in the target's ``migration`` schema (DESIGN.md section 8)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from flows.extract import BatchRange
from schemas.errors import MigrationError, TargetSchemaMissing

RETRYABLE = ("pending", "running", "failed")


def require_ledger(conn: psycopg.Connection, target_schema: str) -> None:
    """Raise TargetSchemaMissing unless the target tables and the ledger exist."""
    needed = [
        f"migration.{t}"
        for t in (
            "runs",
            "batches",
            "id_map",
            "quarantine",
            "links",
            "user_digests",
            "user_runs",
        )
    ]
    needed += [
        f"{target_schema}.{t}"
        for t in ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models")
    ]
    missing = [
        name
        for name in needed
        if not conn.execute("select to_regclass(%s) is not null", [name]).fetchone()[0]  # type: ignore[index]
    ]
    if missing:
        raise TargetSchemaMissing(
            f"target lacks {', '.join(missing)}: run `circuit-migrate schema apply` first",
            missing=missing,
        )


def create_run(
    conn: psycopg.Connection, run_id: str, *, dry_run: bool, options: Mapping[str, Any]
) -> None:
    """Record a new run as running."""
    conn.execute(
        "insert into migration.runs (run_id, status, dry_run, options)"
        " values (%s, 'running', %s, %s)",
        [run_id, dry_run, Jsonb(dict(options))],
    )


def add_batches(conn: psycopg.Connection, run_id: str, batches: Iterable[BatchRange]) -> None:
    """Record the planned batches as pending."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into migration.batches (run_id, batch_no, status, user_id_from, user_id_to,"
            " counts, user_keys) values (%s, %s, 'pending', %s, %s, %s, %s)",
            [
                (
                    run_id,
                    b.batch_no,
                    b.user_from,
                    b.user_to,
                    Jsonb({"users": b.users, "planned": dict(b.planned)}),
                    None if b.user_keys is None else Jsonb(list(b.user_keys)),
                )
                for b in batches
            ],
        )


@dataclass(frozen=True)
class RunRecord:
    """A run as the ledger holds it."""

    run_id: str
    status: str
    dry_run: bool
    options: Mapping[str, Any]


def get_run(conn: psycopg.Connection, run_id: str) -> RunRecord:
    """The run ``run_id``, or a clear error when the ledger has no such run."""
    try:
        row = conn.execute(
            "select run_id::text, status, dry_run, options from migration.runs"
            " where run_id = %s::uuid",
            [run_id],
        ).fetchone()
    except psycopg.errors.InvalidTextRepresentation:
        raise MigrationError(f"not a run id: {run_id!r}") from None
    if row is None:
        raise MigrationError(f"no run {run_id} in the ledger", run_id=run_id)
    return RunRecord(row[0], row[1], row[2], row[3] or {})


def unfinished_batches(conn: psycopg.Connection, run_id: str) -> list[BatchRange]:
    """The run's batches that failed, or that a killed process left pending or running."""
    rows = conn.execute(
        "select batch_no, user_id_from::text, user_id_to::text,"
        " coalesce((counts->>'users')::int, 0), user_keys"
        " from migration.batches where run_id = %s and status = any(%s) order by batch_no",
        [run_id, list(RETRYABLE)],
    ).fetchall()
    return [
        BatchRange(no, lo, hi, users, None if keys is None else tuple(keys))
        for no, lo, hi, users, keys in rows
    ]


def start_batch(conn: psycopg.Connection, run_id: str, batch_no: int) -> int:
    """Mark a batch running and count the attempt; returns the attempt number."""
    row = conn.execute(
        "update migration.batches set status = 'running', attempts = attempts + 1,"
        " started_at = now(), finished_at = null, error = null"
        " where run_id = %s and batch_no = %s returning attempts",
        [run_id, batch_no],
    ).fetchone()
    return int(row[0]) if row else 0


def batch_loaded(conn: psycopg.Connection, run_id: str, batch_no: int) -> bool:
    """Whether an attempt of the batch ever committed its load (and so its ledger rows)."""
    row = conn.execute(
        "select coalesce(counts ? 'tables', false) from migration.batches"
        " where run_id = %s and batch_no = %s",
        [run_id, batch_no],
    ).fetchone()
    return bool(row and row[0])


def finish_batch(
    conn: psycopg.Connection, run_id: str, batch_no: int, counts: Mapping[str, Any]
) -> None:
    """Mark a batch succeeded with its counts (call inside the batch's load transaction)."""
    conn.execute(
        "update migration.batches set status = 'succeeded', error = null, finished_at = now(),"
        " counts = coalesce(counts, '{}'::jsonb) || %s where run_id = %s and batch_no = %s",
        [Jsonb(json.loads(json.dumps(dict(counts)))), run_id, batch_no],
    )


def fail_batch(conn: psycopg.Connection, run_id: str, batch_no: int, error: str) -> None:
    """Mark a batch failed with its error."""
    conn.execute(
        "update migration.batches set status = 'failed', error = %s, finished_at = now()"
        " where run_id = %s and batch_no = %s",
        [error, run_id, batch_no],
    )


def finish_run(conn: psycopg.Connection, run_id: str) -> str:
    """Close the run: 'succeeded' when every batch did, else 'failed'; returns the status."""
    row = conn.execute(
        "update migration.runs set finished_at = now(), status = case when exists"
        " (select 1 from migration.batches where run_id = %s and status <> 'succeeded')"
        " then 'failed' else 'succeeded' end where run_id = %s returning status",
        [run_id, run_id],
    ).fetchone()
    return str(row[0]) if row else "failed"


def recent_runs(conn: psycopg.Connection, limit: int = 20) -> list[tuple[Any, ...]]:
    """The latest runs: id, status, dry run, started, finished, batches succeeded/total."""
    return conn.execute(
        "select r.run_id::text, r.status, r.dry_run, date_trunc('second', r.started_at),"
        " date_trunc('second', r.finished_at),"
        " (select count(*) filter (where status = 'succeeded') || '/' || count(*)"
        "    from migration.batches b where b.run_id = r.run_id)"
        " from migration.runs r order by r.started_at desc limit %s",
        [limit],
    ).fetchall()


def batch_rows(conn: psycopg.Connection, run_id: str) -> list[tuple[Any, ...]]:
    """A run's batches: number, status, attempts, users, started, finished, error."""
    return conn.execute(
        "select batch_no, status, attempts, coalesce((counts->>'users')::int, 0),"
        " date_trunc('second', started_at), date_trunc('second', finished_at), error"
        " from migration.batches where run_id = %s order by batch_no",
        [run_id],
    ).fetchall()


def record_refused(
    conn: psycopg.Connection, run_id: str, *, dry_run: bool, options: Mapping[str, Any]
) -> None:
    """Record a run that found another run holding the lock: status 'refused', finished."""
    conn.execute(
        "insert into migration.runs (run_id, status, dry_run, options, finished_at)"
        " values (%s, 'refused', %s, %s, now()) on conflict (run_id) do nothing",
        [run_id, dry_run, Jsonb(dict(options))],
    )


def set_plan(conn: psycopg.Connection, run_id: str, plan: Mapping[str, Any]) -> None:
    """Add what the run planned (mode, users new/changed/deleted/unchanged) to its options."""
    conn.execute(
        "update migration.runs set options = options || jsonb_build_object('plan', %s::jsonb)"
        " where run_id = %s",
        [Jsonb(dict(plan)), run_id],
    )


def stored_digests(conn: psycopg.Connection) -> dict[str, str]:
    """The legacy digest of every user as last loaded (``migration.user_digests``)."""
    rows = conn.execute("select user_key::text, digest from migration.user_digests").fetchall()
    return {key: digest for key, digest in rows}


def write_digests(
    conn: psycopg.Connection,
    run_id: str,
    owned: sql.Composable,
    digests: Iterable[tuple[str, str]],
    skip: Iterable[str] = (),
) -> None:
    """Replace the digests of the users a batch owns (``owned``: a condition on ``user_key``)
    with ``digests``, leaving out ``skip`` (users the database rejected: retried next time).
    Call inside the batch's load transaction."""
    conn.execute(sql.SQL("delete from migration.user_digests where user_key {}").format(owned))
    left_out = set(skip)
    rows = [(key, digest, run_id) for key, digest in digests if key not in left_out]
    if rows:
        with (
            conn.cursor() as cur,
            cur.copy("copy migration.user_digests (user_key, digest, run_id) from stdin") as copy,
        ):
            for row in rows:
                copy.write_row(row)


def write_user_runs(
    conn: psycopg.Connection,
    run_id: str,
    batch: BatchRange,
    present: Iterable[str | None],
) -> None:
    """Record that the batch's ledger rows now describe its users (``present``: the user keys
    its rows were read under, None for the rows of no user); users the batch owns but no longer
    has rows of (deleted from the source) lose their entry. Call inside the load transaction."""
    owned: sql.Composable
    if batch.orphans:
        owned = sql.SQL("user_key = ''")
    elif batch.user_keys is not None:
        owned = sql.SQL("user_key = any({})").format(sql.Literal(list(batch.user_keys)))
    else:
        owned = sql.SQL('user_key collate "C" between {} and {}').format(
            sql.Literal(batch.user_from), sql.Literal(batch.user_to)
        )
    conn.execute(sql.SQL("delete from migration.user_runs where {}").format(owned))
    keys = sorted({"" if key is None else key for key in present})
    if keys:
        with (
            conn.cursor() as cur,
            cur.copy("copy migration.user_runs (user_key, run_id, batch_no) from stdin") as copy,
        ):
            for key in keys:
                copy.write_row((key, run_id, batch.batch_no))
