"""The synthetic legacy data: determinism, the frame contract per schema state, rates, and a
truth that an independent reading of the generated rows (plain ``json``, no generator
internals) confirms."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from schemas.frames import LEGACY_FRAMES
from synthetic.app_states import SCHEMA_STATES, STATE_FRAMES
from synthetic.legacy_data import (
    SAVED_NUM_POINTS,
    TRUTH_CIRCUITS,
    TRUTH_DUPLICATES,
    TRUTH_LINKS,
    TRUTH_QUARANTINE,
    Rates,
    SyntheticLegacy,
    generate,
)
from transforms.impedance import PARAMETERS, resnorm

TRUTH = {
    "links": TRUTH_LINKS,
    "quarantine": TRUTH_QUARANTINE,
    "duplicates": TRUTH_DUPLICATES,
    "circuits": TRUTH_CIRCUITS,
}
# Every per-row messy case at a rate high enough to measure on a few thousand users.
MESSY = Rates(
    missing_key=0.06,
    string_number=0.1,
    legacy_rs_key=0.1,
    bad_value=0.06,
    inverted_freq=0.06,
    grid_out_of_range=0.08,
    null_user=0.06,
    dangling_user=0.06,
    saved_not_array=0.08,
    malformed_element=0.08,
    copied_profile=0.1,
    diverged_copy=0.08,
    duplicate_tag=0.06,
    json_string_profiles=0.1,
    json_string_saved=0.1,
    json_string_elements=0.1,
    undecodable_json=0.04,
    stale_frequency_range=0.1,
)
LINK_COLUMN = {"S2": "configuration_id", "S4": "circuit_config_id"}


# --- an independent reading of the legacy rows ------------------------------------------------


def decode(text: str) -> tuple[Any, str]:
    """A jsonb value's JSON text, decoded once more when it is a string (as the migration does):
    the value and ``plain``, ``string`` (a string that decoded) or ``undecodable``."""
    value = json.loads(text)
    if not isinstance(value, str):
        return value, "plain"
    try:
        return json.loads(value), "string"
    except ValueError:
        return None, "undecodable"


def read_parameters(obj: object) -> tuple[list[float] | None, dict[str, int]]:
    """The five parameters (None if any is unusable) and the messy cases seen in ``obj``."""
    seen: Counter[str] = Counter()
    if not isinstance(obj, dict):
        return None, seen
    values: list[float] = []
    usable = True
    if "Rs" in obj and "Rsh" not in obj:
        seen["legacy_rs_key"] += 1
    for key in PARAMETERS:
        raw = obj.get(key, obj.get("Rs") if key == "Rsh" else None)
        if raw is None:
            seen["missing_key"] += 1
            usable = False
            continue
        if isinstance(raw, str):
            if raw != "NaN":
                seen["string_number"] += 1
            try:
                raw = float(raw)
            except ValueError:
                usable = False
                continue
        if not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
            seen["bad_value"] += 1
            usable = False
            continue
        values.append(float(raw))
    return (values if usable else None), seen


def decimal(real: float) -> float:
    """A REAL column's value (read as float8) as the decimal float4 prints."""
    return float(str(np.float32(real)))


def read_rows(
    data: SyntheticLegacy,
    table: str,
    quarantine: set[tuple[str, str, str]],
    sources: dict[tuple[str, str], dict[str, Any]],
    cases: dict[str, Counter[str]],
    totals: Counter[str],
) -> None:
    """Circuit rows: ``user_profiles`` (S1, S3, S4) or a configuration table (S2, S4)."""
    frame = getattr(data, table)
    config = table != "user_profiles"
    params, lo, hi = (
        ("circuit_parameters", "min_frequency", "max_frequency")
        if table == "saved_configurations"
        else ("circuit_parameters", "min_freq", "max_freq")
        if config
        else ("parameters", "min_freq", "max_freq")
    )
    for row in frame.iter_rows(named=True):
        totals[table] += 1
        obj, how = decode(row[params])
        cases[table][f"json_{how}"] += 1
        values, seen = read_parameters(obj)
        cases[table].update(seen.keys())
        low, high = (decimal(row[lo]), decimal(row[hi])) if config else (row[lo], row[hi])
        if config:
            cases[table]["stale_frequency_range"] += obj["frequency_range"] != [low, high]
        inverted = not 0 < low < high
        cases[table]["inverted_freq"] += inverted
        cases[table]["grid_out_of_range"] += not (
            2 <= row["grid_size"] <= 25 and 10 <= row["num_points"] <= 1000
        )
        if values is None:
            quarantine.add((table, row["id"], "invalid_parameters"))
        elif inverted:
            quarantine.add((table, row["id"], "invalid_frequency_range"))
        else:
            sources[(table, row["id"])] = {
                "user": row["user_id"],
                "name": row["name"],
                "params": values,
                "lo": low,
                "hi": high,
                "points": row["num_points"],
                "element_id": row["id"],
                "created_at": row["created_at"],
                "updated_at": row["updated_at"],
            }


