"""Database connections: URL handling, password redaction, clear connection errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from schemas.errors import ConfigurationError, ConnectionFailed

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
_PREFIX = "postgresql://"
_EXPECTED = (
    "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE, password optional, "
    "or a key=value connection string"
)
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<slashes>//)?")

# A key whose value is a secret: password, PGPASSWORD, sslpassword (any case).
_KEY = r"(?:pg|ssl)?password"
_KEYED_SECRET = re.compile(
    # ?password=... or &password=... in a URL query: the value runs to the next '&'
    rf"(?P<query>[?&]{_KEY}=)(?P<qv>[^&\s]*)"
    # password=... in a key=value string: a quoted value to its closing quote, or a bare word
    rf"|(?P<conninfo>(?<![\w.-]){_KEY}\s*=\s*)(?P<cv>'(?:\\.|[^'\\])*'?|(?:\\.|[^\s\\])*)"
    # 'password': '...' in the repr of a dict
    rf"|(?P<mapping>(?P<q>['\"]){_KEY}(?P=q)\s*:\s*)"
    r"(?P<mv>'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\")",
    re.IGNORECASE,
)
# scheme://USER:PASSWORD@HOST: the password runs to the LAST '@' followed by a host, so that an
# unencoded '@', ':' or '/' in it is redacted too (in text, a URL ends at a space)
_USERINFO_SECRET = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/?#@]*:)\S*(?=@[^\s@/?#]*(?:[/?#\s]|$))",
    re.IGNORECASE,
)
# the same in one whole DSN, whose (malformed) password may hold spaces
_WHOLE_USERINFO = re.compile(
    r"\s*[a-z][a-z0-9+.-]*://[^\s:/?#@]*:(?P<secret>.*)@[^\s@/?#]*(?:[/?#\s].*)?",
    re.IGNORECASE | re.DOTALL,
)
# a bare key=value password that (malformed) holds spaces: up to the next key= or the end
_SPACED_SECRET = re.compile(
    rf"(?<![\w.-]){_KEY}\s*=\s*(?P<secret>.*?)(?=\s+[\w.-]+\s*=|\s*$)", re.IGNORECASE | re.DOTALL
)


def redact(text: str) -> str:
    """``text`` with every connection password in it replaced by ``***``: in URLs (userinfo or
    query), key=value connection strings and dict reprs; user, host, port and the rest kept."""
    text = _KEYED_SECRET.sub(_mask_keyed, text)
    return _USERINFO_SECRET.sub(r"\g<head>***", text)


def _mask_keyed(match: re.Match[str]) -> str:
    if match["mapping"]:
        return match["mapping"] + "'***'"
    return (match["query"] or match["conninfo"]) + "***"


def _secrets(dsn: str) -> list[str]:
    """The passwords of the one DSN ``dsn`` as libpq may echo them (raw, decoded, in pieces),
    longest first; for scrubbing what redaction of URL syntax cannot see."""
    whole: set[str] = set()
    try:
        params: dict[str, Any] = conninfo_to_dict(dsn)
    except psycopg.Error:
        params = {}
    whole.update(str(params[key]) for key in ("password", "sslpassword") if params.get(key))
    if found := _WHOLE_USERINFO.fullmatch(dsn):
        whole.add(found["secret"])
    whole.update(m["secret"] for m in _SPACED_SECRET.finditer(dsn))
    whole.update(m["qv"] or m["cv"] or m["mv"] or "" for m in _KEYED_SECRET.finditer(dsn))
    whole |= {unquote(secret) for secret in whole} | {s.strip("'\"") for s in whole}
    pieces = {p for s in whole for p in re.split(r"[\s@/:&?=%'\"\\]+", s) if len(p) >= 2}
    return sorted({s for s in whole | pieces if s.strip("*")}, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    """``text`` with no trace of ``secrets``, then redacted."""
    for secret in secrets:
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return redact(text)


def libpq_url(url: str) -> str:
    """``url`` as libpq takes it: any URL libpq reads (empty user or host, ``?host=``,
    ``?password=``, several hosts, percent-encoding) or a key=value string, passed on as given
    but for the scheme (``postgres://``, ``postgresql+psycopg://`` become ``postgresql://``) and
    for an unencoded ``@`` or ``/`` in the password, which is percent-encoded. A malformed one
    raises ``ConfigurationError`` with its password redacted."""
    dsn = url.strip()
    if not dsn:
        raise ConfigurationError(f"no database URL ({_EXPECTED})")
    head = _SCHEME.match(dsn)
    if head:
        if head["scheme"].lower() not in _SCHEMES or not head["slashes"]:
            shown = _scrub(dsn, _secrets(dsn)) if head["slashes"] else f"{head['scheme']}:..."
            raise ConfigurationError(f"not a PostgreSQL URL: {shown} ({_EXPECTED})")
        dsn = _PREFIX + dsn[head.end() :]
    elif "=" not in dsn:
        raise ConfigurationError(f"not a PostgreSQL URL ({_EXPECTED})")
    problem = ""
    for reading in [dsn, *_respelled(dsn)]:
        try:
            trouble = _trouble(conninfo_to_dict(reading))
        except psycopg.Error as exc:
            trouble = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if not trouble:
            return reading
        problem = problem or trouble  # libpq's own reading tells what is wrong
    secrets = _secrets(dsn)
    shown, problem = _scrub(dsn, secrets), _scrub(problem, secrets)
    if dsn.startswith(_PREFIX):
        hint = "percent-encode '@', '/', '%' and spaces in a password"
        raise ConfigurationError(f"not a valid PostgreSQL URL: {shown} ({problem}; {hint})")
    hint = "quote a value holding spaces: password='a b'"
    raise ConfigurationError(f"not a valid connection string: {shown} ({problem}; {hint})")


def _respelled(dsn: str) -> list[str]:
    """Other readings of URL ``dsn`` whose userinfo ends at a later ``@`` (libpq ends it at the
    first): its ``@`` and ``/`` percent-encoded, as an unencoded password means them."""
    if not dsn.startswith(_PREFIX):
        return []
    rest = dsn.removeprefix(_PREFIX)
    readings = []
    for at in (i for i, char in enumerate(rest) if char == "@"):
        userinfo = rest[:at]
        if ":" in userinfo and ("@" in userinfo or "/" in userinfo):
            spelled = userinfo.replace("@", "%40").replace("/", "%2F")
            readings.append(_PREFIX + spelled + rest[at:])
    return readings


def _trouble(params: dict[str, Any]) -> str:
    """What is wrong with libpq's reading of a DSN, or ``""``: a host holding ``@`` (a password's
    '@' libpq took for the end of the userinfo), a port not a number."""
    hosts = str(params.get("host") or "").split(",")
    if any("@" in host[1:] and not host.startswith("/") for host in hosts):
        return "a host name holds '@'"
    if not all(port.isdigit() for port in str(params.get("port") or "").split(",") if port):
        return "a port is not a number"
    return ""


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``, every other part (password and query included)
    kept; a URL stays a URL, else a key=value string."""
    dsn = libpq_url(url)
    wanted = {**conninfo_to_dict(dsn), "dbname": name}
    if dsn.startswith(_PREFIX):
        switched = _switch_database(dsn, name)
        if conninfo_to_dict(switched) == wanted:
            return switched
    return make_conninfo(dsn, dbname=name)


