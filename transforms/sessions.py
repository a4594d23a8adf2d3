"""The new ``user_sessions``: legacy sessions keep their ids, lose ``saved_profiles`` and gain
``current_circuit_config_id``: the app's own pointer (S4) when it names a configuration of the
session's user, else the configuration of the most recent element the session saved."""

from __future__ import annotations

import polars as pl

from schemas.frames import USER_SESSIONS


def current_configurations(members: pl.DataFrame) -> pl.DataFrame:
    """Per session (``id``), the configuration of its most recently saved element (by
    ``createdAt``, then position in the array)."""
    return (
        members.filter(pl.col("source_table") == "saved_profiles")
        .sort(["session_id", "created_at", "element_index"], nulls_last=False)
        .group_by("session_id", maintain_order=True)
        .last()
        .select(
            pl.col("session_id").alias("id"), pl.col("config_id").alias("current_circuit_config_id")
        )
    )


APP_TABLES = ("saved_configurations", "circuit_configurations")


def user_sessions(sessions: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Target sessions (``USER_SESSIONS``, by id) from the resolved, usable legacy sessions
    (names already unique per user) and the configuration members."""
    app = members.filter(pl.col("source_table").is_in(APP_TABLES)).select(
        pl.col("source_id").alias("current_circuit_config_id"),
        pl.col("config_id").alias("_pointed"),
        pl.col("user_id").alias("_pointed_user"),
    )
    derived = current_configurations(members).rename({"current_circuit_config_id": "_derived"})
    out = (
        sessions.join(app, on="current_circuit_config_id", how="left")
        .join(derived, on="id", how="left")
        .with_columns(
            pl.when(pl.col("_pointed_user") == pl.col("user_id"))
            .then(pl.col("_pointed"))
            .otherwise(pl.col("_derived"))
            .alias("current_circuit_config_id")
        )
    )
    return out.select([pl.col(c).cast(t) for c, t in USER_SESSIONS.items()]).sort("id")
