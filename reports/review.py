"""The review list as a fixed-column frame and the quarantine list's columns (the flow writes
both as CSV; quarantine.csv is streamed straight from the ledger, never held in memory).

``review.csv`` is a form for the reviewer. The tool's suggestion is in its own columns
(``suggested_config_id``, ``suggested_name``, the candidates and their evidence); the decision
column, ``circuit_config_id``, is always written empty. The reviewer fills it with a candidate's
id, or ``accept`` to confirm the suggestion (``clear`` withdraws an earlier decision), and
records the file with ``circuit-migrate review import`` (``flows.decisions``): a file passed
back unedited records nothing. A recorded decision the run could not apply is listed again
with ``recorded_decision`` and the reason in ``decision_note``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from schemas.frames import QUARANTINE

Schema = Mapping[str, pl.DataType | type[pl.DataType]]

REVIEW_LINKS: Schema = {
    "tagged_model_id": pl.String,
    "circuit_config_id": pl.String,
    "method": pl.String,
    "confidence": pl.Float64,
    "user_id": pl.String,
    "model_id": pl.String,
    "tag_name": pl.String,
    "evidence": pl.String,
    "decided_config_id": pl.String,
    "decision_note": pl.String,
}
"""A run's review list as the ledger holds it (input of review_frame): the run's link of each
model (``circuit_config_id``: its suggestion), and a recorded decision it did not apply."""

CONFIG_NAMES: Schema = {"id": pl.String, "name": pl.String, "user_id": pl.String}
"""The configurations of the listed models' users: every candidate, with its name."""

QUARANTINE_ROWS: Schema = QUARANTINE
"""quarantine.csv: source_table, source_id, reason, detail, payload (the original, as JSON)."""

REVIEW_CANDIDATES = 2
"""Candidates given their own columns (``other_candidates`` names the rest of the user's)."""

ACCEPT = "accept"
"""The decision that confirms the tool's suggestion."""
CLEAR = "clear"
"""The decision that withdraws a recorded decision."""

_EVIDENCE = pl.Struct(
    {
        "stored_resnorm": pl.Float64,
        "candidates": pl.Int64,
        "top": pl.List(
            pl.Struct(
                {
                    "id": pl.String,
                    "resnorm": pl.Float64,
                    "distance": pl.Float64,
                    "evidence": pl.List(pl.String),
                }
            )
        ),
    }
)


def _candidate_columns(k: int) -> dict[str, pl.DataType | type[pl.DataType]]:
    return {
        f"candidate_{k}_id": pl.String,
        f"candidate_{k}_name": pl.String,
        f"candidate_{k}_resnorm": pl.Float64,
        f"candidate_{k}_distance": pl.Float64,
        f"candidate_{k}_evidence": pl.String,
    }


REVIEW: Schema = {
    "tagged_model_id": pl.String,
    "circuit_config_id": pl.String,
    "suggested_config_id": pl.String,
    "suggested_name": pl.String,
    "method": pl.String,
    "confidence": pl.Float64,
    "user_id": pl.String,
    "model_id": pl.String,
    "tag_name": pl.String,
    "stored_resnorm": pl.Float64,
    "candidates": pl.Int64,
    **{
        name: dtype
        for k in range(1, REVIEW_CANDIDATES + 1)
        for name, dtype in _candidate_columns(k).items()
    },
    "other_candidates": pl.String,
    "recorded_decision": pl.String,
    "decision_note": pl.String,
    "evidence": pl.String,
}
"""review.csv, in this column order. ``circuit_config_id`` is the reviewer's column (written
empty): a candidate's id, ``accept`` or ``clear``; the rest is context."""

DECISION_COLUMN = "circuit_config_id"
"""The column of review.csv the reviewer fills."""


