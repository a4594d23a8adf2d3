"""The DDL on a real PostgreSQL: idempotent, as DESIGN.md sections 3 and 4 say, checks bite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from flows import schema_ops
from flows.cli import app
from flows.db import with_database
from schemas import ddl
from schemas.errors import TargetSchemaConflict

CATALOGUE_SNAPSHOT = """
select 'column', table_schema || '.' || table_name || '.' || column_name || ' '
       || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
  from information_schema.columns where table_schema in ('public', 'migration')
union all
select 'constraint', conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  from pg_constraint where connamespace in ('public'::regnamespace, 'migration'::regnamespace)
union all
select 'index', schemaname || '.' || indexname || ' ' || indexdef
  from pg_indexes where schemaname in ('public', 'migration')
union all
select 'policy', schemaname || '.' || tablename || ' ' || policyname || ' ' || cmd || ' '
       || array_to_string(roles, ',') || ' ' || coalesce(qual, '') || ' | '
       || coalesce(with_check, '')
  from pg_policies where schemaname in ('public', 'migration')
union all
select 'rls', relnamespace::regnamespace::text || '.' || relname || ' ' || relrowsecurity::text
  from pg_class where relkind = 'r' and relnamespace in ('public'::regnamespace,
                                                        'migration'::regnamespace)
union all
select 'acl', relnamespace::regnamespace::text || '.' || relname || ' '
       || coalesce(relacl::text, 'default')
  from pg_class where relkind in ('r', 'S', 'v') and relnamespace in ('public'::regnamespace,
                                                                     'migration'::regnamespace)
union all
select 'acl', nspname || ' ' || coalesce(nspacl::text, 'default')
  from pg_namespace where nspname in ('public', 'migration')
