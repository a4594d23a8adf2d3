"""Reconciliation figures from batches and grouped ledger frames: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from reports.markdown import render_markdown
from reports.reconcile import (
    BATCH_TABLE,
    EXAMPLE_CHARS,
    HISTOGRAM,
    LINK_GROUPS,
    QUARANTINE_EXAMPLES,
    QUARANTINE_GROUPS,
    REPAIR_EXAMPLES,
    REPAIR_GROUPS,
    UNEXPLAINED,
    BatchRow,
    RunFacts,
    batch_table,
    confidence_histogram,
    example_text,
    run_report,
    run_settings,
)
from schemas.contract import LINK_METHODS, QUARANTINE_REASONS, REPAIR_KINDS

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RUN = "00000000-0000-4000-8000-000000000001"


def counts(
    source: int = 10, merged: int = 1, quarantined: int = 2, review: int = 0
) -> dict[str, Any]:
    """A batch's counts as flows.migrate.run_batch records them."""
    table = {
        "source": source,
        "migrated": source - merged - quarantined,
        "merged": merged,
        "quarantined": quarantined,
    }
    return {
        "users": 5,
        "rows": 40,
        "tables": {
            name: dict(table)
            for name in ("user_profiles", "saved_profiles", "tagged_models", "user_sessions")
        },
        "targets": {
            "user_profiles": 5,
            "circuit_configurations": 7,
            "user_sessions": 6,
            "tagged_models": 7,
        },
        "links": {"by_method": {"resnorm": 6, "session": 1}, "needs_review": review},
        "timings": {"extract": 0.5, "transform": 1.0, "validate": 0.25, "load": 0.25},
    }


def batch(no: int, status: str = "succeeded", **kw: Any) -> BatchRow:
    start = T0 + timedelta(seconds=no)
    return BatchRow(
        no,
        status,
        1 if status != "pending" else 0,
        "boom" if status == "failed" else None,
        counts(**kw) if status == "succeeded" else {"users": 5},
        2.0,
        start,
        start + timedelta(seconds=2),
    )


def facts(**kw: Any) -> RunFacts:
    base: dict[str, Any] = {
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=10),
        "target_rows": {
            "user_profiles": 10,
            "circuit_configurations": 14,
            "user_sessions": 12,
            "tagged_models": 14,
        },
        "links": pl.DataFrame(
            {
                "method": ["resnorm", "session", "resnorm"],
                "confidence": [0.99, 0.8, 0.495],
                "needs_review": [False, False, True],
                "links": [11, 2, 1],
            },
            schema=dict(LINK_GROUPS),
        ),
        "quarantine": pl.DataFrame(
            {
                "source_table": ["tagged_models", "user_profiles", "tagged_models"],
                "reason": ["no_user", "invalid_parameters", "invalid_parameters"],
                "rows": [3, 1, 4],
            },
            schema=dict(QUARANTINE_GROUPS),
        ),
        "repairs": pl.DataFrame(
            {
                "source_table": ["user_profiles", "tagged_models"],
                "kind": ["renamed_key", "string_number"],
                "field": ["circuit_parameters.Rsh", "circuit_parameters.Ra"],
                "rows": [2, 5],
            },
            schema=dict(REPAIR_GROUPS),
        ),
        "quarantine_examples": pl.DataFrame(
            {
                "reason": ["invalid_parameters", "no_user"],
                "source_table": ["tagged_models", "tagged_models"],
                "source_id": ["m-1", "m-2"],
                "detail": ["Rsh=-5", "user_id is null and no related row names a user"],
                "payload": ['{"Rsh": -5}', "x" * EXAMPLE_CHARS * 2],
            },
            schema=dict(QUARANTINE_EXAMPLES),
        ),
        "repair_examples": pl.DataFrame(
            {
                "kind": ["string_number", "renamed_key"],
                "source_table": ["tagged_models", "user_profiles"],
                "source_id": ["m-3", "p-1"],
                "field": ["circuit_parameters.Ra", "circuit_parameters.Rsh"],
                "original": ['"100"', "Rs"],
                "repaired": ["100.0", "Rsh"],
            },
            schema=dict(REPAIR_EXAMPLES),
        ),
        "options": {
            "source_schema": "legacy",
            "target_schema": "public",
            "batch_size": 500,
            "concurrency": 2,
            "link_overrides": "reviewed.csv",
            "decisions": "decisions.csv",
            "plan": {"mode": "full"},
        },
    }
    return RunFacts(**{**base, **kw})


def test_section_8_fields_are_there_with_their_names() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1), batch(2)], facts())
    assert {"run_id", "status", "tables", "links", "batches"} <= set(report)
    assert report["run_id"] == RUN and report["status"] == "succeeded"
    for name in ("user_profiles", "saved_profiles", "tagged_models", "user_sessions"):
        assert set(report["tables"][name]) == {"source", "migrated", "merged", "quarantined"}
    assert {"by_method", "needs_review"} <= set(report["links"])
    assert report["batches"] == {"total": 2, "succeeded": 2, "failed": 0}


