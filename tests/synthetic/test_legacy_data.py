"""The synthetic legacy data: determinism, the frame contract, rates, and a truth that an
independent reading of the generated rows (plain ``json``, no generator internals) confirms."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import fields, replace
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from schemas.frames import LEGACY_FRAMES
from synthetic.legacy_data import (
    SAVED_NUM_POINTS,
    TRUTH_DUPLICATES,
    TRUTH_LINKS,
    TRUTH_QUARANTINE,
    Rates,
    SyntheticLegacy,
    generate,
)
from transforms.impedance import PARAMETERS, resnorm

FRAMES = ("auth_users", "user_sessions", "tagged_models", "user_profiles")
TRUTH = {
    "truth_links": TRUTH_LINKS,
    "truth_quarantine": TRUTH_QUARANTINE,
    "truth_duplicates": TRUTH_DUPLICATES,
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
)


# --- an independent reading of the legacy rows ------------------------------------------------


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


def read_world(data: SyntheticLegacy) -> dict[str, Any]:
    """Quarantine verdicts, circuit sources and cases, read from the rows alone."""
    users = set(data.auth_users["id"].to_list())
    quarantine: set[tuple[str, str, str]] = set()
    sources: dict[tuple[str, str], dict[str, Any]] = {}  # valid circuit sources
    cases: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()

    for row in data.user_profiles.iter_rows(named=True):
        totals["user_profiles"] += 1
        values, seen = read_parameters(json.loads(row["parameters"]))
        cases["user_profiles"].update(seen.keys())
        inverted = not 0 < row["min_freq"] < row["max_freq"]
        cases["user_profiles"]["inverted_freq"] += inverted
        cases["user_profiles"]["grid_out_of_range"] += not (
            2 <= row["grid_size"] <= 25 and 10 <= row["num_points"] <= 1000
        )
        if values is None:
            quarantine.add(("user_profiles", row["id"], "invalid_parameters"))
        elif inverted:
            quarantine.add(("user_profiles", row["id"], "invalid_frequency_range"))
        else:
            sources[("user_profiles", row["id"])] = {
                "user": row["user_id"],
                "name": row["name"],
                "params": values,
                "lo": row["min_freq"],
                "hi": row["max_freq"],
                "points": row["num_points"],
                "element_id": row["id"],
            }

    session_user: dict[str, str | None] = {}
    for row in data.user_sessions.iter_rows(named=True):
        totals["user_sessions"] += 1
        sid, user = row["id"], row["user_id"]
        saved = json.loads(row["saved_profiles"])
        lost = None if user in users else "no_user" if user is None else "unknown_user"
        session_user[sid] = None if lost else user
        cases["user_sessions"]["null_user"] += user is None
        cases["user_sessions"]["dangling_user"] += lost == "unknown_user"
        if lost:
            quarantine.add(("user_sessions", sid, lost))
        if not isinstance(saved, list):
            cases["user_sessions"]["saved_not_array"] += 1
            quarantine.add(("saved_profiles", f"{sid}#*", lost or "malformed_saved_profiles"))
            continue
        for index, element in enumerate(saved):
            source_id = f"{sid}#{index}"
            if lost:
                quarantine.add(("saved_profiles", source_id, lost))
                continue
            totals["elements"] += 1
            if not isinstance(element, dict) or not isinstance(element.get("parameters"), dict):
                cases["elements"]["malformed_element"] += 1
                quarantine.add(("saved_profiles", source_id, "malformed_element"))
                continue
            values, seen = read_parameters(element["parameters"])
            cases["elements"].update(seen.keys())
            lo, hi = element["frequencyRange"]
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
        values, seen = read_parameters(json.loads(row["circuit_parameters"]))
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
        models[row["id"]] = {**row, "user": user, "params": values}
    return {
        "quarantine": quarantine,
        "sources": sources,
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


@pytest.fixture(scope="module")
def clean() -> SyntheticLegacy:
    return generate(1500, seed=12, rates=Rates.zero())


# --- determinism and the frame contract -------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    first, second = generate(150, seed=3), generate(150, seed=3)
    for f in fields(SyntheticLegacy):
        assert_frame_equal(getattr(first, f.name), getattr(second, f.name))


def test_different_seed_gives_different_frames() -> None:
    first, second = generate(150, seed=3), generate(150, seed=4)
    for f in fields(SyntheticLegacy):
        assert not getattr(first, f.name).equals(getattr(second, f.name)), f.name
    assert set(first.auth_users["id"]).isdisjoint(second.auth_users["id"])


@pytest.mark.parametrize("users", [0, 40])
def test_frames_match_the_contract(users: int) -> None:
    data = generate(users, seed=1)
    for name in FRAMES:
        assert list(getattr(data, name).schema.items()) == list(LEGACY_FRAMES[name].items())
    for name, schema in TRUTH.items():
        assert list(getattr(data, name).schema.items()) == list(schema.items())


def test_ids_are_canonical_uuid4_and_unique(messy: SyntheticLegacy) -> None:
    pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    frames = (messy.auth_users, messy.user_sessions, messy.user_profiles, messy.tagged_models)
    ids = pl.concat([frame["id"] for frame in frames])
    assert ids.str.contains(pattern).all()
    assert ids.n_unique() == len(ids)


def test_values_are_realistic(clean: SyntheticLegacy) -> None:
    params = np.array(
        [read_parameters(json.loads(t))[0] for t in clean.user_profiles["parameters"]]
    )
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
        ("elements", "missing_key"),
        ("elements", "bad_value"),
        ("elements", "inverted_freq"),
        ("elements", "malformed_element"),
        ("user_sessions", "null_user"),
        ("user_sessions", "dangling_user"),
        ("user_sessions", "saved_not_array"),
        ("tagged_models", "null_user"),
        ("tagged_models", "dangling_user"),
        ("tagged_models", "missing_key"),
        ("tagged_models", "bad_value"),
        ("tagged_models", "string_number"),
        ("tagged_models", "legacy_rs_key"),
    ],
)
def test_each_messy_case_occurs_at_its_rate(
    messy_world: dict[str, Any], table: str, case: str
) -> None:
    counts, totals = messy_world["cases"][table], messy_world["totals"]
    # Objects that hold a parameters object at all (malformed elements hold none).
    total = totals[table] - (
        counts["malformed_element"] if table == "elements" and case != "malformed_element" else 0
    )
    rate = getattr(MESSY, case)
    if table == "elements" and case != "malformed_element":
        rate /= 1 - MESSY.malformed_element  # the four causes of an element exclude each other
    assert_rate(counts[case], total, rate, f"{table}.{case}")


def test_copy_rates() -> None:
    rates = replace(Rates.zero(), copied_profile=0.1, diverged_copy=0.08, duplicate_tag=0.06)
    data = generate(3000, seed=21, rates=rates)
    world = read_world(data)
    assert not world["quarantine"] and data.truth_quarantine.is_empty()
    by_content: dict[tuple[object, ...], list[tuple[str, str]]] = defaultdict(list)
    by_element_id: dict[tuple[object, str], set[tuple[object, ...]]] = defaultdict(set)
    for key, source in world["sources"].items():
        by_content[content(source)].append(key)
        by_element_id[(source["user"], source["element_id"])].add(content(source))
    # Distinct contents: the original circuits and their diverged copies (8% more).
    groups = list(by_content.values())
    assert_rate(sum(len(g) > 1 for g in groups), len(groups), 0.1 / 1.08, "copied_profile")
    diverged = sum(len(c) - 1 for c in by_element_id.values())
    assert_rate(diverged, len(by_element_id), 0.08, "diverged_copy")
    tags = data.tagged_models.join(data.truth_links, left_on="id", right_on="tagged_model_id")
    repeated = tags.group_by("true_source_id", "model_id", "tag_name").len()
    assert_rate(int((repeated["len"] > 1).sum()), repeated.height, 0.06, "duplicate_tag")


# --- the truth against the rows ---------------------------------------------------------------


def test_quarantine_truth_matches_an_independent_reading(
    messy: SyntheticLegacy, messy_world: dict[str, Any]
) -> None:
    truth = set(messy.truth_quarantine.iter_rows())
    assert len(truth) == messy.truth_quarantine.height  # one reason per row
    assert truth == messy_world["quarantine"]
    reasons = Counter(reason for _, _, reason in truth)
    assert set(reasons) == {
        "no_user",
        "unknown_user",
        "invalid_parameters",
        "invalid_frequency_range",
        "malformed_saved_profiles",
        "malformed_element",
    }


def test_null_user_models_with_a_valid_session_are_not_quarantined(
    messy: SyntheticLegacy, messy_world: dict[str, Any]
) -> None:
    rescued = [m for m in messy_world["models"].values() if m["user_id"] is None]
    assert len(rescued) > 20
    quarantined = set(messy.truth_quarantine["source_id"])
    assert not quarantined.intersection(m["id"] for m in rescued)


def test_tagged_models_name_only_sessions_of_known_users(messy: SyntheticLegacy) -> None:
    """So a session without a valid user is named by no row: quarantining it is unambiguous.
    A few models of a known user name another user's session (``foreign_session``)."""
    users = messy.auth_users["id"].implode()
    pairs = messy.tagged_models.filter(pl.col("session_id").is_not_null()).join(
        messy.user_sessions, left_on="session_id", right_on="id", suffix="_session"
    )
    assert pairs.height == messy.tagged_models["session_id"].drop_nulls().len()
    assert pairs["user_id_session"].is_in(users).all()
    named = pairs.filter(pl.col("user_id").is_not_null())
    foreign = named.filter(pl.col("user_id") != pl.col("user_id_session")).height
    assert 0 < foreign < 0.05 * named.height


