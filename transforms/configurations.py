"""Circuit configurations: one per distinct circuit of a user, from legacy ``user_profiles`` rows
and ``saved_profiles`` elements.

Content key: (user, name, Rsh..Cb, min_freq, max_freq) after normalising, numbers compared to
``FLOAT_SIG_DIGITS`` significant digits (relative tolerance about ``FLOAT_RTOL``). Legacy rows
also carry grid settings (grid_size, num_points), which are part of their key; elements carry
none, so an element joins the most recently updated legacy-row group with its content key, or
else forms an element-only group with the legacy column defaults (grid_size 10, num_points 100).

Ids: a group holding legacy rows takes the id of its representative row (the most recently
updated), so a legacy row that becomes a configuration alone keeps its id; an element-only group
takes ``uuid5(user id, representative element's source id)``. The representative is
``migrated``; every other member is ``merged`` into it. Groups of one user sharing a name get
unique names: the group with a legacy row that was updated last keeps it, the others become
``"<name> (session <session name>)"`` (element-only) or ``"<name> (copy <n>)"``.
"""

from __future__ import annotations

import polars as pl

from schemas.frames import CIRCUIT_CONFIGURATIONS, REPAIRS, TS, conform
from schemas.tolerances import FLOAT_RTOL as FLOAT_RTOL
from schemas.tolerances import FLOAT_SIG_DIGITS as FLOAT_SIG_DIGITS
from transforms import normalise
from transforms.elements import json_payload
from transforms.ids import stable_uuid_expr
from transforms.impedance import PARAMETERS

# Two circuits are identical when every number agrees to FLOAT_SIG_DIGITS significant digits
# (relative tolerance about FLOAT_RTOL); declared once in schemas.tolerances, re-exported here.

LEGACY_GRID_SIZE = 10
LEGACY_NUM_POINTS = 100
LEGACY_MIN_FREQ = 0.1
LEGACY_MAX_FREQ = 100_000.0
GRID_SIZE_RANGE = (2, 25)
NUM_POINTS_RANGE = (10, 1000)
UNNAMED = "Untitled circuit"
# The legacy grid a stored resnorm is recomputed on, at most: whatever a row says, the resnorm's
# memory stays bounded (a larger grid is taken as the clamped one).
MAX_RESNORM_POINTS = 10_000
EPOCH = pl.lit(0).cast(TS)

# Columns every circuit source carries (legacy row or element) after ``circuit_sources``.
SOURCE_COLUMNS = (
    "source_table",
    "source_id",
    "user_id",
    "session_id",
    "session_name",
    "element_index",
    "name",
    "description",
    *PARAMETERS,
    "min_freq",
    "max_freq",
    "grid_size",
    "num_points",
    "legacy_num_points",
    "is_public",
    "ui_settings",
    "is_computed",
    "computation_time",
    "total_points",
    "valid_points",
    "computation_results",
    "created_at",
    "updated_at",
    "reason",
    "detail",
    "payload",
)


def _repair(
    frame: pl.DataFrame, when: pl.Expr, field: str, kind: str, original: pl.Expr, repaired: pl.Expr
) -> pl.DataFrame:
    return frame.filter(when).select(
        "source_table",
        "source_id",
        pl.lit(field).alias("field"),
        pl.lit(kind).alias("kind"),
        original.cast(pl.String).alias("original"),
        repaired.cast(pl.String).alias("repaired"),
    )


def _range_text(lo: pl.Expr, hi: pl.Expr) -> pl.Expr:
    return pl.format("[{}, {}]", lo, hi)


def _first_problem(*checks: tuple[pl.Expr, str, pl.Expr]) -> tuple[pl.Expr, pl.Expr]:
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    detail: pl.Expr = pl.lit(None, dtype=pl.String)
    for cond, name, text in reversed(checks):
        reason = pl.when(cond).then(pl.lit(name)).otherwise(reason)
        detail = pl.when(cond).then(text).otherwise(detail)
    return reason, detail