def test_accounting_identity_and_targets() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1), batch(2)], facts())
    assert report["tables"]["tagged_models"] == {
        "source": 20,
        "migrated": 14,
        "merged": 2,
        "quarantined": 4,
    }
    assert all(report["identity"].values()) and report["accounting_balanced"]
    assert report["targets"]["circuit_configurations"] == {
        "expected": 14,
        "actual": 14,
        "match": True,
    }
    assert report["verdict"]["level"] == "ok"

    lost = {"user_profiles": {"source": 5, "migrated": 1, "merged": 0, "quarantined": 0}}
    broken = BatchRow(3, "succeeded", 1, None, {**counts(), "tables": lost})
    unbalanced = run_report(RUN, "succeeded", False, [batch(1), broken], facts())
    assert unbalanced["identity"]["user_profiles"] is False
    assert unbalanced["verdict"]["level"] == "failed"
    assert "user_profiles" in unbalanced["verdict"]["headline"]


def test_target_count_that_differs_fails_the_verdict() -> None:
    short = facts(
        target_rows={
            "user_profiles": 10,
            "circuit_configurations": 13,
            "user_sessions": 12,
            "tagged_models": 14,
        }
    )
    report = run_report(RUN, "succeeded", False, [batch(1), batch(2)], short)
    assert report["targets"]["circuit_configurations"]["match"] is False
    assert report["verdict"]["level"] == "failed"
    assert "circuit_configurations (expected 14, found 13)" in report["verdict"]["reasons"][0]
    # a dry run writes nothing: its counts are not compared
    dry = run_report(RUN, "succeeded", True, [batch(1), batch(2)], short)
    assert dry["verdict"]["level"] == "ok"


def test_links_by_method_review_and_histogram() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1, review=1), batch(2)], facts())
    links = report["links"]
    assert links["by_method"] == {"resnorm": 12, "session": 2}
    assert links["needs_review"] == 1 and links["decided"] == 14
    assert links["recorded"] == 14 and links["recorded_needs_review"] == 1
    assert links["superseded"] == 0
    histogram = {
        h["bin_from"]: (h["links"], h["needs_review"]) for h in links["confidence_histogram"]
    }
    assert histogram[0.9] == (11, 0) and histogram[0.8] == (2, 0) and histogram[0.4] == (1, 1)
    assert sum(n for n, _ in histogram.values()) == 14
    assert report["verdict"]["level"] == "review"


def test_histogram_bins_edges_and_float32_values() -> None:
    links = pl.DataFrame(
        {
            "method": ["a"] * 5,
            # as PostgreSQL real values come back: 0.7 is 0.699999988...
            "confidence": [0.0, float(pl.Series([0.7], dtype=pl.Float32)[0]), 0.5, 1.0, 0.99],
            "needs_review": [True, False, False, False, False],
            "links": [1, 2, 3, 4, 5],
        },
        schema=dict(LINK_GROUPS),
    )
    h = confidence_histogram(links)
    assert h.schema == pl.Schema(HISTOGRAM) and h.height == 10
    per_bin = dict(zip(h["bin_from"].round(1).to_list(), h["links"].to_list(), strict=True))
    assert per_bin[0.0] == 1 and per_bin[0.7] == 2 and per_bin[0.5] == 3 and per_bin[0.9] == 9
    assert h["needs_review"].sum() == 1


def test_quarantine_and_repairs_grouped_largest_first() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1), batch(2)], facts())
    assert report["quarantine"]["total"] == 8
    assert list(report["quarantine"]["by_reason"].items()) == [
        ("invalid_parameters", 5),
        ("no_user", 3),
    ]
    assert report["quarantine"]["by_table"][0] == {
        "source_table": "tagged_models",
        "reason": "invalid_parameters",
        "rows": 4,
    }
    assert report["repairs"]["by_kind"] == {"string_number": 5, "renamed_key": 2}
    assert report["repairs"]["total"] == 7


def test_batches_stages_and_rates() -> None:
    batches = [batch(1), batch(2), batch(3, "failed")]
    table = batch_table(batches, T0)
    assert table.schema == pl.Schema(BATCH_TABLE)
    first = table.row(0, named=True)
    assert first["rows_per_second"] == 20.0 and first["started_offset"] == 1.0
    assert table.row(2, named=True)["error"] == "boom"
    report = run_report(RUN, "failed", False, batches, facts())
    stages = report["stages"]
    assert list(stages) == ["extract", "transform", "validate", "load"]
    assert stages["transform"] == {"seconds": 2.0, "share": 0.5, "max_batch_seconds": 1.0}
    assert report["stage_seconds"]["load"] == 0.5
    assert report["wall_seconds"] == 10.0


