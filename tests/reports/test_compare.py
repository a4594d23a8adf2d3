"""Comparison of two runs: count deltas, newly quarantined rows, newly flagged links."""

from __future__ import annotations

from typing import Any

import polars as pl

from reports.compare import FLAGGED, QUARANTINE_KEYS, compare_runs
from reports.reconcile import run_report
from tests.reports.test_reconcile import RUN, batch, facts

OTHER = "00000000-0000-4000-8000-000000000002"


def quarantine(*rows: tuple[str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        [(t, i, r, "detail") for t, i, r in rows], schema=dict(QUARANTINE_KEYS), orient="row"
    )


def flagged(*ids: str) -> pl.DataFrame:
    return pl.DataFrame(
        [(i, "c", "resnorm", 0.495) for i in ids], schema=dict(FLAGGED), orient="row"
    )


def reports() -> tuple[dict[str, Any], dict[str, Any]]:
    other = run_report(OTHER, "succeeded", False, [batch(1), batch(2)], facts())
    this = run_report(RUN, "succeeded", False, [batch(1, quarantined=3), batch(2)], facts())
    return this, other


def test_counts_change_per_table() -> None:
    this, other = reports()
    result = compare_runs(
        this, other, quarantine(), quarantine(), flagged(), flagged(), flagged_complete=True
    )
    assert result["run_id"] == RUN and result["other_run_id"] == OTHER
    tagged = result["tables"]["tagged_models"]
    assert tagged["quarantined"] == {"other": 4, "this": 5, "change": 1}
    assert tagged["migrated"]["change"] == -1 and tagged["source"]["change"] == 0
    assert result["links"]["needs_review"] == {"other": 0, "this": 0, "change": 0}
    assert result["targets"]["tagged_models"]["actual"]["change"] == 0


def test_new_gone_and_changed_quarantine_rows() -> None:
    this, other = reports()
    result = compare_runs(
        this,
        other,
        quarantine(("tagged_models", "a", "no_user"), ("user_profiles", "b", "invalid_parameters")),
        quarantine(("tagged_models", "a", "unknown_user"), ("user_sessions", "c", "no_user")),
        flagged("m1", "m2"),
        flagged("m2", "m3"),
    )
    q = result["quarantine"]
    assert [(r["source_table"], r["source_id"], r["reason"]) for r in q["new"]] == [
        ("user_profiles", "b", "invalid_parameters")
    ]
    assert [r["source_id"] for r in q["gone"]] == ["c"]
    assert q["reason_changed"] == [
        {
            "source_table": "tagged_models",
            "source_id": "a",
            "other_reason": "unknown_user",
            "reason": "no_user",
        }
    ]
    f = result["flagged_links"]
    assert [r["tagged_model_id"] for r in f["new"]] == ["m1"]
    assert [r["tagged_model_id"] for r in f["gone"]] == ["m3"]
    assert f["complete"] is True
