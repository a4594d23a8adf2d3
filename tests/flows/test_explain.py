"""``explain ID`` against a real PostgreSQL, through the CLI: every kind of id, the answer read
back from straight ledger and target queries; every candidate of a flagged link recomputed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.flows.test_decisions import add_twins, last_run

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS, SEED = 30, 5


def query(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params or []).fetchall()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@dataclass(frozen=True)
class Migrated:
    url: str
    dry_run: str
    run: str
    dry_view: dict[str, Any]  # explain --json of a flagged model after the dry run only
    flagged: str

    def explain(self, item: str, *more: str, source: bool = True) -> dict[str, Any]:
        args = ["explain", item, "--target-url", self.url, "--json", *more]
        if source:
            args += ["--source-url", self.url, "--source-schema", "legacy"]
        code, out = invoke(*args)
        assert code == 0, out
        return dict(json.loads(out))

    def text(self, item: str) -> str:
        code, out = invoke(
            "explain", item, "--target-url", self.url, "--source-url", self.url, "--no-recompute"
        )
        assert code == 0, out
        return out

    def current(self, table: str, where: str = "true") -> list[tuple[Any, ...]]:
        """Rows of a ledger table in the current state (user_runs)."""
        return query(
            self.url,
            f"select x.* from migration.{table} x join migration.user_runs u"
            " on u.run_id = x.run_id and u.batch_no = x.batch_no"
            f" and u.user_key = coalesce(x.user_key, '') where {where}"
            " order by x.source_table, x.source_id",
        )


@pytest.fixture(scope="module")
def migrated(
    seeded_db: Callable[[int, int], str], tmp_path_factory: pytest.TempPathFactory
) -> Migrated:
    url = seeded_db(USERS, SEED)
    add_twins(url)
    reports = tmp_path_factory.mktemp("reports")
    common = ["--source-url", url, "--target-url", url, "--source-schema", "legacy"]
    common += ["--batch-size", "10", "--report-dir", str(reports)]
    code, out = invoke("run", *common, "--dry-run")
    assert code == 0, out
    dry = last_run(url)
    flagged = query(
        url,
        "select tagged_model_id::text from migration.review_list where run_id = %s and"
        " needs_review and jsonb_array_length(candidates) >= 3 order by tagged_model_id limit 1",
        [dry],
    )[0][0]
    code, out = invoke(
        "explain",
        flagged,
        "--target-url",
        url,
        "--source-url",
        url,
        "--source-schema",
        "legacy",
        "--json",
    )
    assert code == 0, out
    dry_view = json.loads(out)
    code, out = invoke("run", *common)
    assert code == 0, out
    return Migrated(url, dry, last_run(url), dry_view, flagged)


def only(document: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [s for s in document["subjects"] if s["kind"] == kind]
    assert len(found) == 1, [s["kind"] for s in document["subjects"]]
    return found[0]


def test_after_a_dry_run_it_shows_the_dry_runs_view(migrated: Migrated) -> None:
    model = only(migrated.dry_view, "tagged_model")
    assert model["written_by"]["run_id"] == migrated.dry_run
    assert model["written_by"]["dry_run"] and not model["written_by"]["current"]
    assert model["outcome"] == {
        "status": "migrated",
        "target_table": "tagged_models",
        "target_id": migrated.flagged,
        "dry_run": True,
        "in_target": False,
    }
    assert model["link"]["needs_review"] and migrated.dry_run in model["link"]["from"]
    assert len(model["candidates"]) >= 3


def test_a_flagged_model_has_every_candidate_scored(migrated: Migrated) -> None:
    url, model_id = migrated.url, migrated.flagged
    doc = only(migrated.explain(model_id), "tagged_model")
    (user,) = query(
        url, "select user_id::text from public.tagged_models where id = %s", [model_id]
    )[0]
    configs = {
        r[0]
        for r in query(
            url, "select id::text from public.circuit_configurations where user_id = %s", [user]
        )
    }
    assert {c["id"] for c in doc["candidates"]} == configs
    assert all(c["from"] == "recomputed" for c in doc["candidates"])
    assert sorted(c["rank"] for c in doc["candidates"]) == list(range(1, len(configs) + 1))
    (config, method, evidence) = query(
        url,
        "select circuit_config_id::text, method, evidence from migration.links"
        " where tagged_model_id = %s",
        [model_id],
    )[0]
    assert doc["link"]["circuit_config_id"] == config and doc["link"]["method"] == method
    linked = [c for c in doc["candidates"] if c["linked"]]
    assert [c["id"] for c in linked] == [config]
    # the recomputation gives what the run recorded for the two best (float32 sums: equal to
    # well within the tolerance the link decision uses, 1e-4)
    for recorded in evidence["top"]:
        mine = next(c for c in doc["candidates"] if c["id"] == recorded["id"])
        assert mine["resnorm"] == pytest.approx(recorded["resnorm"], rel=1e-5)
        assert mine["distance"] == pytest.approx(recorded["distance"], rel=1e-4)
        assert set(mine["evidence"]) == set(recorded["evidence"]) - {"override"}
    assert doc["candidates"][0]["id"] == evidence["top"][0]["id"]
    assert doc["recomputed"]["circuit_config_id"] == config
    assert doc["written_by"]["run_id"] == migrated.run and doc["written_by"]["current"]
    text = migrated.text(model_id)
    assert "needs review" in text and f"written by: run {migrated.run}" in text


def test_a_quarantined_and_a_merged_tagged_model(migrated: Migrated) -> None:
    url = migrated.url
    held = migrated.current("quarantine", "x.source_table = 'tagged_models'")[0]
    doc = only(migrated.explain(held[2]), "tagged_model")
    assert doc["outcome"]["status"] == "quarantined" and doc["outcome"]["reason"] == held[3]
    batch = query(
        url, "select run_id::text, batch_no from migration.user_runs where user_key = %s", [held[7]]
    )
    assert (doc["written_by"]["run_id"], doc["written_by"]["batch_no"]) == batch[0]
    assert doc["legacy"]["in_source"] and doc["candidates"] == []
    assert f"quarantined, reason {held[3]}" in migrated.text(held[2])
    merged = migrated.current("id_map", "x.source_table = 'tagged_models' and x.outcome = 'merged'")
    if merged:  # the generator's duplicates
        row = merged[0]
        doc = only(migrated.explain(row[2], "--no-recompute"), "tagged_model")
        assert doc["outcome"]["status"] == "merged"
        assert doc["outcome"]["target_id"] == str(row[4])
        assert doc["survivor"]["tagged_model_id"] == str(row[4])


def test_elements_by_position_and_by_their_own_id(migrated: Migrated) -> None:
    url = migrated.url
    row = migrated.current("id_map", "x.source_table = 'saved_profiles'")[0]
    element, target = row[2], str(row[4])
    doc = only(migrated.explain(element), "saved_profiles_element")
    assert doc["outcome"]["status"] == row[5] and doc["outcome"]["target_id"] == target
    own = doc["legacy"]["row"]["id"]
    session, index = element.split("#")
    in_source = query(
        url,
        "select saved_profiles->%s->>'id' from legacy.user_sessions where id = %s",
        [int(index), session],
    )
    assert in_source == [(own,)]
    by_own_id = migrated.explain(own)
    assert element in [s["id"] for s in by_own_id["subjects"]]
    # without the source an element's own id cannot be looked up: one line, exit 2
    code, out = invoke("explain", own, "--target-url", url)
    assert code == 2 and "--source-url" in out
    # its session lists every element with its fate
    doc = only(migrated.explain(session), "user_session")
    fates = {e["source_id"]: e["outcome"] for e in doc["elements"]}
    expected = {
        r[0]: r[1]
        for r in query(
            url,
            "select source_id, outcome from migration.id_map where run_id = %(r)s"
            " and source_table = 'saved_profiles' and source_id like %(s)s"
            " union all select source_id, 'quarantined' from migration.quarantine"
            " where run_id = %(r)s and source_table = 'saved_profiles' and source_id like %(s)s",
            {"r": doc["written_by"]["run_id"], "s": session + "#%"},  # type: ignore[arg-type]
        )
    }
    assert fates == expected and fates[element] == row[5]


def test_a_configuration_names_what_it_was_made_from(migrated: Migrated) -> None:
    url = migrated.url
    merged = migrated.current(
        "id_map", "x.target_table = 'circuit_configurations' and x.outcome = 'merged'"
    )[0]
    config = str(merged[4])
    doc = only(migrated.explain(config, source=False), "circuit_configuration")
    members = {
        (r[0], r[1], r[2])
        for r in query(
            url,
            "select source_table, source_id, outcome from migration.id_map"
            " where run_id = %s and target_id = %s",
            [doc["written_by"]["run_id"], config],
        )
    }
    assert {(m["source_table"], m["source_id"], m["outcome"]) for m in doc["members"]} == members
    assert doc["target"]["id"] == config
    # the merged legacy row itself says where it went
    kind = "saved_profiles_element" if merged[1] == "saved_profiles" else "circuit_configuration"
    source = only(migrated.explain(merged[2], source=False), kind)
    assert source["outcome"]["status"] == "merged" and source["outcome"]["target_id"] == config


def test_a_user_and_unknown_ids(migrated: Migrated) -> None:
    url = migrated.url
    user, profile = query(url, "select user_id::text, id::text from public.user_profiles limit 1")[
        0
    ]
    for item in (user, profile):
        doc = only(migrated.explain(item, source=False), "user")
        held = query(url, "select count(*) from public.tagged_models where user_id = %s", [user])[
            0
        ][0]
        assert doc["counts"]["tagged_models"] == held and doc["user"] == user
    code, out = invoke("explain", "00000000-0000-4000-8000-000000000000", "--target-url", url)
    assert code == 2 and "nothing has id" in out and "--source-url" in out
    code, out = invoke("explain", "not-a-session#x", "--target-url", url)
    assert code == 2 and "not an element id" in out


def test_ids_are_accepted_in_any_case_and_with_spaces(migrated: Migrated, tmp_path: Path) -> None:
    doc = migrated.explain(f"  {migrated.flagged.upper()} ", "--no-recompute")
    assert only(doc, "tagged_model")["id"] == migrated.flagged
