"""Review decisions live in the ledger: against a real PostgreSQL and Prefect, through the CLI.

One module story: a dry run writes the full review list; an unedited review.csv (and an earlier
one that came with the tool's guesses filled in) records nothing; a filled one records what it
should and rejects the rest; later runs, a retry and an incremental run honour the decisions
without the file; a decision that no longer applies is listed; ``--link-overrides`` imports and
runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.decisions import review_rows
from reports.review import REVIEW
from schemas import frames

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS, SEED = 40, 11
UNKNOWN = "00000000-0000-4000-8000-00000000dead"


def query(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params or []).fetchall()


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def last_run(url: str) -> str:
    return str(
        query(url, "select run_id::text from migration.runs order by started_at desc limit 1")[0][0]
    )


def add_twins(url: str) -> None:
    """Copy every circuit of the two users with most tagged models under another name: their
    models then match two configurations equally well and need review."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into legacy.user_profiles (id, user_id, name, description, parameters,"
            " grid_size, min_freq, max_freq, num_points, is_computed, created_at, updated_at)"
            " select gen_random_uuid(), user_id, name || ' (twin)', description, parameters,"
            " grid_size, min_freq, max_freq, num_points, is_computed, created_at, updated_at"
            " from legacy.user_profiles where user_id in (select user_id from"
            " legacy.tagged_models where user_id is not null group by user_id"
            " order by count(*) desc, user_id limit 2)"
        )


def link(url: str, model: str) -> tuple[str, str]:
    rows = query(
        url,
        "select circuit_config_id::text, method from migration.links where tagged_model_id = %s",
        [model],
    )
    assert len(rows) == 1, model
    return rows[0][0], rows[0][1]


def with_decisions(review: pl.DataFrame, decisions: dict[str, str]) -> pl.DataFrame:
    return review.with_columns(
        pl.col("tagged_model_id").replace_strict(decisions, default=None).alias("circuit_config_id")
    )


@dataclass(frozen=True)
class Story:
    url: str
    common: tuple[str, ...]
    reports: Path
    dry_run: str
    dry_review: pl.DataFrame
    a: dict[str, Any]  # chose its second candidate
    b: dict[str, Any]  # accepted the suggestion
    outputs: dict[str, str]
    filled: Path


@pytest.fixture(scope="module")
def story(seeded_db: Callable[[int, int], str], tmp_path_factory: pytest.TempPathFactory) -> Story:
    url = seeded_db(USERS, SEED)
    add_twins(url)
    reports = tmp_path_factory.mktemp("reports")
    files = tmp_path_factory.mktemp("files")
    common: tuple[str, ...] = ("--source-url", url, "--target-url", url)
    common += ("--source-schema", "legacy", "--batch-size", "20", "--report-dir", str(reports))
    outputs: dict[str, str] = {}
    cli("run", *common, "--dry-run")
    dry = last_run(url)
    review = pl.read_csv(reports / dry / "review.csv", infer_schema=False)
    # A and B: two flagged models of one user with two candidates each (one is re-synced later)
    pair = (
        review.filter(pl.col("candidate_2_id").is_not_null())
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("tagged_model_id"))
        .filter(pl.col("tagged_model_id").list.len() >= 2)
    )
    assert pair.height, "the twins should give one user two links to review"
    a_id, b_id = pair["tagged_model_id"][0].to_list()[:2]
    a = review.filter(pl.col("tagged_model_id") == a_id).row(0, named=True)
    b = review.filter(pl.col("tagged_model_id") == b_id).row(0, named=True)
    others = review.filter(pl.col("user_id") != a["user_id"])
    assert others.height, "both twin users should have links to review"
    c, d, e = (r for r in others.head(3).iter_rows(named=True))

    outputs["unedited"] = cli(
        "review", "import", str(reports / dry / "review.csv"), "--target-url", url
    )
    earlier = files / "earlier.csv"
    review.drop("suggested_config_id", "suggested_name").with_columns(
        pl.col("candidate_1_id").alias("circuit_config_id")  # the tool's guess, as it used to be
    ).write_csv(earlier)
    outputs["earlier"] = cli("review", "import", str(earlier), "--target-url", url, "--json")
    filled = files / "reviewed.csv"
    with_decisions(
        review,
        {
            a_id: a["candidate_2_id"],
            b_id: "accept",
            c["tagged_model_id"]: a["candidate_1_id"],  # another user's configuration
            d["tagged_model_id"]: UNKNOWN,
            e["tagged_model_id"]: "the twin one",
        },
    ).write_csv(filled)
    outputs["check"] = cli("review", "import", str(filled), "--target-url", url, "--check")
    outputs["after_check"] = str(
        query(url, "select count(*) from migration.review_decisions")[0][0]
    )
    outputs["import"] = cli("review", "import", str(filled), "--target-url", url, "--json")
    outputs["text"] = cli("review", "import", str(filled), "--target-url", url)
    return Story(url, common, reports, dry, review, a, b, outputs, filled)


