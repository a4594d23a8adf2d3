"""The pure comparison of reports.verification on small hand-made frames."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import polars as pl
import pytest

from reports import verification as V
from schemas.tolerances import FLOAT_RTOL, FLOAT_SIG_DIGITS

U1, U2, U3 = "u1", "u2", "u3"


def users(schema: V.Schema, *rows: dict[str, Any]) -> pl.DataFrame:
    defaults: dict[str, Any] = {
        "legacy_rows": 1,
        "kept_rows": 1,
        "profile_quarantined": False,
        "tagged_models": 0,
        "tagged_models_digest": None,
        "sessions": 0,
        "sessions_digest": None,
        "circuits": 0,
        "circuits_digest": None,
        "profiles": 1,
    }
    full = [{c: row.get(c, defaults.get(c)) for c in schema} for row in rows]
    return pl.DataFrame(full, schema=dict(schema), orient="row")


def model(id: str, user: str = U1, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": id,
        "user_id": user,
        "session_id": "s1",
        "model_id": "m",
        "tag_name": "t",
        "tag_category": "user",
        "resnorm_value": 1.5,
        "tagged_at": 1_700_000_000_000_000,
        "notes": None,
        "is_interesting": False,
        "Rsh": 100.0,
        "Ra": 800.0,
        "Ca": 2.5e-6,
        "Rb": 900.0,
        "Cb": 3.5e-6,
    }
    row.update(fields)
    return row


def frame(schema: V.Schema, rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=dict(schema), orient="row")


def ids(*pairs: tuple[str, str]) -> pl.DataFrame:
    return frame(V.ID_ROWS, [{"id": i, "user_id": u} for i, u in pairs])


def side(
    users_frame: pl.DataFrame,
    models: list[dict[str, Any]] | None = None,
    sessions: pl.DataFrame | None = None,
    circuits: pl.DataFrame | None = None,
) -> V.Side:
    return V.Side(
        users=users_frame,
        tagged_models=frame(V.MODEL_ROWS, models or []),
        sessions=sessions if sessions is not None else ids(),
        circuits=circuits if circuits is not None else ids(),
    )


def with_models(base: V.Side, rows: list[dict[str, Any]]) -> V.Side:
    return replace(base, tagged_models=frame(V.MODEL_ROWS, rows))


NO_LINKS = frame(V.LINK_ROWS, [])
NO_UNOWNED = frame(V.UNOWNED_ROWS, [])


def run(expected: V.Side, actual: V.Side, links: pl.DataFrame = NO_LINKS) -> pl.DataFrame:
    out = V.compare(expected, actual, links, NO_UNOWNED)
    assert out.schema == pl.Schema(V.DIFFERENCES)
    return out


def checks(out: pl.DataFrame) -> list[tuple[str | None, str]]:
    return out.select("user_id", "check").rows()


def same_both_sides(circuits: int = 1, models: int = 2) -> tuple[V.Side, V.Side]:
    rows = [model(f"t{i}") for i in range(models)]
    e = users(V.EXPECTED_USERS, {"user_id": U1, "tagged_models": models, "circuits": circuits})
    a = users(V.ACTUAL_USERS, {"user_id": U1, "tagged_models": models, "circuits": circuits})
    cfg = ids(*[(f"c{i}", U1) for i in range(circuits)])
    return side(e, rows, ids(("s1", U1)), cfg), side(a, rows, ids(("s1", U1)), cfg)


def test_identical_sides_have_no_difference() -> None:
    expected, actual = same_both_sides()
    out = run(expected, actual)
    assert out.is_empty()
    result = V.verification(out, V.users_checked(expected.users, actual.users), "run-1")
    assert result.ok and result.users_checked == 1 and result.run_id == "run-1"


def test_missing_and_unexpected_model_ids_are_listed() -> None:
    expected, actual = same_both_sides()
    actual = with_models(actual, [model("t1"), model("t9")])
    out = run(expected, actual)
    assert checks(out) == [(U1, "tagged_models.ids")]
    assert out.row(0, named=True) == {
        "user_id": U1,
        "check": "tagged_models.ids",
        "expected": "2 ids; not in target: t0",
        "actual": "2 ids; not expected: t9",
    }


def test_model_under_another_user_is_a_difference_for_both() -> None:
    expected, actual = same_both_sides()
    actual = with_models(actual, [model("t0"), model("t1", user=U2)])
    out = run(expected, actual).filter(pl.col("check") == "tagged_models.ids")
    assert out["user_id"].to_list() == [U1, U2]


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("notes", "edited", "notes='edited'"),
        ("is_interesting", True, "is_interesting=true"),
        ("session_id", None, "session_id=null"),
        ("tagged_at", 1_700_000_001_000_000, "tagged_at=2023-11-14T22:13:21.000000Z"),
        ("Ra", 800.5, "Ra=800.5"),
        ("resnorm_value", None, "resnorm_value=null"),
    ],
)
def test_payload_difference_names_the_model_and_field(field: str, value: Any, shown: str) -> None:
    expected, actual = same_both_sides()
    actual = with_models(actual, [model("t0"), model("t1", **{field: value})])
    out = run(expected, actual)
    assert checks(out) == [(U1, "tagged_models.payload")]
    row = out.row(0, named=True)
    assert row["expected"].startswith(f"t1 {field}=")
    assert row["actual"] == f"t1 {shown}"


def test_floats_compare_within_the_declared_tolerance() -> None:
    expected, actual = same_both_sides()
    close = 1 + FLOAT_RTOL / 10
    actual = with_models(
        actual,
        [model("t0", Ca=2.5e-6 * close, Rsh=100.0 / close), model("t1", resnorm_value=1.5 * close)],
    )
    assert run(expected, actual).is_empty()


def test_nan_equals_nan_but_not_a_number() -> None:
    nan = float("nan")
    e = users(V.EXPECTED_USERS, {"user_id": U1, "tagged_models": 2, "circuits": 1})
    a = users(V.ACTUAL_USERS, {"user_id": U1, "tagged_models": 2, "circuits": 1})
    cfg = ids(("c0", U1))
    expected = side(e, [model("t0", resnorm_value=nan), model("t1", resnorm_value=nan)], None, cfg)
    actual = side(a, [model("t0", resnorm_value=nan), model("t1", resnorm_value=1.0)], None, cfg)
    out = run(expected, actual)
    assert checks(out) == [(U1, "tagged_models.payload")]
    assert out["expected"][0] == "t1 resnorm_value=NaN"


def test_floats_equal_expression() -> None:
    frame_ = pl.DataFrame(
        {
            "a": [1.0, 1.0, None, None, math.nan, 0.0, 1e-300],
            "b": [1.0 + 1e-12, 1.001, None, 1.0, math.nan, 0.0, 0.0],
        }
    )
    got = frame_.select(V.floats_equal(pl.col("a"), pl.col("b")))["a"].to_list()
    assert got == [True, False, True, False, True, True, False]


def test_session_ids() -> None:
    expected, actual = same_both_sides()
    actual = replace(actual, sessions=ids())
    out = run(expected, actual)
    assert out.row(0, named=True) == {
        "user_id": U1,
        "check": "sessions.ids",
        "expected": "1 ids; not in target: s1",
        "actual": "0 ids",
    }


def test_circuit_count_and_ids() -> None:
    expected, actual = same_both_sides(circuits=2)
    a_users = users(V.ACTUAL_USERS, {"user_id": U1, "tagged_models": 2, "circuits": 1})
    actual = side(a_users, [model("t0"), model("t1")], actual.sessions, ids(("c0", U1)))
    out = run(expected, actual)
    assert out.rows() == [
        (U1, "circuits.count", "2", "1"),
        (U1, "circuits.ids", "2 ids; not in target: c1", "1 ids"),
    ]


def test_user_with_models_and_no_circuit_may_get_one_recovered_configuration() -> None:
    e = users(V.EXPECTED_USERS, {"user_id": U1, "tagged_models": 1, "circuits": 0})
    a = users(V.ACTUAL_USERS, {"user_id": U1, "tagged_models": 1, "circuits": 1})
    expected = side(e, [model("t0")], ids(), ids())
    recovered = side(a, [model("t0")], ids(), ids(("rec", U1)))
    assert run(expected, recovered).is_empty()
    # ... exactly one
    a2 = users(V.ACTUAL_USERS, {"user_id": U1, "tagged_models": 1, "circuits": 2})
    two = side(a2, [model("t0")], ids(), ids(("rec", U1), ("rec2", U1)))
    out = run(expected, two)
    assert out.rows() == [
        (U1, "circuits.count", "1 (recovered: tagged models, no circuit)", "2"),
        (U1, "circuits.ids", "0 ids", "2 ids; not expected: rec, rec2"),
    ]
    # ... and none without tagged models
    e_none = users(V.EXPECTED_USERS, {"user_id": U1, "tagged_models": 0, "circuits": 0})
    a_none = users(V.ACTUAL_USERS, {"user_id": U1, "circuits": 1})
    out = run(side(e_none), side(a_none, [], ids(), ids(("rec", U1))))
    assert checks(out) == [(U1, "circuits.count"), (U1, "circuits.ids")]


def test_target_user_without_legacy_data_is_unexpected() -> None:
    e = users(V.EXPECTED_USERS, {"user_id": U1, "legacy_rows": 0, "kept_rows": 0})
    a = users(
        V.ACTUAL_USERS,
        {"user_id": U1, "circuits": 1},
        {"user_id": U2, "tagged_models": 0, "sessions": 1, "profiles": 1},
    )
    out = run(side(e), side(a))
    assert checks(out) == [(U1, "user.unexpected"), (U2, "user.unexpected")]
    assert out["actual"][1] == (
        "0 tagged_models, 1 sessions, 0 circuit_configurations, 1 user_profiles"
    )


def test_profile_row_required_unless_the_ledger_quarantined_it() -> None:
    e = users(
        V.EXPECTED_USERS,
        {"user_id": U1},
        {"user_id": U2, "profile_quarantined": True},
        {"user_id": U3, "kept_rows": 0},  # everything quarantined: a profile is optional
    )
    a = users(V.ACTUAL_USERS, {"user_id": U1, "profiles": 0}, {"user_id": U3, "profiles": 1})
    out = run(side(e), side(a))
    assert out.rows() == [(U1, "user_profiles.row", "1 row", "0 rows")]


def test_link_differences() -> None:
    links = frame(
        V.LINK_ROWS,
        [
            # re-linked by hand: ledger says c1
            {
                "user_id": U1,
                "tagged_model_id": "t0",
                "circuit_config_id": "c2",
                "config_user_id": U1,
                "ledger_config_id": "c1",
            },
            # no link decision at all
            {
                "user_id": U1,
                "tagged_model_id": "t1",
                "circuit_config_id": "c2",
                "config_user_id": U1,
                "ledger_config_id": None,
            },
            # pointing at another user's configuration
            {
                "user_id": U2,
                "tagged_model_id": "t2",
                "circuit_config_id": "c9",
                "config_user_id": U3,
                "ledger_config_id": "c9",
            },
        ],
    )
    expected, actual = same_both_sides()
    out = run(expected, actual, links)
    assert out.rows() == [
        (U1, "tagged_models.circuit_config_id", "t0: c1 (migration.links)", "t0: c2"),
        (
            U1,
            "tagged_models.circuit_config_id",
            "t1: a link decision in migration.links",
            "t1: c2 (no link row)",
        ),
        (
            U2,
            "tagged_models.circuit_config_id",
            "t2: a configuration of user u2",
            "t2: c9 (of user u3)",
        ),
    ]


def test_unowned_rows_have_no_user() -> None:
    unowned = frame(
        V.UNOWNED_ROWS,
        [
            {"source_table": "tagged_models", "source_id": "t7"},
            {"source_table": "tagged_models", "source_id": "t8"},
        ],
    )
    expected, actual = same_both_sides()
    out = V.compare(expected, actual, NO_LINKS, unowned)
    assert out.rows() == [
        (
            None,
            "unowned.rows",
            "tagged_models rows quarantined (no user)",
            "2 tagged_models rows not in the quarantine: t7, t8",
        )
    ]


def test_long_lists_are_cut_and_counted() -> None:
    n = V.MAX_LISTED + 3
    e = users(V.EXPECTED_USERS, {"user_id": U1, "tagged_models": n, "circuits": 1})
    a = users(V.ACTUAL_USERS, {"user_id": U1, "tagged_models": 0, "circuits": 1})
    cfg = ids(("c0", U1))
    rows = [model(f"t{i:02d}") for i in range(n)]
    out = run(side(e, rows, None, cfg), side(a, [], None, cfg))
    assert out["expected"][0].endswith("t09 ... and 3 more")
    assert out["expected"][0].startswith(f"{n} ids; not in target: t00, t01")


def test_users_to_detail_compares_digests() -> None:
    e = users(
        V.EXPECTED_USERS,
        {"user_id": U1, "tagged_models_digest": "a", "sessions_digest": "s"},
        {"user_id": U2, "tagged_models_digest": "b"},
        {"user_id": None, "tagged_models_digest": "x"},
    )
    a = users(
        V.ACTUAL_USERS,
        {"user_id": U1, "tagged_models_digest": "a", "sessions_digest": "s2"},
        {"user_id": U3, "tagged_models_digest": "c"},
    )
    assert V.users_to_detail(e, a, "tagged_models") == [U2, U3]
    assert V.users_to_detail(e, a, "sessions") == [U1]
    assert V.users_to_detail(e, a, "circuits") == []


def buckets(*rows: tuple[str, str, int, int, str | None]) -> pl.DataFrame:
    return frame(
        V.BUCKETS,
        [dict(zip(V.BUCKETS, row, strict=True)) for row in rows],
    )


def test_buckets_to_drill_compares_signature_counts_and_digests_per_part() -> None:
    e = buckets(
        ("rows", "000", 3, 2, "10"),
        ("rows", "001", 2, 2, "20"),  # another digest in the target
        ("rows", "002", 1, 0, None),  # no user due in the target, none there: equal
        ("rows", "003", 1, 1, "40"),  # absent from the target
        ("circuits", "000", 2, 2, "5"),
        ("circuits", "004", 1, 1, "6"),  # rows equal, circuits count differs
        ("configurations", "000", 2, 2, "7"),
    )
    a = buckets(
        ("rows", "000", 2, 2, "10"),  # users seen are not compared
        ("rows", "001", 2, 2, "21"),
        ("rows", "005", 1, 1, "50"),  # absent from the source
        ("circuits", "000", 2, 2, "5"),
        ("circuits", "004", 2, 2, "6"),
        ("configurations", "000", 2, 2, "7"),
    )
    assert V.buckets_to_drill(e, a) == ["001", "003", "004", "005"]
    assert V.buckets_to_drill(e, e) == []


def test_users_of_matching_buckets_are_counted_from_the_expected_rows_part() -> None:
    e = buckets(
        ("rows", "000", 3, 2, "10"),
        ("rows", "001", 5, 4, "20"),
        ("rows", "002", 7, 7, "30"),
        ("circuits", "000", 2, 2, "5"),
    )
    assert V.users_in_matching_buckets(e, ["001"]) == 10
    assert V.users_in_matching_buckets(e, []) == 15


def test_differences_are_sorted_and_summarised() -> None:
    e = users(V.EXPECTED_USERS, {"user_id": U2, "circuits": 1}, {"user_id": U1, "circuits": 1})
    a = users(V.ACTUAL_USERS, {"user_id": U2, "circuits": 0}, {"user_id": U1, "profiles": 0})
    out = run(side(e), side(a))
    assert checks(out) == [
        (U1, "user_profiles.row"),
        (U1, "circuits.count"),
        (U2, "circuits.count"),
    ]
    result = V.verification(out, 2)
    assert not result.ok
    lines = V.summary_lines(result, limit=2)
    assert lines[0] == "verification FAILED: 2 users differ (3 differences, 2 users checked)"
    assert lines[-1] == "... and 1 more differences"


def test_frames_are_checked_against_their_contract() -> None:
    expected, actual = same_both_sides()
    broken = V.Side(
        users=actual.users.drop("profiles"),
        tagged_models=actual.tagged_models,
        sessions=actual.sessions,
        circuits=actual.circuits,
    )
    with pytest.raises(ValueError, match="profiles"):
        V.compare(expected, broken, NO_LINKS, NO_UNOWNED)


def test_declared_tolerance() -> None:
    assert FLOAT_RTOL == 1e-9 and FLOAT_SIG_DIGITS == 9
