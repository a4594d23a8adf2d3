"""Grants and RLS on a Supabase-faithful database (../shared/supabase-like), not the auth shim.

There the target DDL runs as Supabase's non-superuser ``postgres`` (here ``supa_postgres``) and
the new tables first receive Supabase's default privileges: ALL, TRUNCATE included, to anon,
authenticated and service_role. One database is built for this module (about 20 s).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from flows import schema_ops
from schemas.errors import TargetSchemaConflict
from tests.schemas.test_ddl import (
    PRIVILEGES,
    SERVED,
    Conn,
    ledger_tables,
    make_tagged,
    snapshot,
    table_privileges,
)
from tests.schemas.test_rls import TABLES, Owner, acting_as, make_owner


@pytest.fixture(scope="module")
def supabase(make_supabase_db: Callable[[str], tuple[str, str]]) -> str:
    """URL (as supa_postgres) of a fresh Supabase-faithful database, dropped afterwards."""
    return make_supabase_db("grants")[0]


@pytest.fixture(scope="module")
def owners(supabase: str) -> tuple[Owner, Owner]:
    schema_ops.apply_target(supabase)
    with psycopg.connect(supabase) as conn:
        return make_owner(conn), make_owner(conn)


def test_environment_is_supabases(supabase: str, no_build_running: None) -> None:
    with psycopg.connect(supabase) as conn:
        role = conn.execute(
            "select current_user, rolsuper, rolbypassrls from pg_roles where rolname = current_user"
        ).fetchone()
        assert role == ("supa_postgres", False, True)
        assert conn.execute(
            "select pg_get_userbyid(relowner) from pg_class where oid = 'auth.users'::regclass"
        ).fetchone() == ("supabase_auth_admin",)
        # Supabase's default privileges: what a new table in public gets unless the DDL revokes.
        conn.execute("create table public.probe (id int)")
        for role_name in ("anon", "authenticated", "service_role"):
            assert table_privileges(conn, role_name, "public.probe") == set(PRIVILEGES)
        conn.rollback()


def test_apply_as_supabase_postgres_is_idempotent(
    supabase: str, owners: tuple[Owner, Owner]
) -> None:
    first = snapshot(supabase)  # the owners fixture applied it once already
    schema_ops.apply_target(supabase)
    assert snapshot(supabase) == first
    with psycopg.connect(supabase) as conn:
        owned = conn.execute(
            "select relname, pg_get_userbyid(relowner), relrowsecurity from pg_class"
            " where relnamespace = 'public'::regnamespace and relkind = 'r' order by 1"
        ).fetchall()
    assert owned == [(table, "supa_postgres", True) for table in sorted(TABLES)]


def test_grants_serve_only_the_policies(supabase: str, owners: tuple[Owner, Owner]) -> None:
    with psycopg.connect(supabase) as conn:
        for table in TABLES:
            assert table_privileges(conn, "anon", table) == set(), table
            assert table_privileges(conn, "authenticated", table) == SERVED, table
            assert table_privileges(conn, "service_role", table) == SERVED, table
        for role in ("anon", "authenticated"):
            usage = conn.execute("select has_schema_privilege(%s, 'migration', 'usage')", [role])
            assert usage.fetchone() == (False,), role
            for table in ledger_tables(conn):
                assert table_privileges(conn, role, table) == set(), (role, table)


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_truncate_is_refused(supabase: str, owners: tuple[Owner, Owner], role: str) -> None:
    with psycopg.connect(supabase) as conn:
        ledger = ledger_tables(conn)
        assert len(ledger) >= 7
        acting_as(conn, role, owners[0].user_id)
        for table in [*TABLES, *ledger]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"truncate {table} cascade")
        conn.rollback()
    with psycopg.connect(supabase) as conn:
        for table in TABLES:
            assert conn.execute(f"select count(*) from {table}").fetchone() != (0,), table


def test_anon_can_read_nothing(supabase: str, owners: tuple[Owner, Owner]) -> None:
    with psycopg.connect(supabase) as conn:
        acting_as(conn, "anon", owners[0].user_id)
        for table in [*TABLES, *ledger_tables(conn)]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"select count(*) from {table}")
        conn.rollback()


@pytest.fixture
def as_a(supabase: str, owners: tuple[Owner, Owner]) -> Iterator[Conn]:
    """A connection acting as user A through Supabase's ``authenticated`` role."""
    with psycopg.connect(supabase) as conn:
        acting_as(conn, "authenticated", owners[0].user_id)
        yield conn
        conn.rollback()


def test_authenticated_sees_only_own_rows(as_a: Conn, owners: tuple[Owner, Owner]) -> None:
    a, _ = owners
    assert as_a.execute("select auth.uid()::text").fetchone() == (a.user_id,)
    expected = {"user_profiles": 1, "circuit_configurations": 2, "user_sessions": 1}
    for table in TABLES:
        rows = as_a.execute(f"select distinct user_id::text, count(*) over () from {table}")
        assert rows.fetchall() == [(a.user_id, expected.get(table, 1))], table


def test_authenticated_cannot_touch_other_users_rows(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    _, b = owners
    for table in TABLES:
        updated = as_a.execute(
            f"update {table} set user_id = user_id where user_id = %s", [b.user_id]
        )
        assert updated.rowcount == 0, table
        deleted = as_a.execute(f"delete from {table} where user_id = %s", [b.user_id])
        assert deleted.rowcount == 0, table


def test_own_writes_are_allowed(as_a: Conn, owners: tuple[Owner, Owner]) -> None:
    a, _ = owners
    make_tagged(as_a, a.user_id, a.config_id, a.session_id, model_id="own")
    updated = as_a.execute(
        "update tagged_models set session_id = null where id = %s", [a.tagged_id]
    )
    assert updated.rowcount == 1


def test_cannot_point_tagged_model_at_other_users_session(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(
            "update tagged_models set session_id = %s where id = %s", [b.session_id, a.tagged_id]
        )


def test_cannot_point_tagged_model_at_other_users_configuration(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(
            "update tagged_models set circuit_config_id = %s where id = %s",
            [b.config_id, a.tagged_id],
        )


def test_service_role_cannot_break_the_composite_keys(
    supabase: str, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with psycopg.connect(supabase) as conn:
        conn.execute("begin")
        conn.execute("set local role service_role")  # bypasses RLS: only the keys stop it
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            conn.execute(
                "update tagged_models set session_id = %s where id = %s",
                [b.session_id, a.tagged_id],
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("truncate tagged_models")
        conn.rollback()


def test_tables_owned_by_another_role_are_refused_with_one_clear_error(
    supabase: str, owners: tuple[Owner, Owner], no_build_running: None
) -> None:
    admin_url = supabase.replace("supa_postgres@", "supabase_admin@", 1)
    schema_ops.apply_target(admin_url, "admin_owned")  # Supabase's superuser owns these
    before = snapshot(supabase)
    with pytest.raises(TargetSchemaConflict) as info:
        schema_ops.apply_target(supabase, "admin_owned")
    message = str(info.value)
    assert info.value.exit_code == 4
    assert "supa_postgres may not alter tables owned by another role" in message
    assert "admin_owned.tagged_models (owner supabase_admin)" in message
    assert snapshot(supabase) == before
