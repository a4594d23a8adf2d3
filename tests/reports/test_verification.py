"""The pure comparison of ``verify``: what each side holds in, differences out."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from reports import verification as V

U1, U2 = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"


def session(sid: str, user: str = U1, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(V.PARTS["user_sessions"])
    row.update(id=sid, user_id=user, session_name="S", is_active=True, created_at=1)
    row.update(values)
    return row


def model(mid: str, user: str = U1, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(V.PARTS["tagged_models"])
    row.update(id=mid, user_id=user, model_id="m", tag_name="t", Rsh=100.0, Ra=1.5, Cb=2e-6)
    row.update(values)
    return row


def rows(part: str, items: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(items, schema=dict(V.PARTS[part]))


def compare(
    part: str, expected: list[dict[str, Any]], actual: list[dict[str, Any]]
) -> pl.DataFrame:
    empty = {p: rows(p, []) for p in V.PARTS}
    e = V.Rows({**empty, part: rows(part, expected)})
    a = V.Rows({**empty, part: rows(part, actual)})
    users = sorted({r["user_id"] for r in [*expected, *actual]})
    return V.compare(
        e,
        a,
        {part: users},
        pl.DataFrame(schema=dict(V.LINK_ROWS)),
        pl.DataFrame(schema=dict(V.MERGE_ROWS)),
    )


def test_identical_sides_have_no_difference() -> None:
    items = [model("a"), model("b", U2, notes="x")]
    assert compare("tagged_models", items, items).height == 0


def test_missing_and_unexpected_ids_are_listed_per_user() -> None:
    out = compare("tagged_models", [model("a"), model("b")], [model("a"), model("c")])
    assert out.select("user_id", "check").rows() == [(U1, "tagged_models.ids")]
    assert "not in target: b" in out["expected"][0] and "not expected: c" in out["actual"][0]


def test_a_changed_value_names_the_row_the_column_and_both_values() -> None:
    out = compare("tagged_models", [model("a", notes="x")], [model("a", notes="y")])
    assert out.rows() == [(U1, "tagged_models.notes", "a 'x'", "a 'y'")]


@pytest.mark.parametrize(
    ("expected", "actual", "differs"),
    [
        (100.0, 100.0 * (1 + 1e-12), False),
        (100.0, 100.0 * (1 + 1e-6), True),
        (float("nan"), float("nan"), False),
        (float("nan"), 1.0, True),
        (None, None, False),
        (None, 0.0, True),
    ],
)
def test_floats_compare_within_the_declared_tolerance(
    expected: float | None, actual: float | None, differs: bool
) -> None:
    out = compare("tagged_models", [model("a", Ra=expected)], [model("a", Ra=actual)])
    assert (out.height > 0) is differs


@pytest.mark.parametrize(
    ("name", "differs"), [("S", False), ("S (2)", False), ("S2", True), ("T", True)]
)
def test_a_renamed_duplicate_keeps_its_name_as_prefix(name: str, differs: bool) -> None:
    out = compare("user_sessions", [session("s")], [session("s", session_name=name)])
    assert (out.height > 0) is differs


def test_decisions_both_ways() -> None:
    expected = [
        {"id": "tagged_models:a", "user_id": U1, "reason": "invalid_parameters"},
        {"id": "tagged_models:c", "user_id": U1, "reason": "no_user"},
    ]
    actual = [
        {"id": "tagged_models:b", "user_id": U1, "reason": "database_rejected"},
        {"id": "tagged_models:c", "user_id": U1, "reason": "unknown_user"},
    ]
    out = compare("quarantine", expected, actual)
    assert out.select("check", "expected", "actual").rows() == [
        (
            "decision.invalid_migrated",
            "tagged_models:a invalid_parameters",
            "tagged_models:a not quarantined",
        ),
        ("decision.reason", "tagged_models:c no_user", "tagged_models:c unknown_user"),
        (
            "decision.valid_quarantined",
            "tagged_models:b valid",
            "tagged_models:b database_rejected",
        ),
    ]


def test_only_differing_buckets_and_users_are_drilled() -> None:
    e = pl.DataFrame(
        [
            ("tagged_models", "000", 2, "5"),
            ("user_sessions", "000", 1, "7"),
            ("quarantine", "", 1, "3"),
        ],
        schema=dict(V.BUCKETS),
        orient="row",
    )
    a = pl.DataFrame(
        [("tagged_models", "000", 2, "5"), ("user_sessions", "000", 1, "8")],
        schema=dict(V.BUCKETS),
        orient="row",
    )
    assert V.buckets_to_drill(e, a) == ["", "000"]
    eu = pl.DataFrame(
        [("user_sessions", U1, 1, "7"), ("user_sessions", U2, 1, "1")],
        schema=dict(V.USERS),
        orient="row",
    )
    au = pl.DataFrame(
        [("user_sessions", U1, 1, "8"), ("user_sessions", U2, 1, "1")],
        schema=dict(V.USERS),
        orient="row",
    )
    assert V.users_to_detail(eu, au)["user_sessions"] == [U1]


def test_link_and_merge_rows_become_differences() -> None:
    empty = {p: rows(p, []) for p in V.PARTS}
    links = pl.DataFrame([(U1, "m1", "c2", U2, "c1")], schema=dict(V.LINK_ROWS), orient="row")
    merges = pl.DataFrame(
        [(U1, "m2", "m3", "its survivor is not in the target")],
        schema=dict(V.MERGE_ROWS),
        orient="row",
    )
    out = V.compare(V.Rows(empty), V.Rows(empty), {}, links, merges)
    assert out.select("user_id", "check").rows() == [
        (U1, "tagged_models.circuit_config_id"),
        (U1, "tagged_models.merged"),
    ]
    assert "of user " + U2 in out["actual"][0]


def test_long_lists_are_cut_and_counted() -> None:
    out = compare("tagged_models", [model(f"m{i:02d}") for i in range(15)], [])
    assert out["expected"][0].endswith("... and 5 more")


def test_summary_lines() -> None:
    ok = V.verification(pl.DataFrame(schema=dict(V.DIFFERENCES)), 12, "r")
    assert V.summary_lines(ok) == ["verification passed: 12 users checked, no differences"]
    bad = V.verification(
        pl.DataFrame(
            [("", "decision.invalid_migrated", "x", "y")], schema=dict(V.DIFFERENCES), orient="row"
        ),
        3,
    )
    assert not bad.ok
    assert V.summary_lines(bad)[1] == "(no user)  decision.invalid_migrated: expected x; found y"
