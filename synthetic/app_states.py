"""The legacy schema states S1 to S4 the real app went through (DESIGN.md section 3, "What the
real app wrote"): their DDL as SQL text and the frames the synthetic data fills for each.

Written from the facts about the app's SQL (tables, constraints, indexes, row-level security,
``updated_at`` triggers and the S4 view as the app created them); the app's other tables (S2's
sharing and ML tables) and its SECURITY DEFINER functions are left out: the migration reads none
of them. Everything is placed in one schema (``public`` by default) instead of the app's
``public``; ``auth.users`` and ``auth.uid()`` must exist (Supabase, or the auth shim).

- **S1**: ``schemas.ddl.legacy_ddl``, exactly DESIGN.md section 3.
- **S2**: ``user_profiles`` is user metadata (``id`` = the user's id); circuits live in
  ``saved_configurations`` (REAL ``min_frequency``/``max_frequency``, CHECKs); sessions have no
  ``saved_profiles`` but statistics; ``tagged_models`` has ``configuration_id``, the ML columns,
  no ``is_interesting`` and ``unique (user_id, session_id, model_id, tag_name)``.
- **S3**: S1's ``user_profiles`` with S2-shaped sessions and tagged models (no
  ``configuration_id``, ``ml_relevance_score default 0``, no unique).
- **S4**: S1 plus the app's ``circuit_configurations`` (REAL ``min_freq``/``max_freq``,
  ``ui_settings``, no unique ``(id, user_id)``), ``tagged_models.circuit_config_id``,
  ``user_sessions.current_circuit_config_id`` and the plain view ``session_with_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast

import polars as pl

from schemas.ddl import legacy_ddl, quote_ident
from schemas.frames import AUTH_USERS, TS, Schema

SchemaState = Literal["S1", "S2", "S3", "S4"]
SCHEMA_STATES: tuple[SchemaState, ...] = ("S1", "S2", "S3", "S4")


def schema_state(value: str) -> SchemaState:
    """``value`` as a schema state (case-insensitive); ``ValueError`` if it is none."""
    state = value.strip().upper()
    if state not in SCHEMA_STATES:
        raise ValueError(f"schema state must be one of {', '.join(SCHEMA_STATES)}, not {value!r}")
    return cast(SchemaState, state)


# --- frames per state: each legacy table's columns as the database holds them -----------------

S1_USER_SESSIONS: Schema = {
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
}
S1_TAGGED_MODELS: Schema = {
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
}
S1_USER_PROFILES: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "name": pl.String,
    "description": pl.String,
    "parameters": pl.String,
    "grid_size": pl.Int32,
    "min_freq": pl.Float64,  # numeric
    "max_freq": pl.Float64,
    "num_points": pl.Int32,
    "is_computed": pl.Boolean,
    "computation_time": pl.Float64,
    "total_points": pl.Int32,
    "valid_points": pl.Int32,
    "computation_results": pl.String,
    "created_at": TS,
    "updated_at": TS,
}

S2_USER_PROFILES: Schema = {
    "id": pl.String,  # the user's id
    "username": pl.String,
    "full_name": pl.String,
    "avatar_url": pl.String,
    "created_at": TS,
    "updated_at": TS,
}

_SESSION_STATS: Schema = {
    "total_computations": pl.Int32,
    "total_models_generated": pl.Int64,
    "total_computation_time": pl.Duration("us"),  # interval
}
S2_USER_SESSIONS: Schema = {
    **{k: v for k, v in S1_USER_SESSIONS.items() if k != "saved_profiles"},
    **_SESSION_STATS,
}
S4_USER_SESSIONS: Schema = {**S1_USER_SESSIONS, "current_circuit_config_id": pl.String}

S2_TAGGED_MODELS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "session_id": pl.String,
    "configuration_id": pl.String,  # -> saved_configurations, nullable
    "model_id": pl.String,
    "tag_name": pl.String,
    "tag_category": pl.String,
    "circuit_parameters": pl.String,
    "resnorm_value": pl.Float64,
    "impedance_spectrum": pl.String,
    "tagged_at": TS,
    "tagging_context": pl.String,
    "notes": pl.String,
    "ml_relevance_score": pl.Float64,
    "is_ml_training_data": pl.Boolean,
}
S3_TAGGED_MODELS: Schema = {k: v for k, v in S2_TAGGED_MODELS.items() if k != "configuration_id"}
S4_TAGGED_MODELS: Schema = {**S1_TAGGED_MODELS, "circuit_config_id": pl.String}

# REAL columns hold float4 values; the frames carry them as float8 reads them (0.1 ->
# 0.10000000149011612), which COPY writes back to the same float4.
SAVED_CONFIGURATIONS: Schema = {
    "id": pl.String,
    "user_id": pl.String,
    "name": pl.String,
    "description": pl.String,
    "is_public": pl.Boolean,
    "created_at": TS,
    "updated_at": TS,
    "grid_size": pl.Int32,
    "min_frequency": pl.Float64,  # real
    "max_frequency": pl.Float64,  # real
    "num_points": pl.Int32,
    "circuit_parameters": pl.String,
    "is_computed": pl.Boolean,
    "computation_time": pl.Float64,  # real
    "total_points": pl.Int32,
    "valid_points": pl.Int32,
}
APP_CIRCUIT_CONFIGURATIONS: Schema = {
    **{
        ("min_freq" if k == "min_frequency" else "max_freq" if k == "max_frequency" else k): v
        for k, v in SAVED_CONFIGURATIONS.items()
    },
    "computation_results": pl.String,
    "ui_settings": pl.String,
}

STATE_FRAMES: Mapping[SchemaState, Mapping[str, Schema]] = {
    "S1": {
        "auth_users": AUTH_USERS,
        "user_sessions": S1_USER_SESSIONS,
        "user_profiles": S1_USER_PROFILES,
        "tagged_models": S1_TAGGED_MODELS,
    },
    "S2": {
        "auth_users": AUTH_USERS,
        "user_profiles": S2_USER_PROFILES,
        "saved_configurations": SAVED_CONFIGURATIONS,
        "user_sessions": S2_USER_SESSIONS,
        "tagged_models": S2_TAGGED_MODELS,
    },
    "S3": {
        "auth_users": AUTH_USERS,
        "user_sessions": S2_USER_SESSIONS,
        "user_profiles": S1_USER_PROFILES,
        "tagged_models": S3_TAGGED_MODELS,
    },
    "S4": {
        "auth_users": AUTH_USERS,
        "circuit_configurations": APP_CIRCUIT_CONFIGURATIONS,
        "user_sessions": S4_USER_SESSIONS,
        "user_profiles": S1_USER_PROFILES,
        "tagged_models": S4_TAGGED_MODELS,
    },
}
"""Per state, its frames in load order (``auth_users`` first): each legacy table's columns."""


