"""The end-to-end benchmark: seed a fresh database at a named scale, run the floor and the
migration on the same data, verify, and print one table.

Each heavy step runs in a process of its own (``spawn``), so the peak RSS reported for the
migration is the migration's alone, not the generator's nor another step's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from flows.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
# Tagged models per scale; users = tagged models / 20.
SCALES: Mapping[str, int] = {
    "10k": 10_000,
    "100k": 100_000,
    "1m": 1_000_000,
    "3m": 3_000_000,
}
MODELS_PER_USER = 20
# Generator ranges that give about 19 tagged models, 3 legacy profile rows and 2 sessions per
# user (measured on 5,000 users: 19.3, 3.0 and 2.0).
CIRCUITS_PER_USER = (3, 5)
MODELS_PER_CIRCUIT = (3, 7)
SESSIONS_PER_USER = (1, 3)
SOURCE_SCHEMA = "legacy"
TARGET_SCHEMA = "public"
LEGACY_TABLES = ("user_sessions", "user_profiles", "tagged_models")
STAGES = ("plan", "extract", "transform", "validate", "load", "report")


@dataclass(frozen=True)
class BenchResult:
    """What one benchmark run measured (seconds, rows, MiB)."""

    scale: str
    users: int
    source_rows: Mapping[str, int]
    seed_seconds: float
    floor_seconds: float
    prefect_server_seconds: float
    migration_seconds: float
    stage_seconds: Mapping[str, float]
    batches: int
    batches_failed: int
    peak_rss_mib: float
    verify_seconds: float
    verify_passed: bool
    verify_peak_rss_mib: float
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Source rows: the three legacy tables (auth users not counted)."""
        return sum(self.source_rows.values())

    @property
    def rows_per_second(self) -> float:
        """Source rows per second of the migration, end to end (Prefect's server start not
        included)."""
        return self.rows / self.migration_seconds if self.migration_seconds else 0.0

    @property
    def floor_ratio(self) -> float:
        """Migration time over the floor's."""
        return self.migration_seconds / self.floor_seconds if self.floor_seconds else 0.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _in_child(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``target(*args)`` in a fresh (spawned) process; return its result or raise."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child_main, args=(queue, target, args))
    process.start()
    try:
        ok, payload = queue.get()
    finally:
        process.join()
    if not ok:
        raise RuntimeError(f"{target.__name__} failed in its process:\n{payload}")
    return payload  # type: ignore[no-any-return]


def _child_main(queue: Any, target: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    import traceback

    try:
        queue.put((True, target(*args)))
    except BaseException:
        queue.put((False, traceback.format_exc()))


# --- steps (each runs in a child process) ---------------------------------------------------


def seed_step(url: str, users: int, seed: int) -> dict[str, Any]:
    """Auth shim, legacy tables in ``legacy`` seeded with the generator, target schema."""
    from flows import schema_ops
    from flows.seed import load_synthetic
    from synthetic.legacy_data import generate

    started = time.perf_counter()
    schema_ops.apply_auth_shim(url)
    schema_ops.apply_legacy(url, SOURCE_SCHEMA)
    data = generate(
        users,
        seed=seed,
        circuits_per_user=CIRCUITS_PER_USER,
        models_per_circuit=MODELS_PER_CIRCUIT,
        sessions_per_user=SESSIONS_PER_USER,
    )
    load_synthetic(url, data, source_schema=SOURCE_SCHEMA)
    schema_ops.apply_target(url, TARGET_SCHEMA)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
        conn.execute("checkpoint")
    return {"seconds": time.perf_counter() - started}


def migrate_step(url: str, batch_size: int, concurrency: int, report_dir: str) -> dict[str, Any]:
    """Start Prefect's temporary server (timed apart), then run the migration as ``circuit-migrate
    run`` does (flow, then the report files); per-stage times come from the ledger."""
    from prefect.server.api.server import SubprocessASGIServer

    from flows.migrate import RunOptions, run_migration
    from flows.report_files import write_run_report

    started = time.perf_counter()
    SubprocessASGIServer().start()
    server_seconds = time.perf_counter() - started

    options = RunOptions(
        source_schema=SOURCE_SCHEMA,
        target_schema=TARGET_SCHEMA,
        batch_size=batch_size,
        concurrency=concurrency,
    )
    started = time.perf_counter()
    summary = run_migration(url, url, options)
    flow_done = time.perf_counter()
    write_run_report(url, summary.run_id, Path(report_dir))
    finished = time.perf_counter()

    stages = dict.fromkeys(STAGES, 0.0)
    stages.update(summary.timings)
    stages["report"] = stages.get("report", 0.0) + (finished - flow_done)
    with psycopg.connect(url) as conn:
        for (timings,) in conn.execute(
            "select counts->'timings' from migration.batches where run_id = %s", [summary.run_id]
        ).fetchall():
            for stage, seconds in (timings or {}).items():
                stages[stage] = stages.get(stage, 0.0) + float(seconds)
    return {
        "server_seconds": server_seconds,
        "seconds": finished - started,
        "stages": stages,
        "batches": len(summary.batches),
        "failed": summary.failed,
        "peak_rss_mib": _peak_rss_mib(),
    }


def verify_step(url: str) -> dict[str, Any]:
    """``circuit-migrate verify`` over the whole database."""
    from flows.verify import verify

    started = time.perf_counter()
    result = verify(url, url, source_schema=SOURCE_SCHEMA, target_schema=TARGET_SCHEMA)
    return {
        "seconds": time.perf_counter() - started,
        "passed": result.ok,
        "peak_rss_mib": _peak_rss_mib(),
    }


# --- the floor (in the benchmark's own process: it is all SQL) --------------------------------

# Legacy table -> target-shaped table and the columns moved as they are (no logic).
_FLOOR = {
    "user_sessions": (
        "user_sessions",
        "id, user_id, session_name, description, environment_variables, visualization_settings,"
        " performance_settings, is_active, last_accessed, created_at, updated_at",
    ),
    "user_profiles": (
        "circuit_configurations",
        "id, user_id, name, description, {parameters}, grid_size, min_freq, max_freq,"
        " num_points, is_computed, computation_time, total_points, valid_points,"
        " computation_results, created_at, updated_at",
    ),
    "tagged_models": (
        "tagged_models",
        "id, user_id, session_id, model_id, tag_name, tag_category, circuit_parameters,"
        " resnorm_value, tagged_at, notes, is_interesting",
    ),
}


def floor_step(url: str) -> dict[str, Any]:
    """The floor: the same legacy rows moved by ``INSERT ... SELECT`` into tables of the target
    shape (columns, defaults, primary keys and indexes; no checks, not-null constraints, foreign
    keys, RLS or triggers: legacy rows break them), in one transaction, with no logic at all."""
    with psycopg.connect(url) as conn:
        conn.execute("drop schema if exists bench_floor cascade")
        conn.execute("create schema bench_floor")
        for target, _ in _FLOOR.values():
            conn.execute(
                sql.SQL(
                    "create table bench_floor.{t} (like {s}.{t} including defaults"
                    " including indexes)"
                ).format(t=sql.Identifier(target), s=sql.Identifier(TARGET_SCHEMA))
            )
        nullable = conn.execute(
            "select c.table_name, c.column_name from information_schema.columns c"
            " where c.table_schema = 'bench_floor' and c.is_nullable = 'NO'"
            " and c.column_name <> 'id'"
        ).fetchall()
        for table, column in nullable:
            conn.execute(
                sql.SQL("alter table bench_floor.{} alter column {} drop not null").format(
                    sql.Identifier(table), sql.Identifier(column)
                )
            )
        conn.commit()
        conn.execute("checkpoint")
        started = time.perf_counter()
        for source, (target, columns) in _FLOOR.items():
            into = columns.replace("{parameters}", "circuit_parameters")
            selected = columns.replace("{parameters}", "parameters")
            conn.execute(
                sql.SQL("insert into bench_floor.{t} ({into}) select {cols} from {s}.{src}").format(
                    t=sql.Identifier(target),
                    into=sql.SQL(into),
                    cols=sql.SQL(selected),
                    s=sql.Identifier(SOURCE_SCHEMA),
                    src=sql.Identifier(source),
                )
            )
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("drop schema bench_floor cascade")
        conn.commit()
        conn.execute("checkpoint")
    return {"seconds": seconds}


def source_rows(url: str) -> dict[str, int]:
    """Rows per legacy table, and the auth users."""
    with psycopg.connect(url) as conn:
        counts = {
            table: int(
                conn.execute(
                    sql.SQL("select count(*) from {}.{}").format(
                        sql.Identifier(SOURCE_SCHEMA), sql.Identifier(table)
                    )
                ).fetchone()[0]  # type: ignore[index]
            )
            for table in (*LEGACY_TABLES, "users")
            if table != "users"
        }
        row = conn.execute("select count(*) from auth.users").fetchone()
        counts["auth.users"] = int(row[0]) if row else 0
    return counts


# --- the run --------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    from flows.db import with_database

    return with_database(url, name)


def reset_target(url: str) -> None:
    """Empty the target tables and the ledger (a database seeded by an earlier run)."""
    from schemas.tables import LEDGER_TABLES, TARGET_TABLES

    names = [
        sql.SQL("{}.{}").format(sql.Identifier(TARGET_SCHEMA), sql.Identifier(t.name))
        for t in TARGET_TABLES
    ]
    names += [sql.SQL("migration.{}").format(sql.Identifier(t.name)) for t in LEDGER_TABLES]
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("truncate {}").format(sql.SQL(", ").join(names)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
        conn.execute("checkpoint")


def run_benchmark(
    server_url: str,
    scale: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    seed: int = 0,
    keep: bool = False,
    skip_verify: bool = False,
    reuse: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> BenchResult:
    """Seed a fresh database at ``scale`` (or empty the target of database ``reuse``, seeded by
    an earlier ``--keep`` run, and keep it), then time the floor, the migration and verify."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: one of {', '.join(SCALES)}")
    users = max(1, SCALES[scale] // MODELS_PER_USER)
    name = reuse or f"cm_bench_{scale}_{uuid.uuid4().hex[:8]}"
    keep = keep or reuse is not None
    if reuse is None:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = _with_database(server_url, name)
    try:
        if reuse is None:
            progress(f"seeding {users:,} users into database {name}")
            seeded = _in_child(seed_step, url, users, seed)
        else:
            progress(f"reusing database {name}: emptying its target and ledger")
            reset_target(url)
            seeded = {"seconds": 0.0}
        rows = source_rows(url)
        progress(f"seeded in {seeded['seconds']:.1f} s: {rows}; running the floor")
        floor = floor_step(url)
        progress(f"floor {floor['seconds']:.1f} s; running the migration")
        with tempfile.TemporaryDirectory(prefix="cm-bench-reports-") as reports:
            migrated = _in_child(migrate_step, url, batch_size, concurrency, reports)
        progress(f"migration {migrated['seconds']:.1f} s")
        verified: dict[str, Any] = {"seconds": 0.0, "passed": False, "peak_rss_mib": 0.0}
        if not skip_verify:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("vacuum analyze")
                conn.execute("checkpoint")
            verified = _in_child(verify_step, url)
            progress(f"verify {verified['seconds']:.1f} s")
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )
    legacy = {table: rows[table] for table in LEGACY_TABLES}
    return BenchResult(
        scale=scale,
        users=rows["auth.users"],
        source_rows=legacy,
        seed_seconds=seeded["seconds"],
        floor_seconds=floor["seconds"],
        prefect_server_seconds=migrated["server_seconds"],
        migration_seconds=migrated["seconds"],
        stage_seconds=migrated["stages"],
        batches=migrated["batches"],
        batches_failed=migrated["failed"],
        peak_rss_mib=migrated["peak_rss_mib"],
        verify_seconds=verified["seconds"],
        verify_passed=verified["passed"],
        verify_peak_rss_mib=verified["peak_rss_mib"],
        settings={
            "batch_size": batch_size,
            "concurrency": concurrency,
            "seed": seed,
            "verify": not skip_verify,
            "database": name if keep else None,
        },
    )


def render(result: BenchResult) -> str:
    """The benchmark's one table (Markdown)."""
    rows = result.rows

    def rate(seconds: float) -> str:
        return f"{rows / seconds:,.0f}" if seconds > 0 else "-"

    lines = [
        f"scale {result.scale}: {result.users:,} users, {rows:,} source rows "
        f"({', '.join(f'{t} {n:,}' for t, n in result.source_rows.items())}); "
        f"batch size {result.settings.get('batch_size')}, "
        f"concurrency {result.settings.get('concurrency')}",
        "",
        "| measure | seconds | source rows/s | note |",
        "|---|---:|---:|---|",
        f"| migration, end to end | {result.migration_seconds:.1f} | "
        f"{rate(result.migration_seconds)} | {result.batches - result.batches_failed} of "
        f"{result.batches} batches succeeded |",
    ]
    for stage in STAGES:
        seconds = result.stage_seconds.get(stage, 0.0)
        note = "summed over batches (they overlap)" if stage in STAGES[1:5] else "once per run"
        lines.append(f"| - {stage} | {seconds:.1f} | {rate(seconds)} | {note} |")
    lines += [
        f"| floor (INSERT ... SELECT) | {result.floor_seconds:.1f} | "
        f"{rate(result.floor_seconds)} | migration / floor = {result.floor_ratio:.2f} |",
        f"| Prefect temporary server start | {result.prefect_server_seconds:.1f} | | "
        "not in the migration's time |",
        (
            f"| verify | {result.verify_seconds:.1f} | {rate(result.verify_seconds)} | "
            f"{'passed' if result.verify_passed else 'NOT PASSED'}, "
            f"peak RSS {result.verify_peak_rss_mib:,.0f} MiB |"
            if result.settings.get("verify", True)
            else "| verify | | | skipped |"
        ),
        f"| seed (setup) | {result.seed_seconds:.1f} | | not measured against targets |",
        "",
        f"peak RSS of the migration process: {result.peak_rss_mib:,.0f} MiB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench --scale 1m``: run once, print the table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="End-to-end benchmark of circuit-migrate."
    )
    parser.add_argument("--scale", choices=list(SCALES), default="100k")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER),
        help="a server where this user may create databases (default TEST_DATABASE_URL or "
        "the local server)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--skip-verify", action="store_true")
    parser.add_argument(
        "--reuse",
        metavar="DATABASE",
        help="skip seeding: empty the target of this database (kept by an earlier --keep run "
        "of the same scale) and run on its legacy data; the database is kept",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        result = run_benchmark(
            args.server_url,
            args.scale,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            seed=args.seed,
            keep=args.keep,
            skip_verify=args.skip_verify,
            reuse=args.reuse,
            progress=lambda line: print(f"[bench] {line}", file=sys.stderr, flush=True),
        )
    except psycopg.OperationalError as exc:
        print(f"error: cannot reach the server: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(render(result))
    if args.json:
        import json

        payload = {**asdict(result), "rows": result.rows}
        payload["rows_per_second"] = result.rows_per_second
        payload["floor_ratio"] = result.floor_ratio
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    failed = result.batches_failed or (not args.skip_verify and not result.verify_passed)
    return 1 if failed else 0
