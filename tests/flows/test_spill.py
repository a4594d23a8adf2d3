"""The one-pass extract (flows.spill) against a real PostgreSQL: the same rows per batch as the
per-batch SQL extract, the same digests as the SQL digest query, one snapshot."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE
from typing import Any

import psycopg
import pytest

from flows import extract, schema_ops, spill
from schemas.errors import ConfigurationError, MigrationError
from tests.flows.test_extract import make_profile, make_session, make_tagged, make_user

Conn = psycopg.Connection[Any]
SCHEMA = "legacy"
TABLES = ("auth_users", "user_sessions", "tagged_models", "user_profiles")


@pytest.fixture(scope="module")
def url(db_url: str) -> str:
    """Users with direct and indirect rows, orphans, a user with no auth row, and enough
    tagged models to span many pages."""
    schema_ops.apply_legacy(db_url, SCHEMA)
    with psycopg.connect(db_url) as conn:
        conn.execute("set session_replication_role = replica")  # dangling ids, on purpose
        users = [make_user(conn, n) for n in range(1, 8)]
        ghost = "00000000-0000-0000-0000-00000000ffff"  # names no auth user
        for i, user in enumerate([*users, ghost]):
            session = make_session(conn, user, saved='[{"name": "c"}]')
            for j in range(12):
                make_tagged(conn, user if j % 5 else None, session, params=f'{{"Rsh": {j}}}')
            make_profile(conn, user, description="x" * (200 * i))
        s_null = make_session(conn, None, saved='"not an array"')
        make_tagged(conn, users[2], s_null)
        make_tagged(conn, None, s_null)  # no user: its session names none (an orphan)
        make_session(conn, None, saved=None)  # orphan
        make_tagged(conn, None, None)  # orphan
        make_tagged(conn, users[0], "00000000-0000-0000-0000-0000000000aa")  # dangling session
    return db_url


@pytest.fixture
def conn(url: str) -> Iterator[Conn]:
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def _spill_and_compare(conn: Conn, url: str, tmp_path: Path, batch_size: int) -> int:
    snapshot = extract.begin_snapshot(conn)
    try:
        batches = extract.plan_batches(conn, SCHEMA, batch_size)
        summary = spill.spill(url, snapshot, SCHEMA, batches, tmp_path, workers=2)
        digests = extract.user_digests(conn, SCHEMA)
        seen: dict[str, str] = {}
        for batch in batches:
            spilled = spill.read_batch(tmp_path, batch)
            expected = extract.extract_batch(conn, SCHEMA, batch)
            for table in TABLES:
                got, want = getattr(spilled.data, table), getattr(expected, table)
                assert got.equals(want), (batch.batch_no, table)
            assert spilled.data.keys.sort(["source_table", "source_id"]).equals(
                expected.keys.sort(["source_table", "source_id"])
            )
            seen.update(spilled.digests)
        assert seen == digests
        assert summary.rows["tagged_models"] == sum(
            spill.read_batch(tmp_path, b).data.tagged_models.height for b in batches
        )
        return summary.orphan_rows
    finally:
        conn.execute("rollback")


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_each_batch_gets_what_the_sql_extract_reads(
    conn: Conn, url: str, tmp_path: Path, batch_size: int
) -> None:
    # two sessions without a user, the model of one of them, and a model with neither
    assert _spill_and_compare(conn, url, tmp_path, batch_size) == 4


def test_without_row_digests_the_batches_hold_the_same_rows(
    conn: Conn, url: str, tmp_path: Path
) -> None:
    """An incremental run's extract skips the row md5s (its plan has the digests): the same
    frames per batch, and no digests computed from the files."""
    snapshot = extract.begin_snapshot(conn)
    try:
        batches = extract.plan_batches(conn, SCHEMA, 3)
        with_md5, without = tmp_path / "with", tmp_path / "without"
        with_md5.mkdir()
        without.mkdir()
        spill.spill(url, snapshot, SCHEMA, batches, with_md5)
        spill.spill(url, snapshot, SCHEMA, batches, without, row_digests=False)
        for batch in batches:
            full = spill.read_batch(with_md5, batch)
            lean = spill.read_batch(without, batch, digests=False)
            for table in TABLES:
                assert getattr(lean.data, table).equals(getattr(full.data, table)), table
            assert lean.digests == ()
        assert any(spill.read_batch(with_md5, b).digests for b in batches)
        files = spill._read(without, "tagged_models", batches[0].batch_no)
        assert files[spill.ROW_MD5].null_count() == files.height > 0
    finally:
        conn.execute("rollback")


def test_tables_read_in_many_page_ranges(
    conn: Conn, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spill, "CHUNK_BYTES", 8192)  # one page per COPY
    with psycopg.connect(url) as c:
        row = c.execute("select pg_relation_size('legacy.tagged_models') / 8192").fetchone()
    assert row and row[0] > 1
    _spill_and_compare(conn, url, tmp_path, 2)
    assert len(list((tmp_path / "tagged_models").rglob("*.arrow"))) > row[0]


def test_listed_batches_take_only_their_users(conn: Conn, url: str, tmp_path: Path) -> None:
    users = sorted(r[0] for r in conn.execute("select id::text from auth.users").fetchall())
    gone = "ffffffff-0000-0000-0000-000000000000"  # a user deleted from the source
    batches = [
        extract.BatchRange(1, users[1], users[3], 2, user_keys=(users[1], users[3])),
        extract.BatchRange(2, gone, gone, 1, user_keys=(gone,)),
    ]
    snapshot = extract.begin_snapshot(conn)
    try:
        spill.spill(url, snapshot, SCHEMA, batches, tmp_path)
        first = spill.read_batch(tmp_path, batches[0])
        assert first.data.tagged_models.height == 12 + 12
        assert sorted(first.data.auth_users["id"].to_list()) == [users[1], users[3]]
        expected = extract.extract_batch(conn, SCHEMA, batches[0])
        for table in TABLES:
            assert getattr(first.data, table).equals(getattr(expected, table)), table
        empty = spill.read_batch(tmp_path, batches[1])
        assert empty.data.rows() == 0 and empty.digests == ()
    finally:
        conn.execute("rollback")


def test_spill_reads_the_run_snapshot(conn: Conn, url: str, tmp_path: Path) -> None:
    snapshot = extract.begin_snapshot(conn)
    user = conn.execute("select min(id::text) from auth.users").fetchone()[0]  # type: ignore[index]
    try:
        with psycopg.connect(url) as writer:
            late = make_profile(writer, user)
        batches = extract.plan_batches(conn, SCHEMA, 100)
        spill.spill(url, snapshot, SCHEMA, batches, tmp_path)
        ids = spill.read_batch(tmp_path, batches[0]).data.user_profiles["id"].to_list()
        assert late not in ids and len(ids) == 8
    finally:
        conn.execute("rollback")
        with psycopg.connect(url) as writer:
            writer.execute("delete from legacy.user_profiles where id = %s", [late])


def test_a_batch_without_its_files_fails_clearly(tmp_path: Path) -> None:
    batch = extract.BatchRange(1, "a", "b", 1)
    with pytest.raises(MigrationError, match="are gone"):
        spill.read_batch(tmp_path / "missing", batch)


def test_only_folders_of_dead_runs_are_removed(tmp_path: Path) -> None:
    """A killed run's folder (its owner process gone) is removed by the next run; a running
    run's folder, and one without an owner file, are left alone."""
    mine = spill.new_folder(tmp_path)
    assert mine.name.startswith(spill.FOLDER_PREFIX)
    assert (mine / spill.OWNER_FILE).read_text().strip() == str(os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=PIPE)
    folders = {}
    try:
        for name, pid in (("dead", dead.pid), ("alive", alive.pid)):
            folders[name] = tmp_path / f"{spill.FOLDER_PREFIX}{name}"
            (folders[name] / "tagged_models" / "1").mkdir(parents=True)
            (folders[name] / spill.OWNER_FILE).write_text(f"{pid}\n")
        unowned = tmp_path / f"{spill.FOLDER_PREFIX}unowned"
        unowned.mkdir()
        other = tmp_path / "someone-else"
        other.mkdir()
        (other / spill.OWNER_FILE).write_text(f"{dead.pid}\n")
        assert spill.remove_stale_folders(tmp_path) == [folders["dead"]]
        assert not folders["dead"].exists()
        assert all(p.is_dir() for p in (mine, folders["alive"], unowned, other))
    finally:
        alive.communicate(b"")


