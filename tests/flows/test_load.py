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

from flows import load as loader
from flows import schema_ops
from flows.extract import KEY_MAP
from flows.load import BatchUsers, write_ledger, write_target, write_target_isolating
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


def new_target(make_db: Callable[[str], str]) -> str:
    url = make_db("load")
    schema_ops.apply_target(url)
    with psycopg.connect(url) as conn:
        for n in (1, 2, 3):
            conn.execute("insert into auth.users (id) values (%s)", [uid(n)])
        conn.execute("insert into migration.runs (run_id, status) values (%s, 'running')", [RUN])
    return url


@pytest.fixture
def target(make_db: Callable[[str], str]) -> str:
    return new_target(make_db)


RUN = "50000000-0000-0000-0000-000000000001"
NO_KEYS = frames.empty(KEY_MAP)


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
            write_ledger(conn, RUN, 1, ledger, keys=NO_KEYS, links=True)
    with psycopg.connect(target) as conn:
        for table in ("id_map", "quarantine", "repairs", "links"):
            assert conn.execute(f"select count(*) from migration.{table}").fetchone() == (1,)
        assert conn.execute("select payload from migration.quarantine").fetchone() == ({"a": 1},)
        assert conn.execute("select confidence, method from migration.links").fetchone() == (
            0.75,
            "resnorm",
        )


# --- a first load COPYs straight in; it writes what the staged path writes ---------------------

RUN_UUID = uuid.UUID(RUN)


def tricky_tables(user_id: str) -> dict[str, pl.DataFrame]:
    """user_tables with texts that CSV and COPY could get wrong, and texts longer than their
    varchar(n) columns (the staged path's explicit casts cut them to n characters)."""
    tables = user_tables(user_id)
    sessions = tables["user_sessions"].with_columns(
        pl.lit("s" * 300).alias("session_name"),
        pl.lit("\\N").alias("description"),  # exactly \N: a text, not a null
    )
    models = tables["tagged_models"].with_columns(
        (pl.col("model_id") + "é" * 300).alias("model_id"),
        pl.lit("t" * 120).alias("tag_name"),
        pl.lit("c" * 60).alias("tag_category"),
        pl.Series(['line one\nline "two", \\.\n\\.', ""]).alias("notes"),
        pl.Series(['{"ü": "\\\\N", "a": [1.0, 1e-300]}', "{}"]).alias("circuit_parameters"),
    )
    configs = tables["circuit_configurations"].with_columns(
        pl.lit("").alias("description"), pl.lit('{"x": null}').alias("ui_settings")
    )
    return {
        **tables,
        "user_sessions": sessions,
        "tagged_models": models,
        "circuit_configurations": configs,
    }


def staged_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send the loader down the staged path, as if the target held rows of the batch's users."""
    monkeypatch.setattr(loader, "_holds_rows", lambda *args: True)


def staged(conn: psycopg.Connection, table: str = "stage_tagged_models") -> bool:
    """Whether the loader staged ``table`` in this transaction (the temp table exists)."""
    row = conn.execute("select to_regclass(%s) is not null", [f"pg_temp.{table}"]).fetchone()
    return bool(row and row[0])


def load_isolating(
    url: str, users: BatchUsers, tables: dict[str, pl.DataFrame]
) -> tuple[dict[str, int], dict[str, str], bool]:
    """Rows written (deleted as ``-table``), rejected users, and whether it staged."""
    with psycopg.connect(url) as conn:
        counts, rejected = write_target_isolating(conn, "public", users, tables)
        was_staged = staged(conn)
    written = {**counts.upserted, **{f"-{k}": v for k, v in counts.deleted.items()}}
    return written, rejected, was_staged


