"""Guarded cleanup of the legacy tables once the migration is done, and its undo.

``cleanup`` refuses unless the latest run (not a dry run) finished with every batch succeeded
and ``verify`` passes now. Confirmed, it moves the three legacy tables into schema
``legacy_archive`` (recording where they came from in that schema's comment, so
``restore_legacy`` can move them back); only with ``drop`` too are the archived tables dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from flows import db, schema_ops
from flows.extract import check_source
from flows.ledger import require_ledger
from flows.lock import holder, lock_key
from reports.verification import Verification
from schemas.errors import (
    CleanupRefused,
    ConfigurationError,
    MissingPrivilege,
    SourceSchemaMismatch,
)

ARCHIVE_SCHEMA = "legacy_archive"
_MARK = "circuit-migrate archive"
# Runs that did work; any other status (a run refused before it started) touched nothing.
_WORKING_STATUSES = ("running", "succeeded", "failed")


@dataclass(frozen=True)
class CleanupResult:
    """What cleanup did (``done``) or would do: the guard's run and verification, the steps."""

    run_id: str
    users_checked: int
    location: str
    steps: list[str] = field(default_factory=list)
    done: bool = False
    blocker: str | None = None
    """Without ``confirm``: why ``--confirm`` would be refused (tables another role owns, a
    view on a legacy table), else None."""


def _latest_run(url: str, target_schema: str) -> str:
    """The latest run that was not a dry run, if it finished with every batch succeeded."""
    with db.connect(url, autocommit=True) as conn:
        require_ledger(conn, target_schema)
        row = conn.execute(
            "select r.run_id::text, r.status, r.finished_at is not null,"
            " (select count(*) from migration.batches b"
            "   where b.run_id = r.run_id and b.status <> 'succeeded')"
            " from migration.runs r where not r.dry_run and r.status = any(%s)"
            " order by r.started_at desc, r.run_id limit 1",
            [list(_WORKING_STATUSES)],
        ).fetchone()
    if row is None:
        raise CleanupRefused("cleanup refused: the ledger records no migration run (not dry)")
    run_id, status, finished, unfinished = row
    if not finished or status == "running":
        raise CleanupRefused(
            f"cleanup refused: the latest run {run_id} has not finished (if it was killed,"
            f" finish it with `circuit-migrate retry {run_id}`)",
            run_id=run_id,
        )
    if unfinished or status != "succeeded":
        raise CleanupRefused(
            f"cleanup refused: the latest run {run_id} has {unfinished} failed or unfinished"
            f" batch(es); fix them with `circuit-migrate retry {run_id}`",
            run_id=run_id,
        )
    return str(run_id)


def _archive_record(conn: psycopg.Connection) -> dict[str, str] | None:
    """Where the archived tables came from (the archive schema's comment), if recorded."""
    row = conn.execute(
        "select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = %s",
        [ARCHIVE_SCHEMA],
    ).fetchone()
    if row is None or not row[0]:
        return None
    try:
        record = json.loads(row[0]).get(_MARK)
    except (ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) and "from_schema" in record else None


def _has_legacy(conn: psycopg.Connection, schema: str) -> bool:
    return all(db.table_exists(conn, schema, t) for t in schema_ops.LEGACY_TABLE_NAMES)


def locate_legacy(url: str, source_schema: str) -> str:
    """The schema holding the legacy tables: ``source_schema``, else the archive ``cleanup
    --confirm`` made; raises SourceSchemaMismatch when neither holds them."""
    with db.connect(url, autocommit=True) as conn:
        if _has_legacy(conn, source_schema):
            return source_schema
        if _has_legacy(conn, ARCHIVE_SCHEMA) and _archive_record(conn) is not None:
            return ARCHIVE_SCHEMA
        check_source(conn, source_schema)  # raises, naming the missing table
    raise SourceSchemaMismatch(f"no legacy tables in schema {source_schema}")


def check_guard(
    source_url: str, target_url: str, *, source_schema: str, target_schema: str
) -> tuple[str, str, Verification]:
    """Where the legacy tables are, the latest run, and a passing verification against it;
    raises ``CleanupRefused`` when the run is not clean or verification fails."""
    from flows.verify import verify

    location = locate_legacy(source_url, source_schema)
    run_id = _latest_run(target_url, target_schema)
    result = verify(
        source_url,
        target_url,
        source_schema=location,
        target_schema=target_schema,
    )
    if not result.ok:
        users = result.differences["user_id"].n_unique()
        raise CleanupRefused(
            f"cleanup refused: verification fails now ({users} users differ); run"
            " `circuit-migrate verify` for the details",
            run_id=run_id,
        )
    return location, run_id, result


def cleanup(
    source_url: str,
    target_url: str,
    *,
    source_schema: str = "public",
    target_schema: str = "public",
    confirm: bool = False,
    drop: bool = False,
) -> CleanupResult:
    """Check the guard, then archive (and with ``drop`` drop) the legacy tables; without
    ``confirm`` only say what would be done. Holds the target's run lock throughout, so no
    run starts (or is running) meanwhile."""
    with _no_run(target_url, target_schema):
        return _cleanup(source_url, target_url, source_schema, target_schema, confirm, drop)


