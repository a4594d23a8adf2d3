"""Extract against a real PostgreSQL: batch planning by user key, typed frames, one snapshot."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import polars as pl
import psycopg
import pytest

from flows import extract, schema_ops
from schemas import frames
from schemas.errors import SourceSchemaMismatch

Conn = psycopg.Connection[Any]
SCHEMA = "legacy"


def make_user(conn: Conn, n: int) -> str:
    user_id = f"00000000-0000-0000-0000-{n:012d}"
    conn.execute(
        "insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s)",
        [user_id, f"u{n}@x", json.dumps({"username": f"u{n}"})],
    )
    return user_id


def make_session(conn: Conn, user_id: str | None, saved: str | None = "[]") -> str:
    session_id = str(uuid.uuid4())
    conn.execute(
        "insert into legacy.user_sessions (id, user_id, session_name, saved_profiles)"
        " values (%s, %s, %s, %s)",
        [session_id, user_id, f"s-{session_id[:8]}", saved],
    )
    return session_id


def make_tagged(conn: Conn, user_id: str | None, session_id: str | None, params: str = "{}") -> str:
    tagged_id = str(uuid.uuid4())
    conn.execute(
        "insert into legacy.tagged_models (id, user_id, session_id, model_id, tag_name,"
        " circuit_parameters, resnorm_value) values (%s, %s, %s, 'm', 't', %s, 'NaN')",
        [tagged_id, user_id, session_id, params],
    )
    return tagged_id


def make_profile(conn: Conn, user_id: str, **columns: object) -> str:
    row: dict[str, object] = {"id": str(uuid.uuid4()), "user_id": user_id, "name": "p"}
    row.setdefault("parameters", '{"Rsh": "100", "Rs": 5}')
    row.update(columns)
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    conn.execute(f"insert into legacy.user_profiles ({names}) values ({marks})", list(row.values()))
    return str(row["id"])


@pytest.fixture(scope="module")
def source(db_url: str) -> dict[str, Any]:
    """Three users with data, one without, and rows that name their user only indirectly."""
    schema_ops.apply_legacy(db_url, SCHEMA)
    with psycopg.connect(db_url) as conn:
        a, b, c, idle = (make_user(conn, n) for n in (1, 2, 3, 4))
        s_a = make_session(conn, a, saved='[{"name": "x, \\"y\\""}]')
        s_null = make_session(conn, None, saved='"not an array"')  # its tagged model names b
        s_orphan = make_session(conn, None, saved=None)
        ids = {
            "user_sessions": {s_a, s_null, s_orphan},
            "tagged_models": {
                make_tagged(conn, a, s_a),
                make_tagged(conn, b, s_null),
                make_tagged(conn, None, s_null),  # no user: its session names none
                make_tagged(conn, None, None),  # orphan
            },
            "user_profiles": {
                make_profile(conn, a, description=""),
                make_profile(conn, c, min_freq="NaN", description=None),
            },
        }
    return {"url": db_url, "users": (a, b, c, idle), "ids": ids, "orphan_session": s_orphan}


@pytest.fixture
def conn(source: dict[str, Any]) -> Iterator[Conn]:
    with psycopg.connect(source["url"], autocommit=True) as connection:
        yield connection


def extract_all(conn: Conn, batch_size: int) -> list[tuple[extract.BatchRange, Any]]:
    extract.use_snapshot(conn, None)
    try:
        batches = extract.plan_batches(conn, SCHEMA, batch_size)
        return [(batch, extract.extract_batch(conn, SCHEMA, batch)) for batch in batches]
    finally:
        conn.execute("rollback")


def test_batches_cover_every_user_key_once_plus_orphans(conn: Conn, source: dict[str, Any]) -> None:
    a, b, c, _ = source["users"]
    batches = extract.plan_batches(conn, SCHEMA, 2)
    assert [(x.user_from, x.user_to, x.users) for x in batches] == [
        (a, b, 2),
        (c, c, 1),
        (None, None, 0),
    ]
    assert batches[-1].orphans and [x.batch_no for x in batches] == [1, 2, 3]


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_every_source_row_lands_in_exactly_one_batch(
    conn: Conn, source: dict[str, Any], batch_size: int
) -> None:
    seen: dict[str, list[str]] = {table: [] for table in source["ids"]}
    for _, data in extract_all(conn, batch_size):
        for table in seen:
            seen[table] += getattr(data, table)["id"].to_list()
    for table, ids in source["ids"].items():
        assert sorted(seen[table]) == sorted(ids), table


def test_rows_follow_their_users_batch(conn: Conn, source: dict[str, Any]) -> None:
    _, b, _, idle = source["users"]
    by_batch = {batch.user_from: data for batch, data in extract_all(conn, 1)}
    b_data = by_batch[b]
    # a session without a user is nobody's (flows.user_keys), whatever its tagged models name
    assert b_data.tagged_models.height == 1
    assert b_data.user_sessions.height == 0
    assert sorted(b_data.auth_users["id"].to_list()) == [b]
    orphans = by_batch[None]
    assert len(orphans.user_sessions) == 2
    assert source["orphan_session"] in orphans.user_sessions["id"].to_list()
    assert orphans.tagged_models.height == 2 and orphans.auth_users.height == 0
    assert idle not in by_batch  # a user with no legacy data gets no batch


def test_frames_keep_the_contract_and_the_values(conn: Conn, source: dict[str, Any]) -> None:
    a, _, c, _ = source["users"]
    by_batch = {batch.user_from: data for batch, data in extract_all(conn, 1)}
    for data in by_batch.values():
        for name, contract in frames.LEGACY_FRAMES.items():
            assert dict(getattr(data, name).schema) == dict(contract), name
    profile_a = by_batch[a].user_profiles.row(0, named=True)
    assert profile_a["description"] == ""  # empty string is not null
    assert json.loads(profile_a["parameters"]) == {"Rsh": "100", "Rs": 5}
    assert profile_a["grid_size"] == 10 and profile_a["is_computed"] is False
    profile_c = by_batch[c].user_profiles.row(0, named=True)
    assert profile_c["description"] is None
    assert profile_c["min_freq"] != profile_c["min_freq"]  # numeric NaN survives as NaN
    saved = by_batch[a].user_sessions["saved_profiles"].item()
    assert json.loads(saved) == [{"name": 'x, "y"'}]
    assert by_batch[a].tagged_models["tagged_at"].dtype == pl.Datetime("us", "UTC")


def test_all_batches_read_one_snapshot(conn: Conn, source: dict[str, Any]) -> None:
    snapshot = extract.begin_snapshot(conn)
    try:
        with psycopg.connect(source["url"]) as writer:
            late = make_profile(writer, source["users"][0])
        with psycopg.connect(source["url"], autocommit=True) as reader:
            extract.use_snapshot(reader, snapshot)
            batch = extract.plan_batches(reader, SCHEMA, 100)[0]
            ids = extract.extract_batch(reader, SCHEMA, batch).user_profiles["id"].to_list()
            reader.execute("rollback")
        assert late not in ids and len(ids) == 2
    finally:
        conn.execute("rollback")
        with psycopg.connect(source["url"]) as writer:
            writer.execute("delete from legacy.user_profiles where id = %s", [late])


def test_source_schema_is_checked(conn: Conn) -> None:
    extract.check_source(conn, SCHEMA)
    with pytest.raises(SourceSchemaMismatch, match=r"no legacy table public\.user_sessions"):
        extract.check_source(conn, "public")
    conn.execute("begin")
    try:
        conn.execute("alter table legacy.tagged_models drop column circuit_parameters")
        with pytest.raises(SourceSchemaMismatch, match="lacks required columns circuit_param"):
            extract.check_source(conn, SCHEMA)
    finally:
        conn.execute("rollback")
