"""What changed between two runs: counts, newly quarantined rows, newly flagged links.

Everything is "this run" against "the other run": ``change = this - other``; ``new`` lists what
this run has and the other has not, ``gone`` the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from reports.reconcile import ACCOUNTING_KEYS

Schema = Mapping[str, pl.DataType | type[pl.DataType]]

QUARANTINE_KEYS: Schema = {
    "source_table": pl.String,
    "source_id": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}
"""A run's quarantined rows, as compare_runs reads them."""

FLAGGED: Schema = {
    "tagged_model_id": pl.String,
    "circuit_config_id": pl.String,
    "method": pl.String,
    "confidence": pl.Float64,
}
"""A run's links that need review, as compare_runs reads them."""


def _delta(other: int | None, this: int | None) -> dict[str, int | None]:
    change = None if other is None or this is None else this - other
    return {"other": other, "this": this, "change": change}


def _counts(other: Mapping[str, int], this: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    return {key: _delta(other.get(key, 0), this.get(key, 0)) for key in {*other, *this}}


def _sorted(mapping: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(mapping.items()))


def compare_runs(
    this: Mapping[str, Any],
    other: Mapping[str, Any],
    quarantine_this: pl.DataFrame,
    quarantine_other: pl.DataFrame,
    flagged_this: pl.DataFrame,
    flagged_other: pl.DataFrame,
    *,
    flagged_complete: bool = True,
) -> dict[str, Any]:
    """The comparison document (compare-<other>.json) of two ``run_report`` documents and their
    quarantine (``QUARANTINE_KEYS``) and flagged-link (``FLAGGED``) frames."""
    keys = ["source_table", "source_id"]
    q_this = quarantine_this.select(list(QUARANTINE_KEYS))
    q_other = quarantine_other.select(list(QUARANTINE_KEYS))
    new_q = q_this.join(q_other, on=keys, how="anti").sort(keys)
    gone_q = q_other.join(q_this, on=keys, how="anti").sort(keys)
    moved = (
        q_this.join(q_other, on=keys, how="inner", suffix="_other")
        .filter(pl.col("reason") != pl.col("reason_other"))
        .select(*keys, pl.col("reason_other").alias("other_reason"), pl.col("reason"))
        .sort(keys)
    )
    f_this = flagged_this.select(list(FLAGGED))
    f_other = flagged_other.select(list(FLAGGED))
    new_f = f_this.join(f_other, on="tagged_model_id", how="anti").sort("tagged_model_id")
    gone_f = f_other.join(f_this, on="tagged_model_id", how="anti").sort("tagged_model_id")
    tables = {
        name: {
            key: _delta(
                int(other["tables"].get(name, {}).get(key, 0)),
                int(this["tables"].get(name, {}).get(key, 0)),
            )
            for key in ACCOUNTING_KEYS
        }
        for name in sorted({*this["tables"], *other["tables"]})
    }
    targets = {
        name: {
            key: _delta(
                other.get("targets", {}).get(name, {}).get(key),
                this.get("targets", {}).get(name, {}).get(key),
            )
            for key in ("expected", "actual")
        }
        for name in {*this.get("targets", {}), *other.get("targets", {})}
    }
    return {
        "run_id": this["run_id"],
        "other_run_id": other["run_id"],
        "status": _delta_text(other["status"], this["status"]),
        "tables": tables,
        "targets": _sorted(targets),
        "links": {
            "by_method": _sorted(_counts(other["links"]["by_method"], this["links"]["by_method"])),
            "needs_review": _delta(other["links"]["needs_review"], this["links"]["needs_review"]),
        },
        "quarantine": {
            "total": _delta(
                other.get("quarantine", {}).get("total"), this.get("quarantine", {}).get("total")
            ),
            "by_reason": _sorted(
                _counts(
                    other.get("quarantine", {}).get("by_reason", {}),
                    this.get("quarantine", {}).get("by_reason", {}),
                )
            ),
            "new": new_q.to_dicts(),
            "gone": gone_q.to_dicts(),
            "reason_changed": moved.to_dicts(),
        },
        "flagged_links": {
            "complete": flagged_complete,
            "new": new_f.to_dicts(),
            "gone": gone_f.to_dicts(),
        },
    }


def _delta_text(other: str, this: str) -> dict[str, str]:
    return {"other": other, "this": this}
