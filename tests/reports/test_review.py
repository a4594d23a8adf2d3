"""review.csv and quarantine.csv frames: fixed columns, the suggestion in its own columns, the
decision column empty, and a review file that records only what a reviewer filled in."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from flows.decisions import file_overrides, read_file
from flows.migrate import read_overrides
from reports.review import (
    CONFIG_NAMES,
    REVIEW,
    REVIEW_LINKS,
    review_frame,
)
from schemas.errors import ConfigurationError

M1, M2, M3, M4 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3, 4))
C1, C2, C3 = (f"00000000-0000-4000-9000-00000000000{i}" for i in (1, 2, 3))


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
    """A run's review list: two flagged links, a recovered one, and a decision not applied."""
    return pl.DataFrame(
        {
            "tagged_model_id": [M1, M2, M3, M4],
            "circuit_config_id": [C1, C2, C1, C2],
            "method": ["resnorm", "proximity", "recovered", "resnorm"],
            "confidence": [0.4950000047683716, 0.25, 0.2, 0.99],
            "user_id": ["u1", "u1", None, "u1"],
            "model_id": ["m1", "m2", "m3", "m4"],
            "tag_name": ["best_fit", "odd", "x", "y"],
            "evidence": [
                evidence((C1, ["resnorm", "time"]), (C2, ["resnorm", "time"])),
                evidence((C2, [])),
                '{"recovered_from_models": 3}',
                evidence((C2, ["resnorm"]), (C1, [])),
            ],
            "decided_config_id": [None, None, None, "00000000-0000-4000-9000-0000000000ff"],
            "decision_note": [None, None, None, "configuration ... is no longer one of ..."],
        },
        schema=dict(REVIEW_LINKS),
    )


NAMES = pl.DataFrame(
    {
        "id": [C1, C2, C3],
        "name": ["Control", "Control (twin)", "Another"],
        "user_id": ["u1", "u1", "u1"],
    },
    schema=CONFIG_NAMES,
)


def test_review_frame_shows_the_suggestion_and_leaves_the_decision_empty() -> None:
    review = review_frame(links(), NAMES)
    assert review.schema == pl.Schema(REVIEW)
    assert review["tagged_model_id"].to_list() == [M1, M2, M3, M4]
    assert review["circuit_config_id"].null_count() == review.height  # the reviewer's column
    first = review.row(0, named=True)
    assert first["suggested_config_id"] == C1 and first["suggested_name"] == "Control"
    assert first["confidence"] == 0.495 and first["stored_resnorm"] == 1.5
    assert first["candidates"] == 3
    assert first["candidate_1_id"] == C1 and first["candidate_1_evidence"] == "resnorm;time"
    assert first["candidate_2_id"] == C2 and first["candidate_2_name"] == "Control (twin)"
    assert first["other_candidates"] == f"Another <{C3}>"
    assert first["recorded_decision"] is None and first["decision_note"] is None
    second = review.row(1, named=True)
    assert second["candidate_1_evidence"] == "" and second["candidate_2_id"] is None
    assert second["other_candidates"] == f"Another <{C3}>; Control <{C1}>"
    recovered = review.row(2, named=True)
    assert recovered["candidate_1_id"] is None and recovered["candidates"] is None
    assert recovered["evidence"] == '{"recovered_from_models": 3}'
    assert recovered["other_candidates"] is None  # no user: no candidates
    stale = review.row(3, named=True)
    assert stale["recorded_decision"].endswith("ff") and "no longer" in stale["decision_note"]


def test_an_unedited_review_file_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "review.csv"
    review_frame(links(), NAMES).write_csv(path)
    parsed = read_file(path)
    assert parsed.rows.height == 0 and parsed.rejected == ()
    assert parsed.undecided == 4 and parsed.rows_read == 4
    assert file_overrides(path).height == 0
    assert read_overrides(str(path)) is not None and read_overrides(str(path)).height == 0  # type: ignore[union-attr]


def test_filled_rows_are_decisions(tmp_path: Path) -> None:
    review = review_frame(links(), NAMES)
    # candidate 2 for M1, accept for M2 (case and spaces do not matter), M3 left open,
    # a garbled value for M4
    filled = review.with_columns(
        pl.when(pl.col("tagged_model_id") == M1)
        .then(pl.col("candidate_2_id").str.to_uppercase())
        .when(pl.col("tagged_model_id") == M2)
        .then(pl.lit(" Accept "))
        .when(pl.col("tagged_model_id") == M4)
        .then(pl.lit("the twin"))
        .alias("circuit_config_id")
    )
    path = tmp_path / "reviewed.csv"
    filled.write_csv(path)
    parsed = read_file(path)
    assert parsed.rows.select(
        "line", "tagged_model_id", "decision", "circuit_config_id"
    ).rows() == [
        (2, M1, "choose", C2),
        (3, M2, "accept", None),
    ]
    assert parsed.undecided == 1
    assert [(r.line, r.reason) for r in parsed.rejected] == [(5, "malformed")]
    # without the ledger only explicit choices can apply: accept needs the run's suggestion
    assert file_overrides(path).rows() == [(M1, C2)]


def test_conflicting_rows_for_one_model_are_all_rejected(tmp_path: Path) -> None:
    path = tmp_path / "hand.csv"
    pl.DataFrame(
        {
            "tagged_model_id": [M1, M1, M2, M2, "not-a-uuid"],
            "circuit_config_id": [C1, C2, C1, C1, C1],
        }
    ).write_csv(path)
    parsed = read_file(path)
    assert parsed.rows.rows() == [(4, M2, "choose", C1, C1)]  # a repeat collapses
    assert [(r.line, r.reason) for r in parsed.rejected] == [
        (2, "conflicting"),
        (3, "conflicting"),
        (6, "malformed"),
    ]
    assert "lines 2, 3" in parsed.rejected[0].detail


def test_an_earlier_review_file_with_the_tools_choice_filled_in_records_only_edits(
    tmp_path: Path,
) -> None:
    """Before decisions lived in the ledger, review.csv came with circuit_config_id filled
    with the tool's own choice (= candidate_1_id): those rows are no decision."""
    earlier = pl.DataFrame(
        {
            "tagged_model_id": [M1, M2, M4],
            "circuit_config_id": [C1, C1, ""],  # M1 unedited, M2 changed, M4 emptied
            "chosen_name": ["Control", "Control", "Control (twin)"],
            "candidate_1_id": [C1, C2, C2],
            "candidate_2_id": [C2, None, C1],
        }
    )
    path = tmp_path / "earlier.csv"
    earlier.write_csv(path)
    parsed = read_file(path)
    assert parsed.unedited == 1 and parsed.undecided == 1
    assert parsed.rows.select("tagged_model_id", "circuit_config_id").rows() == [(M2, C1)]


def test_a_file_without_the_columns_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("model,config\nx,y\n")
    with pytest.raises(ConfigurationError, match="lacks columns"):
        read_file(path)
    with pytest.raises(ConfigurationError, match="not found"):
        read_file(tmp_path / "missing.csv")


def test_empty_review_has_the_columns() -> None:
    review = review_frame(pl.DataFrame(schema=dict(REVIEW_LINKS)), NAMES)
    assert review.height == 0 and review.schema == pl.Schema(REVIEW)
    empty = review_frame(pl.DataFrame(schema=dict(REVIEW_LINKS)), pl.DataFrame(schema=CONFIG_NAMES))
    assert empty.schema == pl.Schema(REVIEW)
