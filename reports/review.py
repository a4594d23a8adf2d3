"""The review list as a fixed-column frame and the quarantine list's columns (the flow writes
both as CSV; quarantine.csv is streamed straight from the ledger, never held in memory).

``review.csv`` is also an override file: ``flows.migrate.read_overrides`` reads its
``tagged_model_id`` and ``circuit_config_id`` columns and ignores the others and the rows whose
``circuit_config_id`` is empty. So ``circuit_config_id`` holds the configuration the run chose,
and a reviewer replaces it with another candidate's id (or empties it to leave the row open).
"""

from __future__ import annotations

from collections.abc import Mapping

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
}
"""The run's ``needs_review`` links joined with their tagged model (input of review_frame)."""

CONFIG_NAMES: Schema = {"id": pl.String, "name": pl.String}
"""Names of the configurations the links and their candidates point at."""

QUARANTINE_ROWS: Schema = QUARANTINE
"""quarantine.csv: source_table, source_id, reason, detail, payload (the original, as JSON)."""

REVIEW_CANDIDATES = 2
"""Candidates given their own columns (the evidence JSON column lists every one recorded)."""

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
    "chosen_name": pl.String,
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
    "evidence": pl.String,
}
"""review.csv, in this column order; edit ``circuit_config_id``, the rest is context."""


def review_frame(links: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    """review.csv (shape ``REVIEW``) from the flagged links (``REVIEW_LINKS``) and the names of
    the configurations involved (``CONFIG_NAMES``); rows in the order of ``links``."""
    lookup = names.select(pl.col("id"), pl.col("name")).unique("id", keep="first")
    evidence = pl.col("evidence").str.json_decode(_EVIDENCE)
    base = links.with_row_index("_row").with_columns(
        evidence.struct.field("stored_resnorm").alias("stored_resnorm"),
        evidence.struct.field("candidates").alias("candidates"),
        evidence.struct.field("top").alias("_top"),
    )
    base = base.join(
        lookup.rename({"id": "circuit_config_id", "name": "chosen_name"}),
        on="circuit_config_id",
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
    base = base.with_columns(pl.col("confidence").round(4))  # a real in the ledger
    return base.sort("_row").select([pl.col(c).cast(t) for c, t in REVIEW.items()])
