"""Test database harness: a real PostgreSQL, a fresh database per test module from a template.

Server, in order: ``TEST_DATABASE_URL``; PostgreSQL at ``postgresql://postgres@127.0.0.1:5432/test``
if it answers; else an embedded server (pgserver) started for the session. No server means the
database tests fail (never skip) with a message saying how to get one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from flows.db import with_database
from schemas import ddl

SUPABASE_LIKE = Path(__file__).resolve().parents[1].parent / "shared" / "supabase-like"
SUPABASE_BUILD = SUPABASE_LIKE / "make_supabase_like.sh"
# The build script's lock and build files: ${SUPA_WORK:-${TMPDIR:-/tmp}/supabase-like}.
SUPABASE_WORK = Path(
    os.environ.get("SUPA_WORK") or f"{os.environ.get('TMPDIR') or '/tmp'}/supabase-like"
)
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


@pytest.fixture(scope="module")
def make_supabase_db(pg_server: str) -> Iterator[Callable[[str], tuple[str, str]]]:
    """Factory: a fresh Supabase-faithful database (../shared/supabase-like, about 20 s each);
    returns its URLs as Supabase's ``postgres`` role (``supa_postgres``) and as the superuser.
    Dropped at the end of the module."""
    if not SUPABASE_BUILD.is_file():
        pytest.fail(
            f"{SUPABASE_BUILD} is missing: the Supabase-like build must sit at "
            "../shared/supabase-like next to the repository",
            pytrace=False,
        )
    server = urlsplit(pg_server)
    host, port = server.hostname or "127.0.0.1", str(server.port or 5432)
    env = {**os.environ, "PGHOST_SUPA": host, "PGPORT_SUPA": port}
    built: list[str] = []

    def make(hint: str) -> tuple[str, str]:
        name = f"supa_{''.join(c for c in hint.lower() if c.isalnum())[:20]}_{uuid.uuid4().hex[:8]}"
        built.append(name)
        done = subprocess.run(
            ["bash", str(SUPABASE_BUILD), name], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"{SUPABASE_BUILD} {name} failed:\n{done.stdout}\n{done.stderr}")
        return f"postgresql://supa_postgres@{host}:{port}/{name}", with_database(pg_server, name)

    yield make
    for name in built:
        subprocess.run(
            ["dropdb", "-h", host, "-p", port, "-U", "postgres", "--force", "--if-exists", name],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(SUPABASE_WORK / "build" / name, ignore_errors=True)


@pytest.fixture
def no_build_running() -> Iterator[None]:
    """Hold the Supabase-like build script's lock: while any build runs, supa_postgres (a
    cluster-wide role) is briefly a superuser, which would hide what it may not do."""
    SUPABASE_WORK.mkdir(parents=True, exist_ok=True)
    with (SUPABASE_WORK / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