def read_world(data: SyntheticLegacy) -> dict[str, Any]:
    """Quarantine verdicts, circuit sources and cases, read from the rows alone."""
    users = set(data.auth_users["id"].to_list())
    quarantine: set[tuple[str, str, str]] = set()
    sources: dict[tuple[str, str], dict[str, Any]] = {}  # valid circuit sources
    cases: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    all_sources: set[tuple[str, str]] = set()  # every circuit source, valid or not

    for table in ("user_profiles", "saved_configurations", "circuit_configurations"):
        if table == "user_profiles" and data.schema_state == "S2":
            continue  # metadata
        if getattr(data, table) is not None:
            read_rows(data, table, quarantine, sources, cases, totals)
            all_sources |= {(table, i) for i in getattr(data, table)["id"]}

    session_user: dict[str, str | None] = {}
    has_saved = "saved_profiles" in data.user_sessions.columns
    for row in data.user_sessions.iter_rows(named=True):
        totals["user_sessions"] += 1
        sid, user = row["id"], row["user_id"]
        lost = None if user in users else "no_user" if user is None else "unknown_user"
        session_user[sid] = None if lost else user
        cases["user_sessions"]["null_user"] += user is None
        cases["user_sessions"]["dangling_user"] += lost == "unknown_user"
        if lost:
            quarantine.add(("user_sessions", sid, lost))
        if not has_saved:
            continue
        saved, how = decode(row["saved_profiles"])
        if not lost and isinstance(saved, list):
            cases["user_sessions"][f"json_{how}"] += 1
        if not isinstance(saved, list):
            cases["user_sessions"]["saved_not_array"] += how != "undecodable"
            cases["user_sessions"]["undecodable_json"] += how == "undecodable"
            quarantine.add(("saved_profiles", f"{sid}#*", lost or "malformed_saved_profiles"))
            all_sources.add(("saved_profiles", f"{sid}#*"))
            continue
        for index, element in enumerate(saved):
            source_id = f"{sid}#{index}"
            all_sources.add(("saved_profiles", source_id))
            if lost:
                quarantine.add(("saved_profiles", source_id, lost))
                continue
            totals["elements"] += 1
            params = element.get("parameters") if isinstance(element, dict) else None
            how = "plain"
            if isinstance(params, str):
                how = "string"
                try:
                    params = json.loads(params)
                except ValueError:  # truncated JSON, or text that never was JSON
                    how = "undecodable" if params.startswith("{") else "plain"
            if not isinstance(params, dict):
                cases["elements"]["malformed_element"] += how != "undecodable"
                cases["elements"]["undecodable_json"] += how == "undecodable"
                quarantine.add(("saved_profiles", source_id, "malformed_element"))
                continue
            cases["elements"][f"json_{how}"] += 1
            values, seen = read_parameters(params)
            cases["elements"].update(seen.keys())
            lo, hi = element.get("frequencyRange", [0.1, 100000])
            cases["elements"]["no_frequency_range"] += "frequencyRange" not in element
            inverted = not 0 < lo < hi
            cases["elements"]["inverted_freq"] += inverted
            if values is None:
                quarantine.add(("saved_profiles", source_id, "invalid_parameters"))
            elif inverted:
                quarantine.add(("saved_profiles", source_id, "invalid_frequency_range"))
            else:
                sources[("saved_profiles", source_id)] = {
                    "user": user,
                    "name": element["name"],
                    "params": values,
                    "lo": lo,
                    "hi": hi,
                    "points": SAVED_NUM_POINTS,
                    "element_id": element["id"],
                }

    models: dict[str, dict[str, Any]] = {}
    for row in data.tagged_models.iter_rows(named=True):
        totals["tagged_models"] += 1
        user, session = row["user_id"], row["session_id"]
        obj, how = decode(row["circuit_parameters"])
        cases["tagged_models"][f"json_{how}"] += 1
        values, seen = read_parameters(obj)
        cases["tagged_models"].update(seen.keys())
        cases["tagged_models"]["null_user"] += user is None
        cases["tagged_models"]["dangling_user"] += user is not None and user not in users
        if user is None:
            user = session_user.get(session) if session else None
            if user is None:
                quarantine.add(("tagged_models", row["id"], "no_user"))
                continue
        elif user not in users:
            quarantine.add(("tagged_models", row["id"], "unknown_user"))
            continue
        if values is None:
            quarantine.add(("tagged_models", row["id"], "invalid_parameters"))
            continue
        models[row["id"]] = {**row, "user": user, "params": values, "object": obj}
    return {
        "quarantine": quarantine,
        "sources": sources,
        "all_sources": all_sources,
        "models": models,
        "cases": cases,
        "totals": totals,
    }


