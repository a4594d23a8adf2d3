"""Pandera (polars) DataFrameModels of the legacy input frames and the target frames.

The target models mirror the NOT NULL and CHECK constraints of ``schemas.tables`` (a test
compares them column by column); dtypes are those of ``schemas.frames``. Validate collected
DataFrames (on a LazyFrame Pandera checks only the schema) with ``lazy=True``; the row
``index`` of ``SchemaErrors.failure_cases`` names the failing rows. No model coerces: casting
dirty values is the transforms' job.
"""

from __future__ import annotations

from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.typing.polars import Series

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CIRCUIT_KEYS = ("Rsh", "Ra", "Ca", "Rb", "Cb")
CIRCUIT_KEYS_WITH_RANGE = (*CIRCUIT_KEYS, "frequency_range")

TS = pl.Datetime(time_unit="us", time_zone="UTC")


def _uuid(nullable: bool = False, unique: bool = False) -> Any:
    return pa.Field(nullable=nullable, unique=unique, str_matches=UUID_PATTERN)


def _has_keys(column: str, keys: tuple[str, ...]) -> pl.Expr:
    """A JSON object text naming every key of ``keys`` (a cheap textual check: regexes, not a
    parse, so it stays fast on a million rows; the transforms write canonical JSON)."""
    text = pl.col(column).str.strip_chars()
    ok = text.str.starts_with("{") & text.str.ends_with("}")
    for key in keys:
        ok = ok & text.str.contains(f'"{key}"\\s*:')
    return ok.fill_null(False)


class _Base(pa.DataFrameModel):
    class Config:
        strict = True
        ordered = True
        coerce = False


# --- legacy input -------------------------------------------------------------------------


class AuthUsers(_Base):
    """``auth.users`` as extracted (schemas.frames.AUTH_USERS)."""

    id: Series[str] = _uuid()
    email: Series[str] = pa.Field(nullable=True)
    raw_user_meta_data: Series[str] = pa.Field(nullable=True)
    created_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]


class LegacyUserSessions(_Base):
    """Legacy ``user_sessions`` (user_id may be null; saved_profiles is raw JSON text)."""

    id: Series[str] = _uuid()
    user_id: Series[str] = pa.Field(nullable=True)
    session_name: Series[str] = pa.Field(nullable=False)
    description: Series[str] = pa.Field(nullable=True)
    environment_variables: Series[str] = pa.Field(nullable=True)
    visualization_settings: Series[str] = pa.Field(nullable=True)
    performance_settings: Series[str] = pa.Field(nullable=True)
    saved_profiles: Series[str] = pa.Field(nullable=True)
    is_active: Series[bool] = pa.Field(nullable=True)
    last_accessed: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    created_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    updated_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    current_circuit_config_id: Series[str] = pa.Field(nullable=True)
    invalid_values: Series[str] = pa.Field(nullable=True)


class LegacyTaggedModels(_Base):
    """Legacy ``tagged_models`` (user_id and session_id may be null)."""

    id: Series[str] = _uuid()
    user_id: Series[str] = pa.Field(nullable=True)
    session_id: Series[str] = pa.Field(nullable=True)
    model_id: Series[str] = pa.Field(nullable=False)
    tag_name: Series[str] = pa.Field(nullable=False)
    tag_category: Series[str] = pa.Field(nullable=True)
    circuit_parameters: Series[str] = pa.Field(nullable=False)
    resnorm_value: Series[pl.Float64] = pa.Field(nullable=True)
    tagged_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    notes: Series[str] = pa.Field(nullable=True)
    is_interesting: Series[bool] = pa.Field(nullable=True)
    explicit_config_id: Series[str] = pa.Field(nullable=True)
    invalid_values: Series[str] = pa.Field(nullable=True)


class LegacyUserProfiles(_Base):
    """Legacy ``user_profiles`` (one saved circuit per row)."""

    id: Series[str] = _uuid()
    user_id: Series[str] = pa.Field(nullable=False)
    name: Series[str] = pa.Field(nullable=False)
    description: Series[str] = pa.Field(nullable=True)
    parameters: Series[str] = pa.Field(nullable=False)
    grid_size: Series[pl.Int32] = pa.Field(nullable=True)
    min_freq: Series[pl.Float64] = pa.Field(nullable=True)
    max_freq: Series[pl.Float64] = pa.Field(nullable=True)
    num_points: Series[pl.Int32] = pa.Field(nullable=True)
    is_computed: Series[bool] = pa.Field(nullable=True)
    computation_time: Series[pl.Float64] = pa.Field(nullable=True)
    total_points: Series[pl.Int32] = pa.Field(nullable=True)
    valid_points: Series[pl.Int32] = pa.Field(nullable=True)
    computation_results: Series[str] = pa.Field(nullable=True)
    created_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    updated_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    invalid_values: Series[str] = pa.Field(nullable=True)


