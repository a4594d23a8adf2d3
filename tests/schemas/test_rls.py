"""Row-level security as DESIGN.md section 4 says, tested as the roles a Supabase client uses.

RLS never applies to superusers or table owners, so every check runs after
``set local role authenticated`` (or ``anon``) with the request's JWT claims set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from flows import schema_ops
from tests.schemas.test_ddl import (
    Conn,
    ledger_tables,
    make_config,
    make_session,
    make_tagged,
    make_user,
)

TABLES = ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models")


@dataclass(frozen=True)
class Owner:
    user_id: str
    config_id: str
    session_id: str
    tagged_id: str


def make_owner(conn: Conn) -> Owner:
    user = make_user(conn)
    conn.execute("insert into user_profiles (user_id, username) values (%s, 'u')", [user])
    config = make_config(conn, user)
    make_config(conn, user, name="second")
    session = make_session(conn, user, current=config)
    tagged = make_tagged(conn, user, config, session)
    return Owner(user, config, session, tagged)


@pytest.fixture(scope="module")
def owners(db_url: str) -> tuple[Owner, Owner]:
    schema_ops.apply_target(db_url)
    with psycopg.connect(db_url) as conn:
        return make_owner(conn), make_owner(conn)


@pytest.fixture
def as_a(db_url: str, owners: tuple[Owner, Owner]) -> Iterator[Conn]:
    """A connection acting as user A through Supabase's `authenticated` role."""
    with psycopg.connect(db_url) as conn:
        conn.execute("begin")
        conn.execute("set local role authenticated")
        claims = json.dumps({"sub": owners[0].user_id, "role": "authenticated"})
        conn.execute("select set_config('request.jwt.claims', %s, true)", [claims])
        yield conn
        conn.rollback()


def test_authenticated_sees_only_own_rows(as_a: Conn, owners: tuple[Owner, Owner]) -> None:
    a, _ = owners
    assert as_a.execute("select auth.uid()::text").fetchone() == (a.user_id,)
    expected = {"user_profiles": 1, "circuit_configurations": 2, "user_sessions": 1}
    for table in TABLES:
        rows = as_a.execute(f"select distinct user_id::text, count(*) over () from {table}")
        assert rows.fetchall() == [(a.user_id, expected.get(table, 1))], table


def test_legacy_claim_setting_is_read_too(db_url: str, owners: tuple[Owner, Owner]) -> None:
    _, b = owners
    with psycopg.connect(db_url) as conn:
        conn.execute("begin")
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claim.sub', %s, true)", [b.user_id])
        users = conn.execute("select distinct user_id::text from circuit_configurations")
        assert users.fetchall() == [(b.user_id,)]
        conn.rollback()


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
    config = make_config(as_a, a.user_id, name="mine")
    make_tagged(as_a, a.user_id, config, a.session_id, model_id="own")
    as_a.execute(
        "update user_sessions set current_circuit_config_id = %s where id = %s",
        [config, a.session_id],
    )
    assert as_a.execute("delete from circuit_configurations where id = %s", [config]).rowcount == 1


def test_cannot_insert_tagged_model_on_other_users_configuration(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        make_tagged(as_a, a.user_id, b.config_id, model_id="stolen")


def test_cannot_repoint_tagged_model_to_other_users_configuration(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(
            "update tagged_models set circuit_config_id = %s where id = %s",
            [b.config_id, a.tagged_id],
        )


@pytest.mark.parametrize("table", TABLES)
def test_cannot_move_a_row_to_another_user(
    as_a: Conn, owners: tuple[Owner, Owner], table: str
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(f"update {table} set user_id = %s where user_id = %s", [b.user_id, a.user_id])


@pytest.mark.parametrize("table", TABLES)
def test_cannot_insert_a_row_for_another_user(
    as_a: Conn, owners: tuple[Owner, Owner], table: str
) -> None:
    _, b = owners
    inserts = {
        "user_profiles": ("insert into user_profiles (user_id) values (%s)", [b.user_id]),
        "circuit_configurations": (
            "insert into circuit_configurations (user_id, name, circuit_parameters, grid_size,"
            " min_freq, max_freq, num_points) select %s, name, circuit_parameters, grid_size,"
            " min_freq, max_freq, num_points from circuit_configurations limit 1",
            [b.user_id],
        ),
        "user_sessions": (
            "insert into user_sessions (user_id, session_name) values (%s, 'x')",
            [b.user_id],
        ),
        "tagged_models": (
            "insert into tagged_models (user_id, model_id, tag_name, circuit_parameters,"
            " circuit_config_id) values (%s, 'm', 't', '{}', %s)",
            [b.user_id, b.config_id],
        ),
    }
    sql, params = inserts[table]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(sql, params)


def test_cannot_set_session_current_configuration_to_other_users(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(
            "update user_sessions set current_circuit_config_id = %s where id = %s",
            [b.config_id, a.session_id],
        )


def test_cannot_point_tagged_model_at_other_users_session(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(
            "update tagged_models set session_id = %s where id = %s", [b.session_id, a.tagged_id]
        )


def test_cannot_insert_tagged_model_with_other_users_session(
    as_a: Conn, owners: tuple[Owner, Owner]
) -> None:
    a, b = owners
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        make_tagged(as_a, a.user_id, a.config_id, b.session_id, model_id="foreign-session")


def acting_as(conn: Conn, role: str, user_id: str) -> None:
    """Begin a transaction on ``conn`` acting as ``role`` with a JWT for ``user_id``."""
    conn.execute("begin")
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    claims = json.dumps({"sub": user_id, "role": role})
    conn.execute("select set_config('request.jwt.claims', %s, true)", [claims])


def test_anon_can_read_nothing(db_url: str, owners: tuple[Owner, Owner]) -> None:
    with psycopg.connect(db_url) as conn:
        acting_as(conn, "anon", owners[0].user_id)
        for table in TABLES:
            # The auth shim gives anon Supabase's default ALL; the DDL revokes it.
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"select count(*) from {table}")
        conn.rollback()


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_truncate_is_refused(db_url: str, owners: tuple[Owner, Owner], role: str) -> None:
    with psycopg.connect(db_url) as conn:
        ledger = ledger_tables(conn)
        assert len(ledger) >= 7
        acting_as(conn, role, owners[0].user_id)
        for table in [*TABLES, *ledger]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"truncate {table} cascade")
        conn.rollback()
    with psycopg.connect(db_url) as conn:  # and nothing was lost
        for table in TABLES:
            assert conn.execute(f"select count(*) from {table}").fetchone() != (0,), table


def test_every_policy_is_for_authenticated_and_updates_check(db_url: str, owners: object) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select tablename, cmd, roles::text[], qual, with_check from pg_policies"
            " where schemaname = 'public'"
        ).fetchall()
    assert {(table, cmd) for table, cmd, *_ in rows} == {
        (table, cmd) for table in TABLES for cmd in ("SELECT", "INSERT", "UPDATE", "DELETE")
    }
    for table, cmd, roles, qual, with_check in rows:
        assert roles == ["authenticated"], (table, cmd)
        owner_test = "( SELECT auth.uid() AS uid) = user_id"
        if cmd in ("SELECT", "UPDATE", "DELETE"):
            assert owner_test in qual, (table, cmd)
        if cmd in ("INSERT", "UPDATE"):
            assert with_check and owner_test in with_check, (table, cmd)