def _switch_database(dsn: str, name: str) -> str:
    """URL ``dsn`` with its path, and any ``dbname`` query parameter, naming ``name``; parsed as
    libpq does (a userinfo when an ``@`` comes before the first ``/``, the hosts to ``/`` or
    ``?``)."""
    rest = dsn.removeprefix(_PREFIX)
    stop = re.search(r"[@/]", rest)
    start = stop.end() if stop and stop[0] == "@" else 0
    hosts_end = next((i for i in range(start, len(rest)) if rest[i] in "/?"), len(rest))
    query_at = rest.find("?", hosts_end)
    query_at = len(rest) if query_at < 0 else query_at
    database = quote(name, safe="")
    params = rest[query_at + 1 :].split("&") if query_at < len(rest) else []
    params = [f"dbname={database}" if p.split("=", 1)[0] == "dbname" else p for p in params]
    query = "?" + "&".join(params) if params else ""
    return f"{_PREFIX}{rest[:hosts_end]}/{database}{query}"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A psycopg connection; an unreachable server raises ``ConnectionFailed`` whose message
    names the server but never the password (nor any piece of it libpq echoes)."""
    dsn = libpq_url(url)
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        secrets = _secrets(dsn)
        text = str(exc).strip()
        detail = _scrub(text.splitlines()[0] if text else repr(exc), secrets)
        shown = _scrub(dsn, secrets)
        raise ConnectionFailed(f"cannot connect to {shown}: {detail}", url=shown) from None


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


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"`` as text for ``to_regclass`` and ``::regclass``: each part quoted,
    embedded quotes doubled, so mixed case and quotes in names work."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    """Whether ``schema`` exists."""
    row = conn.execute("select exists (select 1 from pg_namespace where nspname = %s)", [schema])
    return bool(row.fetchone()[0])  # type: ignore[index]


def table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists."""
    row = conn.execute("select to_regclass(%s) is not null", [qualified(schema, table)])
    return bool(row.fetchone()[0])  # type: ignore[index]
