"""One run at a time: a session-level PostgreSQL advisory lock on the target, and a commit guard
so that a run that lost it commits nothing more.

The lock key is fixed per target schema, so runs into different target schemas do not
exclude each other. It is held on a dedicated connection for the whole run; the server
releases it when that connection ends, so a crashed or killed run never leaves it behind.

That connection can also end while the run goes on (``pg_terminate_backend``, a pooler or a
network failure). So each batch's load transaction, last thing before it commits, takes a
second key (the commit key) in shared mode and checks that its run's lock is still held by the
backend that took it (:func:`guard_commit`); a new run, once it has the lock, takes the commit
key exclusively and at once releases it (:func:`run_lock`), which waits for any batch between
its check and its commit. After that no batch of the old run can pass its check: the two runs
never commit at the same time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from flows import db, ledger
from schemas.errors import RunInProgress, RunLockLost

LOCK_CLASS = 0x434D  # "CM": the first half of the two-int advisory lock key
COMMIT_CLASS = 0x434E  # the commit key's first half; the second is the lock key's

_THIS_DATABASE = "l.database = (select oid from pg_database where datname = current_database())"


def lock_key(target_schema: str) -> tuple[int, int]:
    """The advisory lock key (two non-negative int4) of runs into ``target_schema``."""
    digest = hashlib.sha256(f"circuit-migrate:{target_schema}".encode()).digest()
    return LOCK_CLASS, int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def commit_key(target_schema: str) -> tuple[int, int]:
    """The key batch commits of runs into ``target_schema`` take in shared mode."""
    return COMMIT_CLASS, lock_key(target_schema)[1]


def holder(conn: psycopg.Connection, target_schema: str) -> str | None:
    """Who holds the lock of ``target_schema``: backend pid and application name, or None."""
    row = conn.execute(
        "select l.pid, coalesce(a.application_name, '') from pg_locks l"
        " left join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.objsubid = 2"
        f" and {_THIS_DATABASE}"
        " and l.classid::bigint = %s and l.objid::bigint = %s limit 1",
        list(lock_key(target_schema)),
    ).fetchone()
    if row is None:
        return None
    pid, name = row
    return f"backend pid {pid}" + (f", {name}" if name else "")


@dataclass(frozen=True)
class RunGuard:
    """The backend that holds a run's lock (its pid and start time, which tell it from a later
    backend that reuses the pid): the run's batches commit only while it still holds it."""

    target_schema: str
    pid: int
    backend_start: datetime


def guard_of(conn: psycopg.Connection, target_schema: str) -> RunGuard:
    """The guard of the run whose lock ``conn`` holds."""
    row = conn.execute(
        "select pid, backend_start from pg_stat_activity where pid = pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return RunGuard(target_schema, int(row[0]), row[1])


def held(conn: psycopg.Connection, guard: RunGuard) -> bool:
    """Whether the backend of ``guard`` still holds its run's lock."""
    row = conn.execute(
        "select exists (select 1 from pg_locks l join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.objsubid = 2"
        f" and {_THIS_DATABASE}"
        " and l.classid::bigint = %s and l.objid::bigint = %s"
        " and l.pid = %s and a.backend_start = %s)",
        [*lock_key(guard.target_schema), guard.pid, guard.backend_start],
    ).fetchone()
    return bool(row and row[0])


def lost(run_id: str, guard: RunGuard) -> RunLockLost:
    """The error of a run whose lock connection (``guard``) ended."""
    return RunLockLost(
        f"run {run_id} lost its run lock on target schema {guard.target_schema}: its lock"
        f" connection (backend pid {guard.pid}) ended, so it commits no further batch",
        run_id=run_id,
    )


def guard_commit(conn: psycopg.Connection, guard: RunGuard, run_id: str) -> None:
    """Call last in a batch's load transaction: raise :class:`RunLockLost` (the transaction
    rolls back) unless the run still holds its lock. The shared commit key it takes is held
    until the commit, so a new run's :func:`run_lock` waits for this commit to end."""
    conn.execute(
        "select pg_advisory_xact_lock_shared(%s, %s)", list(commit_key(guard.target_schema))
    )
    if not held(conn, guard):
        raise lost(run_id, guard)


def _record_refusal(
    conn: psycopg.Connection, run_id: str, dry_run: bool, options: Mapping[str, Any]
) -> None:
    exists = conn.execute("select to_regclass('migration.runs') is not null").fetchone()
    if exists and exists[0]:
        ledger.record_refused(conn, run_id, dry_run=dry_run, options=options)


@contextmanager
def run_lock(
    target_url: str,
    target_schema: str,
    run_id: str,
    *,
    dry_run: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Iterator[psycopg.Connection]:
    """Hold the target's run lock for the ``with`` block, or, when another run holds it,
    record run ``run_id`` as 'refused' in the ledger and raise :class:`RunInProgress`. Once
    it has the lock, it waits until no batch of a run that lost the lock can still commit."""
    conn = db.connect(target_url, autocommit=True)
    try:
        conn.execute(
            "select set_config('application_name', %s, false)",
            [f"circuit-migrate run {run_id}"[:63]],
        )
        row = conn.execute("select pg_try_advisory_lock(%s, %s)", list(lock_key(target_schema)))
        got = row.fetchone()
        if not (got and got[0]):
            who = holder(conn, target_schema) or "it was just released"
            _record_refusal(conn, run_id, dry_run, options or {})
            raise RunInProgress(
                f"another run is in progress on target schema {target_schema} ({who});"
                f" run {run_id} refused and recorded, nothing done",
                run_id=run_id,
            )
        key = list(commit_key(target_schema))
        conn.execute("select pg_advisory_lock(%s, %s)", key)
        conn.execute("select pg_advisory_unlock(%s, %s)", key)
        yield conn
    finally:
        conn.close()  # ends the session: the server releases the lock
