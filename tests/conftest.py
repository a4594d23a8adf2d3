"""Test database harness: a real PostgreSQL, a fresh database per test module from a template.

Server, in order: ``TEST_DATABASE_URL``; PostgreSQL at ``postgresql://postgres@127.0.0.1:5432/test``
if it answers; else an embedded server (pgserver) started for the session. No server means the
database tests fail (never skip) with a message saying how to get one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from flows.db import with_database
from schemas import ddl

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
HOW_TO_GET_ONE = (
    "no PostgreSQL for the tests: set TEST_DATABASE_URL=postgresql://user@host:port/db, or run a "
    "server on 127.0.0.1:5432 (trust auth, user postgres), or `pip install -e '.[dev]'` on "
    "Python 3.11/3.12 for the embedded pgserver"
)


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("select 1")
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a database on a running server with rights to create databases."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        if not _answers(explicit):
            pytest.fail(f"TEST_DATABASE_URL does not answer. {HOW_TO_GET_ONE}", pytrace=False)
        yield explicit
        return
    if _answers(DEFAULT_URL):
        yield DEFAULT_URL
        return
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail(HOW_TO_GET_ONE, pytrace=False)
    root = Path(__file__).resolve().parent.parent / ".pgdata" / "tests"
    root.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(root, cleanup_mode="stop")
    yield server.get_uri()


@pytest.fixture(scope="session")
def make_db(pg_server: str) -> Iterator[Callable[[str], str]]:
    """Factory: a fresh database (auth shim applied) cloned from a session template."""
    tag = uuid.uuid4().hex[:8]
    template = f"cm_tpl_{tag}"
    created: list[str] = []
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'create database "{template}"')
    with psycopg.connect(with_database(pg_server, template), autocommit=True) as conn:
        conn.execute(ddl.auth_shim_sql().encode())

    def make(hint: str) -> str:
        name = f"cm_{''.join(c for c in hint.lower() if c.isalnum())[:30]}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'create database "{name}" template "{template}"')
        created.append(name)
        return with_database(pg_server, name)

    yield make
    with psycopg.connect(pg_server, autocommit=True) as admin:
        for name in [*created, template]:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def db_url(make_db: Callable[[str], str], request: pytest.FixtureRequest) -> str:
    """A fresh database for this test module, with the auth shim applied."""
    return make_db(request.module.__name__.rsplit(".", 1)[-1])