def state_tables(state: SchemaState) -> tuple[str, ...]:
    """The legacy tables of ``state`` (in the legacy schema; ``auth.users`` excluded)."""
    return tuple(name for name in STATE_FRAMES[state] if name != "auth_users")


# --- DDL ----------------------------------------------------------------------------------------

_CIRCUIT_KEYS = ("Rsh", "Ra", "Ca", "Rb", "Cb", "frequency_range")


def _params_check(column: str) -> str:
    return " and ".join(f"{column} ? '{key}'" for key in _CIRCUIT_KEYS)


def _updated_at_function(s: str) -> str:
    return (
        f"create or replace function {s}.update_updated_at_column() returns trigger\n"
        "language plpgsql as $fn$\nbegin\n  new.updated_at = now();\n  return new;\nend\n$fn$;"
    )


def _trigger(s: str, table: str) -> str:
    name = f"update_{table}_updated_at"
    return (
        f"drop trigger if exists {name} on {s}.{table};\n"
        f"create trigger {name} before update on {s}.{table}\n"
        f"  for each row execute function {s}.update_updated_at_column();"
    )


def _policies(s: str, table: str, policies: Mapping[str, str]) -> str:
    """RLS on ``table`` and its policies as the app wrote them (no ``to`` role, no WITH CHECK on
    UPDATE), each dropped first so the script runs twice."""
    out = [f"alter table {s}.{table} enable row level security;"]
    for name, body in policies.items():
        out.append(f'drop policy if exists "{name}" on {s}.{table};')
        out.append(f'create policy "{name}" on {s}.{table} {body};')
    return "\n".join(out)


def _own(what: str, column: str = "user_id") -> dict[str, str]:
    """The four own-row policies of the app: view, insert, update, delete."""
    own = f"(auth.uid() = {column})"
    return {
        f"Users can view their own {what}": f"for select using {own}",
        f"Users can insert their own {what}": f"for insert with check {own}",
        f"Users can update their own {what}": f"for update using {own}",
        f"Users can delete their own {what}": f"for delete using {own}",
    }


def _s2_sessions(s: str) -> str:
    """``user_sessions`` of S2 and S3 (``20241201000006``, ``manual-setup.sql``)."""
    return f"""create table if not exists {s}.user_sessions (
  id uuid default gen_random_uuid() primary key,
  user_id uuid references auth.users(id) on delete cascade,
  session_name varchar(255) not null,
  description text,
  environment_variables jsonb default '{{}}'::jsonb,
  visualization_settings jsonb default '{{}}'::jsonb,
  performance_settings jsonb default '{{}}'::jsonb,
  is_active boolean default true,
  last_accessed timestamptz default now(),
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  total_computations integer default 0,
  total_models_generated bigint default 0,
  total_computation_time interval default '0 seconds',
  unique (user_id, session_name)
);
create index if not exists idx_user_sessions_user_id on {s}.user_sessions (user_id);"""


