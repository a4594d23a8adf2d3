"""Two projects: the preflight refuses while the target's auth.users lacks legacy users, and
copy-auth-users copies exactly those (ids and password hashes unchanged, never printed), once,
refusing and copying nothing on a clash; on plain PostgreSQL and on a Supabase-faithful
database as its non-superuser ``postgres`` role."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from typer.testing import CliRunner

from flows import db, schema_ops
from flows.auth_users import copy_auth_users, missing_in_target
from flows.cli import app
from flows.migrate import RunOptions, preflight
from flows.seed import seed_database
from schemas import ddl
from schemas.errors import AuthUsersConflict, AuthUsersMissing, MissingPrivilege

SUPA_SERVER = "postgresql://{user}@127.0.0.1:5432/{db}"

NEEDED_SQL = """
select distinct k.user_id from (
  select user_id from {s}.user_sessions union all select user_id from {s}.tagged_models
  union all select user_id from {s}.user_profiles
) k join auth.users u on u.id = k.user_id order by 1
"""


def rows(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode(), list(params)).fetchall()


def needed_ids(url: str, schema: str) -> list[uuid.UUID]:
    return [r[0] for r in rows(url, NEEDED_SQL.format(s=schema))]


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_plain_postgresql_two_databases(make_db: Callable[[str], str]) -> None:
    source, target = make_db("authsource"), make_db("authtarget")
    seed_database(source, users=30, seed=1, source_schema="legacy", truth_schema="seed_truth")
    with psycopg.connect(source) as conn:
        # A hash column as Supabase's, a column only the source has, a user no legacy row needs.
        conn.execute(
            "alter table auth.users add column encrypted_password varchar(255),"
            " add column phone text"
        )
        conn.execute(
            "update auth.users set encrypted_password = '$2a$10$' || md5(id::text) || '/.x',"
            " phone = '555'"
        )
        conn.execute("insert into auth.users (email) values ('nobody@example.com')")
    with psycopg.connect(target) as conn:
        conn.execute(
            "alter table auth.users add column encrypted_password varchar(255),"
            " add column email_lower text generated always as (lower(email)) stored"
        )
    schema_ops.apply_target(target)
    needed = needed_ids(source, "legacy")
    assert 0 < len(needed) < rows(source, "select count(*) from auth.users")[0][0]
    n = len(needed)
    options = RunOptions(source_schema="legacy")
    common = ["--source-url", source, "--target-url", target, "--source-schema", "legacy"]

    with pytest.raises(AuthUsersMissing) as refused:
        preflight(source, target, options)
    assert refused.value.exit_code == 4
    assert f"lacks {n:,} of the {n:,} users" in str(refused.value)
    assert "copy-auth-users" in str(refused.value)

    code, out = cli("copy-auth-users", *common, "--dry-run")
    assert code == 0, out
    assert f"would copy {n:,}, 0 already present" in out and "nothing changed" in out
    assert rows(target, "select id from auth.users where id = any(%s)", needed) == []

    result = copy_auth_users(source, target, "legacy")
    assert (result.needed, result.users_copied, result.users_present) == (n, n, 0)
    assert not result.identities  # the shim has no auth.identities
    columns = (
        "select id, email, raw_user_meta_data::text, created_at, updated_at,"
        " convert_to(encrypted_password, 'UTF8') from auth.users where id = any(%s) order by id"
    )
    copied = rows(target, columns, needed)
    assert copied == rows(source, columns, needed) and len(copied) == n
    generated = "select count(*) from auth.users where email_lower = lower(email)"
    assert rows(target, generated) == rows(target, "select count(*) from auth.users") == [(n,)]
    preflight(source, target, options)

    code, out = cli("copy-auth-users", *common)
    assert code == 0, out
    assert f"{n:,} users the legacy data needs: copied 0, {n:,} already present" in out
    hashes = rows(source, "select encrypted_password from auth.users where id = any(%s)", needed)
    assert len(hashes) == n and not any(h in out for (h,) in hashes)

    # Clashes: same id with another email; a missing user's email held by another target user.
    changed, dropped = needed[0], needed[1]
    with psycopg.connect(target) as conn:
        conn.execute("update auth.users set email = 'other@example.com' where id = %s", [changed])
        conn.execute(
            "with d as (delete from auth.users where id = %s returning email)"
            " insert into auth.users (email) select email from d",
            [dropped],
        )
    with pytest.raises(AuthUsersConflict) as clash:
        copy_auth_users(source, target, "legacy")
    message = str(clash.value)
    assert clash.value.exit_code == 4
    assert "1 target users have a source user's id but another email" in message
    assert str(changed) in message and str(dropped) in message and "nothing copied" in message
    assert rows(target, "select id from auth.users where id = %s", dropped) == []
    code, out = cli("copy-auth-users", *common)
    assert code == 4 and "refusing to copy auth users" in out and "Traceback" not in out
    with pytest.raises(AuthUsersMissing, match=f"lacks 1 of the {n:,} users"):
        preflight(source, target, options)

    (original,) = rows(source, "select email from auth.users where id = %s", changed)[0]
    with psycopg.connect(target) as conn:
        conn.execute("delete from auth.users where id <> all(%s)", [needed])
        conn.execute("update auth.users set email = %s where id = %s", [original, changed])
    result = copy_auth_users(source, target, "legacy")
    assert (result.users_copied, result.users_present) == (1, n - 1)
    assert rows(target, columns, needed) == rows(source, columns, needed)
    preflight(source, target, options)
    assert missing_in_target(source, target, "legacy").missing == 0


def test_one_database_needs_no_copy(make_db: Callable[[str], str]) -> None:
    url = make_db("authone")
    seed_database(url, users=5, seed=2, source_schema="legacy", truth_schema="seed_truth")
    assert missing_in_target(url, url, "legacy").missing == 0
    result = copy_auth_users(url, url, "legacy")
    assert result.same_database and result.users_copied == 0


def test_missing_privilege_is_named(make_db: Callable[[str], str]) -> None:
    source, target = make_db("authprivsource"), make_db("authprivtarget")
    seed_database(source, users=5, seed=3, source_schema="legacy", truth_schema="seed_truth")
    role = f"cm_auth_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f"grant usage on schema auth to {role}")
        conn.execute(f"grant select on auth.users to {role}")
    try:
        with pytest.raises(MissingPrivilege) as refused:
            copy_auth_users(source, as_role(target, role), "legacy", dry_run=True)
        assert refused.value.exit_code == 4
        assert str(refused.value).startswith(
            f"role {role} lacks INSERT on auth.users in the target: connect as the project's"
        )
        assert missing_in_target(source, as_role(target, role), "legacy").missing > 0
    finally:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")


# --- a Supabase-faithful database (../shared/supabase-like), as Supabase's postgres role ---

USERS = [uuid.UUID(int=i) for i in (0x1A, 0x2B, 0x3C, 0x4D, 0x5E)]  # the last: no legacy row


@pytest.fixture(scope="module")
def supabase_pair(make_supabase_db: Callable[[str], tuple[str, str]]) -> tuple[str, str]:
    """Two fresh Supabase-like databases' names (source, target); dropped afterwards."""
    return tuple(  # type: ignore[return-value]
        urlsplit(make_supabase_db(hint)[0]).path.lstrip("/") for hint in ("ausrc", "autgt")
    )


