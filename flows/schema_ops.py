"""Applying DDL to a database: the auth shim, the legacy input tables, the target and ledger."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import psycopg.errors
from psycopg import sql

from flows import db
from schemas import ddl
from schemas import tables as t
from schemas.errors import (
    MissingPrivilege,
    SourceSchemaMismatch,
    TargetSchemaConflict,
    TargetSchemaMissing,
)


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
    """Apply the target DDL with RLS and the ledger, in one transaction; idempotent.

    Refuses, before any DDL, when ``schema`` holds relations with target names but another shape.
    """
    with db.transaction(url) as conn:
        _refuse_conflicts(conn, schema)
    if auth_shim:
        apply_auth_shim(url)
    _require_auth(url)
    try:
        with db.transaction(url) as conn:
            _refuse_conflicts(conn, schema)  # again, in the transaction that runs the DDL
            conn.execute(ddl.schema_sql(schema).encode())
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.IntegrityError) as exc:
        raise TargetSchemaConflict(
            f"applying the target schema to {db.redact(url)} failed, nothing changed: "
            + " ".join(str(exc).split()),
            schema=schema,
        ) from None


_RELKINDS = {"v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence"}

Shape = dict[str, tuple[str, bool]]  # column name -> (type as format_type prints it, nullable)


def _relation(conn: psycopg.Connection, schema: str, name: str) -> tuple[str, Shape] | None:
    """The kind (pg_class.relkind) and columns of ``schema.name``; None when there is none."""
    row = conn.execute(
        "select c.oid, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s",
        [schema, name],
    ).fetchone()
    if row is None:
        return None
    columns = conn.execute(
        "select attname, format_type(atttypid, atttypmod), not attnotnull from pg_attribute"
        " where attrelid = %s and attnum > 0 and not attisdropped order by attnum",
        [row[0]],
    ).fetchall()
    return str(row[1]), {column: (kind, nullable) for column, kind, nullable in columns}


def target_conflicts(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    """Relations in ``schema`` named like a target table but not shaped like it: what differs."""
    conflicts: dict[str, str] = {}
    for table in t.TARGET_TABLES:
        found = _relation(conn, schema, table.name)
        if found is None:
            continue
        relkind, columns = found
        if relkind not in ("r", "p"):
            conflicts[table.name] = f"a {_RELKINDS.get(relkind, 'relation')}, not a table"
        elif difference := _shape_difference(ddl.column_shapes(table), columns):
            conflicts[table.name] = difference
    return conflicts


def _shape_difference(expected: Shape, found: Shape) -> str:
    """What the ``found`` columns lack or add compared to ``expected``; empty when equal."""
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    common = [name for name in expected if name in found]
    types = [
        f"{name} {found[name][0]} (target {expected[name][0]})"
        for name in common
        if found[name][0] != expected[name][0]
    ]
    nulls = [
        f"{name} {'nullable' if found[name][1] else 'not null'}"
        for name in common
        if found[name][1] != expected[name][1]
    ]
    labelled = (
        ("missing columns", missing),
        ("unexpected columns", extra),
        ("other types", types),
        ("other nullability", nulls),
    )
    return "; ".join(f"{label} {', '.join(names)}" for label, names in labelled if names)


def _foreign_owners(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    """Existing target and ledger tables whose owner's rights the current user lacks: owner."""
    names = [(schema, table.name) for table in t.TARGET_TABLES]
    names += [(t.LEDGER, table.name) for table in t.LEDGER_TABLES]
    rows = conn.execute(
        "select format('%%I.%%I', n.nspname, c.relname), pg_get_userbyid(c.relowner)"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " join unnest(%s::text[], %s::text[]) as wanted(nsp, rel)"
        " on n.nspname = wanted.nsp and c.relname = wanted.rel"
        " where not pg_has_role(c.relowner, 'usage') order by 1",
        [[nsp for nsp, _ in names], [rel for _, rel in names]],
    ).fetchall()
    return dict(rows)


