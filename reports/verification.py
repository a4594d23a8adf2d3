"""Independent verification of a migration: pure comparison of what the target must hold (computed
from the source by ``flows.verify`` with its own SQL) with what it holds.

Three levels. Per bucket of users, a count and a digest of the users' signatures (``BUCKETS``)
name the buckets that may differ (:func:`buckets_to_drill`); a bucket that matches holds no
difference, its users are only counted (:func:`users_in_matching_buckets`). Per user of the
other buckets, cheap summaries (counts and exact digests, ``EXPECTED_USERS`` / ``ACTUAL_USERS``)
name the users whose tagged models, sessions or configuration ids may differ
(:func:`users_to_detail`); only their rows (``MODEL_ROWS``, ``ID_ROWS``) are then read and
compared field by field, floats within ``schemas.tolerances.FLOAT_RTOL`` (:func:`compare`).
Nothing here imports ``transforms``: a bug there cannot hide itself.

Every difference is one row of ``DIFFERENCES``: the user (null for rows that name none), the
check that failed and what was expected and found, as text. Checks:

- ``user.unexpected``: the target holds rows of a user with no legacy row at all;
- ``user_profiles.row``: a user with migrated data has no target ``user_profiles`` row;
- ``tagged_models.ids`` / ``sessions.ids``: the id sets differ (missing or unexpected ids);
- ``tagged_models.payload``: a model's fields differ;
- ``circuits.count``: the number of configurations differs from the number of distinct circuits
  (or one recovered configuration for a user with tagged models and no circuit);
- ``circuits.ids``: the configuration ids differ from those the circuits map to (their own id,
  or the one ``migration.id_map`` names), a recovered one allowed as above;
- ``tagged_models.circuit_config_id``: a model points at no configuration of its user, or not at
  the one its ledger link (``migration.links``) names;
- ``unowned.rows`` (user null): a legacy row with no user that the ledger did not quarantine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from schemas.tolerances import FLOAT_RTOL

Schema = Mapping[str, pl.DataType | type[pl.DataType]]

BUCKETS: Schema = {
    "part": pl.String,  # what the signatures cover: "rows", "circuits" or "configurations"
    "bucket": pl.String,  # the leading hex digits of the user keys
    "users": pl.Int64,  # user keys seen in the part ("rows", expected side: every user key)
    "signatures": pl.Int64,  # users with a signature (rows in the target, or due there)
    "digest": pl.String,  # order-independent digest of those signatures (null: none)
}
"""Per part and bucket of users: a user's signature is its key, counts and digests (the
expected side's says what the target must hold, a recovered configuration never matching), so
equal digests in every part mean every user of the bucket passes every per-user check."""

EXPECTED_USERS: Schema = {
    "user_id": pl.String,
    "legacy_rows": pl.Int64,  # legacy rows with this user key, quarantined or not
    "kept_rows": pl.Int64,  # rows and saved_profiles elements the ledger did not quarantine
    "profile_quarantined": pl.Boolean,  # the ledger quarantined the user's profile (auth_users)
    "tagged_models": pl.Int64,
    "tagged_models_digest": pl.String,
    "sessions": pl.Int64,
    "sessions_digest": pl.String,
    "circuits": pl.Int64,  # distinct circuits (recovered configuration not included)
    "circuits_digest": pl.String,  # digest of the configuration ids the circuits map to
}

ACTUAL_USERS: Schema = {
    "user_id": pl.String,
    "tagged_models": pl.Int64,
    "tagged_models_digest": pl.String,
    "sessions": pl.Int64,
    "sessions_digest": pl.String,
    "circuits": pl.Int64,
    "circuits_digest": pl.String,
    "profiles": pl.Int64,
}

MODEL_FLOATS = ("resnorm_value", "Rsh", "Ra", "Ca", "Rb", "Cb")
MODEL_EXACT = (
    "session_id",
    "model_id",
    "tag_name",
    "tag_category",
    "tagged_at",
    "notes",
    "is_interesting",
)
MODEL_ROWS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "session_id": pl.String,
    "model_id": pl.String,
    "tag_name": pl.String,
    "tag_category": pl.String,
    "resnorm_value": pl.Float64,
    "tagged_at": pl.Int64,  # microseconds since the epoch (UTC)
    "notes": pl.String,
    "is_interesting": pl.Boolean,
    "Rsh": pl.Float64,
    "Ra": pl.Float64,
    "Ca": pl.Float64,
    "Rb": pl.Float64,
    "Cb": pl.Float64,
}

ID_ROWS: Schema = {"id": pl.String, "user_id": pl.String}
"""Sessions, or configurations: ids per user."""

LINK_ROWS: Schema = {
    "user_id": pl.String,
    "tagged_model_id": pl.String,
    "circuit_config_id": pl.String,
    "config_user_id": pl.String,  # owner of the configuration pointed at (null: none)
    "ledger_config_id": pl.String,  # migration.links.circuit_config_id (null: no link row)
}

UNOWNED_ROWS: Schema = {"source_table": pl.String, "source_id": pl.String}

DIFFERENCES: Schema = {
    "user_id": pl.String,
    "check": pl.String,
    "expected": pl.String,
    "actual": pl.String,
}

MAX_LISTED = 10
"""Ids or models listed per difference; the rest are counted ("... and 12 more")."""


@dataclass(frozen=True, eq=False)
class Verification:
    """The outcome of a verification: ``ok`` when ``differences`` (``DIFFERENCES``) is empty;
    ``users_checked`` counts the user keys seen on either side (ids that name no auth user
    included); ``run_id`` is the ledger run the target was checked against."""

    ok: bool
    users_checked: int
    differences: pl.DataFrame
    run_id: str | None = None


def _frame(frame: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()])


def _empty_differences() -> pl.DataFrame:
    return pl.DataFrame(schema=dict(DIFFERENCES))


def _listing(items: pl.Expr) -> pl.Expr:
    """At most ``MAX_LISTED`` sorted items of a list column, joined, with a count of the rest."""
    shown = items.list.sort().list.head(MAX_LISTED).list.join(", ")
    rest = items.list.len().cast(pl.Int64) - MAX_LISTED
    return pl.when(rest > 0).then(pl.format("{} ... and {} more", shown, rest)).otherwise(shown)


def buckets_to_drill(expected: pl.DataFrame, actual: pl.DataFrame) -> list[str]:
    """Buckets whose signature counts or digests differ between the sides in some part (a
    bucket absent from one side has no signatures there): only their users need summaries."""
    key = ["part", "bucket"]
    e = _frame(expected, BUCKETS).select(*key, "signatures", "digest")
    a = _frame(actual, BUCKETS).select(*key, "signatures", "digest")
    both = e.join(a, on=key, how="full", coalesce=True, suffix="__a")
    differ = pl.col("signatures").fill_null(0).ne(pl.col("signatures__a").fill_null(0)) | pl.col(
        "digest"
    ).ne_missing(pl.col("digest__a"))
    return sorted(set(both.filter(differ)["bucket"]))


def users_in_matching_buckets(expected: pl.DataFrame, drilled: Sequence[str]) -> int:
    """User keys of the expected "rows" buckets not in ``drilled``: a matching bucket's target
    users are among them, so this counts its users seen on either side."""
    e = _frame(expected, BUCKETS).filter(pl.col("part") == "rows")
    return int(e.filter(~pl.col("bucket").is_in(list(drilled)))["users"].sum())


DETAILED = ("tagged_models", "sessions", "circuits")
"""The per-user sets read row by row when their summaries' digests differ."""


