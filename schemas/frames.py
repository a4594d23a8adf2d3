"""The frame contract between extract, transforms and load: column names and Polars dtypes.

Extract yields the legacy frames below (one row per source row, jsonb as its JSON text, uuids
as canonical lower-case text, numeric as Float64 so NaN survives); the transforms return the
target and ledger frames below; the loader writes them. A frame with exactly these columns in
this order is what every stage may rely on (``conform`` puts a frame in that shape).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

Schema = Mapping[str, pl.DataType | type[pl.DataType]]

TS = pl.Datetime("us", "UTC")

AUTH_USERS: Schema = {
    "id": pl.String,
    "email": pl.String,
    "raw_user_meta_data": pl.String,
    "created_at": TS,
}

LEGACY_USER_SESSIONS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "session_name": pl.String,
    "description": pl.String,
    "environment_variables": pl.String,
    "visualization_settings": pl.String,
    "performance_settings": pl.String,
    "saved_profiles": pl.String,
    "is_active": pl.Boolean,
    "last_accessed": TS,
    "created_at": TS,
    "updated_at": TS,
    "current_circuit_config_id": pl.String,  # S4: the app's own pointer (null elsewhere)
    "invalid_values": pl.String,  # values no target column can hold, named (extract)
}

LEGACY_TAGGED_MODELS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "session_id": pl.String,
    "model_id": pl.String,
    "tag_name": pl.String,
    "tag_category": pl.String,
    "circuit_parameters": pl.String,
    "resnorm_value": pl.Float64,
    "tagged_at": TS,
    "notes": pl.String,
    "is_interesting": pl.Boolean,
    "explicit_config_id": pl.String,  # S2 configuration_id, S4 circuit_config_id: the app's link
    "invalid_values": pl.String,
}

LEGACY_USER_PROFILES: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "name": pl.String,
    "description": pl.String,
    "parameters": pl.String,
    "grid_size": pl.Int32,
    "min_freq": pl.Float64,
    "max_freq": pl.Float64,
    "num_points": pl.Int32,
    "is_computed": pl.Boolean,
    "computation_time": pl.Float64,
    "total_points": pl.Int32,
    "valid_points": pl.Int32,
    "computation_results": pl.String,
    "created_at": TS,
    "updated_at": TS,
    "invalid_values": pl.String,
}

USER_PROFILES: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "username": pl.String,
    "full_name": pl.String,
    "avatar_url": pl.String,
    "default_grid_size": pl.Int32,
    "default_min_freq": pl.Float64,
    "default_max_freq": pl.Float64,
    "default_num_points": pl.Int32,
    "created_at": TS,
    "updated_at": TS,
}

CIRCUIT_CONFIGURATIONS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "name": pl.String,
    "description": pl.String,
    "is_public": pl.Boolean,
    "circuit_parameters": pl.String,
    "grid_size": pl.Int32,
    "min_freq": pl.Float64,
    "max_freq": pl.Float64,
    "num_points": pl.Int32,
    "is_computed": pl.Boolean,
    "computation_time": pl.Float64,
    "total_points": pl.Int32,
    "valid_points": pl.Int32,
    "computation_results": pl.String,
    "ui_settings": pl.String,
    "created_at": TS,
    "updated_at": TS,
}

USER_SESSIONS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "session_name": pl.String,
    "description": pl.String,
    "environment_variables": pl.String,
    "visualization_settings": pl.String,
    "performance_settings": pl.String,
    "is_active": pl.Boolean,
    "last_accessed": TS,
    "created_at": TS,
    "updated_at": TS,
    "current_circuit_config_id": pl.String,
}

TAGGED_MODELS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "session_id": pl.String,
    "model_id": pl.String,
    "tag_name": pl.String,
    "tag_category": pl.String,
    "circuit_parameters": pl.String,
    "resnorm_value": pl.Float64,
    "tagged_at": TS,
    "notes": pl.String,
    "is_interesting": pl.Boolean,
    "circuit_config_id": pl.String,
}

# --- ledger frames (DESIGN.md section 8, without run_id/batch_no, which the flow adds) ---------

ID_MAP: Schema = {
    "source_table": pl.String,
    "source_id": pl.String,
    "target_table": pl.String,
    "target_id": pl.String,
    "outcome": pl.String,  # migrated | merged
}

QUARANTINE: Schema = {
    "source_table": pl.String,
    "source_id": pl.String,
    "reason": pl.String,
    "detail": pl.String,
    "payload": pl.String,  # the full original row (or saved_profiles element) as JSON text
}

LINKS: Schema = {
    "tagged_model_id": pl.String,
    "circuit_config_id": pl.String,
    "method": pl.String,
    "confidence": pl.Float64,
    "needs_review": pl.Boolean,
    "evidence": pl.String,  # JSON text: candidate scores
}

REPAIRS: Schema = {
    "source_table": pl.String,
    "source_id": pl.String,
    "field": pl.String,
    "kind": pl.String,  # e.g. renamed_key, string_number, clamped, filled_frequency_range
    "original": pl.String,
    "repaired": pl.String,
}

LEGACY_APP_CONFIGURATIONS: Schema = {
    "source_table": pl.String,  # saved_configurations (S2) or circuit_configurations (S4)
    "id": pl.String,
    "user_id": pl.String,
    "name": pl.String,
    "description": pl.String,
    "is_public": pl.Boolean,
    "grid_size": pl.Int32,
    "min_freq": pl.Float64,
    "max_freq": pl.Float64,
    "num_points": pl.Int32,
    "circuit_parameters": pl.String,
    "is_computed": pl.Boolean,
    "computation_time": pl.Float64,
    "total_points": pl.Int32,
    "valid_points": pl.Int32,
    "computation_results": pl.String,
    "ui_settings": pl.String,
    "created_at": TS,
    "updated_at": TS,
    "invalid_values": pl.String,
}
"""Configuration tables the app wrote itself: sources of configurations like user_profiles rows."""

LEGACY_PROFILE_METADATA: Schema = {
    "id": pl.String,  # the user's id (S2: user_profiles keyed on the user)
    "username": pl.String,
    "full_name": pl.String,
    "avatar_url": pl.String,
    "created_at": TS,
    "updated_at": TS,
    "invalid_values": pl.String,
}
"""S2's user_profiles: the users' profile metadata (empty in other states)."""

LEGACY_FRAMES: Mapping[str, Schema] = {
    "auth_users": AUTH_USERS,
    "user_sessions": LEGACY_USER_SESSIONS,
    "tagged_models": LEGACY_TAGGED_MODELS,
    "user_profiles": LEGACY_USER_PROFILES,
    "app_configurations": LEGACY_APP_CONFIGURATIONS,
    "profile_metadata": LEGACY_PROFILE_METADATA,
}

TARGET_FRAMES: Mapping[str, Schema] = {
    "user_profiles": USER_PROFILES,
    "circuit_configurations": CIRCUIT_CONFIGURATIONS,
    "user_sessions": USER_SESSIONS,
    "tagged_models": TAGGED_MODELS,
}

LEDGER_FRAMES: Mapping[str, Schema] = {
    "id_map": ID_MAP,
    "quarantine": QUARANTINE,
    "links": LINKS,
    "repairs": REPAIRS,
}


def empty(schema: Schema) -> pl.DataFrame:
    """An empty frame with exactly the columns and dtypes of ``schema``."""
    return pl.DataFrame(schema=dict(schema))


def with_optional(frame: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """``frame`` with every column of ``schema`` it lacks added as nulls (a legacy frame from a
    state, or a caller, without the newer evidence columns)."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame.columns]
    return frame.with_columns(missing) if missing else frame


def conform(frame: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """``frame`` with exactly the columns of ``schema``, in order, cast strictly to its dtypes."""
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
