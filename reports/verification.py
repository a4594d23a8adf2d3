"""Independent verification of a migration: pure comparison of what the target must hold
(derived from the source by ``flows.verify`` with its own SQL and rules) with what it holds.

The check is split into *parts*, one per target table plus the ledger's quarantine decisions
(:data:`PARTS`). For each part both sides give rows of the same canonical columns: the
expected side from the legacy rows, the actual side from the target (or, for ``quarantine``,
from the ledger's current decisions). Three levels, so that a clean target ships almost nothing:

1. per bucket of users, a count and a digest (a sum of row hashes) per part (``BUCKETS``):
   :func:`buckets_to_drill` names the buckets that differ;
2. per user of those buckets, a count and a digest per part (``USERS``): :func:`users_to_detail`
   names the users that differ;
3. the rows of those users, compared column by column (:func:`compare`): floats within
   ``schemas.tolerances.FLOAT_RTOL``, names under the renaming rule, everything else exactly.

Nothing here imports ``transforms``: a bug there cannot hide itself. Every difference is one row
of ``DIFFERENCES``: the user (``''`` for rows of no user), the check, what was expected and what
was found. Checks: ``<part>.ids`` (rows missing or unexpected), ``<part>.<column>`` (a value
differs), ``decision.valid_quarantined`` (the ledger quarantined, or the database rejected, a
row verify finds valid), ``decision.invalid_migrated`` (a row verify finds invalid that the
ledger did not quarantine), ``decision.reason`` (both quarantined it, for other reasons),
``tagged_models.circuit_config_id`` (a model's configuration is not its user's, or not the one
its ledger link names) and ``tagged_models.merged`` (a merged duplicate's survivor is wrong).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from schemas.tolerances import FLOAT_RTOL

Schema = Mapping[str, pl.DataType | type[pl.DataType]]

F, S, N, B = pl.Float64, pl.String, pl.Int64, pl.Boolean
_CIRCUIT: Schema = {"Rsh": F, "Ra": F, "Ca": F, "Rb": F, "Cb": F, "fr_lo": F, "fr_hi": F}

PARTS: Mapping[str, Schema] = {
    "tagged_models": {
        "id": S,
        "user_id": S,
        "session_id": S,
        "model_id": S,
        "tag_name": S,
        "tag_category": S,
        "resnorm_value": F,
        "tagged_at": N,  # microseconds since the epoch (UTC)
        "notes": S,
        "is_interesting": B,
        "parameter_keys": S,  # the keys of circuit_parameters, sorted, comma-separated
        **_CIRCUIT,
        # the configuration the app's own link (S2, S4) names; in the target, the model's
        # configuration when its ledger link's method is explicit ("override": a reviewer's)
        "explicit_link": S,
    },
    "user_sessions": {
        "id": S,
        "user_id": S,
        "session_name": S,
        "description": S,
        "environment_variables": S,  # jsonb text
        "visualization_settings": S,
        "performance_settings": S,
        "is_active": B,
        "last_accessed": N,
        "created_at": N,
        "updated_at": N,
        "current_circuit_config_id": S,
    },
    "circuit_configurations": {
        "id": S,
        "user_id": S,
        "name": S,
        "description": S,
        "is_public": B,
        "parameter_keys": S,
        **_CIRCUIT,
        "grid_size": N,
        "min_freq": F,
        "max_freq": F,
        "num_points": N,
        "is_computed": B,
        "computation_time": F,
        "total_points": N,
        "valid_points": N,
        "computation_results": S,
        "ui_settings": S,
        "created_at": N,
        "updated_at": N,
    },
    "user_profiles": {
        "id": S,
        "user_id": S,
        "username": S,
        "full_name": S,
        "avatar_url": S,
        "default_grid_size": N,
        "default_min_freq": F,
        "default_max_freq": F,
        "default_num_points": N,
        "created_at": N,
        "updated_at": N,
    },
    # The ledger's current decisions: a quarantined legacy row, id "<source_table>:<source_id>".
    "quarantine": {"id": S, "user_id": S, "reason": S},
}
"""The canonical columns of each part, the same on both sides (``id`` and ``user_id`` first)."""

RENAMED = {"user_sessions": "session_name", "circuit_configurations": "name"}
"""Columns that may legitimately differ from the expectation when a duplicate had to be renamed:
the target value is the expected one, or it followed by `` (...)``."""

TIMES = {"tagged_at", "last_accessed", "created_at", "updated_at"}

BUCKETS: Schema = {"part": S, "bucket": S, "rows": N, "digest": S}
"""Per part and bucket of users: rows and the digest of their hashes (null: no rows); part
``USERS_PART`` counts the bucket's users (digest null)."""