def content(source: dict[str, Any]) -> tuple[object, ...]:
    """What makes two sources of a user the same circuit (DESIGN.md section 5)."""
    return (source["user"], source["name"], tuple(source["params"]), source["lo"], source["hi"])


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def messy() -> SyntheticLegacy:
    return generate(3000, seed=11, rates=MESSY)


@pytest.fixture(scope="module")
def messy_world(messy: SyntheticLegacy) -> dict[str, Any]:
    return read_world(messy)


@pytest.fixture(scope="module", params=SCHEMA_STATES)
def state_data(request: pytest.FixtureRequest) -> tuple[SyntheticLegacy, dict[str, Any]]:
    """Messy data of each schema state, with its independent reading."""
    data = generate(1200, seed=31, rates=MESSY, schema_state=request.param)
    return data, read_world(data)


@pytest.fixture(scope="module")
def clean() -> SyntheticLegacy:
    return generate(1500, seed=12, rates=Rates.zero())


@pytest.fixture(scope="module")
def default() -> SyntheticLegacy:
    """The default rates, as the demo and the benchmarks get them."""
    return generate(3000, seed=13)


# --- determinism and the frame contract -------------------------------------------------------


def all_frames(data: SyntheticLegacy) -> dict[str, pl.DataFrame]:
    return {**data.legacy_tables(), **{f"truth_{k}": v for k, v in data.truth().items()}}


@pytest.mark.parametrize("state", SCHEMA_STATES)
def test_same_seed_gives_identical_frames(state: str) -> None:
    first = generate(150, seed=3, schema_state=state)
    second = generate(150, seed=3, schema_state=state.lower())
    assert first.schema_state == second.schema_state == state
    for name, frame in all_frames(first).items():
        assert_frame_equal(frame, all_frames(second)[name])


@pytest.mark.parametrize("state", SCHEMA_STATES)
def test_different_seed_gives_different_frames(state: str) -> None:
    first = generate(150, seed=3, schema_state=state)
    second = generate(150, seed=4, schema_state=state)
    for name, frame in all_frames(first).items():
        assert not frame.equals(all_frames(second)[name]), name
    assert set(first.auth_users["id"]).isdisjoint(second.auth_users["id"])


@pytest.mark.parametrize("state", SCHEMA_STATES)
@pytest.mark.parametrize("users", [0, 40])
def test_frames_match_the_contract(state: str, users: int) -> None:
    data = generate(users, seed=1, schema_state=state)
    tables = data.legacy_tables()
    assert list(tables) == list(STATE_FRAMES[state])  # type: ignore[index]
    for name, schema in STATE_FRAMES[state].items():  # type: ignore[index]
        assert list(tables[name].schema.items()) == list(schema.items()), name
    for name, schema in TRUTH.items():
        assert list(data.truth()[name].schema.items()) == list(schema.items())
    extracted = data.extracted()  # the shape extract reads, in any state
    assert list(extracted) == list(LEGACY_FRAMES)
    for name, schema in LEGACY_FRAMES.items():
        assert list(extracted[name].schema.items()) == list(schema.items())
    assert (data.saved_configurations is not None) == (state == "S2")
    assert (data.circuit_configurations is not None) == (state == "S4")


def test_ids_are_canonical_uuid4_and_unique(
    messy: SyntheticLegacy, state_data: tuple[SyntheticLegacy, dict[str, Any]]
) -> None:
    pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    for data in (messy, state_data[0]):
        frames = [f for name, f in data.legacy_tables().items() if name != "user_profiles"]
        if data.schema_state != "S2":  # there user_profiles.id is the user's id
            frames.append(data.user_profiles)
        ids = pl.concat([frame["id"] for frame in frames])
        assert ids.str.contains(pattern).all()
        assert ids.n_unique() == len(ids)