@contextmanager
def _no_run(target_url: str, target_schema: str) -> Iterator[None]:
    """Hold the run lock of ``target_schema`` (without recording anything in the ledger)."""
    with db.connect(target_url, autocommit=True) as conn:
        got = conn.execute(
            "select pg_try_advisory_lock(%s, %s)", list(lock_key(target_schema))
        ).fetchone()
        if not (got and got[0]):
            who = holder(conn, target_schema) or "it was just released"
            raise CleanupRefused(f"cleanup refused: a run is in progress ({who})")
        yield  # closing the connection releases the lock


def _cleanup(
    source_url: str,
    target_url: str,
    source_schema: str,
    target_schema: str,
    confirm: bool,
    drop: bool,
) -> CleanupResult:
    location, run_id, result = check_guard(
        source_url, target_url, source_schema=source_schema, target_schema=target_schema
    )
    tables = ", ".join(schema_ops.LEGACY_TABLE_NAMES)
    steps = []
    if location != ARCHIVE_SCHEMA:
        steps.append(f"move {location}.{{{tables}}} into schema {ARCHIVE_SCHEMA}")
    if drop:
        steps.append(f"drop {ARCHIVE_SCHEMA}.{{{tables}}} (irreversible)")
    outcome = CleanupResult(run_id, result.users_checked, location, steps)
    if not steps:
        return outcome
    try:
        _check_can(source_url, location, drop=drop)
    except (MissingPrivilege, CleanupRefused) as exc:
        if confirm:
            raise
        return replace(outcome, blocker=str(exc))
    if not confirm:
        return outcome
    with db.transaction(source_url) as conn:
        if location != ARCHIVE_SCHEMA:
            _archive(conn, location, run_id)
        if drop:
            _drop_archive(conn)
    return CleanupResult(run_id, result.users_checked, location, steps, done=True)


def _check_can(source_url: str, location: str, *, drop: bool) -> None:
    """Refuse, before anything changes, what the steps could not finish: tables this role does
    not own (MissingPrivilege), and with ``drop`` views that read the legacy tables."""
    with db.transaction(source_url) as conn:
        tables = schema_ops.legacy_tables(conn, location)
        doing = "cleanup --drop" if drop else "cleanup"
        schema_ops.require_owner(conn, location, tables, doing)
        views = schema_ops.dependent_views(conn, location, tables) if drop else []
    if views:
        raise CleanupRefused(
            f"cleanup --drop refused: {', '.join(views)} read(s) the legacy tables; drop or "
            "rewrite them first (nothing was changed)",
            views=views,
        )


def _archive(conn: psycopg.Connection, from_schema: str, run_id: str) -> None:
    schema_ops.move_legacy_in(conn, from_schema, ARCHIVE_SCHEMA)
    record = {
        _MARK: {
            "from_schema": from_schema,
            "run_id": run_id,
            "archived_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    }
    conn.execute(
        sql.SQL("comment on schema {} is {}").format(
            sql.Identifier(ARCHIVE_SCHEMA), sql.Literal(json.dumps(record))
        )
    )


def _drop_archive(conn: psycopg.Connection) -> None:
    check_source(conn, ARCHIVE_SCHEMA)
    conn.execute(
        sql.SQL("drop table {}").format(
            sql.SQL(", ").join(
                sql.Identifier(ARCHIVE_SCHEMA, t) for t in schema_ops.LEGACY_TABLE_NAMES
            )
        )
    )
    _drop_archive_schema_if_empty(conn)


def _drop_archive_schema_if_empty(conn: psycopg.Connection) -> None:
    empty = conn.execute(
        "select not exists (select 1 from pg_class c join pg_namespace n"
        " on n.oid = c.relnamespace where n.nspname = %s)",
        [ARCHIVE_SCHEMA],
    ).fetchone()
    if empty and empty[0]:
        conn.execute(sql.SQL("drop schema {}").format(sql.Identifier(ARCHIVE_SCHEMA)))


def restore_legacy(url: str) -> tuple[str, list[str]]:
    """Move the archived legacy tables back to the schema they came from (refuses to
    overwrite); returns that schema and the tables moved."""
    with db.transaction(url) as conn:
        if not db.schema_exists(conn, ARCHIVE_SCHEMA):
            raise ConfigurationError(f"nothing to restore: no schema {ARCHIVE_SCHEMA}")
        record = _archive_record(conn)
        if record is None:
            raise ConfigurationError(
                f"nothing to restore: schema {ARCHIVE_SCHEMA} records no circuit-migrate archive"
            )
        from_schema = str(record["from_schema"])
        moved = schema_ops.move_legacy_in(conn, ARCHIVE_SCHEMA, from_schema)
        _drop_archive_schema_if_empty(conn)
    return from_schema, moved
