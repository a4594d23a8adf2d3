"""``circuit-migrate demo``: a whole migration of messy synthetic data on a throwaway database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from flows import db, schema_ops
from flows.seed import SeedSummary, seed_database
from schemas.errors import ConfigurationError

DEMO_DATABASE = "circuit_migrate_demo"


@dataclass(frozen=True)
class DemoDatabase:
    """Where the demo ran."""

    url: str
    embedded: bool


@contextmanager
def embedded_server(folder: Path) -> Iterator[str]:
    """An embedded PostgreSQL (pgserver) with its data in ``folder``, stopped on exit."""
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigurationError(
            "the demo needs a PostgreSQL: install the dev extra for the embedded one "
            "(pip install -e '.[dev]', Python 3.11/3.12) or pass --target-url"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def fresh_database(server_url: str, name: str = DEMO_DATABASE) -> str:
    """(Re)create database ``name`` on the server of ``server_url``; returns its URL."""
    with db.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return db.with_database(server_url, name)


def prepare(url: str, *, users: int, seed: int) -> SeedSummary:
    """Auth shim, legacy tables in schema ``legacy`` with seeded data, and the target schema."""
    schema_ops.apply_auth_shim(url)
    summary = seed_database(url, users=users, seed=seed, source_schema="legacy")
    schema_ops.apply_target(url)
    return summary


def elapsed(start: float) -> str:
    """Seconds since ``start``, for messages."""
    return f"{time.perf_counter() - start:.1f} s"