def test_values_are_realistic(clean: SyntheticLegacy) -> None:
    params = np.array([read_parameters(decode(t)[0])[0] for t in clean.user_profiles["parameters"]])
    resistances, capacitances = params[:, [0, 1, 3]], params[:, [2, 4]]
    assert resistances.min() >= 10 and resistances.max() <= 10_000
    assert capacitances.min() >= 1e-7 and capacitances.max() <= 5e-5
    profiles = clean.user_profiles
    assert (profiles["min_freq"] == 0.1).mean() > 0.6
    assert (profiles["max_freq"] == 1e5).mean() > 0.6
    assert profiles["grid_size"].is_between(5, 20).mean() > 0.9
    assert (profiles["num_points"] == 100).mean() > 0.7
    assert set(profiles["num_points"]) == {50, 100, 200}


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="probability"):
        Rates(missing_key=1.5)
    with pytest.raises(ValueError, match="sum"):
        Rates(null_user=0.5, dangling_user=0.4, missing_key=0.2)
    with pytest.raises(ValueError, match="circuits_per_user"):
        generate(5, circuits_per_user=(3, 1))
    with pytest.raises(ValueError, match="users"):
        generate(-1)
    with pytest.raises(ValueError, match="schema state"):
        generate(5, schema_state="S5")


# --- rates ----------------------------------------------------------------------------------------


def assert_rate(count: int, total: int, rate: float, label: str) -> None:
    """``count / total`` near ``rate``: 5 binomial standard deviations plus 15% of the rate."""
    assert total > 500, f"{label}: sample too small ({total})"
    tolerance = 5 * math.sqrt(rate * (1 - rate) / total) + 0.15 * rate
    observed = count / total
    assert abs(observed - rate) <= tolerance, f"{label}: {observed:.4f} vs {rate}"


@pytest.mark.parametrize(
    ("table", "case"),
    [
        ("user_profiles", "missing_key"),
        ("user_profiles", "bad_value"),
        ("user_profiles", "inverted_freq"),
        ("user_profiles", "grid_out_of_range"),
        ("user_profiles", "string_number"),
        ("user_profiles", "legacy_rs_key"),
        ("user_profiles", "undecodable_json"),
        ("elements", "missing_key"),
        ("elements", "bad_value"),
        ("elements", "inverted_freq"),
        ("elements", "malformed_element"),
        ("elements", "undecodable_json"),
        ("user_sessions", "null_user"),
        ("user_sessions", "dangling_user"),
        ("user_sessions", "saved_not_array"),
        ("user_sessions", "undecodable_json"),
        ("tagged_models", "null_user"),
        ("tagged_models", "dangling_user"),
        ("tagged_models", "missing_key"),
        ("tagged_models", "bad_value"),
        ("tagged_models", "string_number"),
        ("tagged_models", "legacy_rs_key"),
        ("tagged_models", "undecodable_json"),
    ],
)
def test_each_messy_case_occurs_at_its_rate(
    messy_world: dict[str, Any], table: str, case: str
) -> None:
    counts, totals = messy_world["cases"][table], messy_world["totals"]
    count, total, rate = counts[case], totals[table], getattr(MESSY, case)
    if case == "undecodable_json" and table in ("user_profiles", "tagged_models"):
        count = counts["json_undecodable"]
    if table == "elements" and case not in ("malformed_element", "undecodable_json"):
        # Objects that hold a parameters object at all; the five causes exclude each other.
        total -= counts["malformed_element"] + counts["undecodable_json"]
        rate /= 1 - MESSY.malformed_element - MESSY.undecodable_json
    assert_rate(count, total, rate, f"{table}.{case}")


@pytest.mark.parametrize(
    ("table", "rate"),
    [
        ("tagged_models", "json_string_models"),
        ("user_profiles", "json_string_profiles"),
        ("user_sessions", "json_string_saved"),
        ("elements", "json_string_elements"),
    ],
)
def test_json_strings_occur_at_their_rates(default: SyntheticLegacy, table: str, rate: str) -> None:
    """Among the values that are not undecodable (or, for sessions, not another shape)."""
    counts = read_world(default)["cases"][table]
    total = counts["json_plain"] + counts["json_string"]
    assert_rate(counts["json_string"], total, getattr(Rates(), rate), f"{table}.{rate}")
    if table == "tagged_models":  # by default most circuit_parameters are strings
        assert counts["json_string"] > counts["json_plain"]


def test_undecodable_strings_are_quarantined(default: SyntheticLegacy) -> None:
    truth = set(default.truth_quarantine.iter_rows())
    undecodable = {
        (table, i, "invalid_parameters")
        for table, column in (
            ("tagged_models", "circuit_parameters"),
            ("user_profiles", "parameters"),
        )
        for i, text in getattr(default, table).select("id", column).iter_rows()
        if decode(text)[1] == "undecodable"
    }
    assert len(undecodable) > 20
    assert undecodable <= truth
    world = read_world(default)
    assert world["cases"]["elements"]["undecodable_json"] > 0
    assert world["cases"]["user_sessions"]["undecodable_json"] > 0
    assert world["quarantine"] == truth