def users_to_detail(expected: pl.DataFrame, actual: pl.DataFrame, table: str) -> list[str]:
    """Users whose ``<table>_digest`` (``table`` one of ``DETAILED``) differs between the
    summaries (a user absent from one side has a null digest there): only their rows need
    reading."""
    digest = f"{table}_digest"
    e = _frame(expected, EXPECTED_USERS).select("user_id", digest).drop_nulls("user_id")
    a = _frame(actual, ACTUAL_USERS).select("user_id", digest)
    both = e.join(a, on="user_id", how="full", coalesce=True, suffix="__a")
    return sorted(both.filter(pl.col(digest).ne_missing(pl.col(f"{digest}__a")))["user_id"])


def _id_differences(
    expected: pl.DataFrame,
    actual: pl.DataFrame,
    check: str,
    may_add_one: pl.Series | None = None,
) -> pl.DataFrame:
    """Per user, the ids expected but absent and present but not expected. Users in
    ``may_add_one`` may have one unexpected id when none is expected (a recovered row)."""
    e = expected.select("user_id", "id").drop_nulls("user_id").unique()
    a = actual.select("user_id", "id").unique()
    missing = e.join(a, on=["user_id", "id"], how="anti")
    extra = a.join(e, on=["user_id", "id"], how="anti")
    counts = (
        e.group_by("user_id")
        .len("n_expected")
        .join(a.group_by("user_id").len("n_actual"), on="user_id", how="full", coalesce=True)
    )
    per_user = (
        counts.join(
            missing.group_by("user_id").agg(pl.col("id").alias("missing")), on="user_id", how="left"
        )
        .join(extra.group_by("user_id").agg(pl.col("id").alias("extra")), on="user_id", how="left")
        .filter(pl.col("missing").is_not_null() | pl.col("extra").is_not_null())
    )
    if may_add_one is not None:
        allowed = (
            pl.col("user_id").is_in(may_add_one.implode())
            & pl.col("n_expected").fill_null(0).eq(0)
            & (pl.col("extra").list.len() == 1)
        )
        per_user = per_user.filter(~allowed)
    return per_user.sort("user_id").select(
        "user_id",
        pl.lit(check).alias("check"),
        pl.format("{} ids", pl.col("n_expected").fill_null(0))
        .add(
            pl.when(pl.col("missing").is_not_null())
            .then(pl.lit("; not in target: ") + _listing(pl.col("missing")))
            .otherwise(pl.lit(""))
        )
        .alias("expected"),
        pl.format("{} ids", pl.col("n_actual").fill_null(0))
        .add(
            pl.when(pl.col("extra").is_not_null())
            .then(pl.lit("; not expected: ") + _listing(pl.col("extra")))
            .otherwise(pl.lit(""))
        )
        .alias("actual"),
    )


