"""Applying DDL to a database: the auth shim, the legacy input tables, the target and ledger."""

from __future__ import annotations

from flows import db
from schemas import ddl
from schemas.errors import TargetSchemaMissing


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