class LegacyAppConfigurations(_Base):
    """The app's own configuration tables (S2 ``saved_configurations``, S4
    ``circuit_configurations``)."""

    source_table: Series[str] = pa.Field(isin=["saved_configurations", "circuit_configurations"])
    id: Series[str] = _uuid()
    user_id: Series[str] = pa.Field(nullable=True)
    name: Series[str] = pa.Field(nullable=True)
    description: Series[str] = pa.Field(nullable=True)
    is_public: Series[bool] = pa.Field(nullable=True)
    grid_size: Series[pl.Int32] = pa.Field(nullable=True)
    min_freq: Series[pl.Float64] = pa.Field(nullable=True)
    max_freq: Series[pl.Float64] = pa.Field(nullable=True)
    num_points: Series[pl.Int32] = pa.Field(nullable=True)
    circuit_parameters: Series[str] = pa.Field(nullable=True)
    is_computed: Series[bool] = pa.Field(nullable=True)
    computation_time: Series[pl.Float64] = pa.Field(nullable=True)
    total_points: Series[pl.Int32] = pa.Field(nullable=True)
    valid_points: Series[pl.Int32] = pa.Field(nullable=True)
    computation_results: Series[str] = pa.Field(nullable=True)
    ui_settings: Series[str] = pa.Field(nullable=True)
    created_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    updated_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    invalid_values: Series[str] = pa.Field(nullable=True)


class LegacyProfileMetadata(_Base):
    """S2's ``user_profiles``: one row per user, keyed on the user's id."""

    id: Series[str] = _uuid()
    username: Series[str] = pa.Field(nullable=True)
    full_name: Series[str] = pa.Field(nullable=True)
    avatar_url: Series[str] = pa.Field(nullable=True)
    created_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    updated_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    invalid_values: Series[str] = pa.Field(nullable=True)


# --- target (DESIGN.md section 4; schemas.tables) --------------------------------------------


class UserProfiles(_Base):
    """Target ``user_profiles``: one row per user, defaults within the CHECK ranges."""

    id: Series[str] = _uuid()
    user_id: Series[str] = _uuid()
    username: Series[str] = pa.Field(nullable=True)
    full_name: Series[str] = pa.Field(nullable=True)
    avatar_url: Series[str] = pa.Field(nullable=True)
    default_grid_size: Series[pl.Int32] = pa.Field(nullable=False, ge=2, le=25)
    default_min_freq: Series[pl.Float64] = pa.Field(nullable=False, gt=0)
    default_max_freq: Series[pl.Float64] = pa.Field(nullable=False)
    default_num_points: Series[pl.Int32] = pa.Field(nullable=False, ge=10, le=1000)
    created_at: Series[TS] = pa.Field(nullable=False)  # type: ignore[valid-type]
    updated_at: Series[TS] = pa.Field(nullable=False)  # type: ignore[valid-type]

    @pa.dataframe_check
    def max_above_min(cls, data: Any) -> pl.LazyFrame:  # type: ignore[misc]
        """default_max_freq > default_min_freq."""
        return data.lazyframe.select(
            (pl.col("default_max_freq") > pl.col("default_min_freq")).fill_null(False)
        )


class CircuitConfigurations(_Base):
    """Target ``circuit_configurations``."""

    id: Series[str] = _uuid()
    user_id: Series[str] = _uuid()
    name: Series[str] = pa.Field(nullable=False)
    description: Series[str] = pa.Field(nullable=True)
    is_public: Series[bool] = pa.Field(nullable=False)
    circuit_parameters: Series[str] = pa.Field(nullable=False)
    grid_size: Series[pl.Int32] = pa.Field(nullable=False, ge=2, le=25)
    min_freq: Series[pl.Float64] = pa.Field(nullable=False, gt=0)
    max_freq: Series[pl.Float64] = pa.Field(nullable=False)
    num_points: Series[pl.Int32] = pa.Field(nullable=False, ge=10, le=1000)
    is_computed: Series[bool] = pa.Field(nullable=False)
    computation_time: Series[pl.Float64] = pa.Field(nullable=True)
    total_points: Series[pl.Int32] = pa.Field(nullable=True)
    valid_points: Series[pl.Int32] = pa.Field(nullable=True)
    computation_results: Series[str] = pa.Field(nullable=True)
    ui_settings: Series[str] = pa.Field(nullable=True)
    created_at: Series[TS] = pa.Field(nullable=False)  # type: ignore[valid-type]
    updated_at: Series[TS] = pa.Field(nullable=False)  # type: ignore[valid-type]

    @pa.dataframe_check
    def max_above_min(cls, data: Any) -> pl.LazyFrame:  # type: ignore[misc]
        """max_freq > min_freq."""
        return data.lazyframe.select((pl.col("max_freq") > pl.col("min_freq")).fill_null(False))

    @pa.dataframe_check
    def parameters_complete(cls, data: Any) -> pl.LazyFrame:  # type: ignore[misc]
        """circuit_parameters is a JSON object with Rsh, Ra, Ca, Rb, Cb and frequency_range."""
        return data.lazyframe.select(_has_keys("circuit_parameters", CIRCUIT_KEYS_WITH_RANGE))


