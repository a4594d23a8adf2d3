"""Property tests: for any legacy input, every source item is accounted for exactly once, the
output is deterministic and valid, and the inputs are not mutated."""

from __future__ import annotations

from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import models as M
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
from transforms.pipeline import TransformResult, transform

USER_IDS = [new_id(f"user-{i}") for i in range(3)]
GHOST = new_id("ghost")

values = st.one_of(
    st.floats(min_value=1e-8, max_value=1e5, allow_nan=False),
    st.sampled_from([0, -1, "NaN", "12.5", "abc", None]),
)


@st.composite
def params(draw: st.DrawFn) -> dict[str, Any] | str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["[1, 2]", '"text"', "{}", "not json"]))
    out: dict[str, Any] = {}
    for key in DEFAULT_PARAMS:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # missing key
        name = "Rs" if key == "Rsh" and choice == 1 else key
        out[name] = (
            DEFAULT_PARAMS[key] * draw(st.sampled_from([1.0, 1.0, 1.5]))
            if choice < 7
            else draw(values)
        )
    return out


owner = st.sampled_from([*USER_IDS, None, GHOST])


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    users = [make_user(uid) for uid in USER_IDS]
    n_sessions = draw(st.integers(0, 4))
    sessions = []
    for i in range(n_sessions):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            saved: Any = None
        elif kind == 1:
            saved = draw(st.sampled_from(['{"a": 1}', '"x"', "7"]))
        else:
            saved = [
                draw(
                    st.one_of(
                        st.builds(
                            lambda n, p, f: element(name=n, params=p, freq=f),
                            st.sampled_from(["A", "B"]),
                            st.sampled_from([DEFAULT_PARAMS, {**DEFAULT_PARAMS, "Ra": 900.0}]),
                            st.sampled_from([(0.1, 1e5), (10.0, 1.0), None]),
                        ),
                        st.sampled_from([5, "x", None, [1], {"name": "n"}]),
                    )
                )
                for _ in range(draw(st.integers(0, 3)))
            ]
        sessions.append(
            make_session(draw(owner), sid=new_id(f"s{i}"), name=f"S{i % 2}", saved=saved)
        )
    profiles = [
        make_profile(
            draw(st.sampled_from([*USER_IDS, GHOST])),
            pid=new_id(f"p{i}"),
            name=draw(st.sampled_from(["A", "B"])),
            params=draw(params()),
            grid_size=draw(st.sampled_from([None, 1, 10, 40])),
            num_points=draw(st.sampled_from([None, 5, 100, 2000])),
            min_freq=draw(st.sampled_from([0.1, 1.0, 1e6])),
            updated=draw(st.integers(0, 3)),
        )
        for i in range(draw(st.integers(0, 4)))
    ]
    session_ids = [s["id"] for s in sessions]
    models = [
        make_tagged_model(
            draw(owner),
            mid=new_id(f"m{i}"),
            session_id=draw(st.sampled_from([None, *session_ids])),
            params=draw(params()),
            resnorm=draw(st.sampled_from([None, 0.0, 1.0])),
            model_id=draw(st.sampled_from(["m1", "m2"])),
            tagged=draw(st.integers(0, 2)),
        )
        for i in range(draw(st.integers(0, 6)))
    ]
    return legacy(users=users, sessions=sessions, models=models, profiles=profiles)


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(worlds())
def test_accounting_identity_and_determinism(frames: dict[str, pl.DataFrame]) -> None:
    copies = {k: v.clone() for k, v in frames.items()}
    one = transform(**frames)
    two = transform(**frames)
    for k, v in frames.items():
        assert v.equals(copies[k]), k  # inputs untouched
    for name in TransformResult.__dataclass_fields__:
        assert getattr(one, name).equals(getattr(two, name)), name
    acc = accounting(frames["user_sessions"], frames["tagged_models"], frames["user_profiles"], one)
    assert acc.ok, acc.problems
    for counts in acc.tables.values():
        assert counts.source == counts.migrated + counts.merged + counts.quarantined


@SETTINGS
@given(worlds())
def test_outputs_are_valid_and_consistent(frames: dict[str, pl.DataFrame]) -> None:
    r = transform(**frames)
    for name, model in M.TARGET_MODELS.items():
        assert M.failing_rows(model, getattr(r, name)).height == 0, name
    for name in ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models"):
        assert getattr(r, name)["id"].is_unique().all(), name
    assert r.user_profiles["user_id"].is_unique().all()
    configs = r.circuit_configurations.select(pl.col("id").alias("circuit_config_id"), "user_id")
    # a model points at a configuration of its own user, and has exactly one link
    owned = r.tagged_models.join(configs, on=["circuit_config_id", "user_id"], how="anti")
    assert owned.height == 0
    assert sorted(r.links["tagged_model_id"]) == sorted(r.tagged_models["id"])
    assert r.tagged_models.select("circuit_config_id", "model_id", "tag_name").is_unique().all()
    current = r.user_sessions.filter(pl.col("current_circuit_config_id").is_not_null()).join(
        configs.rename({"circuit_config_id": "current_circuit_config_id"}),
        on=["current_circuit_config_id", "user_id"],
        how="anti",
    )
    assert current.height == 0
    assert r.user_sessions.select("user_id", "session_name").is_unique().all()
    names = r.circuit_configurations.select("user_id", "name")
    assert names.is_unique().all()
    assert set(r.quarantine["reason"]) <= {
        "no_user",
        "unknown_user",
        "invalid_parameters",
        "invalid_frequency_range",
        "malformed_saved_profiles",
        "malformed_element",
        "validation_failed",
    }
