"""Plain, idempotent SQL text for the auth shim, the legacy input, the target and the ledger.

Everything here is text: running it is the job of ``flows/``. Every statement can run twice
without changing anything (``if not exists``, drop-and-create of policies, guarded ``do``
blocks), so the output of ``circuit-migrate schema sql`` can go into ``supabase/migrations/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import AddConstraint, CreateIndex, CreateTable

from schemas import tables as t

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_PREPARER = _DIALECT.identifier_preparer


def quote_ident(name: str) -> str:
    """Quote an SQL identifier when it needs quoting."""
    return str(_PREPARER.quote(name))


def _quote_literal(text: str) -> str:
    """An SQL string literal (standard_conforming_strings, PostgreSQL's default)."""
    return "'" + text.replace("'", "''") + "'"


def _do(body: str) -> str:
    """A ``do`` block running the PL/pgSQL ``body``, dollar-quoted with a tag ``body`` lacks."""
    tag = "$cm$"
    while tag in body:
        tag = tag[:-1] + "_$"
    return f"do {tag}\nbegin\n{body}\nend\n{tag};"


_PLACEHOLDER = re.compile(r"__\[SCHEMA_([^\]]+)\]")


def _render(element: sa.schema.ExecutableDDLElement, schema_map: dict[str, str]) -> str:
    """One DDL statement, canonical schemas renamed by schema_map and quoted."""
    full_map = {t.AUTH: t.AUTH, **schema_map}
    text = str(
        element.compile(
            dialect=_DIALECT,
            schema_translate_map=full_map,  # type: ignore[call-arg]
            compile_kwargs={"render_schema_translate": True},
        )
    )
    return _PLACEHOLDER.sub(lambda m: quote_ident(full_map[m.group(1)]), text).strip() + ";"


def _create(tables: Iterable[sa.Table], schema_map: dict[str, str]) -> list[str]:
    """CREATE statements for tables and their indexes, canonical schemas renamed by schema_map."""
    statements: list[str] = []
    for table in tables:
        statements.append(_render(CreateTable(table, if_not_exists=True), schema_map))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(_render(CreateIndex(index, if_not_exists=True), schema_map))
    return statements


def column_shapes(table: sa.Table) -> dict[str, tuple[str, bool]]:
    """Each column of ``table``: its type as PostgreSQL's ``format_type`` prints it, nullable."""
    shapes: dict[str, tuple[str, bool]] = {}
    for column in table.columns:
        kind = column.type.compile(dialect=_DIALECT).lower()
        shapes[column.name] = (
            re.sub(r"^varchar\b", "character varying", kind),
            bool(column.nullable),
        )
    return shapes


AUTH_SHIM_SQL = """\
-- Supabase auth SHIM for plain PostgreSQL (tests and the demo only; never on Supabase).
-- Emulates what every Supabase database already has: the auth schema, auth.users, auth.uid()
-- reading the request's JWT claims, and the roles anon, authenticated and service_role.
-- It does nothing where an auth schema already exists.
do $shim$
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    raise notice 'auth schema exists: auth shim not applied';
    return;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  create schema auth;
  create table auth.users (
    id uuid primary key default gen_random_uuid(),
    email text,
    raw_user_meta_data jsonb default '{}'::jsonb,
    created_at timestamptz default now(),
    updated_at timestamptz default now()
  );
  -- The same definition Supabase uses.
  create function auth.uid() returns uuid language sql stable as $fn$
    select coalesce(
      nullif(current_setting('request.jwt.claim.sub', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
  $fn$;
  grant usage on schema auth to anon, authenticated, service_role;
  grant execute on function auth.uid() to anon, authenticated, service_role;
  grant usage on schema public to anon, authenticated, service_role;
  -- Supabase's default privileges: ALL, TRUNCATE included, on every new table in public.
  alter default privileges in schema public
    grant all on tables to anon, authenticated, service_role;
end
$shim$;
"""


def auth_shim_sql() -> str:
    """The Supabase auth shim for plain PostgreSQL; a no-op where ``auth`` exists."""
    return AUTH_SHIM_SQL


def legacy_ddl(schema: str = "public") -> str:
    """The legacy input tables of DESIGN.md section 3, in ``schema``."""
    head = [f"create schema if not exists {quote_ident(schema)};"]
    return "\n\n".join(head + _create(t.LEGACY_TABLES, {t.LEGACY: schema})) + "\n"


def _owner_check(table: str, schema: str) -> str:
    """The extra WITH CHECK that keeps a row's pointers inside its own user's rows."""
    configs = f"{quote_ident(schema)}.circuit_configurations"
    sessions = f"{quote_ident(schema)}.user_sessions"
    if table == "tagged_models":
        return (
            f" and exists (select 1 from {configs} c where c.id = circuit_config_id"
            " and c.user_id = (select auth.uid()))"
            f" and (session_id is null or exists (select 1 from {sessions} s"
            " where s.id = session_id and s.user_id = (select auth.uid())))"
        )
    if table == "user_sessions":
        return (
            f" and (current_circuit_config_id is null or exists (select 1 from {configs} c"
            " where c.id = current_circuit_config_id and c.user_id = (select auth.uid())))"
        )
    return ""


def _policies(table: sa.Table, schema: str) -> list[str]:
    qualified = f"{quote_ident(schema)}.{quote_ident(table.name)}"
    own = "(select auth.uid()) = user_id"
    check = own + _owner_check(table.name, schema)
    policies = {
        "select": f"for select to authenticated using ({own})",
        "insert": f"for insert to authenticated with check ({check})",
        "update": f"for update to authenticated using ({own}) with check ({check})",
        "delete": f"for delete to authenticated using ({own})",
    }
    out = [
        f"alter table {qualified} enable row level security;",
        # Supabase's default privileges give ALL to anon and authenticated; TRUNCATE ignores RLS.
        f"revoke all on table {qualified} from public, anon, authenticated, service_role;",
        f"grant select, insert, update, delete on table {qualified}"
        " to authenticated, service_role;",
    ]
    for action, body in policies.items():
        name = quote_ident(f"{table.name}_{action}_own")
        out.append(f"drop policy if exists {name} on {qualified};")
        out.append(f"create policy {name} on {qualified}\n  {body};")
    return out


def _constraint_upgrades(schema: str) -> list[str]:
    """Bring target tables of an earlier release to today's constraints (no-ops on new ones)."""
    out: list[str] = []
    for table, name in t.TARGET_DROPPED_CONSTRAINTS:
        qualified = f"{quote_ident(schema)}.{quote_ident(table.name)}"
        out.append(f"alter table {qualified} drop constraint if exists {quote_ident(name)};")
    for table, name in t.TARGET_ADDED_CONSTRAINTS:
        qualified = f"{quote_ident(schema)}.{quote_ident(table.name)}"
        (constraint,) = [c for c in table.constraints if c.name == name]
        add = _render(AddConstraint(constraint), {t.TARGET: schema})
        out.append(
            _do(
                "  if not exists (select 1 from pg_constraint"
                f" where conrelid = {_quote_literal(qualified)}::regclass"
                f" and conname = {_quote_literal(name)}) then\n    {add}\n  end if;"
            )
        )
    return out


def target_ddl(schema: str = "public") -> str:
    """The new target tables of DESIGN.md section 4 with their row-level security and grants."""
    parts = [
        f"create schema if not exists {quote_ident(schema)};",
        f"grant usage on schema {quote_ident(schema)} to authenticated, service_role;",
    ]
    parts += _create(t.TARGET_TABLES, {t.TARGET: schema})
    parts += _constraint_upgrades(schema)
    for table in t.TARGET_TABLES:
        parts += _policies(table, schema)
    return "\n\n".join(parts) + "\n"


def ledger_ddl() -> str:
    """The ledger schema ``migration`` of DESIGN.md section 8 (RLS on, no policies: owner only)."""
    ledger = quote_ident(t.LEDGER)
    parts = [f"create schema if not exists {ledger};"]
    parts += _create(t.LEDGER_TABLES, {t.LEDGER: t.LEDGER})
    parts += [
        f"alter table {ledger}.{quote_ident(table.name)}"
        f" add column if not exists {quote_ident(column)} {kind};"
        for table, column, kind in t.LEDGER_ADDED_COLUMNS
    ]
    parts += [
        f"alter table {ledger}.{quote_ident(table.name)} enable row level security;"
        for table in t.LEDGER_TABLES
    ]
    # Never reachable by the API roles; "all ... in schema" also covers tables created later.
    parts += [
        f"revoke all on schema {ledger} from public, anon, authenticated;",
        f"revoke all on all tables in schema {ledger} from public, anon, authenticated;",
        f"revoke all on all sequences in schema {ledger} from public, anon, authenticated;",
        f"revoke all on all routines in schema {ledger} from public, anon, authenticated;",
    ]
    return "\n\n".join(parts) + "\n"


def schema_sql(schema: str = "public") -> str:
    """The whole target DDL as one plain SQL file: target tables, RLS, and the ledger."""
    header = (
        "-- circuit-migrate: target schema (DESIGN.md sections 4 and 8).\n"
        "-- Idempotent: safe to apply again. Needs Supabase's auth schema and roles; on plain\n"
        "-- PostgreSQL add the auth shim first (`circuit-migrate schema apply --auth-shim` does,\n"
        "-- `circuit-migrate schema shim-sql` prints it).\n"
    )
    return header + "\n" + target_ddl(schema) + "\n" + ledger_ddl()
