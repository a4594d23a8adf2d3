"""Incremental re-sync: only users whose legacy digest changed, new or deleted are re-run, and
the target converges to what a full run gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from flows import extract
from flows.migrate import RunOptions, run_migration
from flows.report_files import read_run
from flows.verify import verify
from tests.flows.conftest import target_digest

pytestmark = pytest.mark.usefixtures("prefect_harness")

FULL = RunOptions(source_schema="legacy", batch_size=15, concurrency=2)
INCREMENTAL = RunOptions(source_schema="legacy", batch_size=15, concurrency=2, incremental=True)
TABLES = ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models")
NEW_USER = "ffffffff-0000-4000-8000-000000000001"


def q(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params or []).fetchall()


def row_versions(url: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Per target table: id -> (user_id, xmin): a row rewritten gets a new xmin."""
    return {
        t: {i: (u, x) for i, u, x in q(url, f"select id::text, user_id::text, xmin::text from {t}")}
        for t in TABLES
    }


# A user whose sessions hold only their own models and whose models sit in no null-user
# session: deleting their legacy rows changes no other user's data.
SELF_CONTAINED = """
select p.user_id::text from legacy.user_profiles p
 where not exists (select 1 from legacy.user_sessions s join legacy.tagged_models t
                     on t.session_id = s.id
                    where s.user_id = p.user_id and t.user_id is distinct from p.user_id)
   and not exists (select 1 from legacy.tagged_models t join legacy.user_sessions s
                     on s.id = t.session_id
                    where t.user_id = p.user_id and s.user_id is null)
   and exists (select 1 from public.user_profiles u where u.user_id = p.user_id)
 group by p.user_id order by p.user_id::text
"""