def _ml_tagged_models(s: str, *, state: SchemaState) -> str:
    """``tagged_models`` of S2 (``configuration_id``, unique) or S3 (score default 0)."""
    link = (
        f"  configuration_id uuid references {s}.saved_configurations(id) on delete cascade,\n"
        if state == "S2"
        else ""
    )
    score = "double precision" if state == "S2" else "double precision default 0"
    unique = ",\n  unique (user_id, session_id, model_id, tag_name)" if state == "S2" else ""
    return f"""create table if not exists {s}.tagged_models (
  id uuid default gen_random_uuid() primary key,
  user_id uuid references auth.users(id) on delete cascade,
  session_id uuid references {s}.user_sessions(id) on delete cascade,
{link}  model_id varchar(255) not null,
  tag_name varchar(100) not null,
  tag_category varchar(50) default 'user',
  circuit_parameters jsonb not null,
  resnorm_value double precision,
  impedance_spectrum jsonb,
  tagged_at timestamptz default now(),
  tagging_context jsonb,
  notes text,
  ml_relevance_score {score},
  is_ml_training_data boolean default false{unique}
);
create index if not exists idx_tagged_models_user_session
  on {s}.tagged_models (user_id, session_id);
create index if not exists idx_tagged_models_ml_training on {s}.tagged_models
  (user_id, is_ml_training_data);"""


def _circuit_rows(s: str) -> str:
    """S1's and S3's ``user_profiles``: one saved circuit per row (``10_create_user_profiles``)."""
    return f"""create table if not exists {s}.user_profiles (
  id uuid default gen_random_uuid() primary key,
  user_id uuid references auth.users(id) on delete cascade not null,
  name text not null,
  description text,
  parameters jsonb not null,
  grid_size integer default 10,
  min_freq numeric default 0.1,
  max_freq numeric default 100000,
  num_points integer default 100,
  is_computed boolean default false,
  computation_time numeric,
  total_points integer,
  valid_points integer,
  computation_results jsonb,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);
create index if not exists idx_user_profiles_user_id on {s}.user_profiles (user_id);
create index if not exists idx_user_profiles_created_at on {s}.user_profiles (created_at);"""


def _config_table(s: str, table: str, lo: str, hi: str, extra: str) -> str:
    """``saved_configurations`` (S2) or the app's ``circuit_configurations`` (S4)."""
    return f"""create table if not exists {s}.{table} (
  id uuid default gen_random_uuid() primary key,
  user_id uuid references auth.users(id) on delete cascade not null,
  name text not null,
  description text,
  is_public boolean default false,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  grid_size integer not null check (grid_size between 2 and 25),
  {lo} real not null check ({lo} > 0),
  {hi} real not null check ({hi} > {lo}),
  num_points integer not null check (num_points between 10 and 1000),
  circuit_parameters jsonb not null,
  is_computed boolean default false,
  computation_time real,
  total_points integer,
  valid_points integer,{extra}
  constraint valid_frequency_range check ({hi} > {lo}),
  constraint valid_circuit_params check ({_params_check("circuit_parameters")})
);"""


def _s2(s: str) -> str:
    profiles = f"""create table if not exists {s}.user_profiles (
  id uuid references auth.users(id) on delete cascade primary key,
  username text unique,
  full_name text,
  avatar_url text,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);"""
    profile_policies = {
        "Users can view own profile": "for select using (auth.uid() = id)",
        "Users can update own profile": "for update using (auth.uid() = id)",
        "Users can insert own profile": "for insert with check (auth.uid() = id)",
    }
    configs = _config_table(s, "saved_configurations", "min_frequency", "max_frequency", "")
    config_indexes = f"""create index if not exists idx_user_configurations
  on {s}.saved_configurations (user_id, created_at desc);
create index if not exists idx_public_configurations
  on {s}.saved_configurations (is_public, created_at desc) where is_public = true;
create index if not exists idx_configuration_name on {s}.saved_configurations (user_id, name);
create index if not exists idx_computed_configurations
  on {s}.saved_configurations (user_id, is_computed, updated_at desc);"""
    config_policies = {
        **_own("configurations"),
        "Public configurations are viewable": (
            "for select using (is_public = true and auth.uid() is not null)"
        ),
    }
    return "\n\n".join(
        [
            _updated_at_function(s),
            profiles,
            _policies(s, "user_profiles", profile_policies),
            _trigger(s, "user_profiles"),
            configs,
            config_indexes,
            _policies(s, "saved_configurations", config_policies),
            _trigger(s, "saved_configurations"),
            _s2_sessions(s),
            _ml_tagged_models(s, state="S2"),
            f"create index if not exists idx_tagged_models_resnorm on {s}.tagged_models"
            " (resnorm_value);",
            _policies(s, "user_sessions", _own("sessions")),
            _policies(s, "tagged_models", _own("tagged models")),
        ]
    )