class UserSessions(_Base):
    """Target ``user_sessions`` (no saved_profiles; current_circuit_config_id)."""

    id: Series[str] = _uuid()
    user_id: Series[str] = _uuid()
    session_name: Series[str] = pa.Field(nullable=False, str_length={"max_value": 255})
    description: Series[str] = pa.Field(nullable=True)
    environment_variables: Series[str] = pa.Field(nullable=True)
    visualization_settings: Series[str] = pa.Field(nullable=True)
    performance_settings: Series[str] = pa.Field(nullable=True)
    is_active: Series[bool] = pa.Field(nullable=True)
    last_accessed: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    created_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    updated_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    current_circuit_config_id: Series[str] = _uuid(nullable=True)


class TaggedModels(_Base):
    """Target ``tagged_models`` (user and configuration required)."""

    id: Series[str] = _uuid()
    user_id: Series[str] = _uuid()
    session_id: Series[str] = _uuid(nullable=True)
    model_id: Series[str] = pa.Field(nullable=False, str_length={"max_value": 255})
    tag_name: Series[str] = pa.Field(nullable=False, str_length={"max_value": 100})
    tag_category: Series[str] = pa.Field(nullable=True, str_length={"max_value": 50})
    circuit_parameters: Series[str] = pa.Field(nullable=False)
    resnorm_value: Series[pl.Float64] = pa.Field(nullable=True)
    tagged_at: Series[TS] = pa.Field(nullable=True)  # type: ignore[valid-type]
    notes: Series[str] = pa.Field(nullable=True)
    is_interesting: Series[bool] = pa.Field(nullable=True)
    circuit_config_id: Series[str] = _uuid()

    @pa.dataframe_check
    def parameters_complete(cls, data: Any) -> pl.LazyFrame:  # type: ignore[misc]
        """circuit_parameters is a JSON object with Rsh, Ra, Ca, Rb and Cb."""
        return data.lazyframe.select(_has_keys("circuit_parameters", CIRCUIT_KEYS))


LEGACY_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "auth_users": AuthUsers,
    "user_sessions": LegacyUserSessions,
    "tagged_models": LegacyTaggedModels,
    "user_profiles": LegacyUserProfiles,
    "app_configurations": LegacyAppConfigurations,
    "profile_metadata": LegacyProfileMetadata,
}

TARGET_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "user_profiles": UserProfiles,
    "circuit_configurations": CircuitConfigurations,
    "user_sessions": UserSessions,
    "tagged_models": TaggedModels,
}


# Rows validated per Pandera call: bounds the memory of the checks on large frames (the models
# have no cross-row checks, so chunks validate exactly like the whole frame).
VALIDATION_CHUNK_ROWS = 100_000


def failing_rows(model: type[pa.DataFrameModel], frame: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``frame`` that fail ``model``: columns ``row`` (0-based index, UInt32) and
    ``detail`` (the failed checks). A failure not tied to rows (a wrong column or dtype) marks
    every row. Never raises for data problems. Large frames are validated in chunks."""
    empty = pl.DataFrame(schema={"row": pl.UInt32, "detail": pl.String})
    if frame.height == 0:
        return empty
    if frame.height > VALIDATION_CHUNK_ROWS:
        parts = [
            _failing_rows(model, frame.slice(start, VALIDATION_CHUNK_ROWS)).with_columns(
                (pl.col("row") + start).cast(pl.UInt32)
            )
            for start in range(0, frame.height, VALIDATION_CHUNK_ROWS)
        ]
        return pl.concat(parts)
    return _failing_rows(model, frame)


def _failing_rows(model: type[pa.DataFrameModel], frame: pl.DataFrame) -> pl.DataFrame:
    empty = pl.DataFrame(schema={"row": pl.UInt32, "detail": pl.String})
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        described = cases.select(
            pl.col("index").cast(pl.UInt32).alias("row"),
            pl.when(pl.col("schema_context") == "DataFrameSchema")
            .then(pl.col("check"))
            .otherwise(
                pl.format(
                    "{}: {} ({})",
                    pl.col("column").fill_null("?"),
                    pl.col("check").fill_null("?"),
                    pl.col("failure_case").fill_null("null").str.head(80),
                )
            )
            .alias("detail"),
        )
        if described["row"].null_count():
            whole = described.filter(pl.col("row").is_null())["detail"].str.join("; ").item()
            return pl.DataFrame(
                {"row": pl.int_range(frame.height, eager=True).cast(pl.UInt32), "detail": whole}
            )
        return described.group_by("row").agg(pl.col("detail").unique().sort().str.join("; "))
    return empty
