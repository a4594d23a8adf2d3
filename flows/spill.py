"""Extract in one pass: read each legacy table once, in page ranges, and split its rows into one
Arrow file set per batch on local disk, so a batch's extract reads its own files instead of
scanning the legacy tables again (they have no index on ``user_id``).

Memory is one page range at a time (``CHUNK_BYTES`` of table), whatever the table's size; disk
holds about 1.6 times the legacy tables' size in Arrow until the run ends (checked up front).
Each row carries the md5 of its row text, from which a batch computes its users' legacy digests
(:func:`batch_digests`, the same value as :func:`flows.extract.user_digests`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from flows import db, extract, user_keys
from flows.extract import (
    LEGACY_TABLE_NAMES,
    BatchRange,
    LegacyBatch,
    _select_list,
    copy_frame,
    key_map,
    owner_ids,
)
from flows.inspect import Inspection, base_tables, row_text
from schemas import frames
from schemas.errors import ConfigurationError, MigrationError

CHUNK_BYTES = 16 << 20  # table bytes read per COPY
# Disk the per-batch files take per byte of legacy table (pg_table_size): uuids and numbers as
# text, each row's md5, no compression; 1.64 measured on the generator's data at 100k.
DISK_PER_TABLE_BYTE = 1.7
KEY = "_user_key"
ROW_MD5 = "_row_md5"
NO_BATCH = -1
EMPTY_MD5 = hashlib.md5(b"").hexdigest()

TABLES = ("auth_users", *LEGACY_TABLE_NAMES)
FOLDER_PREFIX = "circuit-migrate-extract-"
OWNER_FILE = "owner.pid"


def new_folder(parent: Path | None = None) -> Path:
    """A fresh private folder for a run's extracted rows (under ``parent``, default the system
    temporary directory), marked with this process's id so that a later run can remove it if
    this process dies without cleaning up (:func:`remove_stale_folders`)."""
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=parent))
    (folder / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_folders(parent: Path | None = None) -> list[Path]:
    """Remove the extract folders under ``parent`` (default the system temporary directory)
    whose owning process on this machine is gone (a run that was killed: its files hold legacy
    rows and take about 1.6 times the legacy tables' size); returns them. A folder with no
    readable owner file, or whose owner still runs, is left alone."""
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            pid = int((folder / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


@dataclass(frozen=True)
class SpillSummary:
    """What the pass read: rows per table and rows with no user key (the orphan batch's)."""

    rows: Mapping[str, int]
    orphan_rows: int


class BatchIndex:
    """Which batch a user key belongs to: contiguous ranges (a full run) or explicit key lists
    (an incremental run); ``orphan_batch`` takes the rows with no key (None: drop them)."""

    def __init__(self, batches: Sequence[BatchRange]) -> None:
        ranged = [b for b in batches if b.user_keys is None and not b.orphans]
        listed = [b for b in batches if b.user_keys is not None]
        orphans = [b for b in batches if b.orphans]
        self.orphan_batch = orphans[0].batch_no if orphans else None
        ranged.sort(key=lambda b: str(b.user_from))
        self._lower = pl.Series([b.user_from for b in ranged], dtype=pl.String)
        self._upper = pl.Series([b.user_to for b in ranged], dtype=pl.String)
        self._ranged_no = pl.Series([b.batch_no for b in ranged], dtype=pl.Int64)
        self._listed = pl.DataFrame(
            {
                "key": [k for b in listed for k in b.user_keys or ()],
                "listed_no": [b.batch_no for b in listed for _ in b.user_keys or ()],
            },
            schema={"key": pl.String, "listed_no": pl.Int64},
        )

    def of(self, keys: pl.Series) -> pl.Series:
        """The batch number of each key (``NO_BATCH``: in no batch)."""
        out = pl.Series("b", [NO_BATCH] * len(keys), dtype=pl.Int64)
        if len(self._lower):
            pos = self._lower.search_sorted(keys.fill_null(""), side="right").cast(pl.Int64) - 1
            pos_ok = pos.clip(lower_bound=0)
            inside = (
                keys.is_not_null()
                & (pos >= 0)
                & (keys <= self._upper.gather(pos_ok)).fill_null(False)
            )
            out = pl.select(
                pl.when(inside).then(self._ranged_no.gather(pos_ok)).otherwise(out)
            ).to_series()
        if self._listed.height:
            found = pl.DataFrame({"key": keys}).join(
                self._listed, on="key", how="left", maintain_order="left"
            )["listed_no"]
            out = pl.select(pl.coalesce(found, out)).to_series()
        if self.orphan_batch is not None:
            out = pl.select(
                pl.when(keys.is_null()).then(self.orphan_batch).otherwise(out)
            ).to_series()
        return out.rename("b")


@dataclass(frozen=True)
class _Read:
    """How the one pass reads a source: the keyed relation, the tables it reads (sizes), the
    column holding each row's ctid (page ranges only when it reads one table), and the row
    digest expression."""

    keyed: user_keys.KeyedTable
    bases: list[sql.Composable]
    ctid: str
    md5: sql.Composable


def _queries(source: str | Inspection) -> dict[str, _Read]:
    """Per table: how the spill query reads it."""
    auth = _Read(
        user_keys.KeyedTable(sql.SQL("auth.users"), sql.SQL(""), sql.SQL("x.id")),
        [sql.SQL("auth.users")],
        "ctid",
        sql.SQL("md5(x::text)"),
    )
    legacy = {
        t: _Read(
            user_keys.keyed(source, t),
            list(base_tables(source, t)),
            "_ctid",
            sql.SQL("md5({})").format(row_text(t)),
        )
        for t in LEGACY_TABLE_NAMES
    }
    return {"auth_users": auth, **legacy}


def _pages(conn: psycopg.Connection, relation: sql.Composable) -> int:
    query = sql.SQL(
        "select pg_relation_size({}::regclass) / current_setting('block_size')::int"
    ).format(sql.Literal(relation.as_string(conn)))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _check_disk(
    conn: psycopg.Connection, relations: Sequence[sql.Composable], folder: Path
) -> None:
    """Refuse, before reading anything, when ``folder``'s disk cannot hold the extract."""
    sizes = sql.SQL(" + ").join(
        sql.SQL("pg_table_size({}::regclass)").format(sql.Literal(r.as_string(conn)))
        for r in relations
    )
    row = conn.execute(sql.SQL("select {}").format(sizes)).fetchone()
    needed = int((row[0] if row else 0) * DISK_PER_TABLE_BYTE)
    free = shutil.disk_usage(folder).free
    if free < needed:
        gib = 1 << 30
        raise ConfigurationError(
            f"the one-pass extract needs about {needed / gib:.1f} GiB in {folder.parent}"
            f" ({DISK_PER_TABLE_BYTE} x the legacy tables), only {free / gib:.1f} GiB is free:"
            " set TMPDIR to a folder on a larger disk"
        )


def _schema_of(table: str) -> frames.Schema:
    return frames.LEGACY_FRAMES[table]


def spill(
    source_url: str,
    snapshot: str,
    source: str | Inspection,
    batches: Sequence[BatchRange],
    folder: Path,
    *,
    workers: int = 2,
    row_digests: bool = True,
    progress: Callable[[str], None] = lambda line: None,
    check: Callable[[], None] = lambda: None,
) -> SpillSummary:
    """Read every legacy table and ``auth.users`` once, in ``snapshot`` (the run's), on
    ``workers`` connections at once, and write each row to the files of its batch under
    ``folder``; with ``row_digests``, each with its row md5 (without: the run already has its
    users' digests, and the md5 of every row is most of the server's work). ``check`` runs
    before each page range and may raise to stop the pass (an interrupt)."""
    index = BatchIndex(batches)
    with db.connect(source_url, autocommit=True) as conn:
        extract.use_snapshot(conn, snapshot)
        queries = _queries(source)
        _check_disk(conn, [b for r in queries.values() for b in r.bases], folder)
        jobs = [
            (table, chunk, query)
            for table, r in queries.items()
            for chunk, query in enumerate(
                _chunk_queries(
                    table,
                    r,
                    _pages(conn, r.bases[0]) if len(r.bases) == 1 else -1,
                    row_digests=row_digests,
                )
            )
        ]
        conn.execute("rollback")
    local = threading.local()
    opened: list[psycopg.Connection] = []
    lock = threading.Lock()

    def run(job: tuple[str, int, sql.Composable]) -> tuple[str, int, int]:
        table, chunk, query = job
        check()
        if not hasattr(local, "conn"):
            local.conn = db.connect(source_url, autocommit=True)
            extract.use_snapshot(local.conn, snapshot)
            with lock:
                opened.append(local.conn)
        frame = copy_frame(
            local.conn, query, {**_schema_of(table), KEY: pl.String, ROW_MD5: pl.String}
        )
        orphans = int(frame[KEY].null_count()) if table != "auth_users" else 0
        try:
            _write_parts(folder, table, chunk, frame.with_columns(index.of(frame[KEY])))
        except OSError as exc:  # a full disk, most likely
            raise MigrationError(
                f"the one-pass extract could not write under {folder}: {exc}"
                " (set TMPDIR to a folder on a larger disk)"
            ) from exc
        return table, frame.height, orphans

    rows = dict.fromkeys(queries, 0)
    orphan_rows = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for table, n, orphans in pool.map(run, jobs):
                rows[table] += n
                orphan_rows += orphans
    finally:
        for conn in opened:
            conn.close()
    for table, n in rows.items():
        progress(f"extracted {table}: {n:,} rows")
    return SpillSummary(rows, orphan_rows)


def _chunk_queries(
    table: str, read: _Read, pages: int, *, row_digests: bool
) -> list[sql.Composable]:
    """One query per page range of the table; the last range is open-ended (the table may have
    grown since its size was read). ``pages`` -1: one query for the whole source (it reads
    several tables, or none: small configuration tables)."""
    step = max(1, CHUNK_BYTES // 8192)
    if pages < 0:
        return [
            sql.SQL("select {cols}, ({key})::text as {k}, {md5} as {h} from {rel} x {join}").format(
                cols=_select_list(_schema_of(table), "x"),
                key=read.keyed.key,
                k=sql.Identifier(KEY),
                h=sql.Identifier(ROW_MD5),
                md5=read.md5 if row_digests else sql.SQL("null::text"),
                rel=read.keyed.relation,
                join=read.keyed.join,
            )
        ]
    starts = list(range(0, pages, step)) or [0]
    out: list[sql.Composable] = []
    for chunk, start in enumerate(starts):
        upper = (
            sql.SQL(" and x.{} < {}::tid").format(
                sql.Identifier(read.ctid), sql.Literal(f"({start + step},0)")
            )
            if chunk < len(starts) - 1
            else sql.SQL("")
        )
        out.append(
            sql.SQL(
                "select {cols}, ({key})::text as {k}, {md5} as {h} from {rel} x {join}"
                " where x.{ctid} >= {lo}::tid{upper}"
            ).format(
                cols=_select_list(_schema_of(table), "x"),
                key=read.keyed.key,
                k=sql.Identifier(KEY),
                h=sql.Identifier(ROW_MD5),
                md5=read.md5 if row_digests else sql.SQL("null::text"),
                rel=read.keyed.relation,
                join=read.keyed.join,
                ctid=sql.Identifier(read.ctid),
                lo=sql.Literal(f"({start},0)"),
                upper=upper,
            )
        )
    return out


def _write_parts(folder: Path, table: str, chunk: int, frame: pl.DataFrame) -> None:
    for (batch_no,), part in frame.partition_by("b", as_dict=True, include_key=False).items():
        if batch_no == NO_BATCH:
            continue
        directory = folder / table / str(batch_no)
        directory.mkdir(parents=True, exist_ok=True)
        part.write_ipc(directory / f"{chunk:06d}.arrow", compression="uncompressed")


def _read(folder: Path, table: str, batch_no: int) -> pl.DataFrame:
    files = sorted((folder / table / str(batch_no)).glob("*.arrow"))
    schema = {**_schema_of(table), KEY: pl.String, ROW_MD5: pl.String}
    if not files:
        return frames.empty(schema)
    return pl.concat([pl.read_ipc(f) for f in files]).sort("id")


@dataclass(frozen=True)
class SpilledBatch:
    """A batch's legacy frames (as :func:`flows.extract.extract_batch` reads them) and its
    users' legacy digests."""

    data: LegacyBatch
    digests: tuple[tuple[str, str], ...]


def read_batch(folder: Path, batch: BatchRange, *, digests: bool = True) -> SpilledBatch:
    """The batch's rows from its files (a batch of users deleted from the source has none), and
    with ``digests`` its users' digests (the files must hold row md5s); raises
    ``MigrationError`` if the folder is gone."""
    if not folder.is_dir():
        raise MigrationError(f"batch {batch.batch_no}: the extracted rows under {folder} are gone")
    parts = {table: _read(folder, table, batch.batch_no) for table in TABLES}
    present = owner_ids(parts)
    auth = parts["auth_users"].filter(pl.col("id").is_in(present.drop_nulls().implode()))
    data = LegacyBatch(
        auth_users=auth.select(list(frames.AUTH_USERS)),
        **{t: parts[t].select(list(_schema_of(t))) for t in LEGACY_TABLE_NAMES},
        keys=key_map(parts, KEY),
    )
    computed = batch_digests(parts) if digests and not batch.orphans else ()
    return SpilledBatch(data, computed)


def batch_digests(parts: Mapping[str, pl.DataFrame]) -> tuple[tuple[str, str], ...]:
    """Per user key of the frames: the digest :func:`flows.extract.user_digests` computes in
    SQL, from the rows' ``_user_key`` and ``_row_md5`` columns."""
    rows = pl.concat(
        [
            parts[t].select(
                pl.col(KEY).alias("key"), pl.lit(t).alias("t"), pl.col("id"), pl.col(ROW_MD5)
            )
            for t in LEGACY_TABLE_NAMES
        ]
    ).filter(pl.col("key").is_not_null())
    joined = (
        rows.sort("key", "t", "id")
        .group_by("key", maintain_order=True)
        .agg(pl.concat_str("t", pl.lit(":"), ROW_MD5).str.join("|").alias("text"))
        .join(
            parts["auth_users"].select(pl.col("id").alias("key"), pl.col(ROW_MD5).alias("auth")),
            on="key",
            how="left",
        )
    )
    out = []
    for key, text, auth in joined.iter_rows():
        inner = hashlib.md5(text.encode()).hexdigest()
        digest = hashlib.md5(f"{inner}|auth:{auth or EMPTY_MD5}".encode()).hexdigest()
        out.append((key, digest))
    return tuple(sorted(out))
