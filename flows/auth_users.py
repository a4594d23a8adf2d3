"""Two projects: the users the target's ``auth.users`` must hold before a run, and copying them.

A new Supabase project's ``auth.users`` is empty, so every migrated row would fail its foreign
key to it. ``copy_auth_users`` copies the users the legacy data needs (their ``auth.users`` and
``auth.identities`` rows, ids and password hashes unchanged) from the source to the target in
one target transaction, by COPY. Row values travel only inside the COPY stream and the
databases: nothing here prints, logs or raises with one, so a password hash never shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import LiteralString

import psycopg
from psycopg import sql

from flows import db
from schemas.errors import (
    AuthUsersConflict,
    AuthUsersMissing,
    LoadError,
    MissingPrivilege,
    SourceSchemaMismatch,
    TargetSchemaMissing,
)

LEGACY_TABLES = ("user_sessions", "tagged_models", "user_profiles")
# What tells one account from another and does not change on its own: a target user with a
# source user's id is the same user when these agree. updated_at, last_sign_in_at, the tokens
# and *_sent_at move with every sign-in or mail and are not compared. A user who changed email
# or password in the target since the copy is a conflict: never overwritten, the operator
# decides.
USER_KEY_COLUMNS = ("email", "encrypted_password", "created_at")
IDENTITY_KEY_COLUMNS = ("user_id", "provider", "provider_id")
EXAMPLES = 3
# Text COPY between two servers: one encoding and one value format on both sides; and a read
# that row-level security would filter fails instead of returning fewer rows.
_SESSION = (
    "set client_encoding = 'UTF8'; set datestyle = 'ISO, MDY'; set intervalstyle = 'postgres';"
    " set timezone = 'UTC'; set extra_float_digits = 3; set row_security = off"
)
_FIX = (
    "connect as the project's postgres role (Supabase grants it ALL on auth.users and "
    "auth.identities, and BYPASSRLS)"
)

Clashes = tuple[int, list[str]]  # how many, and a few of their keys


@dataclass(frozen=True)
class TargetGap:
    """How many of the users the legacy data needs the target's ``auth.users`` lacks."""

    needed: int
    missing: int
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthUsersCopy:
    """What ``copy_auth_users`` copied (in a dry run: would copy)."""

    needed: int
    users_copied: int
    users_present: int
    identities_copied: int
    identities_present: int
    identities: bool  # auth.identities exists on both sides, so it was copied too
    dry_run: bool
    same_database: bool = False


def same_database(source_url: str, target_url: str) -> bool:
    """Whether the two URLs name one database (whose auth.users then serves both)."""
    return db.libpq_url(source_url) == db.libpq_url(target_url)


def legacy_user_ids(conn: psycopg.Connection, source_schema: str) -> sql.Composed:
    """SQL selecting ``id``, once each: the users of the legacy tables in ``source_schema`` that
    the source's ``auth.users`` knows (the others are quarantined as unknown users anyway)."""
    if not db.table_exists(conn, "auth", "users"):
        raise SourceSchemaMismatch("source has no auth.users table", table="auth.users")
    rows = conn.execute(
        "select table_name from information_schema.columns"
        " where table_schema = %s and column_name = 'user_id' and table_name = any(%s)",
        [source_schema, list(LEGACY_TABLES)],
    ).fetchall()
    missing = [t for t in LEGACY_TABLES if t not in {name for (name,) in rows}]
    if missing:
        raise SourceSchemaMismatch(
            f"source has no legacy table {source_schema}.{missing[0]} with a user_id column "
            "(wrong --source-schema?)",
            table=f"{source_schema}.{missing[0]}",
        )
    schema = sql.Identifier(source_schema)
    keys = sql.SQL(" union ").join(
        sql.SQL("select user_id from {}.{}").format(schema, sql.Identifier(table))
        for table in LEGACY_TABLES
    )
    return sql.SQL(
        "select k.user_id as id from ({}) k"
        " where exists (select 1 from auth.users u where u.id = k.user_id)"
    ).format(keys)


