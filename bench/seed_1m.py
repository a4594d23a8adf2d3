"""Benchmark: generate ~1,000,000 tagged models of synthetic legacy data and COPY them into a
fresh database. Prints the timings; the target is under 60 s in total on a 2-core machine.

    python bench/seed_1m.py [--users 87500] [--seed 0] [--server-url URL] [--keep]

The server URL (default ``TEST_DATABASE_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``)
needs the right to create databases; the benchmark database is dropped afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from flows import schema_ops, seed
from synthetic.legacy_data import generate

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _timed_copies(timings: dict[str, float]) -> None:
    """Instrument ``flows.seed._copy`` to record the seconds spent per table."""
    copy = seed._copy

    def timed(cur: Any, table: Any, frame: Any, key: list[str]) -> None:
        started = time.perf_counter()
        copy(cur, table, frame, key)
        timings[table.as_string(cur)] = time.perf_counter() - started

    seed._copy = timed  # type: ignore[assignment]


def main() -> None:
    """Run the benchmark once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 87,500 users give about 1,000,000 tagged models with the default ranges and rates.
    parser.add_argument("--users", type=int, default=87_500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER))
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()

    name = f"cm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.server_url, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = _with_database(args.server_url, name)
    try:
        schema_ops.apply_auth_shim(url)
        schema_ops.apply_legacy(url, "public")

        started = time.perf_counter()
        data = generate(args.users, seed=args.seed)
        generated = time.perf_counter()
        timings: dict[str, float] = {}
        _timed_copies(timings)
        summary = seed.load_synthetic(url, data)
        loaded = time.perf_counter()

        print(f"database        {name}")
        print(f"users           {summary.users:>10,}")
        print(f"user_sessions   {summary.user_sessions:>10,}")
        print(f"user_profiles   {summary.user_profiles:>10,}")
        print(f"tagged_models   {summary.tagged_models:>10,}")
        truth = data.truth_links, data.truth_quarantine, data.truth_duplicates
        print(f"truth rows      {sum(frame.height for frame in truth):>10,}")
        print(f"generate        {generated - started:>9.1f} s")
        print(f"load (COPY)     {loaded - generated:>9.1f} s")
        for table, seconds in timings.items():
            print(f"  {table:<24} {seconds:>5.1f} s")
        print(f"total           {loaded - started:>9.1f} s")
        with psycopg.connect(url) as conn:
            row = conn.execute("select pg_size_pretty(pg_database_size(current_database()))")
            print(f"database size   {row.fetchone()[0]:>10}")  # type: ignore[index]
    finally:
        if not args.keep:
            with psycopg.connect(args.server_url, autocommit=True) as admin:
                admin.execute(f'drop database if exists "{name}" with (force)')


if __name__ == "__main__":
    main()