order by 1, 2
"""


def snapshot(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(kind, text) for kind, text in conn.execute(CATALOGUE_SNAPSHOT).fetchall()]


def test_target_ddl_applies_twice_and_the_second_time_changes_nothing(
    make_db: Callable[[str], str],
) -> None:
    url = make_db("ddl_twice")
    schema_ops.apply_target(url)
    first = snapshot(url)
    schema_ops.apply_target(url)
    assert snapshot(url) == first
    tables = {text.split(" ")[0] for kind, text in first if kind == "rls"}
    assert {
        "public.user_profiles",
        "public.circuit_configurations",
        "public.tagged_models",
        "public.user_sessions",
        "migration.runs",
        "migration.batches",
        "migration.id_map",
        "migration.quarantine",
        "migration.links",
        "migration.repairs",
    } <= tables
    assert all(text.endswith(" true") for kind, text in first if kind == "rls")


def test_schema_sql_output_applies_cleanly_to_fresh_postgres_with_the_shim(
    make_db: Callable[[str], str],
) -> None:
    result = CliRunner().invoke(app, ["schema", "sql"])
    assert result.exit_code == 0, result.output
    assert "create policy" in result.stdout
    url = make_db("schema_sql")
    with psycopg.connect(url) as conn:
        conn.execute(result.stdout.encode())
        conn.execute(result.stdout.encode())  # and again: idempotent
    assert snapshot(url) == snapshot_after_apply(make_db)


def snapshot_after_apply(make_db: Callable[[str], str]) -> list[tuple[str, str]]:
    url = make_db("schema_ref")
    schema_ops.apply_target(url)
    return snapshot(url)


def test_schema_sql_is_deterministic() -> None:
    assert ddl.schema_sql() == ddl.schema_sql()
    assert ddl.schema_sql("app").count("app.") > 20


def test_apply_refuses_without_auth_schema(pg_server: str) -> None:
    name = f"cm_noauth_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        result = CliRunner().invoke(
            app, ["schema", "apply", "--target-url", with_database(pg_server, name)]
        )
        assert result.exit_code == 4
        assert "no Supabase auth schema" in result.output
        assert "Traceback" not in result.output
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'drop database "{name}" with (force)')


# Column lists copied from DESIGN.md section 3: the legacy tables must be exactly these.
LEGACY_COLUMNS = {
    "user_sessions": [
        ("id", "uuid", "NO"),
        ("user_id", "uuid", "YES"),
        ("session_name", "character varying", "NO"),
        ("description", "text", "YES"),
        ("environment_variables", "jsonb", "YES"),
        ("visualization_settings", "jsonb", "YES"),
        ("performance_settings", "jsonb", "YES"),
        ("saved_profiles", "jsonb", "YES"),
        ("is_active", "boolean", "YES"),
        ("last_accessed", "timestamp with time zone", "YES"),
        ("created_at", "timestamp with time zone", "YES"),
        ("updated_at", "timestamp with time zone", "YES"),
    ],
    "tagged_models": [
        ("id", "uuid", "NO"),
        ("user_id", "uuid", "YES"),
        ("session_id", "uuid", "YES"),
        ("model_id", "character varying", "NO"),
        ("tag_name", "character varying", "NO"),
        ("tag_category", "character varying", "YES"),
        ("circuit_parameters", "jsonb", "NO"),
        ("resnorm_value", "double precision", "YES"),
        ("tagged_at", "timestamp with time zone", "YES"),
        ("notes", "text", "YES"),
        ("is_interesting", "boolean", "YES"),
    ],
    "user_profiles": [
        ("id", "uuid", "NO"),
        ("user_id", "uuid", "NO"),
        ("name", "text", "NO"),
        ("description", "text", "YES"),
        ("parameters", "jsonb", "NO"),
        ("grid_size", "integer", "YES"),
        ("min_freq", "numeric", "YES"),
        ("max_freq", "numeric", "YES"),
        ("num_points", "integer", "YES"),
        ("is_computed", "boolean", "YES"),
        ("computation_time", "numeric", "YES"),
        ("total_points", "integer", "YES"),
        ("valid_points", "integer", "YES"),
        ("computation_results", "jsonb", "YES"),
        ("created_at", "timestamp with time zone", "YES"),
        ("updated_at", "timestamp with time zone", "YES"),
    ],
}


def test_legacy_ddl_is_design_section_3(make_db: Callable[[str], str]) -> None:
    url = make_db("legacy_ddl")
    schema_ops.apply_legacy(url, "legacy")
    with psycopg.connect(url) as conn:
        for table, expected in LEGACY_COLUMNS.items():
            rows = conn.execute(
                "select column_name, data_type, is_nullable from information_schema.columns"
                " where table_schema = 'legacy' and table_name = %s order by ordinal_position",
                [table],
            ).fetchall()
            assert rows == expected, table
        defaults = dict(
            conn.execute(
                "select column_name, column_default from information_schema.columns"
                " where table_schema = 'legacy' and table_name = 'user_profiles'"
            ).fetchall()
        )
        assert defaults["grid_size"] == "10" and defaults["num_points"] == "100"
        unique = conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = 'legacy.user_sessions'::regclass and contype = 'u'"
        ).fetchall()
        assert unique == [("UNIQUE (user_id, session_name)",)]


# --- constraints of DESIGN.md section 4 -------------------------------------------------------

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def target(db_url: str) -> str:
    schema_ops.apply_target(db_url)
    return db_url


@pytest.fixture
def conn(target: str) -> Iterator[Conn]:
    """A connection whose work is rolled back after the test."""
    with psycopg.connect(target) as connection:
        connection.execute("begin")
        yield connection
        connection.rollback()


def make_user(conn: Conn, email: str | None = None) -> str:
    user_id = str(uuid.uuid4())
    conn.execute(
        "insert into auth.users (id, email) values (%s, %s)", [user_id, email or f"{user_id}@x"]
    )
    return user_id


PARAMS = {"Rsh": 100, "Ra": 1000, "Ca": 1e-6, "Rb": 500, "Cb": 2e-6, "frequency_range": [0.1, 1e5]}


def make_config(conn: Conn, user_id: str, **overrides: object) -> str:
    row: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "user_id": user_id,
        "name": "c",
        "circuit_parameters": json.dumps(PARAMS),
        "grid_size": 10,
        "min_freq": 0.1,
        "max_freq": 1e5,
        "num_points": 100,
    }
    row.update(overrides)
    cols = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    conn.execute(
        f"insert into circuit_configurations ({cols}) values ({marks})", list(row.values())
    )
    return str(row["id"])


def make_session(conn: Conn, user_id: str, current: str | None = None) -> str:
    session_id = str(uuid.uuid4())
    conn.execute(
        "insert into user_sessions (id, user_id, session_name, current_circuit_config_id)"
        " values (%s, %s, %s, %s)",
        [session_id, user_id, f"s-{session_id[:8]}", current],
    )
    return session_id


def make_tagged(
    conn: Conn, user_id: str, config_id: str, session_id: str | None = None, model_id: str = "m1"
) -> str:
    tagged_id = str(uuid.uuid4())
    conn.execute(
        "insert into tagged_models (id, user_id, session_id, model_id, tag_name,"
        " circuit_parameters, circuit_config_id) values (%s, %s, %s, %s, 'good', %s, %s)",
        [tagged_id, user_id, session_id, model_id, json.dumps(PARAMS), config_id],
    )
    return tagged_id


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"grid_size": 1}, "circuit_configurations_grid_size_check"),
        ({"grid_size": 26}, "circuit_configurations_grid_size_check"),
        ({"num_points": 9}, "circuit_configurations_num_points_check"),
        ({"num_points": 1001}, "circuit_configurations_num_points_check"),
        ({"min_freq": 0}, "circuit_configurations_min_freq_check"),
        ({"min_freq": 10, "max_freq": 10}, "circuit_configurations_max_freq_check"),
        (
            {"circuit_parameters": json.dumps({"Rsh": 1, "Ra": 1, "Ca": 1, "Rb": 1, "Cb": 1})},
            "circuit_configurations_circuit_parameters_check",
        ),
    ],
)
def test_configuration_checks_reject(
    conn: Conn, overrides: dict[str, object], constraint: str
) -> None:
    user = make_user(conn)
    with pytest.raises(psycopg.errors.CheckViolation) as info, conn.transaction():
        make_config(conn, user, **overrides)
    assert info.value.diag.constraint_name == constraint


def test_configuration_checks_accept_the_bounds(conn: Conn) -> None:
    user = make_user(conn)
    make_config(conn, user, grid_size=2, num_points=10)
    make_config(conn, user, grid_size=25, num_points=1000)


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("default_grid_size", 26, "user_profiles_default_grid_size_check"),
        ("default_num_points", 5, "user_profiles_default_num_points_check"),
        ("default_min_freq", -1, "user_profiles_default_min_freq_check"),
        ("default_max_freq", 0.01, "user_profiles_default_max_freq_check"),
    ],
)
def test_user_profile_checks_reject(conn: Conn, column: str, value: float, constraint: str) -> None:
    user = make_user(conn)
    with pytest.raises(psycopg.errors.CheckViolation) as info, conn.transaction():
        conn.execute(
            f"insert into user_profiles (user_id, {column}) values (%s, %s)", [user, value]
        )
    assert info.value.diag.constraint_name == constraint


def test_one_user_profile_per_user(conn: Conn) -> None:
    user = make_user(conn)
    conn.execute("insert into user_profiles (user_id) values (%s)", [user])
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
        conn.execute("insert into user_profiles (user_id) values (%s)", [user])


def test_tagged_model_needs_a_configuration_of_its_own_user(conn: Conn) -> None:
    a, b = make_user(conn), make_user(conn)
    config_b = make_config(conn, b)
    with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
        make_tagged(conn, a, config_b)
    with pytest.raises(psycopg.errors.NotNullViolation), conn.transaction():
        conn.execute(
            "insert into tagged_models (user_id, model_id, tag_name, circuit_parameters)"
            " values (%s, 'm', 't', '{}')",
            [a],
        )


def test_tagged_model_unique_per_configuration(conn: Conn) -> None:
    a = make_user(conn)
    config = make_config(conn, a)
    make_tagged(conn, a, config, model_id="m1")
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
        make_tagged(conn, a, config, model_id="m1")
    make_tagged(conn, a, make_config(conn, a), model_id="m1")  # another configuration: fine


def test_session_current_configuration_must_be_the_users_own(conn: Conn) -> None:
    a, b = make_user(conn), make_user(conn)
    with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
        make_session(conn, a, current=make_config(conn, b))
    with pytest.raises(psycopg.errors.NotNullViolation), conn.transaction():
        conn.execute("insert into user_sessions (session_name) values ('orphan')")


def test_delete_cascades_and_set_nulls(conn: Conn) -> None:
    a = make_user(conn)
    config = make_config(conn, a)
    session = make_session(conn, a, current=config)
    other = make_config(conn, a)
    tagged_on_config = make_tagged(conn, a, config, session)
    tagged_on_other = make_tagged(conn, a, other, session, model_id="m2")

    conn.execute("delete from circuit_configurations where id = %s", [config])
    assert conn.execute(
        "select user_id::text, current_circuit_config_id from user_sessions where id = %s",
        [session],
    ).fetchone() == (a, None)
    count = conn.execute("select count(*) from tagged_models where id = %s", [tagged_on_config])
    assert count.fetchone() == (0,)

    conn.execute("delete from user_sessions where id = %s", [session])
    assert conn.execute(
        "select session_id from tagged_models where id = %s", [tagged_on_other]
    ).fetchone() == (None,)

    conn.execute("delete from auth.users where id = %s", [a])
    for table in ("circuit_configurations", "tagged_models", "user_sessions"):
        left = conn.execute(f"select count(*) from {table} where user_id = %s", [a])
        assert left.fetchone() == (0,), table


def test_tagged_model_session_must_be_the_users_own(conn: Conn) -> None:
    a, b = make_user(conn), make_user(conn)
    config_a = make_config(conn, a)
    session_b = make_session(conn, b)
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as info, conn.transaction():
        make_tagged(conn, a, config_a, session_b)
    assert info.value.diag.constraint_name == "tagged_models_session_fkey"
    tagged = make_tagged(conn, a, config_a, make_session(conn, a))
    with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
        conn.execute("update tagged_models set session_id = %s where id = %s", [session_b, tagged])


def test_session_foreign_keys_are_composite(conn: Conn) -> None:
    rows = conn.execute(
        "select conname, pg_get_constraintdef(oid) from pg_constraint"
        " where (conrelid = 'tagged_models'::regclass and confrelid = 'user_sessions'::regclass)"
        " or conname = 'user_sessions_id_user_id_key' order by conname"
    ).fetchall()
    assert rows == [
        (
            "tagged_models_session_fkey",
            "FOREIGN KEY (session_id, user_id) REFERENCES user_sessions(id, user_id)"
            " ON DELETE SET NULL (session_id)",
        ),
        ("user_sessions_id_user_id_key", "UNIQUE (id, user_id)"),
    ]


def test_apply_upgrades_an_earlier_release_to_the_composite_session_key(
    make_db: Callable[[str], str],
) -> None:
    url = make_db("upgrade")
    schema_ops.apply_target(url)
    expected = snapshot(url)
    with psycopg.connect(url) as conn:  # the constraints an earlier release created
        conn.execute("alter table tagged_models drop constraint tagged_models_session_fkey")
        conn.execute("alter table user_sessions drop constraint user_sessions_id_user_id_key")
        conn.execute(
            "alter table tagged_models add constraint tagged_models_session_id_fkey"
            " foreign key (session_id) references user_sessions (id) on delete set null"
        )
        conn.execute("grant all on table tagged_models to anon, authenticated")
    assert snapshot(url) != expected
    schema_ops.apply_target(url)
    assert snapshot(url) == expected


# --- grants (DESIGN.md section 4) -------------------------------------------------------------

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SERVED = {"SELECT", "INSERT", "UPDATE", "DELETE"}  # what the policies serve, no more
TARGET_TABLES = ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models")


def table_privileges(conn: Conn, role: str, table: str) -> set[str]:
    """The privileges ``role`` holds on ``table`` (directly, through PUBLIC or membership)."""
    row = conn.execute(
        "select array_agg(p) filter (where has_table_privilege(%s, %s, p))"
        " from unnest(%s::text[]) as p",
        [role, table, list(PRIVILEGES)],
    ).fetchone()
    return set(row[0] or []) if row else set()


def ledger_tables(conn: Conn) -> list[str]:
    """Every table in the ledger schema, qualified and quoted."""
    rows = conn.execute(
        "select format('%I.%I', schemaname, tablename) from pg_tables"
        " where schemaname = 'migration' order by 1"
    ).fetchall()
    return [name for (name,) in rows]


def test_grants_serve_only_the_policies(conn: Conn) -> None:
    for table in TARGET_TABLES:
        assert table_privileges(conn, "anon", table) == set(), table
        assert table_privileges(conn, "authenticated", table) == SERVED, table
        assert table_privileges(conn, "service_role", table) == SERVED, table
        to_public = conn.execute(
            "select count(*) from pg_class, aclexplode(relacl) a"
            " where oid = %s::regclass and a.grantee = 0",
            [table],
        )
        assert to_public.fetchone() == (0,), table


def test_ledger_is_unreachable_for_the_api_roles(conn: Conn) -> None:
    tables = ledger_tables(conn)
    assert len(tables) >= 7
    for role in ("anon", "authenticated"):
        usage = conn.execute("select has_schema_privilege(%s, 'migration', 'usage')", [role])
        assert usage.fetchone() == (False,), role
        for table in tables:
            assert table_privileges(conn, role, table) == set(), (role, table)


def test_apply_revokes_on_ledger_tables_and_sequences_created_later(
    make_db: Callable[[str], str],
) -> None:
    url = make_db("ledger_later")
    schema_ops.apply_target(url)
    with psycopg.connect(url) as conn:
        conn.execute("grant usage on schema migration to anon, authenticated")
        conn.execute(
            "alter default privileges in schema migration"
            " grant all on tables to public, anon, authenticated"
        )
        conn.execute(
            "alter default privileges in schema migration"
            " grant all on sequences to public, anon, authenticated"
        )
        conn.execute("create table migration.later (id bigserial primary key)")
        assert table_privileges(conn, "anon", "migration.later") == set(PRIVILEGES)
    schema_ops.apply_target(url)
    with psycopg.connect(url) as conn:
        for role in ("anon", "authenticated"):
            assert table_privileges(conn, role, "migration.later") == set(), role
            sequence = conn.execute(
                "select has_sequence_privilege(%s, 'migration.later_id_seq', 'usage')", [role]
            )
            assert sequence.fetchone() == (False,), role
            usage = conn.execute("select has_schema_privilege(%s, 'migration', 'usage')", [role])
            assert usage.fetchone() == (False,), role


# --- tables apply_target did not create (DESIGN.md sections 3 and 4) ---------------------------

# The app's own circuit_configurations (DESIGN.md section 3, state S4): the target's column names,
# but REAL frequencies and computation time, nullable flags and timestamps, no unique (id, user_id).
APP_CIRCUIT_CONFIGURATIONS = """
create table public.circuit_configurations (
  id uuid default gen_random_uuid() primary key,
  user_id uuid references auth.users(id) on delete cascade not null,
  name text not null,
  description text,
  is_public boolean default false,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  grid_size integer not null check (grid_size between 2 and 25),
  min_freq real not null check (min_freq > 0),
  max_freq real not null check (max_freq > min_freq),
  num_points integer not null check (num_points between 10 and 1000),
  circuit_parameters jsonb not null,
  is_computed boolean default false,
  computation_time real,
  total_points integer,
  valid_points integer,
  computation_results jsonb,
  ui_settings jsonb
)
"""

TARGET_ONLY = """
select (select count(*) from pg_tables where schemaname = 'public'
          and tablename in ('circuit_configurations', 'user_sessions', 'tagged_models',
                            'user_profiles')),
       (select count(*) from pg_namespace where nspname = 'migration'),
       (select count(*) from pg_policies where schemaname = 'public'),
       (select count(*) from pg_constraint where connamespace = 'public'::regnamespace),
       (select count(*) from pg_class c, aclexplode(c.relacl) a
         where c.relnamespace = 'public'::regnamespace and c.relkind = 'r')
