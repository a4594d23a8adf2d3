"""review.csv and quarantine.csv frames: fixed columns, candidates from the evidence, and a
review file that reads back as link overrides."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from flows.migrate import read_overrides
from reports.review import (
    CONFIG_NAMES,
    REVIEW,
    REVIEW_LINKS,
    review_frame,
)

M1, M2, M3 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
C1, C2 = (f"00000000-0000-4000-9000-00000000000{i}" for i in (1, 2))


def evidence(*candidates: tuple[str, list[str]]) -> str:
    return json.dumps(
        {
            "stored_resnorm": 1.5,
            "candidates": 3,
            "top": [
                {"id": cid, "resnorm": 1.5, "distance": 0.25 * i, "evidence": signals}
                for i, (cid, signals) in enumerate(candidates)
            ],
        }
    )


def links() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "tagged_model_id": [M1, M2, M3],
            "circuit_config_id": [C1, C2, C1],
            "method": ["resnorm", "proximity", "recovered"],
            "confidence": [0.4950000047683716, 0.25, 0.2],
            "user_id": ["u1", "u1", None],
            "model_id": ["m1", "m2", "m3"],
            "tag_name": ["best_fit", "odd", "x"],
            "evidence": [
                evidence((C1, ["resnorm", "time"]), (C2, ["resnorm", "time"])),
                evidence((C2, [])),
                '{"recovered_from_models": 3}',
            ],
        },
        schema=dict(REVIEW_LINKS),
    )


NAMES = pl.DataFrame({"id": [C1, C2], "name": ["Control", "Control (twin)"]}, schema=CONFIG_NAMES)


def test_review_frame_spreads_candidates_into_columns() -> None:
    review = review_frame(links(), NAMES)
    assert review.schema == pl.Schema(REVIEW)
    assert review["tagged_model_id"].to_list() == [M1, M2, M3]
    first = review.row(0, named=True)
    assert first["circuit_config_id"] == C1 and first["chosen_name"] == "Control"
    assert first["confidence"] == 0.495 and first["stored_resnorm"] == 1.5
    assert first["candidates"] == 3
    assert first["candidate_1_id"] == C1 and first["candidate_1_evidence"] == "resnorm;time"
    assert first["candidate_2_id"] == C2 and first["candidate_2_name"] == "Control (twin)"
    second = review.row(1, named=True)
    assert second["candidate_1_evidence"] == "" and second["candidate_2_id"] is None
    recovered = review.row(2, named=True)
    assert recovered["candidate_1_id"] is None and recovered["candidates"] is None
    assert recovered["evidence"] == '{"recovered_from_models": 3}'


def test_review_file_reads_back_as_overrides(tmp_path: Path) -> None:
    review = review_frame(links(), NAMES)
    # the reviewer picks candidate 2 for the first model and leaves the second one open
    edited = review.with_columns(
        pl.when(pl.col("tagged_model_id") == M1)
        .then(pl.col("candidate_2_id"))
        .when(pl.col("tagged_model_id") == M2)
        .then(pl.lit(""))
        .otherwise(pl.col("circuit_config_id"))
        .alias("circuit_config_id")
    )
    path = tmp_path / "review.csv"
    edited.write_csv(path)
    overrides = read_overrides(str(path))
    assert overrides is not None
    assert sorted(overrides.rows()) == sorted([(M1, C2), (M3, C1)])


def test_empty_review_has_the_columns() -> None:
    review = review_frame(pl.DataFrame(schema=dict(REVIEW_LINKS)), NAMES)
    assert review.height == 0 and review.schema == pl.Schema(REVIEW)