USERS_PART = "users"

USERS: Schema = {"part": S, "user_id": S, "rows": N, "digest": S}
"""Per part and user: rows and the digest of their hashes."""

LINK_ROWS: Schema = {
    "user_id": S,
    "tagged_model_id": S,
    "circuit_config_id": S,
    "config_user_id": S,  # owner of the configuration pointed at (null: none)
    "ledger_config_id": S,  # migration.links.circuit_config_id (null: no link row)
}

MERGE_ROWS: Schema = {
    "user_id": S,
    "tagged_model_id": S,  # the merged duplicate
    "target_id": S,  # the model it merged into (migration.id_map)
    "problem": S,  # what is wrong, for a reader
}

DIFFERENCES: Schema = {"user_id": S, "check": S, "expected": S, "actual": S}

MAX_LISTED = 10
"""Ids or values listed per difference; the rest are counted ("... and 12 more")."""


@dataclass(frozen=True, eq=False)
class Verification:
    """The outcome of a verification: ``ok`` when ``differences`` (``DIFFERENCES``) is empty;
    ``users_checked`` counts the user keys seen on either side; ``run_id`` is the latest run in
    the target's ledger (for reference: verify does not depend on it)."""

    ok: bool
    users_checked: int
    differences: pl.DataFrame
    run_id: str | None = None