def test_failed_batches_give_the_retry_command_everywhere() -> None:
    report = run_report(RUN, "failed", False, [batch(1), batch(2, "failed")], facts())
    command = f"circuit-migrate retry {RUN}"
    assert report["retry_command"] == command
    assert report["verdict"]["level"] == "failed"
    assert command in report["verdict"]["headline"]
    markdown = render_markdown(report)
    assert command in markdown and "batch 2 (failed): boom" in markdown
    clean = run_report(RUN, "succeeded", False, [batch(1)], facts())
    assert clean["retry_command"] is None
    assert "retry" not in render_markdown(clean)


@pytest.mark.parametrize("status", ["pending", "running"])
def test_unfinished_batches_are_not_a_clean_run(status: str) -> None:
    report = run_report(RUN, "running", False, [batch(1), batch(2, status)], facts())
    assert report["complete"] is False and report["verdict"]["level"] == "failed"
    assert report["retry_command"]


def test_markdown_lists_every_table_and_method() -> None:
    text = render_markdown(run_report(RUN, "succeeded", False, [batch(1, review=2)], facts()))
    for needle in (
        "| tagged_models | 10 | 7 | 1 | 2 | yes |",
        "| circuit_configurations | 7 |",
        "| resnorm | 6 |",
        "| tagged_models | invalid_parameters | 4 |",
        "| string_number | 5 |",
        "circuit-migrate review import FILE",
    ):
        assert needle in text, needle


def test_one_example_row_per_reason_and_kind() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1)], facts())
    examples = report["quarantine"]["examples"]
    assert examples["invalid_parameters"] == {
        "source_table": "tagged_models",
        "source_id": "m-1",
        "detail": "Rsh=-5",
        "payload": '{"Rsh": -5}',
    }
    assert len(examples["no_user"]["payload"]) == EXAMPLE_CHARS  # cut in report.json too
    assert report["repairs"]["examples"]["renamed_key"]["original"] == "Rs"
    assert example_text(examples["invalid_parameters"]) == (
        'tagged_models m-1: Rsh=-5; payload {"Rsh": -5}'
    )
    assert example_text(report["repairs"]["examples"]["string_number"]) == (
        'tagged_models m-3, circuit_parameters.Ra: "100" → 100.0'
    )
    assert example_text({"source_table": "t", "source_id": "1", "field": "f", "original": None,
                         "repaired": "x"}) == "t 1, f: null → x"  # fmt: skip
    bare = run_report(RUN, "succeeded", False, [batch(1)], RunFacts())
    assert bare["quarantine"]["examples"] == {} and bare["repairs"]["examples"] == {}


def test_settings_name_schemas_options_and_the_overrides_file() -> None:
    report = run_report(RUN, "succeeded", True, [batch(1)], facts())
    settings = dict(run_settings(report))
    assert settings["mode"] == "full, dry run (no target table written)"
    assert settings["source schema"] == "legacy" and settings["target schema"] == "public"
    assert settings["link overrides file"] == "reviewed.csv"
    assert settings["decisions"] == "decisions.csv"  # an option added later shows up as it is
    assert settings["started"] == "2025-01-01 00:00:00 UTC"
    assert "plan" not in settings and "incremental" not in settings
    assert dict(run_settings(run_report(RUN, "running", False, [], RunFacts())))["finished"] == (
        "not yet"
    )


def test_markdown_has_the_settings_at_the_top_and_explains_every_code() -> None:
    text = render_markdown(run_report(RUN, "succeeded", False, [batch(1)], facts()))
    top = text[: text.index("## Accounting")]
    for needle in ("| source schema | legacy |", "| target schema | public |",
                   "| link overrides file | reviewed.csv |", "| batch size | 500 |"):  # fmt: skip
        assert needle in top, needle
    assert (
        f"| invalid_parameters | 5 | {QUARANTINE_REASONS['invalid_parameters']} | "
        'tagged_models m-1: Rsh=-5; payload {"Rsh": -5} |'
    ) in text
    assert f"| renamed_key | 2 | {REPAIR_KINDS['renamed_key']} | " in text
    glossary = text[text.index("## Glossary") :]
    for code in (*QUARANTINE_REASONS, *REPAIR_KINDS, *LINK_METHODS):
        assert f"- `{code}`: " in glossary, code


def test_a_code_the_contract_does_not_know_is_flagged() -> None:
    odd = facts(
        quarantine=pl.DataFrame(
            {"source_table": ["tagged_models"], "reason": ["brand_new"], "rows": [1]},
            schema=dict(QUARANTINE_GROUPS),
        )
    )
    text = render_markdown(run_report(RUN, "succeeded", False, [batch(1)], odd))
    assert f"| brand_new | 1 | {UNEXPLAINED} |" in text