def profile_sources(
    profiles: pl.DataFrame, source_table: str = "user_profiles"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Legacy user_profiles rows (or rows of a configuration table the app wrote,
    ``source_table``) as circuit sources (``SOURCE_COLUMNS``) and their repairs.

    ``profiles`` holds the legacy user_profiles columns (optionally ``is_public`` and
    ``ui_settings``) plus ``reason``/``detail`` (a user problem found upstream, or null) and
    ``payload``.
    """
    for optional, dtype in (("is_public", pl.Boolean), ("ui_settings", pl.String)):
        if optional not in profiles.columns:
            profiles = profiles.with_columns(pl.lit(None, dtype=dtype).alias(optional))
    p = normalise.parameters(normalise.decoded_json(profiles, "parameters"), "parameters")
    p = p.with_columns(
        pl.when(pl.col("_fr_lo").is_not_null() | pl.col("_fr_hi").is_not_null())
        .then(_range_text(pl.col("_fr_lo"), pl.col("_fr_hi")))
        .alias("_fr_raw"),
        pl.lit(source_table).alias("source_table"),
        pl.col("id").alias("source_id"),
    )
    p = p.with_columns(
        pl.coalesce("min_freq", "_fr_lo", pl.lit(LEGACY_MIN_FREQ)).alias("_min"),
        pl.coalesce("max_freq", "_fr_hi", pl.lit(LEGACY_MAX_FREQ)).alias("_max"),
        pl.col("grid_size")
        .fill_null(LEGACY_GRID_SIZE)
        .clip(*GRID_SIZE_RANGE)
        .cast(pl.Int32)
        .alias("_grid"),
        pl.col("num_points")
        .fill_null(LEGACY_NUM_POINTS)
        .clip(*NUM_POINTS_RANGE)
        .cast(pl.Int32)
        .alias("_points"),
    )
    reason, detail = _first_problem(
        (pl.col("reason").is_not_null(), "", pl.col("detail")),
        (
            pl.col("_bad_parameters"),
            "invalid_parameters",
            normalise.undecodable_detail("parameters"),
        ),
        (pl.col("param_problem").is_not_null(), "invalid_parameters", pl.col("param_problem")),
        (
            normalise.frequency_problem(pl.col("_min"), pl.col("_max")).is_not_null(),
            "invalid_frequency_range",
            normalise.frequency_problem(pl.col("_min"), pl.col("_max")),
        ),
    )
    p = p.with_columns(
        pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .otherwise(reason)
        .alias("_reason"),
        detail.alias("_detail"),
    )
    ok = p.filter(pl.col("_reason").is_null())
    repairs = [
        normalise.decoded_repairs(ok, "parameters", source_table, "id"),
        normalise.parameter_repairs(ok, source_table, "id"),
        _repair(
            ok,
            pl.col("grid_size").is_null(),
            "grid_size",
            "filled_default",
            pl.lit(None),
            pl.col("_grid"),
        ),
        _repair(
            ok,
            pl.col("grid_size") != pl.col("_grid"),
            "grid_size",
            "clamped_grid_size",
            pl.col("grid_size"),
            pl.col("_grid"),
        ),
        _repair(
            ok,
            pl.col("num_points").is_null(),
            "num_points",
            "filled_default",
            pl.lit(None),
            pl.col("_points"),
        ),
        _repair(
            ok,
            pl.col("num_points") != pl.col("_points"),
            "num_points",
            "clamped_num_points",
            pl.col("num_points"),
            pl.col("_points"),
        ),
        _repair(
            ok,
            pl.col("min_freq").is_null(),
            "min_freq",
            "filled_default",
            pl.lit(None),
            pl.col("_min"),
        ),
        _repair(
            ok,
            pl.col("max_freq").is_null(),
            "max_freq",
            "filled_default",
            pl.lit(None),
            pl.col("_max"),
        ),
        _repair(
            ok,
            pl.col("_fr_lo").is_null()
            | pl.col("_fr_hi").is_null()
            | (pl.col("_fr_lo") != pl.col("_min"))
            | (pl.col("_fr_hi") != pl.col("_max")),
            "circuit_parameters.frequency_range",
            "filled_frequency_range",
            pl.col("_fr_raw"),
            _range_text(pl.col("_min"), pl.col("_max")),
        ),
    ]
    sources = p.select(
        "source_table",
        "source_id",
        "user_id",
        pl.lit(None, dtype=pl.String).alias("session_id"),
        pl.lit(None, dtype=pl.String).alias("session_name"),
        pl.lit(None, dtype=pl.Int32).alias("element_index"),
        "name",
        "description",
        *PARAMETERS,
        pl.col("_min").alias("min_freq"),
        pl.col("_max").alias("max_freq"),
        pl.col("_grid").alias("grid_size"),
        pl.col("_points").alias("num_points"),
        pl.when(pl.col("num_points").is_between(2, MAX_RESNORM_POINTS))
        .then(pl.col("num_points"))
        .otherwise(pl.col("_points"))
        .cast(pl.Int32)
        .alias("legacy_num_points"),
        "is_public",
        "ui_settings",
        "is_computed",
        "computation_time",
        "total_points",
        "valid_points",
        "computation_results",
        "created_at",
        "updated_at",
        pl.col("_reason").alias("reason"),
        pl.col("_detail").alias("detail"),
        "payload",
    )
    return sources, pl.concat([conform(r, REPAIRS) for r in repairs])


def element_sources(
    elements: pl.DataFrame, sessions: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """saved_profiles elements (non-malformed-array rows of ``elements.saved_profile_elements``)
    as circuit sources, and their repairs.

    ``sessions`` holds id, user_id (resolved), session_name, created_at, updated_at and
    reason/detail (a user problem of the session, or null).
    """
    el = pl.col("element")
    e = elements.join(
        sessions.select(
            pl.col("id").alias("session_id"),
            "user_id",
            "session_name",
            pl.col("created_at").alias("_s_created"),
            pl.col("updated_at").alias("_s_updated"),
            "reason",
            "detail",
        ),
        on="session_id",
        how="left",
    ).with_columns(
        pl.col("parameters").alias("_ptext"),
        el.str.contains('"parameters"\\s*:\\s*"').fill_null(False).alias("_pstr"),
    )
    e = e.with_columns(
        (
            pl.col("_ptext").str.strip_chars().str.starts_with("{")
            & pl.col("_ptext").str.json_path_match("$").is_not_null()
        )
        .fill_null(False)
        .alias("_pobj")
    )
    e = normalise.parameters(e, "_ptext")
    fr_lo = normalise.as_float(pl.col("frequency_lo"))
    fr_hi = normalise.as_float(pl.col("frequency_hi"))
    pfr_lo, pfr_hi = pl.col("_fr_lo"), pl.col("_fr_hi")
    created = normalise.timestamp(normalise.json_value(el, "$.createdAt"))
    name = normalise.json_value(el, "$.name").str.strip_chars()
    e = e.with_columns(
        pl.lit("saved_profiles").alias("source_table"),
        pl.coalesce(fr_lo, pfr_lo).alias("_lo"),
        pl.coalesce(fr_hi, pfr_hi).alias("_hi"),
        created.alias("_created"),
        name.alias("_name"),
    ).with_columns(
        pl.col("_lo").fill_null(LEGACY_MIN_FREQ).alias("min_freq"),
        pl.col("_hi").fill_null(LEGACY_MAX_FREQ).alias("max_freq"),
        pl.when(pl.col("_name").is_null() | (pl.col("_name") == ""))
        .then(pl.lit(UNNAMED))
        .otherwise(pl.col("_name"))
        .alias("name"),
    )
    reason, detail = _first_problem(
        (pl.col("reason").is_not_null(), "", pl.col("detail")),
        (~pl.col("is_object"), "malformed_element", pl.lit("element is not a JSON object")),
        (
            ~pl.col("_pobj") & pl.col("_pstr"),
            "malformed_element",
            pl.format(
                "parameters is a JSON string that holds no JSON object: {}",
                pl.col("_ptext").str.head(80),
            ),
        ),
        (~pl.col("_pobj"), "malformed_element", pl.lit("element has no parameters object")),
        (pl.col("param_problem").is_not_null(), "invalid_parameters", pl.col("param_problem")),
        (
            normalise.frequency_problem(pl.col("min_freq"), pl.col("max_freq")).is_not_null(),
            "invalid_frequency_range",
            normalise.frequency_problem(pl.col("min_freq"), pl.col("max_freq")),
        ),
    )
    e = e.with_columns(
        pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .otherwise(reason)
        .alias("_reason"),
        detail.alias("_detail"),
    )
    ok = e.filter(pl.col("_reason").is_null())
    repairs = [
        ok.filter(pl.col("_pstr")).select(
            "source_table",
            "source_id",
            pl.lit("parameters").alias("field"),
            pl.lit("decoded_json_string").alias("kind"),
            pl.col("_ptext").alias("original"),
            pl.lit(None, dtype=pl.String).alias("repaired"),
        ),
        normalise.parameter_repairs(ok, "saved_profiles", "source_id"),
        _repair(
            ok,
            pl.col("_lo").is_null() | pl.col("_hi").is_null(),
            "circuit_parameters.frequency_range",
            "filled_frequency_range",
            pl.lit(None),
            _range_text(pl.col("min_freq"), pl.col("max_freq")),
        ),
        _repair(
            ok,
            pl.col("name") != pl.col("_name").fill_null(""),
            "name",
            "filled_default",
            pl.col("_name"),
            pl.col("name"),
        ),
    ]
    sources = e.select(
        "source_table",
        "source_id",
        "user_id",
        "session_id",
        "session_name",
        "element_index",
        "name",
        normalise.json_value(el, "$.description").alias("description"),
        *PARAMETERS,
        "min_freq",
        "max_freq",
        pl.lit(LEGACY_GRID_SIZE, dtype=pl.Int32).alias("grid_size"),
        pl.lit(LEGACY_NUM_POINTS, dtype=pl.Int32).alias("num_points"),
        pl.lit(LEGACY_NUM_POINTS, dtype=pl.Int32).alias("legacy_num_points"),
        pl.lit(None, dtype=pl.Boolean).alias("is_public"),  # an element says nothing of these
        pl.lit(None, dtype=pl.String).alias("ui_settings"),
        pl.lit(None, dtype=pl.Boolean).alias("is_computed"),
        pl.lit(None, dtype=pl.Float64).alias("computation_time"),
        pl.lit(None, dtype=pl.Int32).alias("total_points"),
        pl.lit(None, dtype=pl.Int32).alias("valid_points"),
        pl.lit(None, dtype=pl.String).alias("computation_results"),
        pl.coalesce("_created", "_s_created").alias("created_at"),
        pl.coalesce("_created", "_s_updated", "_s_created").alias("updated_at"),
        pl.col("_reason").alias("reason"),
        pl.col("_detail").alias("detail"),
        json_payload(el).alias("payload"),
    )
    return sources, pl.concat([conform(r, REPAIRS) for r in repairs])


def _key(*extra: str) -> list[pl.Expr]:
    return [
        pl.col("user_id"),
        pl.col("name").str.strip_chars().alias("_k_name"),
        *[pl.col(k).round_sig_figs(FLOAT_SIG_DIGITS).alias(f"_k_{k}") for k in PARAMETERS],
        pl.col("min_freq").round_sig_figs(FLOAT_SIG_DIGITS).alias("_k_min"),
        pl.col("max_freq").round_sig_figs(FLOAT_SIG_DIGITS).alias("_k_max"),
        *[pl.col(c) for c in extra],
    ]


_KEY = ["user_id", "_k_name", *[f"_k_{k}" for k in PARAMETERS], "_k_min", "_k_max"]


def grouped_sources(sources: pl.DataFrame) -> pl.DataFrame:
    """The usable sources (null ``reason``) with ``config_id`` and ``is_rep`` (representative)."""
    ok = sources.filter(pl.col("reason").is_null()).with_columns(_key())
    rows = ok.filter(pl.col("source_table") != "saved_profiles").with_columns(
        pl.col("updated_at").fill_null(EPOCH).alias("_upd")
    )
    rows = rows.sort(["_upd", "source_id"], descending=[True, False]).with_columns(
        pl.col("source_id").first().over([*_KEY, "grid_size", "num_points"]).alias("config_id")
    )
    # The best legacy-row group per content key (ignoring grid) takes the matching elements.
    best = (
        rows.group_by(_KEY)
        .agg(pl.col("config_id").first())  # rows are sorted: first is the latest updated
        .rename({"config_id": "_row_config"})
    )
    elements = ok.filter(pl.col("source_table") == "saved_profiles").join(
        best, on=_KEY, how="left", nulls_equal=True
    )
    elements = elements.sort(["source_id"]).with_columns(
        pl.col("source_id").first().over(_KEY).alias("_rep_el")
    )
    elements = elements.with_columns(
        pl.coalesce(
            "_row_config",
            stable_uuid_expr("circuit_configurations", pl.format("{}/{}", "user_id", "_rep_el")),
        ).alias("config_id")
    )
    members = pl.concat(
        [
            rows.drop("_upd").with_columns(
                (pl.col("source_id") == pl.col("config_id")).alias("is_rep")
            ),
            elements.with_columns(
                (
                    pl.col("_row_config").is_null() & (pl.col("source_id") == pl.col("_rep_el"))
                ).alias("is_rep")
            ).drop("_row_config", "_rep_el"),
        ],
        how="diagonal_relaxed",
    )
    return members.drop([c for c in members.columns if c.startswith("_k_")])


MERGED_FIELDS = (
    "description",
    "is_public",
    "ui_settings",
    "is_computed",
    "computation_time",
    "total_points",
    "valid_points",
    "computation_results",
)
"""Fields a configuration takes, one by one, from the most recently updated member that has a
value (DESIGN.md section 5); the other members' different values are recorded as repairs."""


def merged_values(members: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per ``config_id``: each of ``MERGED_FIELDS`` from the most recently updated member with a
    non-null value (ties: smallest source id), the repairs ``merged_value_dropped`` of every
    other member's different non-null value, with its original)."""
    ordered = members.select("config_id", "source_table", "source_id", "updated_at", *MERGED_FIELDS)
    ordered = ordered.sort(
        ["config_id", "updated_at", "source_id"], descending=[False, True, False], nulls_last=True
    )
    chosen = ordered.group_by("config_id", maintain_order=True).agg(
        [pl.col(f).drop_nulls().first() for f in MERGED_FIELDS]
    )
    both = ordered.join(chosen, on="config_id", how="left", suffix="_chosen")
    dropped = [
        _repair(
            both,
            pl.col(f).is_not_null()
            & (pl.col(f).cast(pl.String) != pl.col(f"{f}_chosen").cast(pl.String)),
            f,
            "merged_value_dropped",
            pl.col(f),
            pl.col(f"{f}_chosen"),
        )
        for f in MERGED_FIELDS
    ]
    return chosen, pl.concat([conform(r, REPAIRS) for r in dropped])


def circuit_configurations(
    sources: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(configurations in ``CIRCUIT_CONFIGURATIONS`` shape, members, repairs).

    ``members`` has one row per usable source: source_table, source_id, user_id, config_id,
    is_rep, session_id, element_index, created_at, legacy_num_points (the source's unclamped
    grid, which the legacy app computed resnorms on) and its Rsh..Cb. Repairs record renamed
    duplicates and the values a merge dropped (:func:`merged_values`).
    """
    members = grouped_sources(sources)
    chosen, dropped = merged_values(members)
    agg = members.group_by("config_id").agg(
        pl.col("created_at").min().alias("_created_min"),
        pl.col("updated_at").max().alias("_updated_max"),
        (pl.col("source_table") != "saved_profiles").any().alias("_has_row"),
    )
    reps = (
        members.filter(pl.col("is_rep"))
        .drop(MERGED_FIELDS)
        .join(agg, on="config_id", how="left")
        .join(chosen, on="config_id", how="left")
    )
    reps = reps.with_columns(
        pl.col("name").str.strip_chars().alias("_base"),
        pl.coalesce("_created_min", "_updated_max", pl.lit(0).cast(TS)).alias("_created"),
    ).with_columns(pl.coalesce("_updated_max", "_created").alias("_updated"))
    reps = reps.sort(
        ["user_id", "_base", "_has_row", "_updated", "config_id"],
        descending=[False, False, True, True, False],
    ).with_columns(pl.int_range(pl.len()).over(["user_id", "_base"]).alias("_rank"))
    candidate = (
        pl.when(pl.col("_rank") == 0)
        .then(pl.col("_base"))
        .when(pl.col("source_table") == "saved_profiles")
        .then(pl.format("{} (session {})", "_base", pl.col("session_name").fill_null("?")))
        .otherwise(pl.format("{} (copy {})", "_base", pl.col("_rank") + 1))
    )
    reps = reps.with_columns(candidate.alias("_name"))
    reps = reps.with_columns(unique_names(pl.col("_name"), pl.col("user_id"), reps).alias("_name"))
    renamed = reps.filter(pl.col("_name") != pl.col("name")).select(
        "source_table",
        "source_id",
        pl.lit("name").alias("field"),
        pl.lit("renamed_duplicate").alias("kind"),
        pl.col("name").alias("original"),
        pl.col("_name").alias("repaired"),
    )
    configs = reps.select(
        pl.col("config_id").alias("id"),
        "user_id",
        pl.col("_name").alias("name"),
        "description",
        pl.col("is_public").fill_null(False),
        normalise.circuit_json(with_range=True).alias("circuit_parameters"),
        "grid_size",
        "min_freq",
        "max_freq",
        "num_points",
        pl.col("is_computed").fill_null(False),
        "computation_time",
        "total_points",
        "valid_points",
        "computation_results",
        "ui_settings",
        pl.col("_created").alias("created_at"),
        pl.col("_updated").alias("updated_at"),
    ).sort("id")
    configs = configs.select([pl.col(c).cast(t) for c, t in CIRCUIT_CONFIGURATIONS.items()])
    member_cols = members.select(
        "source_table",
        "source_id",
        "user_id",
        "config_id",
        "is_rep",
        "session_id",
        "element_index",
        "created_at",
        "legacy_num_points",
        *PARAMETERS,
    )
    return configs, member_cols, pl.concat([conform(renamed, REPAIRS), dropped])


def unique_names(name: pl.Expr, owner: pl.Expr, frame: pl.DataFrame) -> pl.Series:
    """``name`` made unique per ``owner`` by appending `` (2)``, `` (3)``... to later repeats
    (``frame`` order decides which repeat is first)."""
    names = frame.select(name.alias("n"), owner.alias("o"))
    for _ in range(10):
        dup = names.select(pl.struct("o", "n").is_duplicated()).to_series()
        if not dup.any():
            break
        rows = pl.Series(range(names.height)).filter(dup)
        ranked = (
            names.filter(dup)
            .with_columns(pl.int_range(pl.len()).over(["o", "n"]).alias("r"))
            .select(
                pl.when(pl.col("r") == 0)
                .then(pl.col("n"))
                .otherwise(pl.format("{} ({})", "n", pl.col("r") + 1))
                .alias("n")
            )
        )
        names = names.with_columns(names["n"].scatter(rows, ranked["n"]).alias("n"))
    return names["n"]