def missing_in_target(source_url: str, target_url: str, source_schema: str) -> TargetGap:
    """The users the legacy data needs (computed in the source) that the target's auth.users
    lacks; nothing to do when both are one database. The ids cross as one array parameter."""
    if same_database(source_url, target_url):
        return TargetGap(needed=0, missing=0)
    with db.connect(source_url, autocommit=True) as conn, _translated_errors("source"):
        conn.execute(_SESSION)
        needed_ids = legacy_user_ids(conn, source_schema)
        _require(conn, "source", [("users", "SELECT")])
        row = conn.execute(
            sql.SQL("select count(*), coalesce(array_agg(id), '{{}}')::text from ({}) n").format(
                needed_ids
            )
        ).fetchone()
    assert row is not None
    needed, ids = int(row[0]), str(row[1])
    if not needed:
        return TargetGap(needed=0, missing=0)
    with db.connect(target_url, autocommit=True) as conn, _translated_errors("target"):
        conn.execute(_SESSION)
        _require_auth_users(conn)
        _require(conn, "target", [("users", "SELECT")])
        row = conn.execute(
            """
            with m as materialized (
              select n.id from unnest(%s::uuid[]) n(id)
               where not exists (select 1 from auth.users u where u.id = n.id)
            )
            select (select count(*) from m), array(select id::text from m order by id limit %s)
            """,
            [ids, EXAMPLES],
        ).fetchone()
    assert row is not None
    return TargetGap(needed=needed, missing=int(row[0]), examples=tuple(row[1]))


def require_in_target(source_url: str, target_url: str, source_schema: str) -> None:
    """Raise ``AuthUsersMissing`` unless the target's auth.users holds every user the legacy
    data needs."""
    gap = missing_in_target(source_url, target_url, source_schema)
    if gap.missing:
        raise AuthUsersMissing(
            f"the target's auth.users lacks {gap.missing:,} of the {gap.needed:,} users the "
            f"legacy data needs (e.g. {', '.join(gap.examples)}): run `circuit-migrate "
            "copy-auth-users` first (two projects: source and target auth are separate)",
            missing=gap.missing,
            needed=gap.needed,
        )


def copy_auth_users(
    source_url: str, target_url: str, source_schema: str = "public", *, dry_run: bool = False
) -> AuthUsersCopy:
    """Copy the auth users (and identities) the legacy data needs from source to target in one
    target transaction; users already there and identical are skipped, and any clash
    (``AuthUsersConflict``) copies nothing. A dry run counts and changes nothing."""
    if same_database(source_url, target_url):
        return AuthUsersCopy(0, 0, 0, 0, 0, identities=False, dry_run=dry_run, same_database=True)
    with (
        db.connect(source_url, autocommit=True) as src,
        db.connect(target_url, autocommit=True) as tgt,
        _translated_errors("source or target"),
    ):
        src.execute("begin isolation level repeatable read read only")
        src.execute(_SESSION)
        tgt.execute(_SESSION)
        with tgt.transaction() as tx:
            result = _copy(src, tgt, source_schema, dry_run=dry_run)
            if dry_run:
                raise psycopg.Rollback(tx)
        src.execute("rollback")
    return result