def test_a_dry_run_writes_the_full_review_list(story: Story) -> None:
    review = story.dry_review
    assert review.columns == list(REVIEW)
    report = json.loads((story.reports / story.dry_run / "report.json").read_text())
    assert review.height == report["links"]["needs_review"] > 0
    assert review["circuit_config_id"].null_count() == review.height  # the decision column
    assert review["suggested_config_id"].null_count() == 0
    assert review["suggested_name"].null_count() == 0  # names from the dry run, not the target
    assert review["candidate_1_id"].null_count() == 0
    assert (review["suggested_config_id"] == review["candidate_1_id"]).all()
    assert query(story.url, "select count(*) from public.tagged_models") != [(review.height,)]
    stored = query(
        story.url, "select count(*) from migration.review_list where run_id = %s", [story.dry_run]
    )
    assert stored == [(review.height,)]


def test_an_unedited_review_file_records_nothing(story: Story) -> None:
    assert "nothing to record" in story.outputs["unedited"]
    earlier = json.loads(story.outputs["earlier"])
    assert earlier["unedited"] == story.dry_review.height and earlier["recorded"] == []


def test_a_filled_review_file_records_decisions_and_names_rejections(story: Story) -> None:
    assert "would record 2 decisions" in story.outputs["check"]
    assert story.outputs["after_check"] == "0"
    result = json.loads(story.outputs["import"])
    a, b = story.a, story.b
    assert sorted(
        (r["tagged_model_id"], r["circuit_config_id"], r["decision"]) for r in result["recorded"]
    ) == sorted(
        [
            (a["tagged_model_id"], a["candidate_2_id"], "choose"),
            (b["tagged_model_id"], b["suggested_config_id"], "accept"),  # resolved, not the word
        ]
    )
    assert result["by_reason"] == {"other_user": 1, "unknown_configuration": 1, "malformed": 1}
    assert result["undecided"] == story.dry_review.height - 5
    rows = query(
        story.url,
        "select tagged_model_id::text, decision, source_file, suggested_config_id::text,"
        " suggestion_run_id::text, decided_at is not null from migration.review_decisions"
        " order by decision desc",
    )
    assert [(r[0], r[1]) for r in rows] == [
        (a["tagged_model_id"], "choose"),
        (b["tagged_model_id"], "accept"),
    ]
    for row in rows:
        assert row[2] == str(story.filled.resolve()) and row[4] == story.dry_run and row[5]
    assert rows[0][3] == a["suggested_config_id"]
    # the same file again changes nothing
    text = story.outputs["text"]
    assert "recorded 0 decisions" in text and "2 already recorded" in text
    assert "another user's configuration" in text and UNKNOWN in text


@pytest.fixture(scope="module")
def runs(story: Story) -> dict[str, str]:
    """Runs after the import, none given the file: a full run, a retry, an incremental run that
    re-syncs A's user and drops A's chosen configuration, then --link-overrides."""
    url, a = story.url, story.a
    out: dict[str, str] = {}
    cli("run", *story.common)
    out["full"] = run = last_run(url)
    # break A's link by hand and fail its batch: the retry must restore the decision
    batch = query(
        url, "select batch_no from migration.user_runs where user_key = %s", [a["user_id"]]
    )
    with psycopg.connect(url) as conn:
        conn.execute(
            "update migration.links set method = 'time', circuit_config_id = %s"
            " where tagged_model_id = %s",
            [a["candidate_1_id"], a["tagged_model_id"]],
        )
        conn.execute(
            "update public.tagged_models set circuit_config_id = %s where id = %s",
            [a["candidate_1_id"], a["tagged_model_id"]],
        )
        conn.execute(
            "update migration.batches set status = 'failed' where run_id = %s and batch_no = %s",
            [run, batch[0][0]],
        )
    cli("retry", run, "--source-url", url, "--target-url", url, "--report-dir", str(story.reports))
    out["retried"] = str(link(url, a["tagged_model_id"]))
    # the configuration A's decision chose disappears from the legacy data
    with psycopg.connect(url) as conn:
        gone = conn.execute(
            "delete from legacy.user_profiles where id = %s", [a["candidate_2_id"]]
        ).rowcount
        assert gone == 1
    cli("run", *story.common, "--incremental")
    out["incremental"] = last_run(url)
    return out


