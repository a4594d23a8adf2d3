"""Hand-written cases: every messy input of DESIGN.md section 3, each with its exact outcome."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl
import pytest

from tests.transforms.factories import (
    DEFAULT_PARAMS,
    element,
    legacy,
    make_profile,
    make_session,
    make_tagged_model,
    make_user,
    new_id,
)
from transforms.accounting import accounting
from transforms.ids import stable_uuid
from transforms.impedance import PARAMETERS, resnorm
from transforms.pipeline import TransformResult, transform

OTHER = {"Rsh": 50.0, "Ra": 3000.0, "Ca": 1e-7, "Rb": 20.0, "Cb": 4e-5}


def run(overrides: pl.DataFrame | None = None, **kw: Any) -> TransformResult:
    frames = legacy(**kw)
    result = transform(**frames, overrides=overrides)
    acc = accounting(
        frames["user_sessions"],
        frames["tagged_models"],
        frames["user_profiles"],
        result,
    )
    assert acc.ok, acc.problems
    return result


def reason_of(result: TransformResult, table: str, source_id: str) -> str:
    q = result.quarantine.filter(
        (pl.col("source_table") == table) & (pl.col("source_id") == source_id)
    )
    assert q.height == 1, result.quarantine
    return str(q["reason"].item())


def repair_kinds(result: TransformResult, source_id: str) -> set[str]:
    return set(result.repairs.filter(pl.col("source_id") == source_id)["kind"].to_list())


def config(result: TransformResult, config_id: str) -> dict[str, Any]:
    rows = result.circuit_configurations.filter(pl.col("id") == config_id)
    assert rows.height == 1, result.circuit_configurations
    return rows.row(0, named=True)


def stored_resnorm(model: dict[str, float], ref: dict[str, float], lo=0.1, hi=1e5, n=100) -> float:
    m = np.array([[model[k] for k in PARAMETERS]])
    r = np.array([[ref[k] for k in PARAMETERS]])
    return float(resnorm(m, r, np.array([lo]), np.array([hi]), np.array([n]))[0])


# --- circuit JSON ------------------------------------------------------------------------------


def test_clean_profile_becomes_configuration_keeping_its_id() -> None:
    u = make_user()
    p = make_profile(u["id"], params={**DEFAULT_PARAMS, "frequency_range": [0.1, 100000.0]})
    r = run(users=[u], profiles=[p])
    c = config(r, p["id"])
    params = json.loads(c["circuit_parameters"])
    assert set(params) == {"Rsh", "Ra", "Ca", "Rb", "Cb", "frequency_range"}
    assert params["frequency_range"] == [0.1, 100000.0]
    assert (c["grid_size"], c["num_points"], c["name"]) == (10, 100, "Circuit A")
    assert r.id_map.height == 0  # kept its id
    assert r.repairs.height == 0


def test_missing_key_is_invalid_parameters() -> None:
    u = make_user()
    params = {k: v for k, v in DEFAULT_PARAMS.items() if k != "Ca"}
    p = make_profile(u["id"], params=params)
    r = run(users=[u], profiles=[p])
    assert reason_of(r, "user_profiles", p["id"]) == "invalid_parameters"
    q = r.quarantine.row(0, named=True)
    assert "Ca=missing" in q["detail"]
    assert json.loads(q["payload"])["id"] == p["id"]
    assert r.circuit_configurations.height == 0


@pytest.mark.parametrize("bad", [0, -5, "NaN", "abc", None])
def test_non_positive_or_nan_value_is_invalid_parameters(bad: Any) -> None:
    u = make_user()
    p = make_profile(u["id"], params={**DEFAULT_PARAMS, "Rb": bad})
    r = run(users=[u], profiles=[p])
    assert reason_of(r, "user_profiles", p["id"]) == "invalid_parameters"


def test_string_numbers_and_rs_key_are_repaired() -> None:
    u = make_user()
    params = {"Rs": "1000", "Ra": "500", "Ca": 2e-6, "Rb": 800, "Cb": "5e-6"}
    p = make_profile(u["id"], params=params)
    r = run(users=[u], profiles=[p])
    c = json.loads(config(r, p["id"])["circuit_parameters"])
    assert c["Rsh"] == 1000.0 and c["Ra"] == 500.0 and c["Cb"] == 5e-6
    repairs = r.repairs.filter(pl.col("source_id") == p["id"])
    assert {"renamed_key", "string_number", "filled_frequency_range"} == set(repairs["kind"])
    rs = repairs.filter(pl.col("kind") == "renamed_key").row(0, named=True)
    assert (rs["original"], rs["repaired"]) == ("Rs", "Rsh")
    strings = repairs.filter(pl.col("kind") == "string_number").sort("field")
    assert strings["field"].to_list() == [
        "circuit_parameters.Cb",
        "circuit_parameters.Ra",
        "circuit_parameters.Rsh",
    ]
    assert strings.filter(pl.col("field") == "circuit_parameters.Ra")["original"].item() == '"500"'


@pytest.mark.parametrize(("lo", "hi"), [(1000.0, 10.0), (10.0, 10.0), (0.0, 10.0), (-1.0, 5.0)])
def test_bad_frequency_range_is_quarantined(lo: float, hi: float) -> None:
    u = make_user()
    p = make_profile(u["id"], min_freq=lo, max_freq=hi)
    r = run(users=[u], profiles=[p])
    assert reason_of(r, "user_profiles", p["id"]) == "invalid_frequency_range"


def test_nan_frequency_is_quarantined() -> None:
    u = make_user()
    p = make_profile(u["id"], min_freq=float("nan"))
    r = run(users=[u], profiles=[p])
    assert reason_of(r, "user_profiles", p["id"]) == "invalid_frequency_range"


@pytest.mark.parametrize(
    ("grid", "points", "want_grid", "want_points", "kinds"),
    [
        (40, 100, 25, 100, {"clamped_grid_size"}),
        (1, 100, 2, 100, {"clamped_grid_size"}),
        (10, 2000, 10, 1000, {"clamped_num_points"}),
        (10, 5, 10, 10, {"clamped_num_points"}),
        (None, None, 10, 100, {"filled_default"}),
    ],
)
def test_grid_outside_check_ranges_is_clamped(
    grid: int | None, points: int | None, want_grid: int, want_points: int, kinds: set[str]
) -> None:
    u = make_user()
    p = make_profile(u["id"], grid_size=grid, num_points=points)
    r = run(users=[u], profiles=[p])
    c = config(r, p["id"])
    assert (c["grid_size"], c["num_points"]) == (want_grid, want_points)
    assert repair_kinds(r, p["id"]) - {"filled_frequency_range"} == kinds
    if grid is not None and grid != want_grid:
        row = r.repairs.filter(pl.col("kind") == "clamped_grid_size").row(0, named=True)
        assert (row["original"], row["repaired"]) == (str(grid), str(want_grid))


def test_frequency_range_filled_from_grid_columns() -> None:
    u = make_user()
    p = make_profile(u["id"], min_freq=1.0, max_freq=1e4)
    r = run(users=[u], profiles=[p])
    assert json.loads(config(r, p["id"])["circuit_parameters"])["frequency_range"] == [1.0, 1e4]
    row = r.repairs.filter(pl.col("kind") == "filled_frequency_range").row(0, named=True)
    assert row["original"] is None and row["repaired"] == "[1.0, 10000.0]"


# --- users -------------------------------------------------------------------------------------


def test_dangling_users_are_unknown_user() -> None:
    u = make_user()
    ghost = new_id()
    p = make_profile(ghost)
    s = make_session(ghost, saved=[element()])
    m = make_tagged_model(ghost)
    r = run(users=[u], profiles=[p], sessions=[s], models=[m])
    assert reason_of(r, "user_profiles", p["id"]) == "unknown_user"
    assert reason_of(r, "user_sessions", s["id"]) == "unknown_user"
    assert reason_of(r, "saved_profiles", s["id"] + "#0") == "unknown_user"
    assert reason_of(r, "tagged_models", m["id"]) == "unknown_user"
    assert r.user_profiles.height == 0


def test_session_without_user_is_no_user_and_so_are_its_elements() -> None:
    u = make_user()
    s = make_session(None, saved=[element(), element(name="B")])
    m = make_tagged_model(None, session_id=s["id"])
    r = run(users=[u], sessions=[s], models=[m])
    assert reason_of(r, "user_sessions", s["id"]) == "no_user"
    assert reason_of(r, "saved_profiles", s["id"] + "#0") == "no_user"
    assert reason_of(r, "saved_profiles", s["id"] + "#1") == "no_user"
    assert reason_of(r, "tagged_models", m["id"]) == "no_user"


def test_session_without_user_is_no_user_even_if_its_models_name_one() -> None:
    u = make_user()
    s = make_session(None, saved=[element()])
    m = make_tagged_model(u["id"], session_id=s["id"])
    r = run(users=[u], sessions=[s], models=[m])
    assert reason_of(r, "user_sessions", s["id"]) == "no_user"
    assert reason_of(r, "saved_profiles", s["id"] + "#0") == "no_user"
    assert r.tagged_models["session_id"].to_list() == [None]  # its session is not migrated
    assert "dropped_session" in repair_kinds(r, m["id"])


def test_model_pointing_at_another_users_session_loses_it() -> None:
    a, b = make_user(), make_user()
    s_b = make_session(b["id"], saved=[element()])
    m_same_batch = make_tagged_model(a["id"], session_id=s_b["id"])
    m_other_batch = make_tagged_model(a["id"], session_id=new_id(), model_id="m2")  # not here
    r = run(users=[a, b], sessions=[s_b], models=[m_same_batch, m_other_batch])
    models = dict(zip(r.tagged_models["id"], r.tagged_models["session_id"], strict=True))
    assert models == {m_same_batch["id"]: None, m_other_batch["id"]: None}
    for m in (m_same_batch, m_other_batch):
        assert "dropped_session" in repair_kinds(r, m["id"])
    assert r.user_sessions["id"].to_list() == [s_b["id"]]


def test_model_without_user_takes_its_sessions_user() -> None:
    u = make_user()
    s = make_session(u["id"], saved=[element()])
    m = make_tagged_model(None, session_id=s["id"])
    r = run(users=[u], sessions=[s], models=[m])
    assert r.tagged_models["user_id"].to_list() == [u["id"]]
    assert "user_from_session" in repair_kinds(r, m["id"])


def test_model_without_user_or_session_is_no_user() -> None:
    u = make_user()
    m = make_tagged_model(None)
    r = run(users=[u], models=[m])
    assert reason_of(r, "tagged_models", m["id"]) == "no_user"


def test_user_profile_metadata_and_defaults_from_latest_circuit() -> None:
    u = make_user(username="ana", full_name="Ana Smith", avatar_url="https://x/a.png")
    old = make_profile(u["id"], name="old", grid_size=20, num_points=500, updated=1)
    new = make_profile(u["id"], name="new", grid_size=40, min_freq=1.0, max_freq=1e4, updated=5)
    r = run(users=[u], profiles=[old, new])
    row = r.user_profiles.row(0, named=True)
    assert row["id"] == stable_uuid("user_profiles", u["id"])
    assert (row["username"], row["full_name"], row["avatar_url"]) == (
        "ana",
        "Ana Smith",
        "https://x/a.png",
    )
    assert (row["default_grid_size"], row["default_num_points"]) == (25, 100)
    assert (row["default_min_freq"], row["default_max_freq"]) == (1.0, 1e4)


def test_user_without_circuits_gets_default_profile() -> None:
    u = make_user()
    s = make_session(u["id"], saved=None)
    r = run(users=[u], sessions=[s])
    row = r.user_profiles.row(0, named=True)
    assert (row["default_grid_size"], row["default_num_points"]) == (5, 100)
    assert r.user_sessions["current_circuit_config_id"].to_list() == [None]


# --- saved_profiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("saved", ['{"a": 1}', '"text"', "42", "not json"])
def test_saved_profiles_not_an_array(saved: str) -> None:
    u = make_user()
    s = make_session(u["id"], saved=saved)
    r = run(users=[u], sessions=[s])
    assert reason_of(r, "saved_profiles", s["id"] + "#*") == "malformed_saved_profiles"
    assert r.user_sessions["id"].to_list() == [s["id"]]  # the session still migrates
    json.loads(r.quarantine["payload"].item())  # payload is valid JSON


def test_null_saved_profiles_has_no_elements() -> None:
    u = make_user()
    s = make_session(u["id"], saved=None)
    r = run(users=[u], sessions=[s])
    assert r.quarantine.height == 0 and r.circuit_configurations.height == 0


@pytest.mark.parametrize(
    "bad",
    [
        "corrupted",
        None,
        42,
        [1, 2],
        {"name": "x"},
        {"name": "x", "parameters": None},
        {"name": "x", "parameters": "see notes"},
    ],
)
def test_malformed_element(bad: Any) -> None:
    u = make_user()
    s = make_session(u["id"], saved=[element(), bad])
    r = run(users=[u], sessions=[s])
    assert reason_of(r, "saved_profiles", s["id"] + "#1") == "malformed_element"
    assert r.circuit_configurations.height == 1


def test_element_with_bad_values_or_range() -> None:
    u = make_user()
    bad_param = element(params={**DEFAULT_PARAMS, "Ra": -1})
    bad_range = element(freq=(1000.0, 1.0))
    s = make_session(u["id"], saved=[bad_param, bad_range])
    r = run(users=[u], sessions=[s])
    assert reason_of(r, "saved_profiles", s["id"] + "#0") == "invalid_parameters"
    assert reason_of(r, "saved_profiles", s["id"] + "#1") == "invalid_frequency_range"


def test_saved_only_circuit_takes_legacy_grid_defaults_and_a_uuid5() -> None:
    u = make_user()
    s = make_session(u["id"], saved=[element(name="Only saved", freq=(1.0, 1e4))])
    r = run(users=[u], sessions=[s])
    c = r.circuit_configurations.row(0, named=True)
    assert (c["grid_size"], c["num_points"], c["min_freq"], c["max_freq"]) == (10, 100, 1.0, 1e4)
    assert c["id"] == stable_uuid("circuit_configurations", f"{u['id']}/{s['id']}#0")
    assert r.id_map.rows() == [
        ("saved_profiles", s["id"] + "#0", "circuit_configurations", c["id"], "migrated")
    ]
    assert r.user_sessions["current_circuit_config_id"].to_list() == [c["id"]]


def test_copies_of_a_profile_merge_into_it() -> None:
    u = make_user()
    p = make_profile(u["id"], params={**DEFAULT_PARAMS, "Ra": "500"})
    s1 = make_session(u["id"], name="S1", saved=[element(eid=p["id"])])
    s2 = make_session(u["id"], name="S2", saved=[element(eid=p["id"]), element(eid=p["id"])])
    r = run(users=[u], profiles=[p], sessions=[s1, s2])
    assert r.circuit_configurations["id"].to_list() == [p["id"]]
    merged = r.id_map.filter(pl.col("outcome") == "merged")
    assert sorted(merged["source_id"]) == sorted(
        [s1["id"] + "#0", s2["id"] + "#0", s2["id"] + "#1"]
    )
    assert set(merged["target_id"]) == {p["id"]}
    assert set(r.user_sessions["current_circuit_config_id"]) == {p["id"]}


def test_copies_of_a_saved_circuit_merge_among_themselves() -> None:
    u = make_user()
    s1 = make_session(u["id"], name="S1", saved=[element(name="X")])
    s2 = make_session(u["id"], name="S2", saved=[element(name="X")])
    r = run(users=[u], sessions=[s1, s2])
    assert r.circuit_configurations.height == 1
    assert sorted(r.id_map["outcome"]) == ["merged", "migrated"]


def test_diverged_copies_become_separate_named_configurations() -> None:
    u = make_user()
    p = make_profile(u["id"], name="RPE", updated=3)
    diverged = element(name="RPE", params={**DEFAULT_PARAMS, "Ra": 900.0})
    s = make_session(u["id"], name="Morning", saved=[element(name="RPE"), diverged])
    p2 = make_profile(u["id"], name="RPE", params=OTHER, updated=1)
    r = run(users=[u], profiles=[p, p2], sessions=[s])
    names = dict(zip(r.circuit_configurations["id"], r.circuit_configurations["name"], strict=True))
    assert names[p["id"]] == "RPE"
    assert names[p2["id"]] == "RPE (copy 2)"
    new_id_ = stable_uuid("circuit_configurations", f"{u['id']}/{s['id']}#1")
    assert names[new_id_] == "RPE (session Morning)"
    renamed = r.repairs.filter(pl.col("kind") == "renamed_duplicate")
    assert set(renamed["source_id"]) == {p2["id"], s["id"] + "#1"}


def test_identical_profile_rows_merge_keeping_the_latest() -> None:
    u = make_user()
    a = make_profile(u["id"], updated=1)
    b = make_profile(u["id"], updated=2)
    r = run(users=[u], profiles=[a, b])
    assert r.circuit_configurations["id"].to_list() == [b["id"]]
    assert r.id_map.rows() == [
        ("user_profiles", a["id"], "circuit_configurations", b["id"], "merged")
    ]


def test_session_current_configuration_is_the_latest_element() -> None:
    u = make_user()
    p = make_profile(u["id"], name="A")
    s = make_session(
        u["id"],
        saved=[
            element(name="B", params=OTHER, created=9),
            element(name="A", eid=p["id"], created=2),
        ],
    )
    r = run(users=[u], profiles=[p], sessions=[s])
    b_id = stable_uuid("circuit_configurations", f"{u['id']}/{s['id']}#0")
    assert r.user_sessions["current_circuit_config_id"].to_list() == [b_id]


# --- links -------------------------------------------------------------------------------------


def _link(r: TransformResult, model_id: str) -> dict[str, Any]:
    return r.links.filter(pl.col("tagged_model_id") == model_id).row(0, named=True)


def test_link_by_resnorm() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    b = make_profile(u["id"], name="B", params=OTHER, num_points=50)
    near_b = {k: v * 1.1 for k, v in OTHER.items()}
    m = make_tagged_model(u["id"], params=near_b, resnorm=stored_resnorm(near_b, OTHER, n=50))
    r = run(users=[u], profiles=[a, b], models=[m])
    link = _link(r, m["id"])
    assert (link["circuit_config_id"], link["method"], link["needs_review"]) == (
        b["id"],
        "resnorm",
        False,
    )
    ev = json.loads(link["evidence"])
    assert ev["candidates"] == 2 and [c["evidence"] for c in ev["top"]] == [["resnorm"], []]
    assert ev["top"][0]["id"] == b["id"] and ev["stored_resnorm"] == m["resnorm_value"]
    assert r.tagged_models["circuit_config_id"].to_list() == [b["id"]]


def test_resnorm_on_the_unclamped_legacy_grid() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    b = make_profile(u["id"], name="B", params=OTHER, num_points=2000)
    near_b = {k: v * 1.1 for k, v in OTHER.items()}
    m = make_tagged_model(u["id"], params=near_b, resnorm=stored_resnorm(near_b, OTHER, n=2000))
    r = run(users=[u], profiles=[a, b], models=[m])
    assert _link(r, m["id"])["method"] == "resnorm"
    assert _link(r, m["id"])["circuit_config_id"] == b["id"]


def test_override_wins() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    b = make_profile(u["id"], name="B", params=OTHER)
    m = make_tagged_model(u["id"], resnorm=0.0)  # resnorm says A
    ov = pl.DataFrame({"tagged_model_id": [m["id"]], "circuit_config_id": [b["id"]]})
    r = run(users=[u], profiles=[a, b], models=[m], overrides=ov)
    link = _link(r, m["id"])
    assert (link["circuit_config_id"], link["method"], link["confidence"]) == (
        b["id"],
        "override",
        1.0,
    )


def test_twins_are_flagged_for_review() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    b = make_profile(u["id"], name="B")  # same parameters and grid, another name
    near = {k: v * 1.05 for k, v in DEFAULT_PARAMS.items()}
    m = make_tagged_model(u["id"], params=near, resnorm=stored_resnorm(near, DEFAULT_PARAMS))
    r = run(users=[u], profiles=[a, b], models=[m])
    link = _link(r, m["id"])
    assert link["needs_review"] is True
    assert link["circuit_config_id"] == min(a["id"], b["id"])  # deterministic pick


def test_link_by_session_without_resnorm() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    s = make_session(u["id"], saved=[element(name="B", params=OTHER)])
    near_b = {k: v * 1.03 for k, v in OTHER.items()}
    m = make_tagged_model(u["id"], session_id=s["id"], params=near_b)
    r = run(users=[u], profiles=[a], sessions=[s], models=[m])
    link = _link(r, m["id"])
    b_id = stable_uuid("circuit_configurations", f"{u['id']}/{s['id']}#0")
    assert (link["method"], link["circuit_config_id"], link["needs_review"]) == (
        "session",
        b_id,
        False,
    )


def test_weak_evidence_contradicted_by_proximity_is_flagged() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    s = make_session(u["id"], saved=[element(name="B", params=OTHER)])
    m = make_tagged_model(u["id"], session_id=s["id"], params=DEFAULT_PARAMS)  # A's parameters
    r = run(users=[u], profiles=[a], sessions=[s], models=[m])
    link = _link(r, m["id"])
    assert link["method"] == "session" and link["needs_review"] is True


def test_stored_resnorm_matching_no_candidate_is_flagged() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    b = make_profile(u["id"], name="B", params=OTHER)
    m = make_tagged_model(u["id"], params={k: v * 1.02 for k, v in OTHER.items()}, resnorm=12345.0)
    r = run(users=[u], profiles=[a, b], models=[m])
    link = _link(r, m["id"])
    assert link["circuit_config_id"] == b["id"] and link["needs_review"] is True


def test_link_by_proximity() -> None:
    u = make_user()
    a = make_profile(u["id"], name="A")
    b = make_profile(u["id"], name="B", params=OTHER)
    m = make_tagged_model(u["id"], params={k: v * 1.02 for k, v in OTHER.items()})
    r = run(users=[u], profiles=[a, b], models=[m])
    link = _link(r, m["id"])
    assert (link["circuit_config_id"], link["method"], link["needs_review"]) == (
        b["id"],
        "proximity",
        False,
    )


def test_user_with_models_but_no_configuration_gets_a_recovered_one() -> None:
    u = make_user()
    m1 = make_tagged_model(u["id"], params=DEFAULT_PARAMS, model_id="a")
    m2 = make_tagged_model(u["id"], params=OTHER, model_id="b")
    r = run(users=[u], models=[m1, m2])
    rec_id = stable_uuid("circuit_configurations/recovered", u["id"])
    c = config(r, rec_id)
    assert c["grid_size"] == 10 and c["num_points"] == 100
    assert set(r.links["method"]) == {"recovered"} and r.links["needs_review"].all()
    assert set(r.tagged_models["circuit_config_id"]) == {rec_id}
    assert "recovered_configuration" in set(r.repairs["kind"])


def test_duplicate_tags_merge_into_the_latest() -> None:
    u = make_user()
    a = make_profile(u["id"])
    first = make_tagged_model(u["id"], tagged=1)
    later = make_tagged_model(u["id"], tagged=2)
    other_tag = make_tagged_model(u["id"], tagged=3, tag_name="other")
    r = run(users=[u], profiles=[a], models=[first, later, other_tag])
    assert sorted(r.tagged_models["id"]) == sorted([later["id"], other_tag["id"]])
    assert r.id_map.rows() == [
        ("tagged_models", first["id"], "tagged_models", later["id"], "merged")
    ]
    assert set(r.links["tagged_model_id"]) == {later["id"], other_tag["id"]}


def test_tagged_model_with_invalid_parameters() -> None:
    u = make_user()
    a = make_profile(u["id"])
    m = make_tagged_model(u["id"], params={**DEFAULT_PARAMS, "Cb": "x"})
    r = run(users=[u], profiles=[a], models=[m])
    assert reason_of(r, "tagged_models", m["id"]) == "invalid_parameters"


def test_long_tag_name_fails_validation() -> None:
    u = make_user()
    a = make_profile(u["id"])
    m = make_tagged_model(u["id"], tag_name="x" * 101)
    r = run(users=[u], profiles=[a], models=[m])
    assert reason_of(r, "tagged_models", m["id"]) == "validation_failed"


def test_inputs_are_not_mutated_and_output_is_deterministic() -> None:
    u = make_user()
    p = make_profile(u["id"], params={"Rs": "10", **{k: v for k, v in OTHER.items() if k != "Rsh"}})
    s = make_session(u["id"], saved=[element(), element(name="x", params=OTHER), 5])
    m = make_tagged_model(None, session_id=s["id"], resnorm=1.0)
    frames = legacy(users=[u], profiles=[p], sessions=[s], models=[m])
    copies = {k: v.clone() for k, v in frames.items()}
    one = transform(**frames)
    two = transform(**frames)
    for k, v in frames.items():
        assert v.equals(copies[k])
    for name in TransformResult.__dataclass_fields__:
        assert getattr(one, name).equals(getattr(two, name)), name


def test_merge_keeps_the_latest_non_null_value_of_every_field() -> None:
    """DESIGN.md section 5: field by field the most recent non-null value; a different non-null
    value that loses is recorded with its original (``merged_value_dropped``)."""
    u = make_user()
    results = '{"points": [[1, 2], [3, 4]], "best": 0.5}'
    old = {
        **make_profile(u["id"], updated=1),
        "description": "old words",
        "is_computed": True,
        "computation_time": 12.5,
        "computation_results": results,
    }
    new = {**make_profile(u["id"], updated=5), "description": "new words"}
    r = run(users=[u], profiles=[old, new])
    assert r.circuit_configurations.height == 1
    c = r.circuit_configurations.row(0, named=True)
    assert c["id"] == new["id"]  # the most recently updated row represents the group
    assert c["description"] == "new words"
    assert c["computation_results"] == results  # nothing lost to a partner that had none
    assert c["computation_time"] == 12.5
    assert c["is_computed"] is False  # the newer row says so
    dropped = r.repairs.filter(pl.col("kind") == "merged_value_dropped")
    assert sorted(dropped.select("source_id", "field", "original", "repaired").rows()) == [
        (old["id"], "description", "old words", "new words"),
        (old["id"], "is_computed", "true", "false"),
    ]


def test_element_merged_into_a_row_does_not_erase_its_computation() -> None:
    u = make_user()
    row = {**make_profile(u["id"], updated=1), "is_computed": True, "total_points": 40}
    s = make_session(u["id"], saved=[element(created=9)])
    r = run(users=[u], sessions=[s], profiles=[row])
    c = r.circuit_configurations.row(0, named=True)
    assert (c["is_computed"], c["total_points"]) == (True, 40)
    assert r.repairs.filter(pl.col("kind") == "merged_value_dropped").height == 0
