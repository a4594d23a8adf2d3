"""Small factories for legacy frames (``schemas.frames.LEGACY_FRAMES``) in tests."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import polars as pl

from schemas import frames as F

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

DEFAULT_PARAMS: dict[str, Any] = {"Rsh": 1000.0, "Ra": 500.0, "Ca": 2e-6, "Rb": 800.0, "Cb": 5e-6}

_counter = [0]


def new_id(seed: str | None = None) -> str:
    """A uuid: uuid5 of ``seed`` when given (stable), else a fresh sequential one."""
    if seed is not None:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
    _counter[0] += 1
    return str(uuid.UUID(int=_counter[0] + (7 << 120)))


def at(days: float) -> dt.datetime:
    """T0 plus ``days``."""
    return T0 + dt.timedelta(days=days)


def make_user(uid: str | None = None, **meta: Any) -> dict[str, Any]:
    """An auth.users row."""
    return {
        "id": uid or new_id(),
        "email": meta.pop("email", "user@example.org"),
        "raw_user_meta_data": json.dumps(meta or {"username": "u", "full_name": "U Ser"}),
        "created_at": T0,
    }


def make_profile(
    user_id: str | None,
    *,
    pid: str | None = None,
    name: str = "Circuit A",
    params: dict[str, Any] | str | None = None,
    grid_size: int | None = 10,
    min_freq: float | None = 0.1,
    max_freq: float | None = 100000.0,
    num_points: int | None = 100,
    created: float = 0,
    updated: float = 0,
) -> dict[str, Any]:
    """A legacy user_profiles row (one saved circuit)."""
    p = DEFAULT_PARAMS if params is None else params
    return {
        "id": pid or new_id(),
        "user_id": user_id,
        "name": name,
        "description": None,
        "parameters": p if isinstance(p, str) else json.dumps(p),
        "grid_size": grid_size,
        "min_freq": min_freq,
        "max_freq": max_freq,
        "num_points": num_points,
        "is_computed": False,
        "computation_time": None,
        "total_points": None,
        "valid_points": None,
        "computation_results": None,
        "created_at": at(created),
        "updated_at": at(updated),
    }


def element(
    name: str = "Circuit A",
    params: dict[str, Any] | None = None,
    freq: tuple[float, float] | None = (0.1, 100000.0),
    created: float = 0,
    eid: str | None = None,
) -> dict[str, Any]:
    """A saved_profiles element."""
    out: dict[str, Any] = {
        "id": eid or new_id(),
        "name": name,
        "parameters": dict(DEFAULT_PARAMS if params is None else params),
    }
    if freq is not None:
        out["frequencyRange"] = list(freq)
    out["createdAt"] = at(created).isoformat().replace("+00:00", "Z")
    return out


def make_session(
    user_id: str | None,
    *,
    sid: str | None = None,
    name: str = "Session 1",
    saved: list[Any] | str | None = "[]",
    created: float = 0,
) -> dict[str, Any]:
    """A legacy user_sessions row; ``saved`` is a list (JSON-encoded) or raw text or None."""
    return {
        "id": sid or new_id(),
        "user_id": user_id,
        "session_name": name,
        "description": None,
        "environment_variables": "{}",
        "visualization_settings": "{}",
        "performance_settings": "{}",
        "saved_profiles": saved if saved is None or isinstance(saved, str) else json.dumps(saved),
        "is_active": True,
        "last_accessed": at(created),
        "created_at": at(created),
        "updated_at": at(created),
    }


def make_tagged_model(
    user_id: str | None,
    *,
    mid: str | None = None,
    session_id: str | None = None,
    params: dict[str, Any] | str | None = None,
    resnorm: float | None = None,
    model_id: str = "m1",
    tag_name: str = "good",
    tagged: float = 1,
) -> dict[str, Any]:
    """A legacy tagged_models row."""
    p = DEFAULT_PARAMS if params is None else params
    return {
        "id": mid or new_id(),
        "user_id": user_id,
        "session_id": session_id,
        "model_id": model_id,
        "tag_name": tag_name,
        "tag_category": "user",
        "circuit_parameters": p if isinstance(p, str) else json.dumps(p),
        "resnorm_value": resnorm,
        "tagged_at": at(tagged),
        "notes": None,
        "is_interesting": False,
    }


def frame(rows: list[dict[str, Any]], schema: F.Schema) -> pl.DataFrame:
    """Rows as a frame with exactly ``schema``."""
    if not rows:
        return F.empty(schema)
    return pl.DataFrame(rows, schema=dict(schema))


def legacy(
    users: list[dict[str, Any]] = (),
    sessions: list[dict[str, Any]] = (),  # type: ignore[assignment]
    models: list[dict[str, Any]] = (),
    profiles: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, pl.DataFrame]:
    """Keyword arguments for ``transforms.pipeline.transform``."""
    return {
        "auth_users": frame(list(users), F.AUTH_USERS),
        "user_sessions": frame(list(sessions), F.LEGACY_USER_SESSIONS),
        "tagged_models": frame(list(models), F.LEGACY_TAGGED_MODELS),
        "user_profiles": frame(list(profiles), F.LEGACY_USER_PROFILES),
    }