def test_runs_honour_recorded_decisions_without_the_file(
    story: Story, runs: dict[str, str]
) -> None:
    url, a, b = story.url, story.a, story.b
    review = pl.read_csv(story.reports / runs["full"] / "review.csv", infer_schema=False)
    assert a["tagged_model_id"] not in review["tagged_model_id"].to_list()
    assert b["tagged_model_id"] not in review["tagged_model_id"].to_list()
    report = json.loads((story.reports / runs["full"] / "report.json").read_text())
    assert report["links"]["by_method"].get("override") == 2
    # the retry re-ran A's batch and restored the reviewer's choice
    assert runs["retried"] == str((a["candidate_2_id"], "override"))
    # the incremental run re-synced their user: B's decision still applies
    assert link(url, b["tagged_model_id"]) == (b["suggested_config_id"], "override")
    held = query(
        url,
        "select circuit_config_id::text from public.tagged_models where id = %s",
        [b["tagged_model_id"]],
    )
    assert held == [(b["suggested_config_id"],)]
    counts = query(
        url,
        "select sum((counts->'links'->'decisions'->>'applied')::int),"
        " sum((counts->'links'->'decisions'->>'not_applied')::int)"
        " from migration.batches where run_id = %s",
        [runs["incremental"]],
    )
    assert counts == [(1, 1)]


def test_a_decision_that_no_longer_applies_is_listed(story: Story, runs: dict[str, str]) -> None:
    a = story.a
    configuration, method = link(story.url, a["tagged_model_id"])
    assert method != "override" and configuration != a["candidate_2_id"]
    review = pl.read_csv(story.reports / runs["incremental"] / "review.csv", infer_schema=False)
    row = review.filter(pl.col("tagged_model_id") == a["tagged_model_id"]).row(0, named=True)
    assert row["recorded_decision"] == a["candidate_2_id"]
    assert "no longer one of the user's configurations" in row["decision_note"]
    assert row["circuit_config_id"] is None and row["suggested_config_id"] == configuration
    # still recorded: the reviewer decides again (or clears it)
    kept = query(
        story.url,
        "select circuit_config_id::text from migration.review_decisions where tagged_model_id = %s",
        [a["tagged_model_id"]],
    )
    assert kept == [(a["candidate_2_id"],)]


def test_rows_that_need_no_review_or_hold_nothing_to_clear_are_rejected(
    story: Story, runs: dict[str, str], tmp_path: Path
) -> None:
    url = story.url
    sure = query(
        url,
        "select tagged_model_id::text, circuit_config_id::text from migration.links"
        " where not needs_review and method = 'resnorm' order by tagged_model_id limit 1",
    )[0]
    undecided = story.dry_review.filter(
        ~pl.col("tagged_model_id").is_in([story.a["tagged_model_id"], story.b["tagged_model_id"]])
    )["tagged_model_id"][0]
    path = tmp_path / "more.csv"
    pl.DataFrame(
        {
            "tagged_model_id": [sure[0], undecided, story.b["tagged_model_id"]],
            "circuit_config_id": [sure[1], "clear", "CLEAR"],
        }
    ).write_csv(path)
    result = json.loads(cli("review", "import", str(path), "--target-url", url, "--json"))
    assert result["by_reason"] == {"no_longer_needs_review": 1, "nothing_to_clear": 1}
    assert result["cleared"] == [story.b["tagged_model_id"]]
    left = query(url, "select tagged_model_id::text from migration.review_decisions")
    assert left == [(story.a["tagged_model_id"],)]


