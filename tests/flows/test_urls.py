"""Every URL form libpq accepts connects, switches database and never shows its password: on a
working server, on a closed port (``ConnectionFailed``), through ``redact`` and through the CLI.

Each form's password holds the markers ``S3cr3t`` and ``Zq9-``: no output may contain either, so
neither the whole password nor a piece of it (the tail after an unencoded ``@``) leaks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from flows import db
from schemas.errors import ConfigurationError, ConnectionFailed
from tests.cli_process import cli as run_cli

MARKERS = ("S3cr3t", "Zq9-")


class Form(NamedTuple):
    url: str
    password: str  # what libpq must receive


def conninfo(url: str) -> dict[str, str]:
    """The parameters libpq reads in ``url``."""
    return {key: str(value) for key, value in conninfo_to_dict(url).items()}


def url_forms(url: str, port: str | None = None) -> dict[str, Form]:
    """The server, user and database of ``url`` (on ``port`` if given) written in every form."""
    params = conninfo(url)
    host, user, name = params.get("host") or "127.0.0.1", params["user"], params["dbname"]
    port = port or params.get("port") or "5432"
    at = f"{quote(host, safe='')}:{port}/{name}"
    secret = "S3cr3t @/%:Zq9-5"
    return {
        "userinfo": Form(f"postgresql://{user}:S3cr3t-Zq9-1@{at}", "S3cr3t-Zq9-1"),
        "empty user": Form(f"postgresql://:S3cr3t-Zq9-2@{at}?user={user}", "S3cr3t-Zq9-2"),
        "unencoded @": Form(f"postgresql://{user}:S3cr3t@Zq9-3@{at}", "S3cr3t@Zq9-3"),
        "unencoded @ : /": Form(f"postgresql://{user}:S3cr3t/x:y@Zq9-4@{at}", "S3cr3t/x:y@Zq9-4"),
        "percent-encoded": Form(f"postgresql://{user}:{quote(secret, safe='')}@{at}", secret),
        "?password=": Form(
            f"postgresql://{user}@{at}?application_name=cm-urls&password=S3cr3t%26Zq9-6",
            "S3cr3t&Zq9-6",
        ),
        "?host=": Form(
            f"postgresql://{user}:S3cr3t-Zq9-7@/{name}?host={quote(host, safe='/')}&port={port}",
            "S3cr3t-Zq9-7",
        ),
        "empty netloc": Form(
            f"postgresql:///{name}?host={quote(host, safe='/')}&port={port}&user={user}"
            "&password=S3cr3t-Zq9-11",
            "S3cr3t-Zq9-11",
        ),
        "key=value": Form(
            f"host='{host}' port={port} user={user} password='S3cr3t Zq9-8' dbname={name}",
            "S3cr3t Zq9-8",
        ),
        "sqlalchemy scheme": Form(f"postgresql+psycopg://{user}:S3cr3t-Zq9-9@{at}", "S3cr3t-Zq9-9"),
        "several hosts": Form(  # the first host is closed: libpq moves on to the second
            f"postgres://{user}:S3cr3t-Zq9-10@{quote(host, safe='')}:1,{at}", "S3cr3t-Zq9-10"
        ),
    }


FORMS = list(url_forms("postgresql://postgres@127.0.0.1:5432/test"))


def leaks(text: str) -> list[str]:
    """The markers of a password found in ``text``."""
    return [marker for marker in MARKERS if marker in text]


@pytest.fixture(scope="module")
def other_db(make_db: Callable[[str], str]) -> str:
    """A second database on the same server."""
    return make_db("urls_other")


def reached(url: str) -> tuple[str, str, str | None]:
    """(database, user, password libpq sent) of a connection made by ``db.connect``."""
    with db.connect(url) as conn:
        row = conn.execute("select current_database(), current_user").fetchone()
        assert row is not None
        return row[0], row[1], conn.info.password


@pytest.mark.parametrize("form", FORMS)
def test_form_connects_to_its_database(form: str, db_url: str) -> None:
    url, password = url_forms(db_url)[form]
    params = conninfo(db_url)
    assert reached(url) == (params["dbname"], params["user"], password)
    assert conninfo(db.libpq_url(url))["password"] == password
    assert db.libpq_url(db.libpq_url(url)) == db.libpq_url(url)


@pytest.mark.parametrize("form", FORMS)
def test_closed_port_error_lacks_the_password(form: str, db_url: str) -> None:
    url = url_forms(db_url, port="1")[form].url
    with pytest.raises(ConnectionFailed) as caught:
        db.connect(url)
    message = str(caught.value)
    assert leaks(message) == [] and leaks(str(caught.value.context)) == []
    assert "***" in message and conninfo(db_url)["dbname"] in message
    assert "Connection refused" in message and caught.value.exit_code == 3


@pytest.mark.parametrize("form", FORMS)
def test_redact_removes_the_password_and_keeps_the_rest(form: str) -> None:
    url = url_forms("postgresql://cm_user@db.example:6543/cm_db")[form].url
    shown = db.redact(url)
    assert leaks(shown) == [] and "***" in shown
    assert all(part in shown for part in ("db.example", "cm_db", "cm_user")), shown
    for text in (
        f"error: cannot connect to {url}: boom",
        f"OperationalError('could not use {url!r}')",
        f'connection to "{url}" failed\n\tagain: {url}.',
    ):
        assert leaks(db.redact(text)) == [], db.redact(text)
    assert db.redact(shown) == shown


@pytest.mark.parametrize("form", FORMS)
def test_with_database_switches_only_the_database(form: str, db_url: str, other_db: str) -> None:
    url, password = url_forms(db_url)[form]
    name = conninfo(other_db)["dbname"]
    switched = db.with_database(url, name)
    before = conninfo(db.libpq_url(url))
    assert conninfo(switched) == {**before, "dbname": name}
    assert switched.startswith("postgresql://") == ("://" in url)
    assert reached(switched) == (name, conninfo(db_url)["user"], password)


def test_with_database_keeps_query_and_odd_names() -> None:
    url = "postgresql://u:p%40w@h1:5432,h2/db?sslmode=disable&dbname=old&application_name=a@b"
    switched = db.with_database(url, "new db/x")
    assert switched == (
        "postgresql://u:p%40w@h1:5432,h2/new%20db%2Fx"
        "?sslmode=disable&dbname=new%20db%2Fx&application_name=a@b"
    )
    switched = db.with_database("host=h password='a b' dbname=old", "n")
    assert conninfo(switched) == {"host": "h", "password": "a b", "dbname": "n"}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://@/db?host=127.0.0.1&port=5432",
        "postgresql://",
        "postgresql://[::1]:5432/db",
        "postgresql://h1:5432,h2:5433/db?target_session_attrs=any",
        "postgresql://h:5432/name@with-at",  # an unencoded '@' in the database name
        "postgresql://u:p?w#x@h/db",
    ],
)
def test_libpq_url_passes_other_forms_as_given(url: str) -> None:
    assert db.libpq_url(url) == url
    assert db.libpq_url(f"  POSTGRES{url.removeprefix('postgresql')}\n") == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:S3cr3t%Zq9-1@h/db",  # a bare '%'
        "postgresql://u:S3cr3t Zq9-2@h/db",  # a bare space
        "postgresql://u@h/db?password=S3cr3t=Zq9-3",
        "postgresql://u:S3cr3t-Zq9-4@h:port/db",
        "host=h password=S3cr3t Zq9-5",  # unquoted space
        "host=h password='S3cr3t Zq9-6",  # unterminated quote
        "mysql://u:S3cr3t-Zq9-7@h/db",
        "postgresql:u:S3cr3t-Zq9-8@h/db",
        "S3cr3t-Zq9-9",
    ],
)
def test_malformed_url_is_a_redacted_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        db.libpq_url(url)
    assert leaks(str(caught.value)) == [], str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("password=S3cr3t host=h", "password=*** host=h"),
        ("host=h PASSWORD = 'S3cr3t Zq9-' user=u", "host=h PASSWORD = *** user=u"),
        (r"password='it\'s S3cr3t' dbname=x", "password=*** dbname=x"),
        ("PGPASSWORD=S3cr3t psql", "PGPASSWORD=*** psql"),
        (
            "postgresql://h/d?sslmode=require&Password=S3cr3t&x=1",
            "postgresql://h/d?sslmode=require&Password=***&x=1",
        ),
        ("{'host': 'h', 'password': 'S3cr3t'}", "{'host': 'h', 'password': '***'}"),
        ("at postgresql://u:S3cr3t@Zq9-@h:1/d, then", "at postgresql://u:***@h:1/d, then"),
        ("(postgresql://:S3cr3t@h)", "(postgresql://:***@h)"),
        (
            'postgresql://u@h:5432/d: password authentication failed for user "u"',
            'postgresql://u@h:5432/d: password authentication failed for user "u"',
        ),
    ],
)
def test_redact_in_text(text: str, shown: str) -> None:
    assert db.redact(text) == shown


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``circuit-migrate ARGS`` in a subprocess (its console entry point)."""
    return run_cli(*args, cwd=cwd, timeout=120)


