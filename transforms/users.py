"""Whose row is it: resolve each legacy row's user against ``auth.users``.

- a legacy user_profiles row: its ``user_id`` (null: ``no_user``; unknown: ``unknown_user``);
- a session: its ``user_id``; when null, ``no_user`` (DESIGN.md section 5: whatever its tagged
  models name, a session without a user is never given one); a dangling one is ``unknown_user``;
- a tagged model: its ``user_id``; when null, its session's resolved user (repair
  ``user_from_session``), else ``no_user``; a dangling one is ``unknown_user``.

Each function returns its input with ``user_id`` resolved (null when quarantined),
``reason``/``detail`` (null when the row has a user) and ``_user_repair`` (the repair kind, or
null).
"""

from __future__ import annotations

import polars as pl


def _known(auth_users: pl.DataFrame) -> pl.DataFrame:
    return (
        auth_users.select(pl.col("id").alias("_uid"))
        .unique()
        .with_columns(pl.lit(True).alias("_known"))
    )


def _classify(frame: pl.DataFrame, auth_users: pl.DataFrame, fallback: str | None) -> pl.DataFrame:
    # is_in / with_columns only add columns: the (possibly million-row) frame is not copied
    f = frame.with_columns(pl.col("user_id").is_in(auth_users["id"].implode()).alias("_known"))
    known = pl.col("_known").fill_null(False)
    has_fallback = pl.lit(False) if fallback is None else pl.col(fallback).is_not_null()
    fb = pl.lit(None, dtype=pl.String) if fallback is None else pl.col(fallback)
    null_user = pl.col("user_id").is_null()
    reason = (
        pl.when(null_user & has_fallback)
        .then(None)
        .when(null_user)
        .then(pl.lit("no_user"))
        .when(~known)
        .then(pl.lit("unknown_user"))
        .otherwise(None)
    )
    detail = (
        pl.when(null_user & ~has_fallback)
        .then(pl.lit("user_id is null and no related row names a user"))
        .when(~null_user & ~known)
        .then(pl.lit("user_id is not in auth.users"))
        .otherwise(None)
    )
    return f.with_columns(
        reason.alias("reason"),
        detail.alias("detail"),
        pl.col("user_id").alias("_original_user_id"),
        pl.when(null_user & has_fallback)
        .then(fb)
        .when(~null_user & known)
        .then(pl.col("user_id"))
        .otherwise(None)
        .alias("user_id"),
    ).drop("_known")


def resolve_profiles(profiles: pl.DataFrame, auth_users: pl.DataFrame) -> pl.DataFrame:
    """Legacy user_profiles rows with their user resolved."""
    return _classify(profiles, auth_users, None).with_columns(
        pl.lit(None, dtype=pl.String).alias("_user_repair")
    )


def resolve_sessions(sessions: pl.DataFrame, auth_users: pl.DataFrame) -> pl.DataFrame:
    """Sessions with their user resolved."""
    return _classify(sessions, auth_users, None).with_columns(
        pl.lit(None, dtype=pl.String).alias("_user_repair")
    )


def resolve_models(
    models: pl.DataFrame, sessions: pl.DataFrame, auth_users: pl.DataFrame
) -> pl.DataFrame:
    """Tagged models with their user resolved (a null user taken from the resolved session)."""
    session_users = sessions.filter(pl.col("user_id").is_not_null()).unique("id")
    m = models.with_columns(
        pl.col("session_id")
        .replace_strict(
            session_users["id"], session_users["user_id"], default=None, return_dtype=pl.String
        )
        .alias("_from_session")
    )
    out = _classify(m, auth_users, "_from_session")
    return out.with_columns(
        pl.when(pl.col("_original_user_id").is_null() & pl.col("user_id").is_not_null())
        .then(pl.lit("user_from_session"))
        .otherwise(None)
        .alias("_user_repair")
    ).drop("_from_session")


def user_repairs(frame: pl.DataFrame, source_table: str) -> pl.DataFrame:
    """Repairs frame rows for the users taken from related rows."""
    return frame.filter(pl.col("_user_repair").is_not_null() & pl.col("reason").is_null()).select(
        pl.lit(source_table).alias("source_table"),
        pl.col("id").alias("source_id"),
        pl.lit("user_id").alias("field"),
        pl.col("_user_repair").alias("kind"),
        pl.lit(None, dtype=pl.String).alias("original"),
        pl.col("user_id").alias("repaired"),
    )