def test_copy_rates() -> None:
    rates = replace(Rates.zero(), copied_profile=0.1, diverged_copy=0.08, duplicate_tag=0.06)
    data = generate(3000, seed=21, rates=rates)
    world = read_world(data)
    assert not world["quarantine"] and data.truth_quarantine.is_empty()
    by_content: dict[tuple[object, ...], list[tuple[str, str]]] = defaultdict(list)
    by_name: dict[tuple[object, str], set[tuple[object, ...]]] = defaultdict(set)
    for key, source in world["sources"].items():
        by_content[content(source)].append(key)
        by_name[(source["user"], source["name"])].add(content(source))
    # Distinct contents: the original circuits and their diverged copies (8% more).
    groups = list(by_content.values())
    assert_rate(sum(len(g) > 1 for g in groups), len(groups), 0.1 / 1.08, "copied_profile")
    diverged = sum(len(c) - 1 for c in by_name.values())
    assert_rate(diverged, len(by_name), 0.08, "diverged_copy")
    tags = data.tagged_models.join(data.truth_links, left_on="id", right_on="tagged_model_id")
    repeated = tags.group_by("true_source_id", "model_id", "tag_name").len()
    assert_rate(int((repeated["len"] > 1).sum()), repeated.height, 0.06, "duplicate_tag")


# --- the truth against the rows, in every schema state ---------------------------------------