def frame(data: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """``data`` with exactly the columns of ``schema``, cast to its dtypes."""
    missing = [c for c in schema if c not in data.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    return data.select([pl.col(c).cast(t) for c, t in schema.items()])


def _listing(items: pl.Expr) -> pl.Expr:
    """At most ``MAX_LISTED`` sorted items of a list column, joined, with a count of the rest."""
    shown = items.list.sort().list.head(MAX_LISTED).list.join(", ")
    rest = items.list.len().cast(pl.Int64) - MAX_LISTED
    return pl.when(rest > 0).then(pl.format("{} ... and {} more", shown, rest)).otherwise(shown)


def _differ(e: pl.DataFrame, a: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    both = e.join(a, on=key, how="full", coalesce=True, suffix="__a")
    changed = pl.col("rows").fill_null(0).ne(pl.col("rows__a").fill_null(0)) | pl.col(
        "digest"
    ).ne_missing(pl.col("digest__a"))
    return both.filter(changed)


def buckets_to_drill(expected: pl.DataFrame, actual: pl.DataFrame) -> list[str]:
    """Buckets whose row count or digest differs between the sides in some part."""
    e, a = frame(expected, BUCKETS), frame(actual, BUCKETS)
    return sorted(set(_differ(e, a, ["part", "bucket"])["bucket"]))


def users_to_detail(expected: pl.DataFrame, actual: pl.DataFrame) -> dict[str, list[str]]:
    """Per part, the users whose row count or digest differs: only their rows need reading."""
    e, a = frame(expected, USERS), frame(actual, USERS)
    differing = _differ(e, a, ["part", "user_id"])
    return {
        part: sorted(differing.filter(pl.col("part") == part)["user_id"].to_list())
        for part in PARTS
    }


def users_checked(expected: pl.DataFrame, actual: pl.DataFrame) -> int:
    """Distinct users (rows of no user not counted) of the buckets on either side: the
    ``rows`` of :data:`USERS`-like frames with a user per row."""
    ids = pl.concat([expected.select("user_id"), actual.select("user_id")])
    return ids.filter(pl.col("user_id") != "").n_unique()


def floats_equal(a: pl.Expr, b: pl.Expr, rtol: float = FLOAT_RTOL) -> pl.Expr:
    """Null-safe float equality within relative tolerance ``rtol`` (NaN equals NaN)."""
    close = (a - b).abs() <= rtol * pl.max_horizontal(a.abs(), b.abs())
    both_nan = a.is_nan() & b.is_nan()
    return (
        pl.when(a.is_null() | b.is_null())
        .then(a.is_null() & b.is_null())
        .otherwise((a == b) | close | both_nan)
    )


def _same(part: str, column: str, dtype: object) -> pl.Expr:
    e, a = pl.col(column), pl.col(f"{column}__a")
    if dtype == F:
        return floats_equal(e, a)
    if column == "explicit_link":  # a reviewer's decision stands over the app's link
        return e.eq_missing(a) | (a == "override").fill_null(False)
    if RENAMED.get(part) == column:
        return e.eq_missing(a) | a.str.starts_with(e + " (").fill_null(False)
    return e.eq_missing(a)


def _shown(column: str, dtype: object, name: str) -> pl.Expr:
    value = pl.col(name)
    if column in TIMES:
        text = pl.from_epoch(value, "us").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
    elif dtype == S:
        text = pl.lit("'") + value.str.head(80) + pl.lit("'")
    else:
        text = value.cast(pl.String)
    return text.fill_null("null")


def _id_differences(part: str, e: pl.DataFrame, a: pl.DataFrame) -> pl.DataFrame:
    missing = e.join(a, on=["user_id", "id"], how="anti")
    extra = a.join(e, on=["user_id", "id"], how="anti")
    counts = (
        e.group_by("user_id")
        .len("n_e")
        .join(a.group_by("user_id").len("n_a"), on="user_id", how="full", coalesce=True)
    )
    per_user = (
        counts.join(
            missing.group_by("user_id").agg(pl.col("id").alias("missing")), on="user_id", how="left"
        )
        .join(extra.group_by("user_id").agg(pl.col("id").alias("extra")), on="user_id", how="left")
        .filter(pl.col("missing").is_not_null() | pl.col("extra").is_not_null())
    )
    return per_user.sort("user_id").select(
        "user_id",
        pl.lit(f"{part}.ids").alias("check"),
        pl.format("{} rows", pl.col("n_e").fill_null(0))
        .add(
            pl.when(pl.col("missing").is_not_null())
            .then(pl.lit("; not in target: ") + _listing(pl.col("missing")))
            .otherwise(pl.lit(""))
        )
        .alias("expected"),
        pl.format("{} rows", pl.col("n_a").fill_null(0))
        .add(
            pl.when(pl.col("extra").is_not_null())
            .then(pl.lit("; not expected: ") + _listing(pl.col("extra")))
            .otherwise(pl.lit(""))
        )
        .alias("actual"),
    )


def _value_differences(part: str, e: pl.DataFrame, a: pl.DataFrame) -> pl.DataFrame:
    """One difference per user and column: the rows (ids) whose value differs, both values."""
    joined = e.join(a, on=["user_id", "id"], how="inner", suffix="__a")
    out = []
    for column, dtype in PARTS[part].items():
        if column in ("id", "user_id"):
            continue
        bad = joined.filter(~_same(part, column, dtype))
        if bad.height == 0:
            continue
        items = bad.sort("id").select(
            "user_id",
            (pl.col("id") + pl.lit(" ") + _shown(column, dtype, column)).alias("e"),
            (pl.col("id") + pl.lit(" ") + _shown(column, dtype, f"{column}__a")).alias("a"),
        )
        per_user = items.group_by("user_id", maintain_order=True).agg("e", "a")
        out.append(
            per_user.select(
                "user_id",
                pl.lit(f"{part}.{column}").alias("check"),
                _joined("e").alias("expected"),
                _joined("a").alias("actual"),
            )
        )
    return pl.concat(out) if out else _empty()


def _joined(column: str) -> pl.Expr:
    shown = pl.col(column).list.head(MAX_LISTED).list.join("; ")
    rest = pl.col(column).list.len().cast(pl.Int64) - MAX_LISTED
    return pl.when(rest > 0).then(pl.format("{} ... and {} more", shown, rest)).otherwise(shown)


def _decision_differences(e: pl.DataFrame, a: pl.DataFrame) -> pl.DataFrame:
    """The ledger's decisions against verify's: valid rows quarantined (every row the database
    rejected is one), invalid rows not quarantined, and other reasons."""
    both = e.join(a, on=["user_id", "id"], how="full", coalesce=True, suffix="__a")
    kinds = (
        pl.when(pl.col("reason").is_null())
        .then(pl.lit("decision.valid_quarantined"))
        .when(pl.col("reason__a").is_null())
        .then(pl.lit("decision.invalid_migrated"))
        .otherwise(pl.lit("decision.reason"))
    )
    items = both.filter(pl.col("reason").ne_missing(pl.col("reason__a"))).sort("id")
    items = items.select(
        "user_id",
        kinds.alias("check"),
        (pl.col("id") + pl.lit(" ") + pl.col("reason").fill_null("valid")).alias("e"),
        (pl.col("id") + pl.lit(" ") + pl.col("reason__a").fill_null("not quarantined")).alias("a"),
    )
    per_user = items.group_by("user_id", "check", maintain_order=True).agg("e", "a")
    return per_user.select(
        "user_id", "check", _joined("e").alias("expected"), _joined("a").alias("actual")
    )


def _link_differences(links: pl.DataFrame) -> pl.DataFrame:
    foreign = pl.col("config_user_id").is_null() | (pl.col("config_user_id") != pl.col("user_id"))
    return links.select(
        "user_id",
        pl.lit("tagged_models.circuit_config_id").alias("check"),
        pl.when(foreign)
        .then(pl.format("{}: a configuration of user {}", "tagged_model_id", "user_id"))
        .when(pl.col("ledger_config_id").is_null())
        .then(pl.format("{}: a link decision in migration.links", "tagged_model_id"))
        .otherwise(pl.format("{}: {} (migration.links)", "tagged_model_id", "ledger_config_id"))
        .alias("expected"),
        pl.when(foreign & pl.col("config_user_id").is_null())
        .then(pl.format("{}: {} (no such configuration)", "tagged_model_id", "circuit_config_id"))
        .when(foreign)
        .then(
            pl.format(
                "{}: {} (of user {})", "tagged_model_id", "circuit_config_id", "config_user_id"
            )
        )
        .when(pl.col("ledger_config_id").is_null())
        .then(pl.format("{}: {} (no link row)", "tagged_model_id", "circuit_config_id"))
        .otherwise(pl.format("{}: {}", "tagged_model_id", "circuit_config_id"))
        .alias("actual"),
    )


def _merge_differences(merges: pl.DataFrame) -> pl.DataFrame:
    return merges.select(
        "user_id",
        pl.lit("tagged_models.merged").alias("check"),
        pl.format("{} merged into {}", "tagged_model_id", "target_id").alias("expected"),
        pl.col("problem").alias("actual"),
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=dict(DIFFERENCES))


@dataclass(frozen=True)
class Rows:
    """One side's rows per part (``PARTS``), for the users compared in detail."""

    parts: Mapping[str, pl.DataFrame]


def compare(
    expected: Rows,
    actual: Rows,
    detailed: Mapping[str, Sequence[str]],
    links: pl.DataFrame,
    merges: pl.DataFrame,
) -> pl.DataFrame:
    """Every difference (``DIFFERENCES``), sorted by user then check, of the users
    ``detailed`` names per part; ``links`` (``LINK_ROWS``): target models whose configuration
    is not their user's or not their ledger link's; ``merges`` (``MERGE_ROWS``): merged
    duplicates whose survivor is wrong."""
    out = [
        _link_differences(frame(links, LINK_ROWS)),
        _merge_differences(frame(merges, MERGE_ROWS)),
    ]
    for part, schema in PARTS.items():
        users = list(detailed.get(part, ()))
        if not users:
            continue
        e = frame(expected.parts[part], schema).filter(pl.col("user_id").is_in(users))
        a = frame(actual.parts[part], schema).filter(pl.col("user_id").is_in(users))
        if part == "quarantine":
            out.append(_decision_differences(e, a))
            continue
        out += [_id_differences(part, e, a), _value_differences(part, e, a)]
    diffs = pl.concat([frame(d, DIFFERENCES) for d in out])
    return diffs.sort(["user_id", "check", "expected"], nulls_last=False)


def verification(
    differences: pl.DataFrame, checked: int, run_id: str | None = None
) -> Verification:
    """The ``Verification`` of a differences frame."""
    diffs = frame(differences, DIFFERENCES)
    return Verification(
        ok=diffs.height == 0, users_checked=checked, differences=diffs, run_id=run_id
    )


def summary_lines(result: Verification, limit: int = 50) -> Sequence[str]:
    """Human-readable lines: the verdict, then up to ``limit`` differences."""
    head = (
        f"verification passed: {result.users_checked} users checked, no differences"
        if result.ok
        else f"verification FAILED: {result.differences['user_id'].n_unique()} users differ "
        f"({result.differences.height} differences, {result.users_checked} users checked)"
    )
    lines = [head]
    for user, check, expected, actual in result.differences.head(limit).iter_rows():
        lines.append(f"{user or '(no user)'}  {check}: expected {expected}; found {actual}")
    if result.differences.height > limit:
        lines.append(f"... and {result.differences.height - limit} more differences")
    return lines