def review_frame(links: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    """review.csv (shape ``REVIEW``) from a run's review list (``REVIEW_LINKS``) and the
    configurations of its users (``CONFIG_NAMES``); rows in the order of ``links``, the
    decision column empty."""
    lookup = names.select("id", "name").unique("id", keep="first")
    evidence = pl.col("evidence").str.json_decode(_EVIDENCE)
    base = links.with_row_index("_row").with_columns(
        evidence.struct.field("stored_resnorm").alias("stored_resnorm"),
        evidence.struct.field("candidates").alias("candidates"),
        evidence.struct.field("top").alias("_top"),
        pl.col("circuit_config_id").alias("suggested_config_id"),
        pl.col("decided_config_id").alias("recorded_decision"),
        pl.lit(None, dtype=pl.String).alias("circuit_config_id"),
    )
    base = base.join(
        lookup.rename({"id": "suggested_config_id", "name": "suggested_name"}),
        on="suggested_config_id",
        how="left",
    )
    for k in range(1, REVIEW_CANDIDATES + 1):
        top = pl.col("_top").list.get(k - 1, null_on_oob=True)
        base = base.with_columns(
            top.struct.field("id").alias(f"candidate_{k}_id"),
            top.struct.field("resnorm").alias(f"candidate_{k}_resnorm"),
            top.struct.field("distance").alias(f"candidate_{k}_distance"),
            top.struct.field("evidence").list.join(";").alias(f"candidate_{k}_evidence"),
        ).join(
            lookup.rename({"id": f"candidate_{k}_id", "name": f"candidate_{k}_name"}),
            on=f"candidate_{k}_id",
            how="left",
        )
    base = base.join(_others(base, names), on="_row", how="left")
    base = base.with_columns(pl.col("confidence").round(4))  # a real in the ledger
    return base.sort("_row").select([pl.col(c).cast(t) for c, t in REVIEW.items()])


def _others(base: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    """Per row (``_row``), ``other_candidates``: the user's configurations that have no columns
    of their own, as ``name <id>`` joined by ``; `` (ordered by name, then id)."""
    shown = [f"candidate_{k}_id" for k in range(1, REVIEW_CANDIDATES + 1)]
    pairs = (
        base.select("_row", "user_id", *shown)
        .filter(pl.col("user_id").is_not_null())
        .join(
            names.select("user_id", "id", "name").filter(pl.col("user_id").is_not_null()),
            on="user_id",
        )
        .filter(~pl.any_horizontal([pl.col("id") == pl.col(c) for c in shown]).fill_null(False))
        .sort("_row", "name", "id", nulls_last=True)
    )
    text = pl.format("{} <{}>", pl.col("name").fill_null("(unnamed)"), pl.col("id"))
    return pairs.group_by("_row").agg(text.str.join("; ").alias("other_candidates"))


REASONS = {
    "malformed": "malformed",
    "conflicting": "conflicting rows",
    "unknown_model": "unknown tagged model",
    "no_longer_needs_review": "no longer needs review",
    "unknown_configuration": "unknown configuration id",
    "other_user": "another user's configuration",
    "not_a_candidate": "not one of the model's candidates",
    "no_suggestion": "no suggestion to accept",
    "nothing_to_clear": "no recorded decision to clear",
}
"""Why ``review import`` rejects a row (key: as in ``--json``; value: as printed)."""


def import_lines(result: Mapping[str, Any], examples: int = 5) -> list[str]:
    """What ``review import`` says: what it recorded, left alone and rejected (``examples``
    rows named per kind), from ``flows.decisions.ImportResult.as_dict()``."""
    recorded: Sequence[Mapping[str, Any]] = result["recorded"]
    rejected: Sequence[Mapping[str, Any]] = result["rejected"]
    cleared: Sequence[str] = result["cleared"]
    verb = "would record" if result["checked_only"] else "recorded"
    lines = [
        f"{result['source_file']}: {result['rows_read']:,} rows; {verb} {len(recorded):,}"
        f" decisions, {len(cleared):,} cleared, {result['unchanged']:,} already recorded,"
        f" {len(rejected):,} rejected, {result['undecided']:,} left empty (undecided)"
    ]
    if not recorded and not cleared and not rejected and not result["unchanged"]:
        lines.append(
            f"nothing to record: no row has a decision in {DECISION_COLUMN} (a candidate's id,"
            f" {ACCEPT} or {CLEAR})"
        )
    if result["unedited"]:
        lines.append(
            f"{result['unedited']:,} rows of an earlier review.csv still hold the tool's own choice"
            f" in {DECISION_COLUMN}: not recorded (write {ACCEPT} to confirm a suggestion)"
        )
    for r in recorded[:examples]:
        was = f" (was {r['previous']})" if r["previous"] else ""
        lines.append(
            f"  {verb}: {r['tagged_model_id']} -> {r['circuit_config_id']} ({r['decision']}){was}"
        )
    if len(recorded) > examples:
        lines.append(f"  ... and {len(recorded) - examples:,} more")
    for model in cleared[:examples]:
        lines.append(f"  cleared: {model}")
    by_reason: dict[str, list[Mapping[str, Any]]] = {}
    for r in rejected:
        by_reason.setdefault(r["reason"], []).append(r)
    for reason, rows in by_reason.items():
        lines.append(f"rejected, {REASONS.get(reason, reason)}: {len(rows):,}")
        for r in rows[:examples]:
            lines.append(f"  line {r['line']} {r['tagged_model_id']} {r['value']!r}: {r['detail']}")
        if len(rows) > examples:
            lines.append(f"  ... and {len(rows) - examples:,} more (--json lists every one)")
    if result["checked_only"]:
        lines.append("checked only: nothing was recorded")
    else:
        lines.append(
            f"the ledger holds {result['decisions']:,} decisions; every later run applies them"
            " (run, retry, scheduled and incremental runs alike)"
        )
    return lines