def test_link_overrides_imports_then_runs(
    story: Story, runs: dict[str, str], tmp_path: Path
) -> None:
    url = story.url
    flagged = query(
        url,
        "select l.tagged_model_id::text, l.evidence->'top'->1->>'id' from migration.links l"
        " where l.needs_review and jsonb_array_length(l.evidence->'top') = 2"
        " and not exists (select 1 from migration.review_decisions d"
        "  where d.tagged_model_id = l.tagged_model_id)"
        " order by l.tagged_model_id limit 1",
    )[0]
    path = tmp_path / "shortcut.csv"
    pl.DataFrame({"tagged_model_id": [flagged[0]], "circuit_config_id": [flagged[1]]}).write_csv(
        path
    )
    cli("run", *story.common, "--link-overrides", str(path))
    assert link(url, flagged[0]) == (flagged[1], "override")
    recorded = query(
        url,
        "select circuit_config_id::text, source_file from migration.review_decisions"
        " where tagged_model_id = %s",
        [flagged[0]],
    )
    assert recorded == [(flagged[1], str(path.resolve()))]


def shaped(data: dict[str, list[Any]], schema: frames.Schema) -> pl.DataFrame:
    """A frame of ``schema`` with ``data``'s columns, the others null."""
    height = len(next(iter(data.values())))
    return frames.conform(
        pl.DataFrame({name: data.get(name, [None] * height) for name in schema}), schema
    )


M1, M2, M3, M4, M5 = (f"00000000-0000-4000-8000-00000000000{i}" for i in range(1, 6))
C1, C2, C9 = (f"00000000-0000-4000-9000-00000000000{i}" for i in (1, 2, 9))


def test_review_rows_list_flagged_links_and_every_decision_not_applied() -> None:
    links = pl.DataFrame(
        {
            "tagged_model_id": [M1, M2, M3],
            "circuit_config_id": [C1, C2, C1],
            "method": ["resnorm", "override", "resnorm"],
            "confidence": [0.495, 1.0, 0.99],
            "needs_review": [True, False, False],
            "evidence": ["{}", "{}", "{}"],
        },
        schema=frames.LINKS,
    )
    models = shaped(
        {"id": [M1, M2, M3], "user_id": ["u1"] * 3, "model_id": ["a", "b", "c"]},
        frames.TAGGED_MODELS,
    )
    configs = shaped(
        {"id": [C2, C1], "user_id": ["u1", "u1"], "name": ["two", "one"]},
        frames.CIRCUIT_CONFIGURATIONS,
    )
    id_map = shaped(
        {
            "source_table": ["tagged_models"],
            "source_id": [M4],
            "target_table": ["tagged_models"],
            "target_id": [M1],
            "outcome": ["merged"],
        },
        frames.ID_MAP,
    )
    quarantine = shaped(
        {"source_table": ["tagged_models"], "source_id": [M5], "reason": ["invalid_parameters"]},
        frames.QUARANTINE,
    )
    decisions = pl.DataFrame(
        {
            "tagged_model_id": [M2, M3, M4, M5, "00000000-0000-4000-8000-0000000000ff"],
            "circuit_config_id": [C2, C9, C1, C1, C1],  # the last one: not in this batch
        }
    )
    legacy = pl.DataFrame({"id": [M1, M2, M3, M4, M5], "user_key": ["u1"] * 5})
    rows = review_rows(links, models, configs, id_map, quarantine, decisions, legacy)
    by_model = {r["tagged_model_id"]: r for r in rows.iter_rows(named=True)}
    assert sorted(by_model) == [M1, M3, M4, M5]  # M2's decision applied: not listed
    assert by_model[M1]["needs_review"] and by_model[M1]["decision_note"] is None
    assert json.loads(by_model[M1]["candidates"]) == [
        {"id": C1, "name": "one"},
        {"id": C2, "name": "two"},
    ]
    assert "no longer one of the user's configurations" in by_model[M3]["decision_note"]
    assert by_model[M3]["decided_config_id"] == C9
    assert by_model[M4]["decision_note"] == f"the tagged model was merged into tagged model {M1}"
    assert "quarantined (invalid_parameters)" in by_model[M5]["decision_note"]
    assert by_model[M5]["circuit_config_id"] is None and by_model[M5]["user_key"] == "u1"