def test_incremental_run_touches_only_changed_users_and_converges(
    seeded_db: Callable[[int, int], str],
) -> None:
    url = seeded_db(60, 11)
    first = run_migration(url, url, FULL)
    assert first.status == "succeeded" and first.plan["mode"] == "full"
    keys = q(url, "select count(*) from migration.user_digests")[0][0]
    assert keys == first.plan["users_planned"] > 50

    # Nothing changed: an incremental run plans no user (only the orphan batch, if any).
    idle = run_migration(url, url, INCREMENTAL)
    assert idle.plan["users_planned"] == 0 and idle.plan["users_unchanged"] == keys
    assert all(b.counts["users"] == 0 for b in idle.batches)

    candidates = [r[0] for r in q(url, SELF_CONTAINED)]
    changed, deleted = candidates[0], candidates[-1]
    before = row_versions(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "update legacy.user_profiles set description = 'edited in the legacy app'"
            " where id = (select min(id::text)::uuid from legacy.user_profiles"
            " where user_id = %s)",
            [changed],
        )
        for table in ("tagged_models", "user_sessions", "user_profiles"):
            conn.execute(f"delete from legacy.{table} where user_id = %s", [deleted])
        conn.execute(
            "insert into auth.users (id, email, raw_user_meta_data)"
            " values (%s, 'new@example.org', '{\"full_name\": \"New User\"}')",
            [NEW_USER],
        )
        conn.execute(
            "insert into legacy.user_profiles (user_id, name, parameters)"
            " values (%s, 'fresh circuit',"
            ' \'{"Rsh": 100, "Ra": 1000, "Ca": 1e-6, "Rb": 800, "Cb": 2e-6}\')',
            [NEW_USER],
        )

    summary = run_migration(url, url, INCREMENTAL)
    assert summary.status == "succeeded"
    assert summary.plan == {
        "mode": "incremental",
        "users_new": 1,
        "users_changed": 1,
        "users_deleted": 1,
        "users_unchanged": keys - 2,
        "users_planned": 3,
    }
    planned = q(
        url,
        "select jsonb_array_elements_text(user_keys) from migration.batches"
        " where run_id = %s and user_keys is not null",
        [summary.run_id],
    )
    assert sorted(r[0] for r in planned) == sorted([changed, deleted, NEW_USER])

    # The deleted user is gone from the target; the new one arrived; the others are untouched.
    for table in TABLES:
        assert q(url, f"select count(*) from {table} where user_id = %s", [deleted]) == [(0,)]
    assert (
        q(url, "select count(*) from circuit_configurations where user_id = %s", [NEW_USER])[0][0]
        == 1
    )
    after = row_versions(url)
    touched = {changed, deleted, NEW_USER}
    for table in TABLES:
        for row_id, (user, xmin) in before[table].items():
            if user not in touched:
                assert after[table][row_id] == (user, xmin), (table, row_id)
    edited = q(
        url,
        "select count(*) from circuit_configurations where user_id = %s"
        " and description = 'edited in the legacy app'",
        [changed],
    )
    assert edited == [(1,)]
    digests = dict(q(url, "select user_key::text, run_id::text from migration.user_digests"))
    assert deleted not in digests and digests[NEW_USER] == summary.run_id
    with psycopg.connect(url, autocommit=True) as conn:
        extract.use_snapshot(conn, None)
        source = extract.user_digests(conn, "legacy")
        conn.execute("rollback")
    stored = dict(q(url, "select user_key::text, digest from migration.user_digests"))
    assert stored == source

    # The report says how many users were skipped.
    with psycopg.connect(url) as conn:
        data = read_run(conn, summary.run_id, lists=False)
    assert data.report["sync"]["users_unchanged"] == keys - 2
    assert data.report["verdict"]["level"] != "failed", data.report["verdict"]

    # the ledger carries every user's state forward: verify passes right after it
    result = verify(url, url, source_schema="legacy")
    assert result.ok, result.differences

    # A full run now changes nothing: the incremental run converged to the full result.
    digest = target_digest(url)
    full = run_migration(url, url, FULL)
    assert full.status == "succeeded"
    assert target_digest(url) == digest
    for batch in full.batches:
        written = batch.counts["written"]
        assert set(written["upserted"].values()) == {0}, batch.batch_no
        assert set(written["deleted"].values()) == {0}, batch.batch_no
    assert verify(url, url, source_schema="legacy").ok


def test_failed_user_list_batch_is_retried_with_its_list(
    seeded_db: Callable[[int, int], str],
) -> None:
    url = seeded_db(30, 12)
    run_migration(url, url, FULL)
    victim = q(url, SELF_CONTAINED)[0][0]
    with psycopg.connect(url) as conn:
        conn.execute(
            "update legacy.user_profiles set name = name || ' (renamed)' where user_id = %s",
            [victim],
        )
        conn.execute(
            "create function refuse() returns trigger language plpgsql as $$ begin"
            " raise exception 'refused for test'; end $$;"
            "create trigger refuse before insert or update on public.circuit_configurations"
            " for each row execute function refuse()"
        )
    failed = run_migration(url, url, INCREMENTAL)
    assert failed.status == "failed" and failed.plan["users_planned"] == 1
    # the failed batch wrote no digest: the user stays due
    stale = q(url, "select count(*) from migration.user_digests where user_key = %s", [victim])
    assert stale == [(1,)]
    with psycopg.connect(url) as conn:
        conn.execute("drop trigger refuse on public.circuit_configurations")
    retried = run_migration(url, url, INCREMENTAL, run_id=failed.run_id, retry=True)
    assert retried.status == "succeeded"
    users = [b.counts["users"] for b in retried.batches if b.counts.get("kind") == "users"]
    assert users == [1]
    renamed = q(
        url,
        "select count(*) from circuit_configurations"
        " where user_id = %s and name like '%%(renamed)'",
        [victim],
    )
    assert renamed[0][0] >= 1
    again = run_migration(url, url, INCREMENTAL)
    assert again.plan["users_planned"] == 0