def assert_one_clean_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert leaks(result.stdout + result.stderr) == [], result.stderr


@pytest.mark.parametrize("form", FORMS)
def test_cli_status_and_stage_legacy_on_a_closed_port(
    form: str, db_url: str, tmp_path: Path
) -> None:
    url = url_forms(db_url, port="1")[form].url
    result = cli("status", "--target-url", url, cwd=tmp_path)
    assert_one_clean_error(result, 3)
    assert "cannot connect to" in result.stderr and "***" in result.stderr
    assert_one_clean_error(cli("stage-legacy", "--source-url", url, cwd=tmp_path), 3)


@pytest.mark.slow
def test_cli_run_on_a_closed_port_with_every_form(db_url: str, tmp_path: Path) -> None:
    """``run`` (two at once: each loads Prefect) fails with exit 3 and one redacted line."""
    dead = [url_forms(db_url, port="1")[form].url for form in FORMS]
    pairs = list(zip(dead, dead[1:] + dead[:1], strict=True))  # every form as source and target
    reports = str(tmp_path / "reports")

    def run(pair: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        source, target = pair
        args = ["--source-url", source, "--target-url", target, "--report-dir", reports]
        return cli("run", *args, cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, pairs))
    for result in results:
        assert_one_clean_error(result, 3)
    assert not (tmp_path / "reports").exists()


def test_cli_malformed_url_exits_2(tmp_path: Path) -> None:
    result = cli("status", "--target-url", "postgresql://u:S3cr3t%Zq9-@h/db", cwd=tmp_path)
    assert_one_clean_error(result, 2)
    assert "--target-url" in result.stderr and "percent-encode" in result.stderr


def test_psycopg_reads_a_bare_at_as_the_end_of_the_userinfo() -> None:
    """Why libpq_url percent-encodes it: libpq ends the userinfo at the FIRST '@'."""
    parsed = conninfo("postgresql://u:S3cr3t@Zq9-@h/db")
    assert (parsed["password"], parsed["host"]) == ("S3cr3t", "Zq9-@h")
    fixed = conninfo(db.libpq_url("postgresql://u:S3cr3t@Zq9-@h/db"))
    assert (fixed["password"], fixed["host"]) == ("S3cr3t@Zq9-", "h")
