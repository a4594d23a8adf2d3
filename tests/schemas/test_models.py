"""The Pandera models agree with the SQLAlchemy tables and the frame contract."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from schemas import frames as F
from schemas import models as M
from schemas import tables as T

TARGETS = {
    "user_profiles": (M.UserProfiles, T.user_profiles, F.USER_PROFILES),
    "circuit_configurations": (
        M.CircuitConfigurations,
        T.circuit_configurations,
        F.CIRCUIT_CONFIGURATIONS,
    ),
    "user_sessions": (M.UserSessions, T.user_sessions, F.USER_SESSIONS),
    "tagged_models": (M.TaggedModels, T.tagged_models, F.TAGGED_MODELS),
}
LEGACY = {
    "auth_users": (M.AuthUsers, F.AUTH_USERS),
    "user_sessions": (M.LegacyUserSessions, F.LEGACY_USER_SESSIONS),
    "tagged_models": (M.LegacyTaggedModels, F.LEGACY_TAGGED_MODELS),
    "user_profiles": (M.LegacyUserProfiles, F.LEGACY_USER_PROFILES),
}


def polars_type_for(column: sa.Column[Any]) -> pl.DataType:
    """The frame dtype a SQL column type maps to."""
    kind = column.type
    if isinstance(kind, UUID | JSONB | sa.Text | sa.String):
        return pl.String()
    if isinstance(kind, sa.Boolean):
        return pl.Boolean()
    if isinstance(kind, sa.Integer):
        return pl.Int32()
    if isinstance(kind, sa.Numeric | sa.Double | sa.Float):
        return pl.Float64()
    if isinstance(kind, sa.DateTime):
        assert kind.timezone
        return pl.Datetime("us", "UTC")
    raise AssertionError(f"unmapped SQL type {kind!r} of {column.name}")


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_model_matches_table(name: str) -> None:
    model, table, frame_schema = TARGETS[name]
    schema = model.to_schema()
    assert list(schema.columns) == [c.name for c in table.columns] == list(frame_schema)
    for column in table.columns:
        pandera_column = schema.columns[column.name]
        assert pandera_column.nullable == column.nullable, column.name
        assert pandera_column.dtype.type == polars_type_for(column), column.name
        assert frame_schema[column.name] == polars_type_for(column), column.name


def test_varchar_lengths_are_mirrored() -> None:
    for model, table, _ in TARGETS.values():
        schema = model.to_schema()
        for column in table.columns:
            if isinstance(column.type, sa.String) and column.type.length:
                checks = {c.name: c for c in schema.columns[column.name].checks}
                assert "str_length" in checks, (table.name, column.name)
                assert checks["str_length"].statistics["max_value"] == column.type.length


@pytest.mark.parametrize("name", list(LEGACY))
def test_legacy_model_matches_frames(name: str) -> None:
    model, frame_schema = LEGACY[name]
    schema = model.to_schema()
    assert list(schema.columns) == list(frame_schema)
    for column, dtype in frame_schema.items():
        assert schema.columns[column].dtype.type == dtype, column


def test_legacy_nullability_matches_legacy_tables() -> None:
    tables = {
        "user_sessions": T.legacy_user_sessions,
        "tagged_models": T.legacy_tagged_models,
        "user_profiles": T.legacy_user_profiles,
    }
    for name, table in tables.items():
        schema = LEGACY[name][0].to_schema()
        for column in table.columns:
            assert schema.columns[column.name].nullable == column.nullable, (name, column.name)


# --- CHECK constraints, at their bounds -------------------------------------------------------

UUID1 = "00000000-0000-4000-8000-000000000001"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def config_row(**over: Any) -> pl.DataFrame:
    row: dict[str, Any] = {
        "id": UUID1,
        "user_id": UUID1,
        "name": "A",
        "description": None,
        "is_public": False,
        "circuit_parameters": json.dumps(
            {"Rsh": 1, "Ra": 1, "Ca": 1, "Rb": 1, "Cb": 1, "frequency_range": [0.1, 10]}
        ),
        "grid_size": 10,
        "min_freq": 0.1,
        "max_freq": 10.0,
        "num_points": 100,
        "is_computed": False,
        "computation_time": None,
        "total_points": None,
        "valid_points": None,
        "computation_results": None,
        "ui_settings": None,
        "created_at": T0,
        "updated_at": T0,
    }
    row.update(over)
    return pl.DataFrame([row], schema=dict(F.CIRCUIT_CONFIGURATIONS))


@pytest.mark.parametrize(
    ("over", "ok"),
    [
        ({}, True),
        ({"grid_size": 2}, True),
        ({"grid_size": 25}, True),
        ({"grid_size": 1}, False),
        ({"grid_size": 26}, False),
        ({"num_points": 10}, True),
        ({"num_points": 1000}, True),
        ({"num_points": 9}, False),
        ({"num_points": 1001}, False),
        ({"min_freq": 0.0}, False),
        ({"max_freq": 0.1}, False),
        ({"name": None}, False),
        ({"id": "not-a-uuid"}, False),
        ({"circuit_parameters": json.dumps({"Rsh": 1, "Ra": 1, "Ca": 1, "Rb": 1, "Cb": 1})}, False),
    ],
)
def test_configuration_checks(over: dict[str, Any], ok: bool) -> None:
    failing = M.failing_rows(M.CircuitConfigurations, config_row(**over))
    assert (failing.height == 0) == ok, failing


def test_failing_rows_names_rows_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "VALIDATION_CHUNK_ROWS", 2)
    frame = pl.concat(
        [config_row(), config_row(grid_size=40), config_row(), config_row(num_points=1)]
    )
    failing = M.failing_rows(M.CircuitConfigurations, frame).sort("row")
    assert failing["row"].to_list() == [1, 3]
    assert "grid_size" in failing["detail"][0]


def test_profile_defaults_checks() -> None:
    row = {
        "id": UUID1,
        "user_id": UUID1,
        "username": None,
        "full_name": None,
        "avatar_url": None,
        "default_grid_size": 5,
        "default_min_freq": 1.0,
        "default_max_freq": 1.0,
        "default_num_points": 100,
        "created_at": T0,
        "updated_at": T0,
    }
    frame = pl.DataFrame([row], schema=dict(F.USER_PROFILES))
    assert M.failing_rows(M.UserProfiles, frame)["row"].to_list() == [0]