def test_a_disk_too_small_is_refused_before_reading(
    conn: Conn, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little free disk for about DISK_PER_TABLE_BYTE times the legacy tables: a clear
    error naming TMPDIR, before any file is written."""
    needed = conn.execute(
        "select sum(pg_table_size(c))::bigint from unnest(array['auth.users',"
        " 'legacy.user_profiles', 'legacy.user_sessions', 'legacy.tagged_models']::regclass[]) c"
    ).fetchone()[0]  # type: ignore[index]
    real = shutil.disk_usage(tmp_path)

    def free(bytes_free: int) -> None:
        monkeypatch.setattr(
            spill.shutil, "disk_usage", lambda _: real._replace(free=int(bytes_free))
        )

    snapshot = extract.begin_snapshot(conn)
    try:
        batches = extract.plan_batches(conn, SCHEMA, 100)
        free(needed * spill.DISK_PER_TABLE_BYTE - 1)
        with pytest.raises(ConfigurationError, match="set TMPDIR"):
            spill.spill(url, snapshot, SCHEMA, batches, tmp_path)
        assert list(tmp_path.iterdir()) == []
        free(needed * spill.DISK_PER_TABLE_BYTE + 1)
        spill.spill(url, snapshot, SCHEMA, batches, tmp_path)
        assert spill.read_batch(tmp_path, batches[0]).data.rows() > 0
    finally:
        conn.execute("rollback")


def test_a_failed_write_is_a_migration_error(
    conn: Conn, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spill, "_write_parts", full)
    snapshot = extract.begin_snapshot(conn)
    try:
        batches = extract.plan_batches(conn, SCHEMA, 100)
        with pytest.raises(MigrationError, match=r"could not write .* No space left"):
            spill.spill(url, snapshot, SCHEMA, batches, tmp_path)
    finally:
        conn.execute("rollback")
