"""Users whose rows the target database rejected: their source items become quarantine rows.

The loader isolates the users whose rows the database refuses (a constraint the validation did
not foresee). Every source item that had landed in one of their target rows is then
quarantined ``database_rejected`` with the server's message and its original payload, so the
accounting identity still holds.
"""

from __future__ import annotations

import json
from dataclasses import replace

import polars as pl

from schemas import frames
from transforms.pipeline import TransformResult

REASON = "database_rejected"


def _row_payloads(frame: pl.DataFrame, source_table: str) -> pl.DataFrame:
    return frame.select(
        pl.lit(source_table).alias("source_table"),
        pl.col("id").alias("source_id"),
        pl.struct(pl.all()).struct.json_encode().alias("payload"),
    )


def _element_payloads(sessions: pl.DataFrame, element_ids: list[str]) -> pl.DataFrame:
    """Payloads of saved_profiles elements ``<session id>#<index>`` (few rows: plain Python)."""
    arrays = dict(zip(sessions["id"].to_list(), sessions["saved_profiles"].to_list(), strict=True))
    rows = []
    for source_id in element_ids:
        session_id, _, index = source_id.rpartition("#")
        try:
            element = json.loads(arrays.get(session_id) or "null")[int(index)]
            payload = json.dumps(element)
        except (ValueError, TypeError, IndexError, KeyError):
            payload = json.dumps(source_id)
        rows.append(("saved_profiles", source_id, payload))
    return pl.DataFrame(
        rows,
        schema={"source_table": pl.String, "source_id": pl.String, "payload": pl.String},
        orient="row",
    )


def without_rejected_users(
    user_sessions: pl.DataFrame,
    tagged_models: pl.DataFrame,
    user_profiles: pl.DataFrame,
    result: TransformResult,
    rejected: pl.DataFrame,
    app_configurations: pl.DataFrame | None = None,
    profile_metadata: pl.DataFrame | None = None,
) -> TransformResult:
    """``result`` with the rows of the ``rejected`` users (columns user_id, detail) removed and
    every source item that had landed in them quarantined ``database_rejected``."""
    if rejected.is_empty():
        return result
    apps = frames.empty(frames.LEGACY_APP_CONFIGURATIONS)
    apps = apps if app_configurations is None else app_configurations
    metadata = frames.empty(frames.LEGACY_PROFILE_METADATA)
    metadata = metadata if profile_metadata is None else profile_metadata
    users = rejected.select("user_id", "detail")
    owners = pl.concat(
        [
            getattr(result, t).select(pl.col("id").alias("target_id"), "user_id")
            for t in ("circuit_configurations", "user_sessions", "tagged_models", "user_profiles")
        ]
    )
    circuit_sources = pl.concat(
        [
            user_profiles.select(pl.lit("user_profiles").alias("t"), pl.col("id").alias("i")),
            apps.select(pl.col("source_table").alias("t"), pl.col("id").alias("i")),
        ]
    )
    kept = pl.concat(
        [
            result.circuit_configurations.join(
                circuit_sources, left_on="id", right_on="i", how="inner"
            ).select(pl.col("t").alias("source_table"), pl.col("id").alias("source_id")),
            result.user_profiles.join(metadata.select("id"), on="id", how="semi").select(
                pl.lit("user_profiles").alias("source_table"), pl.col("id").alias("source_id")
            ),
            result.user_sessions.select(
                pl.lit("user_sessions").alias("source_table"), pl.col("id").alias("source_id")
            ),
            result.tagged_models.select(
                pl.lit("tagged_models").alias("source_table"), pl.col("id").alias("source_id")
            ),
        ]
    ).with_columns(pl.col("source_id").alias("target_id"))
    mapped = pl.concat([kept, result.id_map.select("source_table", "source_id", "target_id")])
    lost = mapped.join(owners, on="target_id").join(users, on="user_id")
    payloads = pl.concat(
        [
            _row_payloads(user_profiles, "user_profiles"),
            _row_payloads(metadata, "user_profiles"),
            *[
                _row_payloads(apps.filter(pl.col("source_table") == t), t)
                for t in ("saved_configurations", "circuit_configurations")
            ],
            _row_payloads(user_sessions, "user_sessions"),
            _row_payloads(tagged_models, "tagged_models"),
            _element_payloads(
                user_sessions,
                lost.filter(pl.col("source_table") == "saved_profiles")["source_id"].to_list(),
            ),
        ]
    )
    new_quarantine = (
        lost.unique(["source_table", "source_id"], keep="first")
        .join(payloads, on=["source_table", "source_id"], how="left")
        .select(
            "source_table",
            "source_id",
            pl.lit(REASON).alias("reason"),
            pl.col("detail"),
            "payload",
        )
    )
    keys = ["source_table", "source_id"]
    gone = users.select("user_id")
    return replace(
        result,
        user_profiles=result.user_profiles.join(gone, on="user_id", how="anti"),
        circuit_configurations=result.circuit_configurations.join(gone, on="user_id", how="anti"),
        user_sessions=result.user_sessions.join(gone, on="user_id", how="anti"),
        tagged_models=result.tagged_models.join(gone, on="user_id", how="anti"),
        id_map=result.id_map.join(lost, on=keys, how="anti"),
        links=result.links.join(
            lost.filter(pl.col("source_table") == "tagged_models").select(
                pl.col("source_id").alias("tagged_model_id")
            ),
            on="tagged_model_id",
            how="anti",
        ),
        quarantine=frames.conform(
            pl.concat([result.quarantine, frames.conform(new_quarantine, frames.QUARANTINE)]),
            frames.QUARANTINE,
        ),
    )
