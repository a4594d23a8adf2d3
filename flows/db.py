"""Database connections: URL handling, password redaction, clear connection errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

from schemas.errors import ConfigurationError, ConnectionFailed

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]*(@)")


def redact(text: str) -> str:
    """``text`` with every password inside a connection URL replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***\2", text)


def libpq_url(url: str) -> str:
    """The URL in the form libpq and psycopg accept (``postgresql://``); checks its shape."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not (parts.netloc or parts.query):
        raise ConfigurationError(
            f"not a PostgreSQL URL: {redact(url)!r} "
            "(expected postgresql://USER@HOST:PORT/DATABASE, password optional)"
        )
    return urlunsplit(("postgresql", *parts[1:]))


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server, user and options."""
    parts = urlsplit(libpq_url(url))
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A psycopg connection; an unreachable server raises ``ConnectionFailed`` with no password."""
    dsn = libpq_url(url)
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        raise ConnectionFailed(
            f"cannot connect to {redact(dsn)}: {detail}", url=redact(dsn)
        ) from None


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection]:
    """A connection in one transaction: committed on success, rolled back on error, closed."""
    conn = connect(url)
    try:
        with conn.transaction():
            yield conn
    finally:
        conn.close()


def run_script(url: str, sql: str) -> None:
    """Run a multi-statement SQL script in one transaction."""
    with transaction(url) as conn:
        conn.execute(sql.encode())  # bytes: no client-side parameter parsing of '%' or '?'


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    """Whether ``schema`` exists."""
    row = conn.execute("select exists (select 1 from pg_namespace where nspname = %s)", [schema])
    return bool(row.fetchone()[0])  # type: ignore[index]


def table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists."""
    row = conn.execute("select to_regclass(%s) is not null", [f'"{schema}"."{table}"'])
    return bool(row.fetchone()[0])  # type: ignore[index]