def test_quarantine_truth_matches_an_independent_reading(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    data, world = state_data
    truth = set(data.truth_quarantine.iter_rows())
    assert len(truth) == data.truth_quarantine.height  # one reason per row
    assert truth == world["quarantine"]
    reasons = Counter(reason for _, _, reason in truth)
    expected = {"no_user", "unknown_user", "invalid_parameters"}
    if data.schema_state != "S2":
        expected.add("invalid_frequency_range")
    if data.schema_state in ("S1", "S4"):
        expected |= {"malformed_saved_profiles", "malformed_element"}
    assert set(reasons) == expected


def test_every_source_is_accounted_for_once(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    """Each circuit source is a canonical valid circuit, a duplicate or quarantined; each tagged
    model has one truth link; each session is quarantined or kept."""
    data, world = state_data
    circuits = {(t, i) for t, i, *_ in data.truth_circuits.iter_rows()}  # type: ignore[union-attr]
    duplicates = {(t, i) for t, i, *_ in data.truth_duplicates.iter_rows()}
    quarantined = {(t, i) for t, i, _ in data.truth_quarantine.iter_rows()}
    sources = world["all_sources"]
    models = {("tagged_models", i) for i in data.tagged_models["id"]}
    assert not circuits & duplicates and not circuits & quarantined
    assert not duplicates & quarantined
    assert circuits == set(world["sources"]) - duplicates
    accounted = circuits | duplicates | quarantined
    assert sources <= accounted
    assert accounted - sources <= models | {("user_sessions", i) for i in data.user_sessions["id"]}
    links = data.truth_links["tagged_model_id"]
    assert links.n_unique() == len(links) == data.tagged_models.height
    tables = set(data.truth_circuits["source_table"])  # type: ignore[index]
    assert (
        tables
        == {
            "S1": {"user_profiles", "saved_profiles"},
            "S2": {"saved_configurations"},
            "S3": {"user_profiles"},
            "S4": {"user_profiles", "saved_profiles", "circuit_configurations"},
        }[data.schema_state]
    )


def test_links_point_at_a_valid_circuit_of_the_models_user(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    data, world = state_data
    links = data.truth_links
    assert links["tagged_model_id"].sort().equals(data.tagged_models["id"].sort())
    sources, models = world["sources"], world["models"]
    for model_id, table, source_id, _, _ in links.iter_rows():
        assert (table, source_id) in sources
        if model_id in models:
            assert sources[(table, source_id)]["user"] == models[model_id]["user"]


def test_the_apps_links_name_the_true_circuit(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    data, _ = state_data
    joined = data.tagged_models.join(data.truth_links, left_on="id", right_on="tagged_model_id")
    column = LINK_COLUMN.get(data.schema_state)
    if column is None:
        assert not joined["explicit_link"].any()
        return
    linked = joined.filter(pl.col(column).is_not_null())
    assert linked["explicit_link"].all() and joined["explicit_link"].sum() == linked.height
    assert (linked[column] == linked["true_source_id"]).all()
    table = "saved_configurations" if data.schema_state == "S2" else "circuit_configurations"
    assert (linked["true_source_table"] == table).all()
    eligible = joined.filter(pl.col("true_source_table") == table)
    assert_rate(linked.height, eligible.height, Rates().explicit_link, "explicit_link")


def test_resnorm_value_is_recomputed_against_the_true_circuit(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    data, world = state_data
    sources, models = world["sources"], world["models"]
    rows = [
        (models[m], sources[(t, s)]) for m, t, s, *_ in data.truth_links.iter_rows() if m in models
    ]
    assert len(rows) > 2000
    expected = resnorm(
        np.array([m["params"] for m, _ in rows]),
        np.array([s["params"] for _, s in rows]),
        np.array([s["lo"] for _, s in rows]),
        np.array([s["hi"] for _, s in rows]),
        np.array([s["points"] for _, s in rows]),
    )
    actual = np.array([m["resnorm_value"] for m, _ in rows])
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_truth_circuits_hold_each_circuits_grid(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    data, world = state_data
    for table, source_id, user, lo, hi, points in data.truth_circuits.iter_rows():  # type: ignore[union-attr]
        source = world["sources"][(table, source_id)]
        assert (source["user"], source["lo"], source["hi"], source["points"]) == (
            user,
            lo,
            hi,
            points,
        )


def test_duplicate_truth_matches_identical_content(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    data, world = state_data
    sources = world["sources"]
    groups: dict[tuple[object, ...], set[tuple[str, str]]] = defaultdict(set)
    for key, source in sources.items():
        groups[content(source)].add(key)
    duplicates = data.truth_duplicates.filter(pl.col("source_table") != "tagged_models")
    expected = {member: group for group in groups.values() if len(group) > 1 for member in group}
    pointed: dict[tuple[str, str], tuple[str, str]] = {}
    for table, source_id, of_table, of_id in duplicates.iter_rows():
        pointed[(table, source_id)] = (of_table, of_id)
        assert expected[(table, source_id)] == expected[(of_table, of_id)]
    assert set(pointed.values()).isdisjoint(pointed)  # merges point at a representative
    # Every group of identical sources has exactly one representative that is no duplicate.
    for group in {frozenset(g) for g in expected.values()}:
        assert len(group - set(pointed)) == 1
    assert len(pointed) > 30
    # The app's own configurations are never copied (their REAL frequencies would make
    # "identical" depend on how they are read).
    assert "circuit_configurations" not in set(duplicates["duplicate_of_table"])


def test_duplicate_tags_repeat_a_model_of_the_same_circuit(messy: SyntheticLegacy) -> None:
    models = messy.tagged_models.join(messy.truth_links, left_on="id", right_on="tagged_model_id")
    dup = messy.truth_duplicates.filter(pl.col("source_table") == "tagged_models")
    assert dup.height > 50
    pairs = dup.join(models, left_on="source_id", right_on="id").join(
        models, left_on="duplicate_of_id", right_on="id", suffix="_of"
    )
    assert pairs.height == dup.height
    for column in ("user_id", "session_id", "model_id", "tag_name", "circuit_parameters"):
        assert pairs[column].equals(pairs[f"{column}_of"]), column
    assert pairs["true_source_id"].equals(pairs["true_source_id_of"])
    assert (pairs["tagged_at"] > pairs["tagged_at_of"]).all()
    # Apart from these, (true circuit, model_id, tag_name) is unique.
    keys = models.filter(~pl.col("id").is_in(dup["source_id"].implode()))
    assert not keys.select("true_source_id", "model_id", "tag_name").is_duplicated().any()


def test_tagged_models_name_only_sessions_of_known_users(
    state_data: tuple[SyntheticLegacy, dict[str, Any]],
) -> None:
    """So a session without a valid user is named by no row: quarantining it is unambiguous.
    A few models of a known user name another user's session (``foreign_session``)."""
    data, _ = state_data
    users = data.auth_users["id"].implode()
    pairs = data.tagged_models.filter(pl.col("session_id").is_not_null()).join(
        data.user_sessions, left_on="session_id", right_on="id", suffix="_session"
    )
    assert pairs.height == data.tagged_models["session_id"].drop_nulls().len()
    assert pairs["user_id_session"].is_in(users).all()
    named = pairs.filter(pl.col("user_id").is_not_null())
    foreign = named.filter(pl.col("user_id") != pl.col("user_id_session")).height
    assert 0 < foreign < 0.05 * named.height


def test_null_user_models_with_a_valid_session_are_not_quarantined(
    messy: SyntheticLegacy, messy_world: dict[str, Any]
) -> None:
    rescued = [m for m in messy_world["models"].values() if m["user_id"] is None]
    assert len(rescued) > 20
    quarantined = set(messy.truth_quarantine["source_id"])
    assert not quarantined.intersection(m["id"] for m in rescued)


def test_models_are_tagged_within_their_circuits_lifetime(messy: SyntheticLegacy) -> None:
    on_rows = messy.truth_links.join(
        messy.tagged_models, left_on="tagged_model_id", right_on="id"
    ).join(messy.user_profiles, left_on="true_source_id", right_on="id", suffix="_circuit")
    assert on_rows.height > 5000
    assert on_rows["tagged_at"].is_between(on_rows["created_at"], on_rows["updated_at"]).all()


def test_true_circuit_is_the_closest_unless_indistinguishable(
    messy: SyntheticLegacy, messy_world: dict[str, Any]
) -> None:
    sources, models = messy_world["sources"], messy_world["models"]
    of_user: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, source in sources.items():
        of_user[source["user"]].append(key)
    flags: dict[str, bool] = {}
    pairs: list[
        tuple[int, dict[str, Any], dict[str, Any], bool]
    ] = []  # (model no, model, candidate, true?)
    for model_id, table, source_id, indistinguishable, _ in messy.truth_links.iter_rows():
        if model_id not in models:
            continue
        model, true = models[model_id], sources[(table, source_id)]
        grid = (true["lo"], true["hi"], true["points"])
        same = [
            k
            for k in of_user[model["user"]]
            if sources[k]["params"] == true["params"]
            and (sources[k]["lo"], sources[k]["hi"], sources[k]["points"]) == grid
            and sources[k]["name"] != true["name"]
        ]
        assert indistinguishable == bool(same), model_id
        flags[model_id] = indistinguishable
        if not indistinguishable:
            for k in of_user[model["user"]]:
                candidate = sources[k]
                pairs.append((len(flags), model, candidate, candidate["params"] == true["params"]))
    assert 0 < sum(flags.values()) < 0.1 * len(flags)
    scores = resnorm(
        np.array([m["params"] for _, m, _, _ in pairs]),
        np.array([c["params"] for _, _, c, _ in pairs]),
        np.array([c["lo"] for _, _, c, _ in pairs]),
        np.array([c["hi"] for _, _, c, _ in pairs]),
        np.array([c["points"] for _, _, c, _ in pairs]),
    )
    best = (
        pl.DataFrame(
            {"model": [p[0] for p in pairs], "score": scores, "true": [p[3] for p in pairs]}
        )
        .sort("score")
        .group_by("model")
        .first()
    )
    assert best.height > 5000
    assert best["true"].mean() > 0.98  # type: ignore[operator]


# --- what the real app wrote ----------------------------------------------------------------------


def test_elements_have_the_apps_shape(default: SyntheticLegacy) -> None:
    elements = [
        e
        for text in default.user_sessions["saved_profiles"]
        for e in (decode(text)[0] if isinstance(decode(text)[0], list) else [])
        if isinstance(e, dict) and "createdAt" in e
    ]
    assert len(elements) > 1000
    assert all(re.fullmatch(r"profile_\d{13}_[0-9a-z]{8,9}", e["id"]) for e in elements)
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["createdAt"]) for e in elements
    )
    assert list(elements[0])[-2:] == ["id", "createdAt"]  # the app's key order
    with_range = sum("frequencyRange" in e for e in elements) / len(elements)
    assert 0.8 < with_range < 0.97  # most, not all
    missing = [e for e in elements if "frequencyRange" not in e]
    assert all(isinstance(e["parameters"], dict | str) for e in missing)


def test_tagged_models_have_the_apps_shape(default: SyntheticLegacy) -> None:
    models = default.tagged_models
    ids = models["model_id"]
    mesh = ids.str.contains(r"^mesh-\d+$").mean()
    config = ids.str.contains(r"^model_\d\d(_\d\d){5}$").mean()
    reference = (ids == "dynamic-reference").mean()
    assert mesh > 0.4 and config > 0.3 and 0 < reference < 0.05  # type: ignore[operator]
    assert mesh + config + reference == pytest.approx(1.0)  # type: ignore[operator]
    assert 0.85 < (models["tag_category"] == "user").mean() < 0.95  # type: ignore[operator]
    objects = [decode(t)[0] for t in models["circuit_parameters"]]
    with_range = [o for o in objects if isinstance(o, dict) and "frequency_range" in o]
    assert_rate(len(with_range), len(objects), 0.8, "frequency_range in circuit_parameters")


def test_configuration_tables_satisfy_the_apps_checks() -> None:
    for state, table, lo, hi in (
        ("S2", "saved_configurations", "min_frequency", "max_frequency"),
        ("S4", "circuit_configurations", "min_freq", "max_freq"),
    ):
        data = generate(1500, seed=8, rates=MESSY, schema_state=state)
        frame = getattr(data, table)
        assert frame.height > 1000
        assert frame["grid_size"].is_between(2, 25).all()
        assert frame["num_points"].is_between(10, 1000).all()
        assert ((frame[lo] > 0) & (frame[hi] > frame[lo])).all()
        for column in (lo, hi, "computation_time"):  # float4 values, as float8 reads them
            values = frame[column].drop_nulls().to_numpy()
            assert (values.astype(np.float32).astype(np.float64) == values).all()
        for text in frame["circuit_parameters"]:
            obj = json.loads(text)  # an object, never a jsonb string
            assert isinstance(obj, dict)
            assert {"Rsh", "Ra", "Ca", "Rb", "Cb", "frequency_range"} <= set(obj)
        bad = data.truth_quarantine.filter(pl.col("source_table") == table)
        assert set(bad["reason"]) == {"invalid_parameters"}


def test_s2_user_profiles_are_metadata() -> None:
    data = generate(800, seed=9, schema_state="S2")
    profiles = data.user_profiles
    assert profiles["id"].sort().equals(data.auth_users["id"].sort())
    assert profiles["username"].drop_nulls().is_unique().all()
    assert 0.2 < profiles["username"].is_not_null().mean() < 0.6  # type: ignore[operator]
    meta = data.auth_users.select(
        "id", pl.col("raw_user_meta_data").str.json_path_match("$.full_name").alias("name")
    )
    joined = profiles.join(meta, on="id")
    assert joined["full_name"].equals(joined["name"], check_names=False)
    keys = data.tagged_models.drop_nulls(["user_id", "session_id"])
    assert not keys.select("user_id", "session_id", "model_id", "tag_name").is_duplicated().any()
    assert data.user_sessions["total_computations"].max() > 0  # type: ignore[operator]
    assert data.tagged_models["impedance_spectrum"].is_not_null().any()


def test_s4_sessions_point_at_their_users_configurations() -> None:
    data = generate(1500, seed=10, rates=MESSY, schema_state="S4")
    configs = data.circuit_configurations
    assert configs is not None
    pairs = data.user_sessions.filter(pl.col("current_circuit_config_id").is_not_null()).join(
        configs, left_on="current_circuit_config_id", right_on="id", suffix="_config"
    )
    assert pairs.height > 100
    assert (pairs["user_id"] == pairs["user_id_config"]).all()
    assert configs["ui_settings"].is_not_null().mean() > 0.6  # type: ignore[operator]
    world = read_world(data)
    stale = world["cases"]["circuit_configurations"]["stale_frequency_range"]
    assert 0 < stale < 0.1 * configs.height


# --- clean data -----------------------------------------------------------------------------------


def test_zero_rates_give_clean_data(clean: SyntheticLegacy) -> None:
    assert clean.truth_quarantine.is_empty()
    assert clean.truth_duplicates.is_empty()
    world = read_world(clean)
    assert not world["quarantine"]
    for table, counts in world["cases"].items():
        messes = {k: v for k, v in counts.items() if k not in ("json_plain", "no_frequency_range")}
        assert sum(messes.values()) == 0, (table, counts)
    users = set(clean.auth_users["id"])
    assert set(clean.user_sessions["user_id"]) <= users
    assert set(clean.tagged_models["user_id"]) <= users
    for text in clean.user_profiles["parameters"]:
        obj = json.loads(text)
        assert set(obj) - {"frequency_range"} == set(PARAMETERS)
        assert all(isinstance(obj[k], float) and obj[k] > 0 for k in PARAMETERS)
    for text in clean.user_sessions["saved_profiles"]:
        for element in json.loads(text):
            assert set(element) - {"frequencyRange"} == {
                "id",
                "name",
                "description",
                "parameters",
                "createdAt",
            }
            assert set(element["parameters"]) == set(PARAMETERS)
    profiles = clean.user_profiles
    assert profiles["grid_size"].is_between(2, 25).all()
    assert profiles["num_points"].is_between(10, 1000).all()
    # No two circuit sources of a user have the same content.
    contents = [content(s) for s in world["sources"].values()]
    assert len(set(contents)) == len(contents)
    # Every model's (true circuit, model_id, tag_name) is unique.
    keys = clean.tagged_models.join(clean.truth_links, left_on="id", right_on="tagged_model_id")
    assert not keys.select("true_source_id", "model_id", "tag_name").is_duplicated().any()


@pytest.mark.parametrize("state", ["S2", "S3", "S4"])
def test_zero_rates_give_clean_data_in_every_state(state: str) -> None:
    data = generate(600, seed=12, rates=Rates.zero(), schema_state=state)
    assert data.truth_quarantine.is_empty() and data.truth_duplicates.is_empty()
    assert not read_world(data)["quarantine"]


def test_users_without_sessions_keep_every_circuit_in_user_profiles() -> None:
    data = generate(200, seed=5, sessions_per_user=(0, 0))
    assert data.user_sessions.is_empty()
    assert (data.truth_links["true_source_table"] == "user_profiles").all()
    assert data.tagged_models["session_id"].is_null().all()
    assert data.tagged_models.height > 0