def _copy(
    src: psycopg.Connection, tgt: psycopg.Connection, source_schema: str, *, dry_run: bool
) -> AuthUsersCopy:
    needed_ids = legacy_user_ids(src, source_schema)
    _require_auth_users(tgt)
    both = bool(_columns(src, "identities")) and bool(_columns(tgt, "identities"))
    kinds = ["users", "identities"] if both else ["users"]
    _require(src, "source", [(k, "SELECT") for k in kinds])
    _require(tgt, "target", [(k, p) for k in kinds for p in ("SELECT", "INSERT")], temp=True)

    user_cols = _shared_columns(src, tgt, "users")
    _stage(src, tgt, "users", user_cols, sql.SQL("id in ({})").format(needed_ids))
    needed = _count(tgt, "users")
    compared = [c for c in USER_KEY_COLUMNS if c in user_cols]
    users_present, user_conflicts = _classify(tgt, "users", ["id"], compared)
    email_clashes = _email_clashes(tgt) if "email" in user_cols else (0, [])

    identity_cols: list[str] = []
    key: list[str] = []
    identities_present = identities_new = 0
    identity_conflicts: Clashes = (0, [])
    provider_clashes: Clashes = (0, [])
    if both:
        identity_cols = _shared_columns(src, tgt, "identities")
        key = _primary_key(tgt, "identities")
        if not key or not set(key) <= set(identity_cols):
            raise TargetSchemaMissing(
                f"the target's auth.identities key ({', '.join(key)}) is not among the columns "
                "the source's has: the two projects' auth schemas differ (upgrade the older one)"
            )
        _stage(src, tgt, "identities", identity_cols, sql.SQL("user_id in ({})").format(needed_ids))
        compared = [c for c in IDENTITY_KEY_COLUMNS if c in identity_cols and c not in key]
        identities_present, identity_conflicts = _classify(tgt, "identities", key, compared)
        if {"provider", "provider_id"} <= set(identity_cols):
            provider_clashes = _provider_clashes(tgt, key)
        identities_new = _count(tgt, "identities") - identities_present - identity_conflicts[0]

    _refuse_conflicts(user_conflicts, email_clashes, identity_conflicts, provider_clashes)
    users_new = needed - users_present
    if not dry_run:
        users_new = _insert(tgt, "users", user_cols, ["id"])
        if both:
            identities_new = _insert(tgt, "identities", identity_cols, key)
    return AuthUsersCopy(
        needed=needed,
        users_copied=users_new,
        users_present=users_present,
        identities_copied=identities_new,
        identities_present=identities_present,
        identities=both,
        dry_run=dry_run,
    )


def _staged(kind: str) -> sql.Identifier:
    return sql.Identifier(f"cm_copy_auth_{kind}")


def _columns(conn: psycopg.Connection, kind: str) -> list[tuple[str, bool]]:
    """(name, generated) of each column of ``auth.<kind>``, in order; none when it is absent."""
    rows = conn.execute(
        "select attname, attgenerated <> '' from pg_attribute"
        " where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped order by attnum",
        [f"auth.{kind}"],
    ).fetchall()
    return [(str(name), bool(generated)) for name, generated in rows]


def _shared_columns(src: psycopg.Connection, tgt: psycopg.Connection, kind: str) -> list[str]:
    """The target's columns the source has too, without the target's generated ones."""
    source = {name for name, _ in _columns(src, kind)}
    return [name for name, generated in _columns(tgt, kind) if name in source and not generated]


def _primary_key(conn: psycopg.Connection, kind: str) -> list[str]:
    rows = conn.execute(
        "select a.attname from pg_index i join pg_attribute a"
        " on a.attrelid = i.indrelid and a.attnum = any(i.indkey)"
        " where i.indrelid = to_regclass(%s) and i.indisprimary order by a.attnum",
        [f"auth.{kind}"],
    ).fetchall()
    return [str(name) for (name,) in rows]


def _stage(
    src: psycopg.Connection,
    tgt: psycopg.Connection,
    kind: str,
    cols: list[str],
    where: sql.Composable,
) -> None:
    """COPY the source's rows of ``auth.<kind>`` matching ``where`` into a temporary table of
    the target's column types (dropped at commit), never through Python values."""
    names = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    table = sql.Identifier("auth", kind)
    tgt.execute(
        sql.SQL("create temp table {} on commit drop as select {} from {} with no data").format(
            _staged(kind), names, table
        )
    )
    out = sql.SQL("copy (select {} from {} where {}) to stdout").format(names, table, where)
    into = sql.SQL("copy {} ({}) from stdin").format(_staged(kind), names)
    with src.cursor().copy(out) as reader, tgt.cursor().copy(into) as writer:
        for chunk in reader:
            writer.write(chunk)


