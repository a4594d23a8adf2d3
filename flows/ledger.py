"""The run and batch bookkeeping in the target's ``migration`` schema (DESIGN.md section 8)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from flows import db
from flows.batches import BatchRange
from schemas.errors import ConfigurationError, TargetSchemaMissing

RETRYABLE = ("pending", "running", "failed")
LATEST = "latest"
"""The run id that names the most recently started run that was not refused."""


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
            "review_decisions",
            "review_list",
        )
    ]
    needed += [
        db.qualified(target_schema, t)
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
    started_at: datetime | None = None
    finished_at: datetime | None = None


_RUN_COLUMNS = "run_id::text, status, dry_run, options, started_at, finished_at"


def get_run(conn: psycopg.Connection, run_id: str) -> RunRecord:
    """The run ``run_id`` names: a run's uuid, or ``latest`` (the most recently started run
    that was not refused). Every command that takes a run id resolves it here; a malformed or
    unknown one is a ConfigurationError (exit 2)."""
    wanted = run_id.strip()
    if wanted.lower() == LATEST:
        row = conn.execute(
            f"select {_RUN_COLUMNS} from migration.runs where status <> 'refused'"
            " order by started_at desc, run_id desc limit 1"
        ).fetchone()
        if row is None:
            raise ConfigurationError("no run in the ledger yet: `latest` names none")
    else:
        try:
            canonical = str(uuid.UUID(wanted))
        except ValueError:
            raise ConfigurationError(
                f"not a run id: {run_id!r} (a run id is a uuid as `circuit-migrate status` "
                "lists them, or latest)"
            ) from None
        row = conn.execute(
            f"select {_RUN_COLUMNS} from migration.runs where run_id = %s", [canonical]
        ).fetchone()
        if row is None:
            raise ConfigurationError(
                f"no run {canonical} in the ledger (`circuit-migrate status` lists the runs)",
                run_id=canonical,
            )
    return RunRecord(row[0], row[1], row[2], row[3] or {}, row[4], row[5])


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
        " started_at = clock_timestamp(), finished_at = null, error = null"
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
    """Mark a batch succeeded with its counts (call inside the batch's load transaction, last:
    its end time is the clock's, not the transaction's start)."""
    conn.execute(
        "update migration.batches set status = 'succeeded', error = null,"
        " finished_at = clock_timestamp(),"
        " counts = coalesce(counts, '{}'::jsonb) || %s where run_id = %s and batch_no = %s",
        [Jsonb(json.loads(json.dumps(dict(counts)))), run_id, batch_no],
    )


def fail_batch(conn: psycopg.Connection, run_id: str, batch_no: int, error: str) -> None:
    """Mark a batch failed with its error."""
    conn.execute(
        "update migration.batches set status = 'failed', error = %s,"
        " finished_at = clock_timestamp()"
        " where run_id = %s and batch_no = %s",
        [error, run_id, batch_no],
    )


def finish_run(conn: psycopg.Connection, run_id: str) -> str:
    """Close the run: 'succeeded' when every batch did, else 'failed'; returns the status."""
    row = conn.execute(
        "update migration.runs set finished_at = clock_timestamp(), status = case when exists"
        " (select 1 from migration.batches where run_id = %s and status <> 'succeeded')"
        " then 'failed' else 'succeeded' end where run_id = %s returning status",
        [run_id, run_id],
    ).fetchone()
    return str(row[0]) if row else "failed"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds(), 3)


@dataclass(frozen=True)
class RunListing:
    """A run as ``status`` lists it: the ledger's record and its batches counted."""

    run_id: str
    status: str
    dry_run: bool
    started_at: datetime | None
    finished_at: datetime | None
    batches: int
    succeeded: int
    failed: int
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """``full`` or ``incremental`` (as planned; a refused run: as asked)."""
        plan = self.options.get("plan")
        if isinstance(plan, Mapping) and plan.get("mode"):
            return str(plan["mode"])
        return "incremental" if self.options.get("incremental") else "full"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``status --json``, the runs index)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "dry_run": self.dry_run,
            "mode": self.mode,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": _seconds(self.started_at, self.finished_at),
            "batches": {
                "total": self.batches,
                "succeeded": self.succeeded,
                "failed": self.failed,
            },
            **({"retry_of": self.options["retry_of"]} if self.options.get("retry_of") else {}),
        }