def _refuse_conflicts(conn: psycopg.Connection, schema: str) -> None:
    """Raise TargetSchemaConflict where the DDL would adopt, or fail on, what is there."""
    _refuse_other_shapes(conn, schema)
    owners = _foreign_owners(conn, schema)
    if owners:
        row = conn.execute("select current_user").fetchone()
        user = str(row[0]) if row else "this role"
        listed = ", ".join(f"{name} (owner {owner})" for name, owner in owners.items())
        raise TargetSchemaConflict(
            f"refusing to apply the target schema, nothing changed: {user} may not alter"
            f" tables owned by another role: {listed}. Apply it as their owner, or have the"
            f" owner run `alter table ... owner to {user}`",
            owners=owners,
        )


def _refuse_other_shapes(conn: psycopg.Connection, schema: str) -> None:
    """Raise TargetSchemaConflict when ``schema`` holds target names of another shape."""
    conflicts = target_conflicts(conn, schema)
    if not conflicts:
        return
    legacy = []
    for table in t.LEGACY_TABLES:
        found = _relation(conn, schema, table.name) if table.name in conflicts else None
        if found and set(table.columns.keys()) <= set(found[1]):
            legacy.append(f"{schema}.{table.name}")
    hints = []
    if legacy:
        move = "`circuit-migrate stage-legacy` moves them into schema legacy"
        if schema != "public":  # stage-legacy moves from public only
            move = "move them into schema legacy (alter table ... set schema legacy)"
        hints.append(f"{', '.join(legacy)} are legacy tables: {move}")
    if len(legacy) < len(conflicts):
        hints.append(
            "rename or move the other tables out of the way, or apply the target to another"
            " schema (--target-schema)"
        )
    where = "; ".join(f"{schema}.{name}: {what}" for name, what in conflicts.items())
    raise TargetSchemaConflict(
        f"refusing to apply the target schema, nothing changed: schema {schema} holds tables"
        f" with target names that circuit-migrate did not create ({where}). {'. '.join(hints)}.",
        schema=schema,
        conflicts=conflicts,
    )


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
APP_CONFIG_TABLES = ("saved_configurations", "circuit_configurations")


@dataclass(frozen=True)
class Moved:
    """What a move did: the tables moved, and what depends on them (views that follow their
    tables, functions whose code names them, triggers that moved with them), with the
    statement to recreate each view."""

    tables: list[str]
    dependents: list[str]


