"""JSON written as strings, as the real app's ``JSON.stringify(...)`` into jsonb columns left it:
decoded once (repair ``decoded_json_string``), then judged; a string that does not parse is a
quarantine whose detail says so. ``verify`` derives the same with its own SQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from flows.migrate import RunOptions, run_migration
from flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_harness")

OPTIONS = RunOptions(source_schema="legacy", batch_size=25, concurrency=2)
# Valid circuits written as JSON strings, in every jsonb column the migration reads.
STRINGIFY = """
update legacy.tagged_models set circuit_parameters = to_jsonb(circuit_parameters::text)
 where id in (select id from legacy.tagged_models where jsonb_typeof(circuit_parameters) = 'object'
              and id::text not in (select source_id from seed_truth.quarantine)
              order by id limit 60);
update legacy.user_profiles set parameters = to_jsonb(parameters::text)
 where id in (select id from legacy.user_profiles where jsonb_typeof(parameters) = 'object'
              order by id limit 15);
update legacy.user_sessions set saved_profiles = jsonb_set(saved_profiles, '{0,parameters}',
       to_jsonb((saved_profiles->0->'parameters')::text))
 where id in (select id from legacy.user_sessions where jsonb_typeof(saved_profiles) = 'array'
              and jsonb_typeof(saved_profiles->0->'parameters') = 'object' order by id limit 5);
update legacy.user_sessions set saved_profiles = to_jsonb(saved_profiles::text)
 where id in (select id from legacy.user_sessions where jsonb_typeof(saved_profiles) = 'array'
              and saved_profiles::text <> '[]' order by id desc limit 5);
"""
BROKEN = '{"Rsh": 100, "Ra": 5'


def rows(url: str, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or []).fetchall()


@pytest.fixture(scope="module")
def migrated(seeded_db: Callable[[int, int], str]) -> str:
    url = seeded_db(120, 31)
    with psycopg.connect(url) as conn:
        conn.execute(STRINGIFY.encode())
        conn.execute(
            "update legacy.tagged_models set circuit_parameters = to_jsonb(%s::text) where id ="
            " (select id from legacy.tagged_models where jsonb_typeof(circuit_parameters) ="
            " 'object' order by id desc limit 1)",
            [BROKEN],
        )
    assert run_migration(url, url, OPTIONS).status == "succeeded"
    return url


def test_strings_are_decoded_not_quarantined(migrated: str) -> None:
    stringified = rows(
        migrated,
        "select count(*) filter (where q.reason = 'invalid_parameters'), count(*)"
        " from legacy.tagged_models t left join migration.quarantine q"
        " on q.source_table = 'tagged_models' and q.source_id = t.id::text"
        " where jsonb_typeof(t.circuit_parameters) = 'string'"
        " and t.circuit_parameters #>> '{}' <> %s"
        " and t.id::text not in (select source_id from seed_truth.quarantine)",
        [BROKEN],
    )
    wrongly, total = stringified[0]
    assert total >= 60 and wrongly == 0
    decoded = dict(
        rows(
            migrated,
            "select field, count(*) from migration.repairs where kind = 'decoded_json_string'"
            " group by field",
        )
    )
    assert decoded["circuit_parameters"] > 40  # those of models that migrated
    assert decoded["parameters"] > 0 and decoded["saved_profiles"] > 0


def test_a_string_that_does_not_parse_is_quarantined_and_named(migrated: str) -> None:
    ((reason, detail),) = rows(
        migrated,
        "select q.reason, q.detail from migration.quarantine q join legacy.tagged_models t"
        " on q.source_id = t.id::text where t.circuit_parameters #>> '{}' = %s",
        [BROKEN],
    )
    assert reason == "invalid_parameters"
    assert "JSON string" in detail and "missing" not in detail


def test_verify_derives_the_same(migrated: str) -> None:
    result = verify(migrated, migrated, source_schema="legacy")
    assert result.ok, result.differences