def _listings(
    conn: psycopg.Connection, where: sql.Composable, limit: int | None
) -> list[RunListing]:
    rows = conn.execute(
        sql.SQL(
            "select r.run_id::text, r.status, r.dry_run, r.started_at, r.finished_at,"
            " count(b.batch_no), count(b.batch_no) filter (where b.status = 'succeeded'),"
            " count(b.batch_no) filter (where b.status = 'failed'), r.options"
            " from migration.runs r left join migration.batches b on b.run_id = r.run_id"
            " where {} group by r.run_id order by r.started_at desc, r.run_id desc limit {}"
        ).format(where, sql.Literal(limit))
    ).fetchall()
    return [
        RunListing(
            run_id=row[0],
            status=row[1],
            dry_run=row[2],
            started_at=row[3],
            finished_at=row[4],
            batches=row[5],
            succeeded=row[6],
            failed=row[7],
            options=row[8] or {},
        )
        for row in rows
    ]


def recent_runs(conn: psycopg.Connection, limit: int | None = 20) -> list[RunListing]:
    """The latest ``limit`` runs (every run when None), newest first, batches counted."""
    return _listings(conn, sql.SQL("true"), limit)


def run_listing(conn: psycopg.Connection, record: RunRecord) -> RunListing:
    """The run of ``record`` (see :func:`get_run`) with its batches counted."""
    found = _listings(conn, sql.SQL("r.run_id = {}").format(sql.Literal(record.run_id)), 1)
    return found[0]


@dataclass(frozen=True)
class BatchListing:
    """A batch as ``status RUN_ID`` lists it."""

    batch_no: int
    status: str
    attempts: int
    users: int
    rows: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; ``seconds`` is the last attempt's."""
        return {
            "batch_no": self.batch_no,
            "status": self.status,
            "attempts": self.attempts,
            "users": self.users,
            "rows": self.rows,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": _seconds(self.started_at, self.finished_at),
            "error": self.error,
        }


def batch_rows(conn: psycopg.Connection, run_id: str) -> list[BatchListing]:
    """A run's batches in order: status, attempts, users, legacy rows read, times, error."""
    rows = conn.execute(
        "select batch_no, status, attempts, coalesce((counts->>'users')::int, 0),"
        " coalesce((counts->>'rows')::int, 0), started_at, finished_at, error"
        " from migration.batches where run_id = %s order by batch_no",
        [run_id],
    ).fetchall()
    return [BatchListing(*row) for row in rows]


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


def claim_batch(conn: psycopg.Connection, run_id: str, batch_no: int) -> int | None:
    """Start an attempt of a batch as :func:`start_batch` does, unless its run is no longer
    'running' (it was interrupted): returns the attempt number, or None (do not start)."""
    row = conn.execute(
        "update migration.batches b set status = 'running', attempts = attempts + 1,"
        " started_at = clock_timestamp(), finished_at = null, error = null"
        " where b.run_id = %s and b.batch_no = %s and exists (select 1 from migration.runs r"
        " where r.run_id = b.run_id and r.status = 'running') returning attempts",
        [run_id, batch_no],
    ).fetchone()
    return int(row[0]) if row else None


def release_batch(conn: psycopg.Connection, run_id: str, batch_no: int, note: str) -> None:
    """Put back to 'pending', with ``note`` as its error, a batch whose attempt an interrupt
    stopped before it committed (nothing of it was written)."""
    conn.execute(
        "update migration.batches set status = 'pending', error = %s,"
        " finished_at = clock_timestamp() where run_id = %s and batch_no = %s",
        [note, run_id, batch_no],
    )


def mark_interrupted(conn: psycopg.Connection, run_id: str) -> None:
    """Record at once that a signal stopped the run: none of its batches starts any more
    (:func:`claim_batch`), wherever its tasks run."""
    conn.execute(
        "update migration.runs set status = 'interrupted' where run_id = %s and status = 'running'",
        [run_id],
    )


def finish_interrupted_run(conn: psycopg.Connection, run_id: str) -> str:
    """Close a run a signal stopped: 'interrupted', or 'succeeded' if every batch was done
    anyway; returns the status. ``retry`` re-runs its batches left pending, running or failed."""
    row = conn.execute(
        "update migration.runs set finished_at = clock_timestamp(), status = case when exists"
        " (select 1 from migration.batches where run_id = %s and status <> 'succeeded')"
        " then 'interrupted' else 'succeeded' end where run_id = %s returning status",
        [run_id, run_id],
    ).fetchone()
    return str(row[0]) if row else "interrupted"
