"""Link accuracy and quarantine reasons against the generator's ground truth
(``synthetic.legacy_data``)."""

from __future__ import annotations

import polars as pl
import pytest

from transforms.accounting import accounting
from transforms.pipeline import TransformResult, transform

legacy_data = pytest.importorskip("synthetic.legacy_data")

USERS = 3000
MIN_PRECISION = 0.995


@pytest.fixture(scope="module")
def world() -> tuple[object, TransformResult]:
    data = legacy_data.generate(USERS, seed=20240601)
    result = transform(data.auth_users, data.user_sessions, data.tagged_models, data.user_profiles)
    return data, result


def landed(result: TransformResult) -> pl.DataFrame:
    """Source (table, id) -> the configuration it landed in (kept id or id_map)."""
    kept = result.circuit_configurations.select(
        pl.lit("user_profiles").alias("source_table"),
        pl.col("id").alias("source_id"),
        pl.col("id").alias("config_id"),
    )
    mapped = result.id_map.filter(pl.col("target_table") == "circuit_configurations").select(
        "source_table", "source_id", pl.col("target_id").alias("config_id")
    )
    return pl.concat([kept, mapped])


def test_accounting_balances(world: tuple[object, TransformResult]) -> None:
    data, result = world
    acc = accounting(data.user_sessions, data.tagged_models, data.user_profiles, result)  # type: ignore[attr-defined]
    assert acc.ok, acc.problems[:5]


def test_link_precision_and_flags(world: tuple[object, TransformResult]) -> None:
    data, result = world
    truth = data.truth_links.join(  # type: ignore[attr-defined]
        landed(result),
        left_on=["true_source_table", "true_source_id"],
        right_on=["source_table", "source_id"],
        how="left",
    )
    joined = result.links.join(truth, on="tagged_model_id", how="inner").with_columns(
        (pl.col("circuit_config_id") == pl.col("config_id")).fill_null(False).alias("correct")
    )
    assert joined.height == result.links.height  # every link has a truth row
    sure = joined.filter(~pl.col("needs_review"))
    precision = sure["correct"].mean() if sure.height else 1.0
    flagged = joined["needs_review"].mean()
    by_method = joined.group_by("method").agg(
        pl.len(), pl.col("correct").mean().alias("accuracy"), pl.col("needs_review").mean()
    )
    print(
        f"\nlinks: {joined.height}, precision (not flagged): {precision:.5f}, "
        f"flagged share: {flagged:.4f}"
    )
    print(by_method.sort("method"))
    assert precision >= MIN_PRECISION
    missed = joined.filter(pl.col("indistinguishable") & ~pl.col("needs_review"))
    assert missed.height == 0, missed.head()


def test_truth_quarantine_reasons(world: tuple[object, TransformResult]) -> None:
    data, result = world
    expected = data.truth_quarantine  # type: ignore[attr-defined]
    got = expected.join(
        result.quarantine.select("source_table", "source_id", pl.col("reason").alias("got")),
        on=["source_table", "source_id"],
        how="left",
    )
    wrong = got.filter(pl.col("got").is_null() | (pl.col("got") != pl.col("reason")))
    assert wrong.height == 0, wrong.group_by("source_table", "reason", "got").len()


def test_truth_duplicates_are_merged(world: tuple[object, TransformResult]) -> None:
    """Each duplicate and its original end in one target row, one of them merged into it
    (the direction is ours: the latest tagged model is kept, per issue 3)."""
    data, result = world
    dups = data.truth_duplicates  # type: ignore[attr-defined]
    target = pl.concat(
        [
            landed(result).rename({"config_id": "target"}),
            result.tagged_models.select(
                pl.lit("tagged_models").alias("source_table"),
                pl.col("id").alias("source_id"),
                pl.col("id").alias("target"),
            ),
            result.id_map.filter(pl.col("target_table") == "tagged_models").select(
                "source_table", "source_id", pl.col("target_id").alias("target")
            ),
        ]
    )
    pairs = dups.join(target, on=["source_table", "source_id"], how="left").join(
        target.rename({"target": "of_target"}),
        left_on=["duplicate_of_table", "duplicate_of_id"],
        right_on=["source_table", "source_id"],
        how="left",
    )
    apart = pairs.filter(
        pl.col("target").is_null() | (pl.col("target") != pl.col("of_target")).fill_null(True)
    )
    assert apart.height == 0, apart.head()
    merged = result.id_map.filter(pl.col("outcome") == "merged")
    assert merged.height >= dups.height