def floats_equal(a: pl.Expr, b: pl.Expr, rtol: float = FLOAT_RTOL) -> pl.Expr:
    """Null-safe float equality within relative tolerance ``rtol`` (NaN equals NaN)."""
    close = (a - b).abs() <= rtol * pl.max_horizontal(a.abs(), b.abs())
    both_nan = a.is_nan() & b.is_nan()
    return (
        pl.when(a.is_null() | b.is_null())
        .then(a.is_null() & b.is_null())
        .otherwise((a == b) | close | both_nan)
    )


def _shown(name: str, column: str) -> pl.Expr:
    """Field ``name`` (of ``MODEL_ROWS``) in ``column`` as text for a reader."""
    value = pl.col(column)
    if name == "tagged_at":
        text = pl.from_epoch(value, "us").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
    elif MODEL_ROWS[name] == pl.String:
        text = pl.lit("'") + value + pl.lit("'")
    else:
        text = value.cast(pl.String)
    return text.fill_null("null")


def _payload_differences(expected: pl.DataFrame, actual: pl.DataFrame, rtol: float) -> pl.DataFrame:
    joined = expected.drop_nulls("user_id").join(
        actual, on=["user_id", "id"], how="inner", suffix="__a"
    )
    diffs: list[tuple[str, pl.Expr]] = []
    for name in MODEL_EXACT:
        diffs.append((name, pl.col(name).ne_missing(pl.col(f"{name}__a"))))
    for name in MODEL_FLOATS:
        diffs.append((name, ~floats_equal(pl.col(name), pl.col(f"{name}__a"), rtol)))
    flags = joined.with_columns([d.alias(f"__d_{n}") for n, d in diffs])
    flags = flags.filter(pl.any_horizontal([f"__d_{n}" for n, _ in diffs]))
    if flags.height == 0:
        return _empty_differences()

    def side(suffix: str) -> pl.Expr:
        parts = [
            pl.when(pl.col(f"__d_{name}")).then(
                pl.lit(f"{name}=") + _shown(name, f"{name}{suffix}")
            )
            for name, _ in diffs
        ]
        return pl.col("id") + pl.lit(" ") + pl.concat_str(parts, separator=", ", ignore_nulls=True)

    items = flags.select("user_id", "id", side("").alias("e"), side("__a").alias("a"))
    per_user = items.sort("id").group_by("user_id", maintain_order=True).agg("e", "a")

    def listed(column: str) -> pl.Expr:
        shown = pl.col(column).list.head(MAX_LISTED).list.join("; ")
        rest = pl.col(column).list.len().cast(pl.Int64) - MAX_LISTED
        return pl.when(rest > 0).then(pl.format("{} ... and {} more", shown, rest)).otherwise(shown)

    return per_user.sort("user_id").select(
        "user_id",
        pl.lit("tagged_models.payload").alias("check"),
        listed("e").alias("expected"),
        listed("a").alias("actual"),
    )


