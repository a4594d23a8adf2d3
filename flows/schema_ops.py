"""Applying DDL to a database: the auth shim, the legacy input tables, the target and ledger."""

from __future__ import annotations

import psycopg
from psycopg import sql

from flows import db
from schemas import ddl
from schemas.errors import SourceSchemaMismatch, TargetSchemaMissing


def apply_auth_shim(url: str) -> bool:
    """Apply the Supabase auth shim where no ``auth`` schema exists; True when it was applied."""
    with db.transaction(url) as conn:
        if db.schema_exists(conn, "auth"):
            return False
        conn.execute(ddl.auth_shim_sql().encode())
        return True


def apply_legacy(url: str, schema: str = "public") -> None:
    """Create the legacy input tables (DESIGN.md section 3) in ``schema`` (tests, demo, seed)."""
    _require_auth(url)
    db.run_script(url, ddl.legacy_ddl(schema))


def apply_target(url: str, schema: str = "public", *, auth_shim: bool = False) -> None:
    """Apply the target DDL with RLS and the ledger, in one transaction; idempotent."""
    if auth_shim:
        apply_auth_shim(url)
    _require_auth(url)
    db.run_script(url, ddl.schema_sql(schema))


def _require_auth(url: str) -> None:
    with db.transaction(url) as conn:
        roles = conn.execute(
            "select count(*) from pg_roles where rolname in ('anon','authenticated','service_role')"
        ).fetchone()
        has_uid = conn.execute("select to_regprocedure('auth.uid()') is not null").fetchone()
        has_users = db.table_exists(conn, "auth", "users")
    if not (has_users and has_uid and has_uid[0] and roles and roles[0] == 3):
        raise TargetSchemaMissing(
            f"{db.redact(url)} has no Supabase auth schema (auth.users, auth.uid(), roles anon, "
            "authenticated, service_role); on plain PostgreSQL add --auth-shim",
            url=db.redact(url),
        )


LEGACY_TABLE_NAMES = ("user_sessions", "tagged_models", "user_profiles")


def move_legacy_in(conn: psycopg.Connection, source: str, target: str) -> list[str]:
    """Move the three legacy tables from schema ``source`` to ``target`` on ``conn`` (inside
    the caller's transaction); checks their shape and refuses to overwrite anything."""
    from flows.extract import check_source  # extract owns the legacy-shape check

    check_source(conn, source)
    clashes = [t for t in LEGACY_TABLE_NAMES if db.table_exists(conn, target, t)]
    if clashes:
        raise SourceSchemaMismatch(
            f"refusing to move the legacy tables: {target}."
            f"{', '.join(clashes)} already exist(s) and would be overwritten",
            clashes=clashes,
        )
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(target)))
    for table in LEGACY_TABLE_NAMES:
        conn.execute(
            sql.SQL("alter table {}.{} set schema {}").format(
                sql.Identifier(source), sql.Identifier(table), sql.Identifier(target)
            )
        )
    return [f"{target}.{t}" for t in LEGACY_TABLE_NAMES]


def _move_legacy(url: str, source: str, target: str) -> list[str]:
    """Move the three legacy tables from schema ``source`` to ``target`` in one transaction."""
    with db.transaction(url) as conn:
        return move_legacy_in(conn, source, target)


def stage_legacy(url: str, schema: str = "legacy") -> list[str]:
    """Move the legacy tables from ``public`` into ``schema`` (reversible: unstage_legacy)."""
    return _move_legacy(url, "public", schema)


def unstage_legacy(url: str, schema: str = "legacy") -> list[str]:
    """Move the legacy tables from ``schema`` back into ``public``; refuses to overwrite."""
    return _move_legacy(url, schema, "public")