def test_duplicate_truth_matches_identical_content(
    messy: SyntheticLegacy, messy_world: dict[str, Any]
) -> None:
    sources = messy_world["sources"]
    groups: dict[tuple[object, ...], set[tuple[str, str]]] = defaultdict(set)
    for key, source in sources.items():
        groups[content(source)].add(key)
    duplicates = messy.truth_duplicates.filter(pl.col("source_table") != "tagged_models")
    expected = {member: group for group in groups.values() if len(group) > 1 for member in group}
    pointed: dict[tuple[str, str], tuple[str, str]] = {}
    for table, source_id, of_table, of_id in duplicates.iter_rows():
        pointed[(table, source_id)] = (of_table, of_id)
        assert expected[(table, source_id)] == expected[(of_table, of_id)]
    assert set(pointed.values()).isdisjoint(pointed)  # merges point at a representative
    # Every group of identical sources has exactly one representative that is no duplicate.
    for group in {frozenset(g) for g in expected.values()}:
        assert len(group - set(pointed)) == 1
    assert len(pointed) > 50


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


def test_links_point_at_a_valid_circuit_of_the_models_user(
    messy: SyntheticLegacy, messy_world: dict[str, Any]
) -> None:
    links = messy.truth_links
    assert links["tagged_model_id"].sort().equals(messy.tagged_models["id"].sort())
    sources, models = messy_world["sources"], messy_world["models"]
    for model_id, table, source_id, _ in links.iter_rows():
        assert (table, source_id) in sources
        if model_id in models:
            assert sources[(table, source_id)]["user"] == models[model_id]["user"]