"""


def catalogue_counts(url: str) -> tuple[int, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(TARGET_ONLY).fetchone()
    assert row is not None
    return tuple(row)


def test_apply_refuses_legacy_tables_in_the_target_schema(make_db: Callable[[str], str]) -> None:
    url = make_db("conflict_legacy")
    schema_ops.apply_legacy(url, "public")
    before = catalogue_counts(url)
    result = CliRunner().invoke(app, ["schema", "apply", "--target-url", url])
    assert result.exit_code == 4, result.output
    message = " ".join(result.output.split())
    assert "Traceback" not in message
    for table in ("user_profiles", "user_sessions", "tagged_models"):
        assert f"public.{table}:" in message
    assert "missing columns username, full_name, avatar_url" in message
    assert "unexpected columns saved_profiles" in message
    assert "circuit-migrate stage-legacy" in message
    assert catalogue_counts(url) == before  # no table, ledger, policy, constraint or grant

    schema_ops.stage_legacy(url)  # what the message says fixes it
    schema_ops.apply_target(url)
    assert catalogue_counts(url)[:3] == (4, 1, 16)


def test_apply_refuses_an_app_made_circuit_configurations(make_db: Callable[[str], str]) -> None:
    url = make_db("conflict_app")
    with psycopg.connect(url) as conn:
        conn.execute(APP_CIRCUIT_CONFIGURATIONS)
    before = catalogue_counts(url)
    with pytest.raises(TargetSchemaConflict) as info:
        schema_ops.apply_target(url)
    assert info.value.exit_code == 4
    message = str(info.value)
    assert "public.circuit_configurations: " in message
    assert "min_freq real (target numeric)" in message
    assert "computation_time real (target numeric)" in message
    assert "is_public nullable" in message
    assert "stage-legacy" not in message and "--target-schema" in message
    assert catalogue_counts(url) == before
    with psycopg.connect(url) as conn:
        unique = conn.execute(
            "select count(*) from pg_constraint"
            " where conname = 'circuit_configurations_id_user_id_key'"
        )
        assert unique.fetchone() == (0,)


def test_apply_refuses_a_view_with_a_target_name(make_db: Callable[[str], str]) -> None:
    url = make_db("conflict_view")
    with psycopg.connect(url) as conn:
        conn.execute("create view public.user_sessions as select 1 as id")
    with pytest.raises(TargetSchemaConflict, match=r"public\.user_sessions: a view, not a table"):
        schema_ops.apply_target(url)


def test_previous_apply_is_no_conflict(target: str) -> None:
    with psycopg.connect(target) as conn:
        assert schema_ops.target_conflicts(conn, "public") == {}


# --- quoting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["NewApp", 'we"ird', "it's"])
def test_target_ddl_in_a_schema_that_needs_quoting(
    make_db: Callable[[str], str], schema: str
) -> None:
    url = make_db("quoted")
    schema_ops.apply_target(url, schema)
    schema_ops.apply_target(url, schema)  # idempotent there too
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "select relname, relrowsecurity from pg_class"
            " where relnamespace = %s::regnamespace and relkind = 'r' order by 1",
            [ddl.quote_ident(schema)],
        ).fetchall()
        assert tables == [
            ("circuit_configurations", True),
            ("tagged_models", True),
            ("user_profiles", True),
            ("user_sessions", True),
        ]
        assert conn.execute("select to_regclass('public.tagged_models')").fetchone() == (None,)
        policies = conn.execute(
            "select count(*) from pg_policies where schemaname = %s", [schema]
        ).fetchone()
        assert policies == (16,)
        (check,) = conn.execute(  # type: ignore[misc]
            "select with_check from pg_policies where schemaname = %s"
            " and policyname = 'tagged_models_insert_own'",
            [schema],
        ).fetchone()
        assert f"{ddl.quote_ident(schema)}.circuit_configurations" in check
        assert f"{ddl.quote_ident(schema)}.user_sessions" in check
        assert table_privileges(conn, "anon", f"{ddl.quote_ident(schema)}.tagged_models") == set()


def test_upgrade_refuses_rows_the_new_session_key_rejects(make_db: Callable[[str], str]) -> None:
    url = make_db("upgrade_bad")
    schema_ops.apply_target(url)
    with psycopg.connect(url) as conn:  # an earlier release let a model keep another's session
        conn.execute("alter table tagged_models drop constraint tagged_models_session_fkey")
        a, b = make_user(conn), make_user(conn)
        make_tagged(conn, a, make_config(conn, a), make_session(conn, b))
    before = snapshot(url)
    with pytest.raises(TargetSchemaConflict, match="tagged_models_session_fkey") as info:
        schema_ops.apply_target(url)
    assert "\n" not in str(info.value)
    assert snapshot(url) == before