def _count(tgt: psycopg.Connection, kind: str) -> int:
    row = tgt.execute(sql.SQL("select count(*) from {}").format(_staged(kind))).fetchone()
    return int(row[0]) if row else 0


def _same_key(key: list[str], left: str, right: str) -> sql.Composable:
    return sql.SQL(" and ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(k), sql.Identifier(right), sql.Identifier(k)
        )
        for k in key
    )


def _classify(
    tgt: psycopg.Connection, kind: str, key: list[str], compared: list[str]
) -> tuple[int, Clashes]:
    """Staged rows whose key the target has: how many are identical on ``compared``, and how
    many differ (with a few of their keys)."""
    differs: sql.Composable = sql.SQL("false")
    if compared:
        differs = sql.SQL("({}) is distinct from ({})").format(
            sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in compared),
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in compared),
        )
    label = sql.SQL(" || ',' || ").join(
        sql.SQL("s.{}::text").format(sql.Identifier(k)) for k in key
    )
    row = tgt.execute(
        sql.SQL(
            "select count(*) filter (where not d), count(*) filter (where d),"
            " (array_agg(k order by k) filter (where d))[1:{n}]"
            " from (select {differs} as d, {label} as k from {staged} s join {table} t on {on}) x"
        ).format(
            n=sql.Literal(EXAMPLES),
            differs=differs,
            label=label,
            staged=_staged(kind),
            table=sql.Identifier("auth", kind),
            on=_same_key(key, "t", "s"),
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), (int(row[1]), list(row[2] or []))


def _examples(tgt: psycopg.Connection, keys: sql.Composable) -> Clashes:
    row = tgt.execute(
        sql.SQL("select count(*), (array_agg(k order by k))[1:{}] from ({}) x").format(
            sql.Literal(EXAMPLES), keys
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), list(row[1] or [])


def _email_clashes(tgt: psycopg.Connection) -> Clashes:
    """Staged users new to the target whose email (in any case) another target user has."""
    return _examples(
        tgt,
        sql.SQL(
            "select s.id::text as k from {} s"
            " where not exists (select 1 from auth.users t where t.id = s.id)"
            " and exists (select 1 from auth.users o"
            " where lower(o.email) = lower(s.email) and o.id <> s.id)"
        ).format(_staged("users")),
    )


def _provider_clashes(tgt: psycopg.Connection, key: list[str]) -> Clashes:
    """Staged identities new to the target whose (provider, provider_id) another one has."""
    return _examples(
        tgt,
        sql.SQL(
            "select s.provider || ':' || s.user_id::text as k from {} s"
            " where not exists (select 1 from auth.identities t where {})"
            " and exists (select 1 from auth.identities o"
            " where o.provider = s.provider and o.provider_id = s.provider_id)"
        ).format(_staged("identities"), _same_key(key, "t", "s")),
    )


def _refuse_conflicts(
    users: Clashes, emails: Clashes, identities: Clashes, providers: Clashes
) -> None:
    """Raise ``AuthUsersConflict`` naming every kind of clash found (how many, a few keys)."""
    kinds = [
        (users, "target users have a source user's id but another email, password or created_at"),
        (emails, "source users (ids) have an email another target user has"),
        (identities, "target identities have a source identity's key but another user/provider"),
        (providers, "source identities (provider:user_id) name another target identity's account"),
    ]
    parts = [f"{n:,} {text} (e.g. {', '.join(ids)})" for (n, ids), text in kinds if n]
    if parts:
        raise AuthUsersConflict(
            f"refusing to copy auth users: {'; '.join(parts)}; nothing copied: reconcile or "
            "delete those target rows (or correct the source), then run copy-auth-users again",
            conflicts=users[0] + identities[0],
            clashes=emails[0] + providers[0],
        )


def _insert(tgt: psycopg.Connection, kind: str, cols: list[str], key: list[str]) -> int:
    """Insert the staged rows whose key the target lacks; how many were inserted."""
    names = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    table = sql.Identifier("auth", kind)
    cur = tgt.execute(
        sql.SQL(
            "insert into {table} ({names}) select {names} from {staged} s"
            " where not exists (select 1 from {table} t where {same})"
            " on conflict ({key}) do nothing"
        ).format(
            table=table,
            names=names,
            staged=_staged(kind),
            same=_same_key(key, "t", "s"),
            key=sql.SQL(", ").join(sql.Identifier(k) for k in key),
        )
    )
    return max(cur.rowcount, 0)


def _require_auth_users(tgt: psycopg.Connection) -> None:
    if not db.table_exists(tgt, "auth", "users"):
        raise TargetSchemaMissing(
            "the target has no auth.users: is it a Supabase database? (on plain PostgreSQL: "
            "`circuit-migrate schema apply --auth-shim`)",
            table="auth.users",
        )


def _require(
    conn: psycopg.Connection, side: str, needs: list[tuple[str, str]], *, temp: bool = False
) -> None:
    """Raise ``MissingPrivilege`` naming every privilege the connected role lacks: USAGE on
    schema auth, each (``auth.<kind>``, privilege), a way past row-level security, TEMP."""
    lacking: list[str] = []
    if not _scalar(conn, "select has_schema_privilege('auth', 'USAGE')"):
        lacking.append("USAGE on schema auth")
    for kind, privilege in needs:
        if not _scalar(conn, "select has_table_privilege(%s, %s)", [f"auth.{kind}", privilege]):
            lacking.append(f"{privilege} on auth.{kind}")
    for kind in dict.fromkeys(k for k, _ in needs):
        if _scalar(
            conn,
            "select c.relrowsecurity and not (r.rolsuper or r.rolbypassrls"
            " or (pg_has_role(c.relowner, 'USAGE') and not c.relforcerowsecurity))"
            " from pg_class c, pg_roles r"
            " where c.oid = to_regclass(%s) and r.rolname = current_user",
            [f"auth.{kind}"],
        ):
            lacking.append(f"BYPASSRLS (row-level security of auth.{kind} hides its rows)")
    if temp and not _scalar(conn, "select has_database_privilege(current_database(), 'TEMP')"):
        lacking.append("TEMP on the database")
    if lacking:
        role = _scalar(conn, "select current_user")
        raise MissingPrivilege(
            f"role {role} lacks {', '.join(lacking)} in the {side}: {_FIX}, or have the "
            "tables' owner grant it",
            role=role,
            lacking=lacking,
        )


def _scalar(
    conn: psycopg.Connection, query: LiteralString, params: list[object] | None = None
) -> object:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


@contextmanager
def _translated_errors(side: str) -> Iterator[None]:
    """Database errors of reading or copying auth rows as one-line errors that hold no value."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise MissingPrivilege(f"{exc.diag.message_primary} in the {side}: {_FIX}") from None
    except psycopg.errors.UniqueViolation as exc:
        raise AuthUsersConflict(
            f"refusing to copy auth users: the target's {exc.diag.constraint_name} already holds "
            "a value of a copied row (another target user or identity); nothing copied: "
            "reconcile that target row, then run copy-auth-users again"
        ) from None
    except psycopg.errors.DataException as exc:
        # Its message may quote the value (a hash, say): only the SQLSTATE goes out.
        raise LoadError(
            f"a source auth value does not fit the target's column type (SQLSTATE "
            f"{exc.sqlstate}): the two projects' auth schemas differ; nothing copied"
        ) from None
    except psycopg.DatabaseError as exc:  # a trigger on auth.users, a lost connection, ...
        raise LoadError(
            f"reading or copying auth users failed in the {side}: {exc.diag.message_primary} "
            f"(SQLSTATE {exc.sqlstate}); nothing copied"
        ) from None
