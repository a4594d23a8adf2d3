"""Report files against a real PostgreSQL and Prefect: figures equal straight database counts,
valid HTML, the review file round-trips as overrides, and compare sees a damaged row.

One module fixture runs the story through the CLI: run 1 on data with twin configurations
(ambiguous links), run 2 with an edited review.csv as overrides, a legacy row damaged, run 3,
then ``report RUN3 --compare RUN2``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.runtime import flow_run as runtime_flow_run
from typer.testing import CliRunner

from flows import ledger
from flows.cli import app
from flows.report_files import (
    BATCHES_ARTIFACT_KEY,
    MARKDOWN_ARTIFACT_KEY,
    flow_run_url,
    migrate_flow_run_name,
    write_quarantine,
)
from reports.html import SECTIONS
from reports.reconcile import INDEX_FILE, REPORT_FILES
from schemas.contract import LINK_METHODS, QUARANTINE_REASONS, REPAIR_KINDS
from tests.reports.htmlcheck import html5_errors, section_ids

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS, SEED = 60, 11


def query(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params or []).fetchall()


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def saved_profile_items(text: str | None) -> int:
    """The items a session's ``saved_profiles`` counts as: an array's elements (also of an
    array the app wrote as a JSON string), else one malformed item; none when null."""
    if text is None:
        return 0
    value = json.loads(text)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return 1
    return len(value) if isinstance(value, list) else 1


def last_run(url: str) -> str:
    return str(
        query(url, "select run_id::text from migration.runs order by started_at desc limit 1")[0][0]
    )


@dataclass(frozen=True)
class Story:
    url: str
    reports: Path
    runs: tuple[str, str, str]
    edited_model: str
    chosen: str
    left_open: tuple[str, ...]
    damaged: str
    compare_output: str

    def report(self, run: int) -> dict[str, Any]:
        return dict(json.loads((self.reports / self.runs[run] / "report.json").read_text()))


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


@pytest.fixture(scope="module")
def story(seeded_db: Callable[[int, int], str], tmp_path_factory: pytest.TempPathFactory) -> Story:
    url = seeded_db(USERS, SEED)
    add_twins(url)
    reports = tmp_path_factory.mktemp("reports")
    common = ["--source-url", url, "--target-url", url, "--source-schema", "legacy"]
    common += ["--batch-size", "20", "--report-dir", str(reports)]
    cli("run", *common)
    run1 = last_run(url)

    review = pl.read_csv(reports / run1 / "review.csv", infer_schema=False)
    assert review.height >= 2, "the twins should give links to review"
    row = review.filter(pl.col("candidate_2_id").is_not_null()).row(0, named=True)
    edited = review.with_columns(
        pl.when(pl.col("tagged_model_id") == row["tagged_model_id"])
        .then(pl.col("candidate_2_id"))
        .otherwise(pl.lit(""))  # left open: not an override
        .alias("circuit_config_id")
    )
    overrides = reports / "overrides.csv"
    edited.write_csv(overrides)
    cli("run", *common, "--link-overrides", str(overrides))
    run2 = last_run(url)

    # damage a legacy tagged model that run 2 migrated without doubt
    damaged = query(
        url,
        "select t.id::text from public.tagged_models t join migration.links l"
        " on l.tagged_model_id = t.id where not l.needs_review and l.method = 'resnorm'"
        " order by t.id limit 1",
    )[0][0]
    with psycopg.connect(url) as conn:
        conn.execute(
            "update legacy.tagged_models set circuit_parameters = '{\"Rsh\": -5}' where id = %s",
            [damaged],
        )
    cli("run", *common, "--link-overrides", str(overrides))
    run3 = last_run(url)
    output = cli(
        "report", run3, "--target-url", url, "--report-dir", str(reports), "--compare", run2
    )
    left_open = tuple(m for m in review["tagged_model_id"].to_list() if m != row["tagged_model_id"])
    return Story(
        url,
        reports,
        (run1, run2, run3),
        row["tagged_model_id"],
        row["candidate_2_id"],
        left_open,
        damaged,
        output,
    )


def test_every_file_is_written_per_run(story: Story) -> None:
    for run in story.runs:
        assert sorted(
            p.name for p in (story.reports / run).iterdir() if "compare" not in p.name
        ) == sorted(REPORT_FILES)
    assert (story.reports / story.runs[2] / f"compare-{story.runs[1]}.json").is_file()


def test_report_figures_equal_database_counts(story: Story) -> None:
    url, run = story.url, story.runs[2]
    report = story.report(2)
    one = lambda sql: query(url, sql, [run])[0][0]  # noqa: E731
    source = {
        table: query(url, f"select count(*) from legacy.{table}")[0][0]
        for table in ("user_profiles", "tagged_models", "user_sessions")
    }
    source["saved_profiles"] = sum(
        saved_profile_items(text)
        for (text,) in query(url, "select saved_profiles::text from legacy.user_sessions")
    )
    quarantined = dict(
        query(
            url,
            "select source_table, count(*) from migration.quarantine where run_id = %s group by 1",
            [run],
        )
    )
    merged = dict(
        query(
            url,
            "select source_table, count(*) from migration.id_map where run_id = %s"
            " and outcome = 'merged' group by 1",
            [run],
        )
    )
    for table, counts in report["tables"].items():
        assert counts["source"] == source.get(table, 0), table  # app tables: none here
        assert counts["quarantined"] == quarantined.get(table, 0), table
        assert counts["merged"] == merged.get(table, 0), table
    for table in ("tagged_models", "user_sessions"):  # every migrated row keeps its id
        held = query(url, f"select count(*) from public.{table}")[0][0]
        assert report["tables"][table]["migrated"] == held
    for table, t in report["targets"].items():
        held = query(url, f"select count(*) from public.{table}")[0][0]
        assert t == {"expected": held, "actual": held, "match": True}, table
    by_method = dict(
        query(
            url, "select method, count(*) from migration.links where run_id = %s group by 1", [run]
        )
    )
    assert report["links"]["by_method"] == by_method
    assert report["links"]["needs_review"] == one(
        "select count(*) from migration.links where run_id = %s and needs_review"
    )
    histogram = sum(h["links"] for h in report["links"]["confidence_histogram"])
    assert histogram == one("select count(*) from migration.links where run_id = %s")
    reasons = dict(
        query(
            url,
            "select reason, count(*) from migration.quarantine where run_id = %s group by 1",
            [run],
        )
    )
    assert report["quarantine"]["by_reason"] == reasons
    kinds = dict(
        query(
            url, "select kind, count(*) from migration.repairs where run_id = %s group by 1", [run]
        )
    )
    assert report["repairs"]["by_kind"] == kinds
    statuses = dict(
        query(
            url,
            "select status, count(*) from migration.batches where run_id = %s group by 1",
            [run],
        )
    )
    assert report["batches"] == {
        "total": sum(statuses.values()),
        "succeeded": statuses.get("succeeded", 0),
        "failed": statuses.get("failed", 0),
    }
    folder = story.reports / run
    quarantine_csv = pl.read_csv(folder / "quarantine.csv", infer_schema=False)
    assert quarantine_csv.height == sum(quarantined.values())
    assert quarantine_csv.columns == ["source_table", "source_id", "reason", "detail", "payload"]
    assert pl.read_csv(folder / "review.csv").height == report["links"]["needs_review"]
    assert report["verdict"]["level"] == "review" and report["accounting_balanced"]


def test_quarantine_csv_is_streamed_from_the_ledger_row_for_row(
    story: Story, tmp_path: Path
) -> None:
    """quarantine.csv holds every quarantine row of the run, ordered by source table and id
    byte-wise, payloads (commas, quotes, line breaks) and nulls intact."""
    run = story.runs[0]
    extra = [
        ("user_sessions", "Zz", "no_user", None, '{"note": "a, \\"quoted\\"\\nline"}'),
        ("user_sessions", "aa", "no_user", "", None),
    ]
    with psycopg.connect(story.url) as conn, conn.transaction(force_rollback=True):
        conn.cursor().executemany(
            "insert into migration.quarantine (run_id, source_table, source_id, reason, detail,"
            " payload) values (%s, %s, %s, %s, %s, %s::jsonb)",
            [(run, *row) for row in extra],
        )
        expected = conn.execute(
            "select source_table, source_id, reason, detail, payload::text"
            " from migration.quarantine where run_id = %s",
            [run],
        ).fetchall()
        path = tmp_path / "quarantine.csv"
        assert write_quarantine(conn, run, path) == path.stat().st_size
    written = pl.read_csv(path, infer_schema=False)
    assert written.columns == ["source_table", "source_id", "reason", "detail", "payload"]
    key = [(r[0].encode(), r[1].encode()) for r in expected]
    assert written.rows() == [r for _, r in sorted(zip(key, expected, strict=True))]
    assert ("user_sessions", "aa", "no_user", "", None) in written.rows()
    assert not (tmp_path / "quarantine.csv.partial").exists()


def test_report_html_is_valid_html5_with_every_section(story: Story) -> None:
    page = (story.reports / story.runs[2] / "report.html").read_text()
    assert html5_errors(page) == []
    assert {key for key, _ in SECTIONS} <= section_ids(page)
    assert story.left_open[0] in page  # the review list names the flagged models


def test_review_csv_round_trips_as_overrides(story: Story) -> None:
    url = story.url
    link = query(
        url,
        "select circuit_config_id::text, method, needs_review from migration.links"
        " where tagged_model_id = %s",
        [story.edited_model],
    )
    assert link == [(story.chosen, "override", False)]
    target = query(
        url,
        "select circuit_config_id::text from public.tagged_models where id = %s",
        [story.edited_model],
    )
    assert target == [(story.chosen,)]
    assert story.report(1)["links"]["by_method"].get("override") == 1
    # rows left empty are no override: still flagged, still listed
    still = query(
        url,
        "select count(*) from migration.links"
        " where needs_review and tagged_model_id::text = any(%s)",
        [list(story.left_open)],
    )
    assert still == [(len(story.left_open),)]
    review2 = pl.read_csv(story.reports / story.runs[1] / "review.csv", infer_schema=False)
    assert story.edited_model not in review2["tagged_model_id"].to_list()


def test_compare_reports_the_newly_quarantined_row(story: Story) -> None:
    path = story.reports / story.runs[2] / f"compare-{story.runs[1]}.json"
    comparison = json.loads(path.read_text())
    assert comparison["run_id"] == story.runs[2]
    assert comparison["other_run_id"] == story.runs[1]
    new = comparison["quarantine"]["new"]
    assert [(q["source_table"], q["source_id"], q["reason"]) for q in new] == [
        ("tagged_models", story.damaged, "invalid_parameters")
    ]
    assert comparison["quarantine"]["gone"] == []
    assert comparison["tables"]["tagged_models"]["quarantined"]["change"] == 1
    assert comparison["tables"]["tagged_models"]["migrated"]["change"] == -1
    assert comparison["targets"]["tagged_models"]["actual"]["change"] is not None
    assert comparison["flagged_links"]["new"] == []
    assert "newly quarantined" in story.compare_output
    assert story.damaged in story.compare_output


def test_compare_uses_the_older_review_file_for_superseded_links(story: Story) -> None:
    # run 1's flagged links were re-linked by later runs: their list comes from its review.csv
    output = cli(
        "report", story.runs[1], "--target-url", story.url, "--report-dir", str(story.reports),
        "--compare", story.runs[0],
    )  # fmt: skip
    comparison = json.loads(
        (story.reports / story.runs[1] / f"compare-{story.runs[0]}.json").read_text()
    )
    assert comparison["flagged_links"]["complete"] is True
    gone = [f["tagged_model_id"] for f in comparison["flagged_links"]["gone"]]
    assert gone == [story.edited_model]
    assert "no longer flagged" in output


def test_rerendering_gives_the_same_report(story: Story) -> None:
    folder = story.reports / story.runs[2]
    before = {name: (folder / name).read_bytes() for name in REPORT_FILES}
    cli("report", story.runs[2], "--target-url", story.url, "--report-dir", str(story.reports))
    after = {name: (folder / name).read_bytes() for name in REPORT_FILES}
    assert after == before


def test_markdown_and_batch_table_are_prefect_artifacts(story: Story) -> None:
    with get_client(sync_client=True) as client:
        markdown = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[MARKDOWN_ARTIFACT_KEY]))
        )
        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[BATCHES_ARTIFACT_KEY]))
        )
    texts = [str(a.data) for a in markdown]
    for run in story.runs:
        assert sum(f"# Migration run {run}\n" in t for t in texts) == 1, run
    # run 1's report.md has not been re-rendered since: the artifact is the file
    first = (story.reports / story.runs[0] / "report.md").read_text()
    assert first in texts
    assert len(tables) >= 3 and all(a.type == "table" for a in tables)
    batches = story.report(2)["batches"]["total"]
    assert any(len(json.loads(str(a.data))) == batches for a in tables)


def test_index_lists_every_run_with_its_verdict_and_files(story: Story) -> None:
    page = (story.reports / INDEX_FILE).read_text()
    assert html5_errors(page) == []
    for run in story.runs:
        assert f'<a href="{run}/report.html">{run}</a>' in page
        level = story.report(story.runs.index(run))["verdict"]["level"]
        assert f'<span class="badge {level}">{level}</span>' in page
    newest_first = [page.index(run) for run in reversed(story.runs)]
    assert newest_first == sorted(newest_first)


def test_report_states_the_settings_and_an_example_per_code(story: Story) -> None:
    run, folder = story.runs[1], story.reports / story.runs[1]
    top = (folder / "report.md").read_text().split("## Accounting")[0]
    assert "| source schema | legacy |" in top and "| target schema | public |" in top
    assert f"| link overrides file | {story.reports / 'overrides.csv'} |" in top
    assert "| batch size | 20 |" in top
    report = story.report(1)
    first = query(
        story.url,
        "select distinct on (reason) reason, source_table, source_id from migration.quarantine"
        ' where run_id = %s order by reason, source_table collate "C", source_id collate "C"',
        [run],
    )
    examples = report["quarantine"]["examples"]
    assert {r: (e["source_table"], e["source_id"]) for r, e in examples.items()} == {
        r: (t, i) for r, t, i in first
    }
    assert set(report["repairs"]["examples"]) == set(report["repairs"]["by_kind"])
    # every code the run recorded is explained by the contract
    assert set(report["quarantine"]["by_reason"]) <= set(QUARANTINE_REASONS)
    assert set(report["repairs"]["by_kind"]) <= set(REPAIR_KINDS)
    assert set(report["links"]["by_method"]) <= set(LINK_METHODS)


def test_batch_times_are_the_clock_not_the_transaction_start(story: Story) -> None:
    """A batch is marked finished at the end of its load transaction: ``now()`` there would be
    the transaction's start and leave the load out of the batch's time."""
    run = story.runs[0]
    with psycopg.connect(story.url) as conn, conn.transaction(force_rollback=True):
        began = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
        ledger.start_batch(conn, run, 1)
        started = conn.execute(
            "select started_at from migration.batches where run_id = %s and batch_no = 1", [run]
        ).fetchone()[0]  # type: ignore[index]
        ledger.finish_batch(conn, run, 1, {})
        ledger.fail_batch(conn, run, 2, "boom")
        ends = conn.execute(
            "select finished_at from migration.batches where run_id = %s and batch_no in (1, 2)",
            [run],
        ).fetchall()
    assert began < started and all(began < end and started < end for (end,) in ends)


def test_cli_takes_latest_and_prints_json(story: Story) -> None:
    output = cli("report", "latest", "--target-url", story.url, "--report-dir", str(story.reports))
    assert str(story.reports / story.runs[2] / "report.html") in output
    runs = json.loads(cli("status", "--target-url", story.url, "--json"))
    assert [r["run_id"] for r in runs] == list(reversed(story.runs))
    assert all(r["batches"]["failed"] == 0 and r["seconds"] > 0 for r in runs)
    result = CliRunner().invoke(
        app, ["verify", "--source-url", story.url, "--target-url", story.url,
              "--source-schema", "legacy", "--json"],
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert result.exit_code == (0 if document["ok"] else 5), result.output
    assert document["users_checked"] > 0 and document["latest_run_id"] == story.runs[2]


def test_the_prefect_flow_run_is_named_after_the_run_and_linked(story: Story) -> None:
    @flow(name="migrate-named", flow_run_name=migrate_flow_run_name, persist_result=False)
    def named(run_id: str | None = None, retry: bool = False) -> str:
        return str(runtime_flow_run.id)

    run_id = str(uuid.uuid4())
    flow_run_id = named(run_id=run_id)
    retried = named(run_id=run_id, retry=True)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(uuid.UUID(flow_run_id)).name == run_id
        assert client.read_flow_run(uuid.UUID(retried)).name == f"retry-{run_id}"
    url = flow_run_url(run_id)
    assert url is not None and url.endswith(f"/runs/flow-run/{retried}")  # the latest one
    assert flow_run_url(str(uuid.uuid4())) is None
