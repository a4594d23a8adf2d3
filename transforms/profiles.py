"""The new ``user_profiles``: one row per user with legacy data, metadata from
``auth.users.raw_user_meta_data``, defaults from the user's most recently updated circuit."""

from __future__ import annotations

import polars as pl

from schemas.frames import TS, USER_PROFILES
from transforms.ids import stable_uuid_expr

DEFAULT_GRID_SIZE = 5
DEFAULT_MIN_FREQ = 0.1
DEFAULT_MAX_FREQ = 100_000.0
DEFAULT_NUM_POINTS = 100

_META_KEYS = {
    "username": ("username", "user_name", "preferred_username"),
    "full_name": ("full_name", "name"),
    "avatar_url": ("avatar_url", "picture"),
}


def metadata_field(meta: pl.Expr, name: str) -> pl.Expr:
    """``username``/``full_name``/``avatar_url`` from the metadata JSON text (first alias found)."""
    return pl.coalesce([meta.str.json_path_match(f"$.{k}") for k in _META_KEYS[name]]).alias(name)


def user_profiles(
    auth_users: pl.DataFrame,
    user_ids: pl.DataFrame,
    configurations: pl.DataFrame,
    activity: pl.DataFrame,
    metadata: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One profile per user in ``user_ids`` (column ``user_id``) known to ``auth_users``.

    Defaults come from the user's configuration updated last (``configurations`` excludes
    recovered ones); ``activity`` (user_id, created_at, updated_at) of the user's legacy rows
    gives timestamps when ``auth.users`` lacks them. ``metadata`` (S2's user_profiles: id =
    user_id, username, full_name, avatar_url) comes before ``raw_user_meta_data``, and its row
    keeps its id (the user's).
    """
    if metadata is None:
        metadata = pl.DataFrame(
            schema={k: pl.String for k in ("id", "username", "full_name", "avatar_url")}
        )
    given = metadata.select(
        pl.col("id").alias("user_id"),
        pl.col("id").alias("_given_id"),
        *[pl.col(k).alias(f"_given_{k}") for k in ("username", "full_name", "avatar_url")],
    ).unique("user_id")
    latest = (
        configurations.sort(["updated_at", "id"], descending=[True, False], nulls_last=True)
        .group_by("user_id", maintain_order=True)
        .first()
        .select(
            "user_id",
            pl.col("grid_size").clip(2, 25).alias("default_grid_size"),
            pl.col("min_freq").alias("default_min_freq"),
            pl.col("max_freq").alias("default_max_freq"),
            pl.col("num_points").clip(10, 1000).alias("default_num_points"),
        )
    )
    act = activity.group_by("user_id").agg(
        pl.col("created_at").min().alias("_first"), pl.col("updated_at").max().alias("_last")
    )
    users = (
        user_ids.select("user_id")
        .unique()
        .join(auth_users, left_on="user_id", right_on="id", how="inner")
        .join(latest, on="user_id", how="left")
        .join(act, on="user_id", how="left")
        .join(given, on="user_id", how="left")
    )
    meta = pl.col("raw_user_meta_data")
    ok_freq = (pl.col("default_min_freq") > 0) & (
        pl.col("default_max_freq") > pl.col("default_min_freq")
    )
    created = pl.coalesce("created_at", "_first", "_last", pl.lit(0).cast(TS))
    out = users.select(
        pl.coalesce("_given_id", stable_uuid_expr("user_profiles", pl.col("user_id"))).alias("id"),
        "user_id",
        *[
            pl.coalesce(f"_given_{k}", metadata_field(meta, k)).alias(k)
            for k in ("username", "full_name", "avatar_url")
        ],
        pl.col("default_grid_size").fill_null(DEFAULT_GRID_SIZE),
        pl.when(ok_freq)
        .then("default_min_freq")
        .otherwise(pl.lit(DEFAULT_MIN_FREQ))
        .alias("default_min_freq"),
        pl.when(ok_freq)
        .then("default_max_freq")
        .otherwise(pl.lit(DEFAULT_MAX_FREQ))
        .alias("default_max_freq"),
        pl.col("default_num_points").fill_null(DEFAULT_NUM_POINTS),
        created.alias("created_at"),
        pl.max_horizontal(created, pl.col("_last")).alias("updated_at"),
    ).sort("user_id")
    return out.select([pl.col(c).cast(t) for c, t in USER_PROFILES.items()])