def seed_gotrue_users(url: str) -> None:
    """Users and identities as GoTrue writes them on e-mail sign-up (one also with Google)."""
    with psycopg.connect(url) as conn:
        for i, user in enumerate(USERS):
            email = f"user{i}@example.com"
            conn.execute(
                """
                insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
                  email_confirmed_at, confirmation_token, recovery_token, email_change_token_new,
                  email_change, last_sign_in_at, raw_app_meta_data, raw_user_meta_data,
                  created_at, updated_at, phone, phone_confirmed_at)
                values ('00000000-0000-0000-0000-000000000000', %s, 'authenticated',
                  'authenticated', %s, extensions.crypt(%s, extensions.gen_salt('bf')),
                  now() - interval '9 days', '', '', '', '', now() - interval '1 day',
                  '{"provider": "email", "providers": ["email"]}', '{"name": "N"}',
                  now() - interval '10 days', now() - interval '1 day', %s, %s)
                """,
                [user, email, f"secret{i}", f"4915{i:07d}", None if i % 2 else "2024-01-02"],
            )
            conn.execute(
                """
                insert into auth.identities (provider_id, user_id, identity_data, provider,
                  last_sign_in_at, created_at, updated_at)
                values (%s::text, %s, jsonb_build_object('sub', %s::text, 'email', %s::text,
                  'email_verified', true, 'phone_verified', false), 'email', now(), now(), now())
                """,
                [user, user, user, email],
            )
        conn.execute(
            "insert into auth.identities (provider_id, user_id, identity_data, provider)"
            ' values (\'google-sub-1\', %s, \'{"sub": "google-sub-1", "email": "G@x.io"}\','
            " 'google')",
            [USERS[0]],
        )


