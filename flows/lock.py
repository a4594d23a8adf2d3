"""One run at a time: a session-level PostgreSQL advisory lock on the target.

The lock key is fixed per target schema, so runs into different target schemas do not
exclude each other. It is held on a dedicated connection for the whole run; the server
releases it when that connection ends, so a crashed or killed run never leaves it behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

from flows import db, ledger
from schemas.errors import RunInProgress

LOCK_CLASS = 0x434D  # "CM": the first half of the two-int advisory lock key


def lock_key(target_schema: str) -> tuple[int, int]:
    """The advisory lock key (two non-negative int4) of runs into ``target_schema``."""
    digest = hashlib.sha256(f"circuit-migrate:{target_schema}".encode()).digest()
    return LOCK_CLASS, int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def holder(conn: psycopg.Connection, target_schema: str) -> str | None:
    """Who holds the lock of ``target_schema``: backend pid and application name, or None."""
    row = conn.execute(
        "select l.pid, coalesce(a.application_name, '') from pg_locks l"
        " left join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.objsubid = 2"
        " and l.classid::bigint = %s and l.objid::bigint = %s limit 1",
        list(lock_key(target_schema)),
    ).fetchone()
    if row is None:
        return None
    pid, name = row
    return f"backend pid {pid}" + (f", {name}" if name else "")


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
    record run ``run_id`` as 'refused' in the ledger and raise :class:`RunInProgress`."""
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
        yield conn
    finally:
        conn.close()  # ends the session: the server releases the lock