def test_models_are_tagged_within_their_circuits_lifetime(messy: SyntheticLegacy) -> None:
    on_rows = messy.truth_links.join(
        messy.tagged_models, left_on="tagged_model_id", right_on="id"
    ).join(messy.user_profiles, left_on="true_source_id", right_on="id", suffix="_circuit")
    assert on_rows.height > 5000
    assert on_rows["tagged_at"].is_between(on_rows["created_at"], on_rows["updated_at"]).all()


def test_resnorm_value_is_recomputed_against_the_true_circuit(
    messy: SyntheticLegacy, messy_world: dict[str, Any]
) -> None:
    sources, models = messy_world["sources"], messy_world["models"]
    rows = [
        (models[m], sources[(t, s)]) for m, t, s, _ in messy.truth_links.iter_rows() if m in models
    ]
    assert len(rows) > 5000
    expected = resnorm(
        np.array([m["params"] for m, _ in rows]),
        np.array([s["params"] for _, s in rows]),
        np.array([s["lo"] for _, s in rows]),
        np.array([s["hi"] for _, s in rows]),
        np.array([s["points"] for _, s in rows]),
    )
    actual = np.array([m["resnorm_value"] for m, _ in rows])
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


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
    for model_id, table, source_id, indistinguishable in messy.truth_links.iter_rows():
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


# --- clean data -----------------------------------------------------------------------------------


def test_zero_rates_give_clean_data(clean: SyntheticLegacy) -> None:
    assert clean.truth_quarantine.is_empty()
    assert clean.truth_duplicates.is_empty()
    world = read_world(clean)
    assert not world["quarantine"]
    for table, counts in world["cases"].items():
        assert sum(counts.values()) == 0, (table, counts)
    users = set(clean.auth_users["id"])
    assert set(clean.user_sessions["user_id"]) <= users
    assert set(clean.tagged_models["user_id"]) <= users
    for text in clean.user_profiles["parameters"]:
        obj = json.loads(text)
        assert set(obj) - {"frequency_range"} == set(PARAMETERS)
        assert all(isinstance(obj[k], float) and obj[k] > 0 for k in PARAMETERS)
    for text in clean.user_sessions["saved_profiles"]:
        for element in json.loads(text):
            assert set(element) == {
                "id",
                "name",
                "description",
                "parameters",
                "frequencyRange",
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


def test_users_without_sessions_keep_every_circuit_in_user_profiles() -> None:
    data = generate(200, seed=5, sessions_per_user=(0, 0))
    assert data.user_sessions.is_empty()
    assert (data.truth_links["true_source_table"] == "user_profiles").all()
    assert data.tagged_models["session_id"].is_null().all()
    assert data.tagged_models.height > 0
