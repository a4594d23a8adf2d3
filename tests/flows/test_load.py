"""The loader against a real PostgreSQL: converges, is idempotent, touches only its users."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import polars as pl
import psycopg
import pytest

from flows import schema_ops
from flows.load import BatchUsers, write_ledger, write_target
from schemas import frames

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
PARAMS = {
    "Rsh": 100.0,
    "Ra": 1e3,
    "Ca": 1e-6,
    "Rb": 500.0,
    "Cb": 2e-6,
    "frequency_range": [0.1, 1e5],
}


def frame(schema: frames.Schema, rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=dict(schema), orient="row")


def user_tables(
    user_id: str, *, configs: int = 2, name: str = 'c, "quoted"'
) -> dict[str, pl.DataFrame]:
    """Target frames for one user: a profile, configurations, a session, a tagged model each."""
    ns = uuid.UUID(user_id)
    cfg = [str(uuid.uuid5(ns, f"cfg{i}")) for i in range(configs)]
    session = str(uuid.uuid5(ns, "session"))
    return {
        "user_profiles": frame(
            frames.USER_PROFILES,
            [(str(uuid.uuid5(ns, "p")), user_id, "u", None, "", 5, 0.1, 1e5, 100, NOW, NOW)],
        ),
        "circuit_configurations": frame(
            frames.CIRCUIT_CONFIGURATIONS,
            [
                (
                    c,
                    user_id,
                    f"{name} {i}",
                    None,
                    False,
                    json.dumps(PARAMS),
                    10,
                    0.1,
                    1e5,
                    100,
                    False,
                    None,
                    None,
                    None,
                    None,
                    None,
                    NOW,
                    NOW,
                )
                for i, c in enumerate(cfg)
            ],
        ),
        "user_sessions": frame(
            frames.USER_SESSIONS,
            [(session, user_id, "s", None, "{}", "{}", "{}", True, NOW, NOW, NOW, cfg[0])],
        ),
        "tagged_models": frame(
            frames.TAGGED_MODELS,
            [
                (
                    str(uuid.uuid5(ns, f"t{i}")),
                    user_id,
                    session,
                    f"m{i}",
                    "t",
                    "user",
                    json.dumps(PARAMS),
                    float("nan") if i == 0 else 1.5,
                    NOW,
                    None,
                    False,
                    c,
                )
                for i, c in enumerate(cfg)
            ],
        ),
    }


def concat(*parts: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    return {name: pl.concat([p[name] for p in parts]) for name in parts[0]}


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"select * from {table} order by id").fetchall()
            for table in frames.TARGET_FRAMES
        }


def digest(url: str) -> dict[str, list[str]]:
    """Every target row as its exact text (NaN compares equal as text), ordered by id."""
    with psycopg.connect(url) as conn:
        return {
            table: [r[0] for r in conn.execute(f"select t::text from {table} t order by id")]
            for table in frames.TARGET_FRAMES
        }


@pytest.fixture
def target(make_db: Callable[[str], str]) -> str:
    url = make_db("load")
    schema_ops.apply_target(url)
    with psycopg.connect(url) as conn:
        for n in (1, 2):
            conn.execute("insert into auth.users (id) values (%s)", [uid(n)])
        conn.execute("insert into migration.runs (run_id, status) values (%s, 'running')", [RUN])
    return url


RUN = "50000000-0000-0000-0000-000000000001"


def uid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def load(url: str, users: BatchUsers, tables: dict[str, pl.DataFrame]) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        counts = write_target(conn, "public", users, tables)
    return {**counts.upserted, **{f"-{k}": v for k, v in counts.deleted.items()}}


def test_load_writes_exactly_the_frames_and_reload_changes_nothing(target: str) -> None:
    tables = user_tables(uid(1))
    first = load(target, BatchUsers(uid(1), uid(1)), tables)
    assert first["tagged_models"] == 2 and first["circuit_configurations"] == 2
    before = dump(target)
    text_before = digest(target)
    again = load(target, BatchUsers(uid(1), uid(1)), tables)
    assert set(again.values()) == {0}
    assert digest(target) == text_before
    configs = before["circuit_configurations"]
    assert sorted(row[2] for row in configs) == sorted(['c, "quoted" 0', 'c, "quoted" 1'])
    assert configs[0][5] == PARAMS
    tagged = {row[3]: row for row in before["tagged_models"]}
    assert tagged["m0"][7] != tagged["m0"][7] and tagged["m1"][7] == 1.5  # NaN kept
    assert tagged["m1"][8] == NOW
    assert before["user_profiles"][0][4] == ""  # empty string stays empty, not null


def test_reload_converges_and_spares_other_users(target: str) -> None:
    load(target, BatchUsers(uid(1), uid(2)), concat(user_tables(uid(1)), user_tables(uid(2))))
    other_before = [r for r in digest(target)["tagged_models"] if uid(2) in r]
    shrunk = user_tables(uid(1), configs=1, name="renamed")
    counts = load(target, BatchUsers(uid(1), uid(1)), shrunk)
    assert counts["-tagged_models"] == 1 and counts["-circuit_configurations"] == 1
    assert counts["circuit_configurations"] == 1  # renamed in place
    after = dump(target)
    mine = [r for r in after["circuit_configurations"] if str(r[1]) == uid(1)]
    assert [r[2] for r in mine] == ["renamed 0"]
    assert [r for r in digest(target)["tagged_models"] if uid(2) in r] == other_before


def test_ledger_rows_are_replaced_on_reload(target: str) -> None:
    ledger = {
        "id_map": frame(
            frames.ID_MAP, [("saved_profiles", "s#0", "circuit_configurations", uid(9), "merged")]
        ),
        "quarantine": frame(
            frames.QUARANTINE, [("tagged_models", "x", "no_user", "d", '{"a": 1}')]
        ),
        "repairs": frame(
            frames.REPAIRS, [("user_profiles", "y", "Rsh", "renamed_key", "Rs", "Rsh")]
        ),
        "links": frame(frames.LINKS, [(uid(7), uid(8), "resnorm", 0.75, False, '{"c": 1}')]),
    }
    for _ in range(2):
        with psycopg.connect(target) as conn:
            write_ledger(conn, RUN, 1, ledger, links=True)
    with psycopg.connect(target) as conn:
        for table in ("id_map", "quarantine", "repairs", "links"):
            assert conn.execute(f"select count(*) from migration.{table}").fetchone() == (1,)
        assert conn.execute("select payload from migration.quarantine").fetchone() == ({"a": 1},)
        assert conn.execute("select confidence, method from migration.links").fetchone() == (
            0.75,
            "resnorm",
        )