def test_first_load_copies_straight_in_what_the_staged_path_writes(
    make_db: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = concat(tricky_tables(uid(1)), user_tables(uid(2)))
    users = BatchUsers(uid(1), uid(2))
    direct, via_stage, plain = (new_target(make_db) for _ in range(3))
    written, rejected, was_staged = load_isolating(direct, users, tables)
    assert not was_staged and rejected == {}
    assert written["tagged_models"] == 4 and written["-tagged_models"] == 0
    with monkeypatch.context() as patch:
        staged_only(patch)
        assert load_isolating(via_stage, users, tables) == (written, {}, True)
    assert digest(direct) == digest(via_stage)
    assert load(plain, users, tables) == written  # write_target: the same path, the same rows
    assert digest(plain) == digest(direct)
    with psycopg.connect(direct) as conn:
        session = conn.execute(
            "select session_name, description from user_sessions where user_id = %s", [uid(1)]
        ).fetchone()
        models = conn.execute(
            "select model_id, tag_name, tag_category, notes, circuit_parameters"
            " from tagged_models where user_id = %s order by model_id",
            [uid(1)],
        ).fetchall()
        config = conn.execute(
            "select description, ui_settings, computation_results from circuit_configurations"
            " where user_id = %s limit 1",
            [uid(1)],
        ).fetchone()
    assert session == ("s" * 255, "\\N")
    assert [m[0] for m in models] == ["m0" + "é" * 253, "m1" + "é" * 253]
    assert models[0][1:] == (
        "t" * 100,
        "c" * 50,
        'line one\nline "two", \\.\n\\.',
        {"ü": "\\N", "a": [1.0, 1e-300]},
    )
    assert models[1][1:] == ("t" * 100, "c" * 50, "", {})
    assert config == ("", {"x": None}, None)


def test_reload_takes_the_staged_path_and_converges(make_db: Callable[[str], str]) -> None:
    users = BatchUsers(uid(1), uid(2))
    first = concat(user_tables(uid(1)), user_tables(uid(2)))
    second = concat(user_tables(uid(1), configs=1, name="renamed"), user_tables(uid(2)))
    url, fresh = new_target(make_db), new_target(make_db)
    assert load_isolating(url, users, first)[2] is False
    written, rejected, was_staged = load_isolating(url, users, second)
    assert was_staged and rejected == {}
    assert written["-tagged_models"] == 1 and written["circuit_configurations"] == 1
    assert load_isolating(fresh, users, second)[2] is False
    assert digest(url) == digest(fresh)
    again, _, was_staged = load_isolating(url, users, second)
    assert was_staged and set(again.values()) == {0}


def test_an_id_held_by_another_user_sends_the_first_load_to_the_upsert(
    make_db: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's users hold no row, but one of its ids is another user's row: the COPY meets
    the primary key and the staged path upserts that row over, as it always did."""
    mine = user_tables(uid(1))
    mine = {**mine, "tagged_models": mine["tagged_models"].head(1)}  # no model on config 1
    theirs = {
        "user_profiles": user_tables(uid(2))["user_profiles"],
        "circuit_configurations": mine["circuit_configurations"]
        .tail(1)
        .with_columns(pl.lit(uid(2)).alias("user_id"), pl.lit("theirs").alias("name")),
        "user_sessions": frames.empty(frames.USER_SESSIONS),
        "tagged_models": frames.empty(frames.TAGGED_MODELS),
    }
    url, expected = new_target(make_db), new_target(make_db)
    for db in (url, expected):
        load(db, BatchUsers(uid(2), uid(2)), theirs)
    written, rejected, was_staged = load_isolating(url, BatchUsers(uid(1), uid(1)), mine)
    assert was_staged and rejected == {}
    assert written["circuit_configurations"] == 2 and written["tagged_models"] == 1
    with monkeypatch.context() as patch:
        staged_only(patch)
        assert load_isolating(expected, BatchUsers(uid(1), uid(1)), mine) == (
            written,
            {},
            True,
        )
    assert digest(url) == digest(expected)
    configs = dump(url)["circuit_configurations"]
    assert sorted((str(r[1]), r[2]) for r in configs) == [
        (uid(1), 'c, "quoted" 0'),
        (uid(1), 'c, "quoted" 1'),
    ]


def test_a_rejection_in_the_first_load_isolates_only_its_user(
    make_db: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = concat(user_tables(uid(1)), user_tables(uid(2)), user_tables(uid(3)))
    users = BatchUsers(uid(1), uid(3))
    outcomes = []
    for stage in (False, True):
        url = new_target(make_db)
        with psycopg.connect(url) as conn:
            conn.execute(
                "alter table circuit_configurations add constraint not_the_victim"
                f" check (user_id <> '{uid(2)}')"
            )
        with monkeypatch.context() as patch:
            if stage:
                staged_only(patch)
            written, rejected, was_staged = load_isolating(url, users, tables)
        assert was_staged is stage
        assert list(rejected) == [uid(2)] and "not_the_victim" in rejected[uid(2)]
        assert written["tagged_models"] == 4 and written["user_profiles"] == 2
        for table, rows in dump(url).items():
            assert {str(r[1]) for r in rows} == {uid(1), uid(3)}, table
        outcomes.append((written, rejected, digest(url)))
    assert outcomes[0] == outcomes[1]


def test_a_first_load_the_database_fails_otherwise_raises(target: str) -> None:
    with psycopg.connect(target) as conn:
        conn.execute(
            "create function refuse() returns trigger language plpgsql as $$ begin"
            " raise exception 'refused for test'; end $$;"
            "create trigger refuse before insert on public.tagged_models"
            " for each row execute function refuse()"
        )
    with (
        psycopg.connect(target) as conn,
        pytest.raises(psycopg.errors.RaiseException, match="refused for test"),
    ):
        write_target_isolating(conn, "public", BatchUsers(uid(1), uid(1)), user_tables(uid(1)))
    assert set(map(len, dump(target).values())) == {0}


# --- ledger rows: COPYed in with the run and batch ----------------------------------------------


def ledger_frames(links: list[tuple[Any, ...]]) -> dict[str, pl.DataFrame]:
    return {
        "id_map": frame(
            frames.ID_MAP,
            [
                ("saved_profiles", "s#0", "circuit_configurations", uid(9), "merged"),
                ("user_profiles", "p,1", "circuit_configurations", uid(8), "migrated"),
            ],
        ),
        "quarantine": frame(
            frames.QUARANTINE,
            [
                ("tagged_models", "x", "no_user", "\\N", '{"a": 1.0, "b": "\\\\N"}'),
                ("tagged_models", "y", "no_user", "", None),
                ("tagged_models", "z", "no_user", None, '"line\\nbreak"'),
            ],
        ),
        "repairs": frame(
            frames.REPAIRS,
            [
                ("user_profiles", "y", "Rsh", "renamed_key", "Rs", "Rsh"),
                ("user_profiles", "y", "grid", "clamped", "", None),
                ("user_profiles", "y", "x", "k", '"quoted", comma\n', "\\N"),
            ],
        ),
        "links": frame(frames.LINKS, links),
    }


def ledger_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"select * from migration.{table} order by {key}").fetchall()
            for table, key in (
                ("id_map", "source_id"),
                ("quarantine", "source_id"),
                ("repairs", "field"),
                ("links", "tagged_model_id"),
            )
        }


LINKS = [
    (uid(7), uid(8), "resnorm", 0.75, False, '{"c": 1}'),
    (uid(6), None, "none", 0.0, True, None),
]


KEYS = pl.DataFrame(
    [
        ("user_profiles", "p,1", "k1"),
        ("user_profiles", "y", "k1"),
        ("user_sessions", "s", "k2"),
        ("tagged_models", "x", "k3"),
        ("tagged_models", "y", None),
    ],
    schema=dict(KEY_MAP),
    orient="row",
)


def test_ledger_rows_are_the_frames_with_run_and_batch(target: str) -> None:
    """Each ledger row carries the user key of its source row (an element: its session's)."""
    ledger = ledger_frames(LINKS)
    with psycopg.connect(target) as conn:
        write_ledger(conn, RUN, 3, ledger, keys=KEYS, links=True)
        assert not staged(conn, "stage_ledger_links")
    rows = ledger_rows(target)
    target_ids = (uuid.UUID(uid(8)), uuid.UUID(uid(9)))
    migrated, merged = (target_ids[0], "migrated", 3), (target_ids[1], "merged", 3)
    assert rows["id_map"] == [
        (RUN_UUID, "user_profiles", "p,1", "circuit_configurations", *migrated, "k1"),
        (RUN_UUID, "saved_profiles", "s#0", "circuit_configurations", *merged, "k2"),
    ]
    assert rows["quarantine"] == [
        (RUN_UUID, "tagged_models", "x", "no_user", "\\N", {"a": 1.0, "b": "\\N"}, 3, "k3"),
        (RUN_UUID, "tagged_models", "y", "no_user", "", None, 3, None),
        (RUN_UUID, "tagged_models", "z", "no_user", None, "line\nbreak", 3, None),
    ]
    assert rows["repairs"] == [
        (RUN_UUID, 3, "user_profiles", "y", "Rsh", "renamed_key", "Rs", "Rsh", "k1"),
        (RUN_UUID, 3, "user_profiles", "y", "grid", "clamped", "", None, "k1"),
        (RUN_UUID, 3, "user_profiles", "y", "x", "k", '"quoted", comma\n', "\\N", "k1"),
    ]
    assert rows["links"] == [
        (uuid.UUID(uid(6)), None, "none", 0.0, True, None, RUN_UUID),
        (uuid.UUID(uid(7)), target_ids[0], "resnorm", 0.75, False, {"c": 1}, RUN_UUID),
    ]
    # Written again (a retried batch): the same rows; the links go through the upsert.
    with psycopg.connect(target) as conn:
        write_ledger(conn, RUN, 3, ledger, keys=KEYS, links=True)
        assert staged(conn, "stage_ledger_links")
    assert ledger_rows(target) == rows


def test_links_held_past_the_probe_are_upserted(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = "50000000-0000-0000-0000-000000000002"
    with psycopg.connect(target) as conn:
        conn.execute("insert into migration.runs (run_id, status) values (%s, 'done')", [earlier])
        conn.execute(
            "insert into migration.links values (%s, %s, 'resnorm', 0.5, true, '[1.00]', %s)",
            [uid(6), uid(9), earlier],
        )
        conn.execute(
            "insert into migration.links values (%s, null, 'none', 0, true, null, %s)",
            [uid(5), earlier],
        )
    monkeypatch.setattr(loader, "LINKS_PROBE", 1)  # looks up uid(7) alone: no link yet
    with psycopg.connect(target) as conn:
        write_ledger(conn, RUN, 1, ledger_frames(LINKS), keys=NO_KEYS, links=True)
        assert staged(conn, "stage_ledger_links")  # the COPY met uid(6): upserted
    assert ledger_rows(target)["links"] == [
        (uuid.UUID(uid(5)), None, "none", 0.0, True, None, uuid.UUID(earlier)),
        (uuid.UUID(uid(6)), None, "none", 0.0, True, None, RUN_UUID),
        (uuid.UUID(uid(7)), uuid.UUID(uid(8)), "resnorm", 0.75, False, {"c": 1}, RUN_UUID),
    ]


def test_a_links_upsert_rewrites_only_what_differs_even_by_its_text(target: str) -> None:
    links = [
        (uid(7), uid(8), "resnorm", 0.75, False, '{"c": 1.0}'),
        (uid(6), None, "none", 0.0, True, None),
    ]
    with psycopg.connect(target) as conn:
        write_ledger(conn, RUN, 1, ledger_frames(links), keys=NO_KEYS, links=True)
    with psycopg.connect(target) as conn:
        before: dict[Any, Any] = dict(
            conn.execute("select tagged_model_id, xmin::text from migration.links")
        )
    # Equal as jsonb, not as text: still rewritten; the unchanged row is left alone.
    links[0] = (uid(7), uid(8), "resnorm", 0.75, False, '{"c": 1.00}')
    with psycopg.connect(target) as conn:
        write_ledger(conn, RUN, 1, ledger_frames(links), keys=NO_KEYS, links=True)
    with psycopg.connect(target) as conn:
        after: dict[Any, Any] = dict(
            conn.execute("select tagged_model_id, xmin::text from migration.links")
        )
        evidence = conn.execute(
            "select evidence::text from migration.links where tagged_model_id = %s", [uid(7)]
        ).fetchone()
    assert after[uuid.UUID(uid(6))] == before[uuid.UUID(uid(6))]
    assert after[uuid.UUID(uid(7))] != before[uuid.UUID(uid(7))]
    assert evidence == ('{"c": 1.00}',)