def _summary_differences(expected: pl.DataFrame, actual: pl.DataFrame) -> pl.DataFrame:
    e = expected.drop_nulls("user_id")
    both = e.join(actual, on="user_id", how="full", coalesce=True, suffix="__a")
    zero = {
        c: pl.col(c).fill_null(0)
        for c in ("legacy_rows", "kept_rows", "tagged_models", "circuits", "profiles")
    }
    both = both.with_columns(
        *[v.alias(c) for c, v in zero.items()],
        pl.col("tagged_models__a").fill_null(0),
        pl.col("sessions__a").fill_null(0),
        pl.col("circuits__a").fill_null(0),
        pl.col("profile_quarantined").fill_null(False),
        pl.col("tagged_models__a").is_not_null().alias("__in_target"),
    )
    in_target = pl.col("__in_target")
    unexpected = both.filter(in_target & (pl.col("legacy_rows") == 0)).select(
        "user_id",
        pl.lit("user.unexpected").alias("check"),
        pl.lit("no rows (the user has no legacy data)").alias("expected"),
        pl.format(
            "{} tagged_models, {} sessions, {} circuit_configurations, {} user_profiles",
            "tagged_models__a",
            "sessions__a",
            "circuits__a",
            "profiles",
        ).alias("actual"),
    )
    profile = both.filter(
        (pl.col("kept_rows") > 0) & ~pl.col("profile_quarantined") & (pl.col("profiles") == 0)
    ).select(
        "user_id",
        pl.lit("user_profiles.row").alias("check"),
        pl.lit("1 row").alias("expected"),
        pl.lit("0 rows").alias("actual"),
    )
    # A user with tagged models but no circuit gets one recovered configuration.
    expected_circuits = (
        pl.when((pl.col("circuits") == 0) & (pl.col("tagged_models") > 0))
        .then(pl.lit(1, dtype=pl.Int64))
        .otherwise(pl.col("circuits"))
    )
    circuits = (
        both.filter(pl.col("legacy_rows") > 0)
        .with_columns(expected_circuits.alias("__exp"))
        .filter(pl.col("__exp") != pl.col("circuits__a"))
        .select(
            "user_id",
            pl.lit("circuits.count").alias("check"),
            pl.when((pl.col("circuits") == 0) & (pl.col("__exp") == 1))
            .then(pl.lit("1 (recovered: tagged models, no circuit)"))
            .otherwise(pl.col("__exp").cast(pl.String))
            .alias("expected"),
            pl.col("circuits__a").cast(pl.String).alias("actual"),
        )
    )
    return pl.concat([unexpected, profile, circuits])


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