def _s3(s: str) -> str:
    manage = "for all using (auth.uid() = user_id)"
    return "\n\n".join(
        [
            _updated_at_function(s),
            _s2_sessions(s),
            _ml_tagged_models(s, state="S3"),
            f"create index if not exists idx_tagged_models_user_id on {s}.tagged_models"
            " (user_id);\n"
            f"create index if not exists idx_tagged_models_session_id on {s}.tagged_models"
            " (session_id);",
            _policies(s, "user_sessions", {"Users can manage their own sessions": manage}),
            _policies(s, "tagged_models", {"Users can manage their own tagged models": manage}),
            _trigger(s, "user_sessions"),
            _circuit_rows(s),
            _policies(s, "user_profiles", _own("profiles")),
            _trigger(s, "user_profiles"),
        ]
    )


DEFAULT_UI_SETTINGS = (
    '{"activeTab": "visualizer", "splitPaneHeight": 35, "opacityLevel": 0.7, '
    '"opacityExponent": 5, "logScalar": 1.0, "visualizationMode": "color", '
    '"backgroundColor": "white", "showGroundTruth": true, "includeLabels": true, '
    '"maxPolygons": 10000, "useSymmetricGrid": false, "adaptiveLimit": true, '
    '"maxMemoryUsage": 8192, "referenceModelVisible": true, "manuallyHidden": false, '
    '"isMultiSelectMode": false, "selectedCircuits": [], "windowPositions": {}, '
    '"sidebarCollapsed": false, "toolboxPositions": {}}'
)
"""The app's ``get_default_ui_settings()``."""


def _s4(s: str, schema: str) -> str:
    configs = _config_table(
        s,
        "circuit_configurations",
        "min_freq",
        "max_freq",
        "\n  computation_results jsonb,\n  ui_settings jsonb,",
    )
    indexes = f"""create index if not exists idx_circuit_configurations_user
  on {s}.circuit_configurations (user_id, created_at desc);
create index if not exists idx_circuit_configurations_public
  on {s}.circuit_configurations (is_public, created_at desc) where is_public = true;
create index if not exists idx_circuit_configurations_name
  on {s}.circuit_configurations (user_id, name);
create index if not exists idx_circuit_configurations_computed
  on {s}.circuit_configurations (user_id, is_computed, updated_at desc);
create index if not exists idx_circuit_configurations_updated
  on {s}.circuit_configurations (user_id, updated_at desc);"""
    policies = {
        **_own("circuit configurations"),
        "Users can view public circuit configurations": "for select using (is_public = true)",
    }
    links = f"""alter table {s}.user_sessions
  add column if not exists current_circuit_config_id uuid
  references {s}.circuit_configurations(id) on delete set null;
create index if not exists idx_user_sessions_config
  on {s}.user_sessions (user_id, current_circuit_config_id);
alter table {s}.tagged_models add column if not exists circuit_config_id uuid
  references {s}.circuit_configurations(id) on delete cascade;
create index if not exists idx_tagged_models_circuit_config
  on {s}.tagged_models (circuit_config_id);"""
    defaults = (
        f"create or replace function {s}.get_default_ui_settings() returns jsonb\n"
        f"language plpgsql as $fn$\nbegin\n  return '{DEFAULT_UI_SETTINGS}'::jsonb;\nend\n$fn$;"
    )
    # A plain view, as the app made it: it runs with its owner's rights (no security_invoker).
    view = f"""create or replace view {s}.session_with_config as
select s.id as session_id, s.user_id, s.session_name, s.current_circuit_config_id,
       c.name as config_name, c.updated_at as config_last_modified, s.last_accessed, s.is_active
from {s}.user_sessions s
left join {s}.circuit_configurations c on s.current_circuit_config_id = c.id;"""
    return "\n\n".join(
        [
            legacy_ddl(schema).rstrip(),
            _updated_at_function(s),
            configs,
            indexes,
            _policies(s, "circuit_configurations", policies),
            _trigger(s, "circuit_configurations"),
            links,
            defaults,
            view,
        ]
    )


def state_ddl(state: SchemaState, schema: str = "public") -> str:
    """The legacy tables of ``state`` in ``schema`` as one idempotent SQL script."""
    if state == "S1":
        return legacy_ddl(schema)
    s = quote_ident(schema)
    head = f"create schema if not exists {s};"
    body = _s2(s) if state == "S2" else _s3(s) if state == "S3" else _s4(s, schema)
    return f"-- legacy schema state {state}\n{head}\n\n{body}\n"
