"""Hostile values never fail a batch or a run (DESIGN.md section 6): each is quarantined with a
detail that names the column and the value, payloads keep the source's text, the resnorm's
memory stays bounded, and ``verify`` derives the same decisions with its own SQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from flows.migrate import RunOptions, run_migration
from flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_harness")

DEEP = 10_000
# (statement on the first rows of a generated legacy database, source table, expected reason,
# text the detail must hold); ``{id}`` is the id of the row the statement changes.
CASES = [
    (
        "update legacy.tagged_models set tagged_at = 'infinity' where id = '{id}'",
        "tagged_models",
        "invalid_value",
        "tagged_at=infinity",
    ),
    (
        "update legacy.tagged_models set tagged_at = '-infinity' where id = '{id}'",
        "tagged_models",
        "invalid_value",
        "tagged_at=-infinity",
    ),
    (
        "update legacy.user_sessions set created_at = '10000-01-01' where id = '{id}'",
        "user_sessions",
        "invalid_value",
        "created_at=10000-01-01",
    ),
    (
        "update legacy.user_profiles set min_freq = 1e400 where id = '{id}'",
        "user_profiles",
        "invalid_frequency_range",
        "min_freq=inf",
    ),
    (
        "update legacy.user_profiles set computation_time = 1e400 where id = '{id}'",
        "user_profiles",
        "invalid_value",
        "computation_time=1",
    ),
    (
        "update legacy.tagged_models set circuit_parameters ="
        " jsonb_set(circuit_parameters, '{Rsh}', '1e400') where id = '{id}'",
        "tagged_models",
        "invalid_parameters",
        "Rsh=1",
    ),
    (
        "update legacy.tagged_models set circuit_parameters = jsonb_set(circuit_parameters,"
        " '{deep}', (repeat('[', {DEEP}) || repeat(']', {DEEP}))::jsonb) where id = '{id}'",
        "tagged_models",
        "invalid_parameters",
        "unreadable",
    ),
    (
        "update legacy.user_sessions set saved_profiles ="
        " ('[{\"name\": \"x\", \"parameters\": ' || repeat('[', 5000) || repeat(']', 5000)"
        " || '}]')::jsonb where id = '{id}'",
        "saved_profiles",
        "malformed_saved_profiles",
        "not a JSON array",
    ),
]
TABLE_OF = {"saved_profiles": "user_sessions"}


def sql(url: str, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(query.encode() if params is None else query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def hostile(seeded_db: Callable[[int, int], str]) -> tuple[str, list[tuple[str, str, str, str]]]:
    """A generated database with one hostile value per case (on distinct valid rows), a
    saved_profiles array holding a very precise number and a null element, migrated."""
    url = seeded_db(60, 17)
    planted = []
    used: set[str] = set()
    for statement, table, reason, text in CASES:
        source = TABLE_OF.get(table, table)
        extra = "and jsonb_typeof(saved_profiles) = 'array'" if table == "saved_profiles" else ""
        row = sql(
            url,
            f"select id::text from legacy.{source} where id::text not in"
            " (select source_id from seed_truth.quarantine)"
            " and user_id in (select id from auth.users)"
            f" and id::text <> all(%s) {extra} order by id limit 1",
            [sorted(used) or [""]],
        )
        row_id = row[0][0]
        used.add(row_id)
        sql(url, statement.replace("{id}", row_id).replace("{DEEP}", str(DEEP)))
        planted.append(
            (table, row_id if table != "saved_profiles" else f"{row_id}#*", reason, text)
        )
    session = sql(
        url,
        "select id::text from legacy.user_sessions where user_id in (select id from auth.users)"
        " and id::text <> all(%s) order by id desc limit 1",
        [sorted(used)],
    )[0][0]
    sql(
        url,
        "update legacy.user_sessions set saved_profiles ="
        ' \'[{"name": "precise", "parameters": {"Rsh": 100.00000000000000000001}}, null]\''
        f" where id = '{session}'",
    )
    planted.append(("saved_profiles", f"{session}#1", "malformed_element", "not a JSON object"))
    summary = run_migration(url, url, RunOptions(source_schema="legacy", batch_size=20))
    assert summary.status == "succeeded", [b.error for b in summary.batches]
    return url, planted


def test_each_hostile_value_is_quarantined_naming_its_column(
    hostile: tuple[str, list[tuple[str, str, str, str]]],
) -> None:
    url, planted = hostile
    for table, source_id, reason, text in planted:
        found = sql(
            url,
            "select reason, detail from migration.quarantine where source_table = %s"
            " and source_id = %s",
            [table, source_id],
        )
        assert found, (table, source_id)
        assert found[0][0] == reason, (table, source_id, found)
        assert text in (found[0][1] or ""), (table, source_id, found)


def test_payloads_keep_the_source_text(
    hostile: tuple[str, list[tuple[str, str, str, str]]],
) -> None:
    url, planted = hostile
    session = planted[-1][1].split("#")[0]
    (payload,) = sql(
        url,
        "select payload::text from migration.quarantine where source_id = %s",
        [f"{session}#1"],
    )[0]
    assert payload == "null"  # the null element, not the text "null"
    (precise,) = sql(
        url,
        "select saved_profiles->0->'parameters'->>'Rsh' from legacy.user_sessions where id = %s",
        [session],
    )[0]
    assert precise == "100.00000000000000000001"


def test_verify_agrees(hostile: tuple[str, list[tuple[str, str, str, str]]]) -> None:
    url, _ = hostile
    result = verify(url, url, source_schema="legacy")
    assert result.ok, result.differences


def test_absurd_grids_bound_the_resnorm(seeded_db: Callable[[int, int], str]) -> None:
    url = seeded_db(10, 19)
    sql(
        url,
        "update legacy.user_profiles set num_points = 1000000000, grid_size = 2147483647"
        " where id = (select min(id::text)::uuid from legacy.user_profiles)",
    )
    summary = run_migration(url, url, RunOptions(source_schema="legacy", batch_size=20))
    assert summary.status == "succeeded"
    assert verify(url, url, source_schema="legacy").ok