def _unowned_differences(unowned: pl.DataFrame) -> pl.DataFrame:
    if unowned.height == 0:
        return _empty_differences()
    per_table = (
        unowned.group_by("source_table").agg(pl.col("source_id").alias("ids")).sort("source_table")
    )
    return per_table.select(
        pl.lit(None, dtype=pl.String).alias("user_id"),
        pl.lit("unowned.rows").alias("check"),
        pl.format("{} rows quarantined (no user)", pl.col("source_table")).alias("expected"),
        pl.format(
            "{} {} rows not in the quarantine: {}",
            pl.col("ids").list.len(),
            pl.col("source_table"),
            _listing(pl.col("ids")),
        ).alias("actual"),
    )


CHECK_ORDER = (
    "unowned.rows",
    "user.unexpected",
    "user_profiles.row",
    "circuits.count",
    "circuits.ids",
    "sessions.ids",
    "tagged_models.ids",
    "tagged_models.payload",
    "tagged_models.circuit_config_id",
)


@dataclass(frozen=True)
class Side:
    """One side of the comparison: per-user summaries and the rows of the users to compare in
    detail (all users, or those :func:`users_to_detail` names; a user with no rows on either
    side is taken to match)."""

    users: pl.DataFrame  # EXPECTED_USERS (expected side) or ACTUAL_USERS (target side)
    tagged_models: pl.DataFrame  # MODEL_ROWS
    sessions: pl.DataFrame  # ID_ROWS
    circuits: pl.DataFrame  # ID_ROWS: configuration ids (expected: those the circuits map to)


def compare(
    expected: Side,
    actual: Side,
    links: pl.DataFrame,
    unowned: pl.DataFrame,
    *,
    rtol: float = FLOAT_RTOL,
) -> pl.DataFrame:
    """Every difference (``DIFFERENCES``), sorted by user then check. ``links``: target models
    whose configuration is not their user's or not their ledger link's (``LINK_ROWS``);
    ``unowned``: legacy rows with no user the ledger did not quarantine (``UNOWNED_ROWS``)."""
    e_users = _frame(expected.users, EXPECTED_USERS)
    a_users = _frame(actual.users, ACTUAL_USERS)
    e_models = _frame(expected.tagged_models, MODEL_ROWS)
    a_models = _frame(actual.tagged_models, MODEL_ROWS)
    # a user with tagged models but no circuit gets one recovered configuration
    recovering = e_users.filter((pl.col("circuits") == 0) & (pl.col("tagged_models") > 0))
    parts = [
        _unowned_differences(_frame(unowned, UNOWNED_ROWS)),
        _summary_differences(e_users, a_users),
        _id_differences(
            _frame(expected.circuits, ID_ROWS),
            _frame(actual.circuits, ID_ROWS),
            "circuits.ids",
            may_add_one=recovering["user_id"],
        ),
        _id_differences(
            _frame(expected.sessions, ID_ROWS), _frame(actual.sessions, ID_ROWS), "sessions.ids"
        ),
        _id_differences(e_models, a_models, "tagged_models.ids"),
        _payload_differences(e_models, a_models, rtol),
        _link_differences(_frame(links, LINK_ROWS)),
    ]
    out = pl.concat([_frame(p, DIFFERENCES) for p in parts])
    order = pl.col("check").replace_strict(
        list(CHECK_ORDER), list(range(len(CHECK_ORDER))), default=len(CHECK_ORDER)
    )
    return (
        out.with_columns(order.alias("__order"))
        .sort(["user_id", "__order", "expected"], nulls_last=False)
        .drop("__order")
    )


def users_checked(expected_users: pl.DataFrame, actual_users: pl.DataFrame) -> int:
    """Distinct user keys on either side (rows with no user key not counted)."""
    ids = pl.concat([expected_users.select("user_id"), actual_users.select("user_id")]).drop_nulls()
    return ids.n_unique()


def verification(
    differences: pl.DataFrame, checked: int, run_id: str | None = None
) -> Verification:
    """The ``Verification`` of a differences frame."""
    diffs = _frame(differences, DIFFERENCES)
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