def _ours(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` is circuit-migrate's target table (not the app's own)."""
    row = conn.execute(
        "select exists (select from pg_constraint where conname = %s"
        " and conrelid = to_regclass(%s))",
        [f"{table}_id_user_id_key", db.qualified(schema, table)],
    ).fetchone()
    return bool(row and row[0])


def legacy_tables(conn: psycopg.Connection, schema: str) -> list[str]:
    """The legacy tables of ``schema``: the three every state has, and the configuration tables
    the app wrote (S2, S4) when present and not circuit-migrate's own target table."""
    apps = [
        t
        for t in APP_CONFIG_TABLES
        if db.table_exists(conn, schema, t) and not _ours(conn, schema, t)
    ]
    return [*LEGACY_TABLE_NAMES, *apps]


def dependent_views(conn: psycopg.Connection, schema: str, tables: list[str]) -> list[str]:
    """Views (outside ``tables``) that read ``schema``'s ``tables``: they block a drop."""
    return [v for v, _ in _views(conn, schema, tables)]


def _views(conn: psycopg.Connection, schema: str, tables: list[str]) -> list[tuple[str, str]]:
    names = [db.qualified(schema, t) for t in tables]
    return conn.execute(
        "select distinct v.relnamespace::regnamespace::text || '.' || v.relname,"
        " pg_get_viewdef(v.oid, true)"
        " from pg_depend d join pg_rewrite r on r.oid = d.objid"
        " join pg_class v on v.oid = r.ev_class"
        " where d.refobjid = any(select to_regclass(n) from unnest(%s::text[]) n)"
        " and v.oid <> all(select to_regclass(n) from unnest(%s::text[]) n) order by 1",
        [names, names],
    ).fetchall()


def _dependents(conn: psycopg.Connection, schema: str, tables: list[str]) -> list[str]:
    """Views, functions and triggers that depend on ``schema``'s ``tables``."""
    names = [db.qualified(schema, t) for t in tables]
    views = _views(conn, schema, tables)
    functions = conn.execute(
        "select distinct p.oid::regprocedure::text from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname not in ('pg_catalog', 'information_schema')"
        " and p.prosrc ~ any(%s::text[]) order by 1",
        [[f"\\m{t}\\M" for t in tables]],
    ).fetchall()
    triggers = conn.execute(
        "select t.tgname || ' on ' || c.relnamespace::regnamespace::text || '.' || c.relname"
        " from pg_trigger t join pg_class c on c.oid = t.tgrelid"
        " where not t.tgisinternal"
        " and t.tgrelid = any(select to_regclass(n) from unnest(%s::text[]) n) order by 1",
        [names],
    ).fetchall()
    out = [f"view {v} (recreate with: create or replace view {v} as {d})" for v, d in views]
    out += [f"function {f} names a moved table in its code" for (f,) in functions]
    out += [f"trigger {t} (moved with its table)" for (t,) in triggers]
    return out


def require_owner(conn: psycopg.Connection, schema: str, tables: list[str], doing: str) -> None:
    """Raise MissingPrivilege, naming each table and its owner, unless the connecting role owns
    (or is a member of the owner of) every one of ``schema``'s ``tables``: moving or dropping a
    table needs it. Checked before anything is changed."""
    rows = conn.execute(
        "select c.relname, c.relowner::regrole::text from pg_class c"
        " where c.oid = any(select to_regclass(n) from unnest(%s::text[]) n)"
        " and not pg_has_role(current_user, c.relowner, 'USAGE') order by 1",
        [[db.qualified(schema, t) for t in tables]],
    ).fetchall()
    if rows:
        me = conn.execute("select current_user").fetchone()
        owned = ", ".join(f"{schema}.{name} (owner {owner})" for name, owner in rows)
        raise MissingPrivilege(
            f"{doing} needs to own {owned}; connected as {me[0] if me else '?'}: run it as "
            "the owner, or have the owner run `alter table ... owner to` this role first "
            "(nothing was changed)",
            tables=[name for name, _ in rows],
        )


def move_legacy_in(conn: psycopg.Connection, source: str, target: str) -> list[str]:
    """Move the legacy tables from schema ``source`` to ``target`` on ``conn`` (inside the
    caller's transaction); checks their shape and refuses to overwrite anything."""
    return move_legacy(conn, source, target).tables


def move_legacy(conn: psycopg.Connection, source: str, target: str) -> Moved:
    """:func:`move_legacy_in`, with what depends on the moved tables."""
    from flows.inspect import inspect  # the legacy-shape check

    inspect(conn, source, reading_only=True).raise_for_problems()
    tables = legacy_tables(conn, source)
    require_owner(conn, source, tables, f"moving the legacy tables to schema {target}")
    clashes = [t for t in tables if db.table_exists(conn, target, t)]
    if clashes:
        raise SourceSchemaMismatch(
            f"refusing to move the legacy tables: {target}."
            f"{', '.join(clashes)} already exist(s) and would be overwritten",
            clashes=clashes,
        )
    dependents = _dependents(conn, source, tables)
    if not db.schema_exists(conn, target):
        allowed = conn.execute(
            "select has_database_privilege(current_database(), 'CREATE')"
        ).fetchone()
        if not (allowed and allowed[0]):
            raise MissingPrivilege(
                f"moving the legacy tables needs schema {target}, and this role may not create "
                "schemas in this database (grant it CREATE on the database, or create the "
                "schema first); nothing was changed"
            )
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(target)))
    for table in tables:
        conn.execute(
            sql.SQL("alter table {}.{} set schema {}").format(
                sql.Identifier(source), sql.Identifier(table), sql.Identifier(target)
            )
        )
    return Moved([f"{target}.{t}" for t in tables], dependents)


def _move_legacy(url: str, source: str, target: str) -> Moved:
    """Move the legacy tables from schema ``source`` to ``target`` in one transaction."""
    with db.transaction(url) as conn:
        return move_legacy(conn, source, target)


def stage_legacy(url: str, schema: str = "legacy") -> Moved:
    """Move the legacy tables from ``public`` into ``schema`` (reversible: unstage_legacy)."""
    return _move_legacy(url, "public", schema)


def unstage_legacy(url: str, schema: str = "legacy") -> Moved:
    """Move the legacy tables from ``schema`` back into ``public``; refuses to overwrite."""
    return _move_legacy(url, schema, "public")