def test_supabase_like_two_projects(supabase_pair: tuple[str, str]) -> None:
    src_db, tgt_db = supabase_pair
    source = SUPA_SERVER.format(user="supa_postgres", db=src_db)
    target = SUPA_SERVER.format(user="supa_postgres", db=tgt_db)
    source_admin = SUPA_SERVER.format(user="postgres", db=src_db)
    target_admin = SUPA_SERVER.format(user="postgres", db=tgt_db)

    seed_gotrue_users(source_admin)
    db.run_script(source, ddl.legacy_ddl("public"))
    with psycopg.connect(source) as conn:
        for user in USERS[:4]:
            conn.execute(
                "insert into public.user_profiles (user_id, name, parameters)"
                " values (%s, 'c', '{}')",
                [user],
            )
        conn.execute(
            "insert into public.user_sessions (user_id, session_name) values (%s, 's')", [USERS[1]]
        )
        conn.execute(
            "insert into public.tagged_models (user_id, model_id, tag_name, circuit_parameters)"
            " values (%s, 'm', 't', '{}')",
            [USERS[2]],
        )
    schema_ops.apply_target(target)
    options = RunOptions()
    needed = USERS[:4]

    with pytest.raises(AuthUsersMissing, match="lacks 4 of the 4 users"):
        preflight(source, target, options)

    dry = copy_auth_users(source, target, dry_run=True)
    assert (dry.needed, dry.users_copied, dry.identities_copied) == (4, 4, 5) and dry.identities
    assert rows(target_admin, "select id from auth.users where id = any(%s)", needed) == []

    result = copy_auth_users(source, target)
    assert (result.users_copied, result.users_present) == (4, 0)
    assert (result.identities_copied, result.identities_present) == (5, 0)
    # Every column byte for byte, the generated ones (confirmed_at, identities.email) included.
    users = "select u::text from auth.users u where id = any(%s) order by id"
    identities = "select i::text from auth.identities i where user_id = any(%s) order by id"
    assert rows(target_admin, users, USERS) == rows(source_admin, users, needed)
    assert rows(target_admin, identities, USERS) == rows(source_admin, identities, needed)
    hashes = "select id, convert_to(encrypted_password, 'UTF8') from auth.users where id = any(%s)"
    assert sorted(rows(target_admin, hashes, needed)) == sorted(rows(source_admin, hashes, needed))
    preflight(source, target, options)

    again = copy_auth_users(source, target)
    assert (again.users_copied, again.users_present) == (0, 4)
    assert (again.identities_copied, again.identities_present) == (0, 5)

    # A clash only a target constraint sees (another user signed up with that phone): refused
    # by name, without the phone number, nothing copied.
    with psycopg.connect(target_admin) as conn:
        conn.execute("delete from auth.users where id = %s", [USERS[3]])
        conn.execute("insert into auth.users (id, phone) values (gen_random_uuid(), '49150000003')")
    with pytest.raises(AuthUsersConflict, match="users_phone_key") as clash:
        copy_auth_users(source, target)
    assert "49150000003" not in str(clash.value)
    assert rows(target_admin, "select id from auth.users where id = %s", USERS[3]) == []
    with psycopg.connect(target_admin) as conn:
        conn.execute("delete from auth.users where phone = '49150000003'")
    healed = copy_auth_users(source, target)
    assert (healed.users_copied, healed.identities_copied) == (1, 1)
    assert rows(target_admin, users, USERS) == rows(source_admin, users, needed)

    # Without BYPASSRLS, auth.users' row-level security would hide every row: named, not guessed.
    role = f"cm_auth_nobypass_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(target_admin, autocommit=True) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f"grant usage on schema auth to {role}")
        conn.execute(f"grant select, insert on auth.users, auth.identities to {role}")
    try:
        with pytest.raises(MissingPrivilege, match=r"BYPASSRLS \(row-level security of auth.users"):
            copy_auth_users(source, SUPA_SERVER.format(user=role, db=tgt_db))
    finally:
        with psycopg.connect(target_admin, autocommit=True) as conn:
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")
