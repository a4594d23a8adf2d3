"""Connection passwords never appear in a report, log line, artifact, ledger row or error
message: a run (with a failing batch, a retry, a report with compare, and an unreachable server)
uses a URL with a known password, ``status`` and an unreachable server are tried with every URL
form (tests/flows/test_urls.py), then everything they wrote is scanned for the passwords."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker
from prefect.logging.configuration import ensure_logging_setup
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_HOME, PREFECT_SERVER_DATABASE_CONNECTION_URL
from typer.testing import CliRunner

from flows.cli import app
from schemas.tables import LEDGER_TABLES
from tests.flows.test_urls import MARKERS, url_forms

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROLE, PASSWORD = "cm_pw_test", "S3cr3t-pw-xyz"
SECRETS = (PASSWORD, *MARKERS)  # the markers are in the password of every URL form


def with_password(url: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = port or parts.port
    netloc = f"{ROLE}:{PASSWORD}@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


@pytest.fixture
def urls(seeded_db: Callable[[int, int], str]) -> Iterator[tuple[str, str]]:
    """(plain admin URL, URL of a password role) on a seeded database; the role is dropped."""
    url = seeded_db(30, 5)
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("select 1 from pg_roles where rolname = %s", [ROLE]).fetchone():
            conn.execute(f"drop owned by {ROLE}")  # left by an interrupted test
            conn.execute(f"drop role {ROLE}")
        conn.execute(f"create role {ROLE} login superuser password '{PASSWORD}'")
    try:
        yield url, with_password(url)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop owned by {ROLE}")
            conn.execute(f"drop role {ROLE}")


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


class Collect(logging.Handler):
    """Keeps every formatted log record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + (record.exc_text or ""))


def test_no_password_in_anything_a_run_writes(
    urls: tuple[str, str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    admin, url = urls
    assert PASSWORD in url
    started = time.time()
    ensure_logging_setup()  # Prefect's first setup replaces the root handlers: do it before
    collect = Collect()
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    for logger in loggers:
        logger.addHandler(collect)
    reports = tmp_path / "reports"
    victim = query(admin, "select min(user_id::text) from legacy.user_profiles")[0][0]
    with psycopg.connect(admin) as conn:  # one batch fails: its error travels everywhere
        conn.execute(
            "create function refuse() returns trigger language plpgsql as $$ begin"
            f" if new.user_id = '{victim}' then raise exception 'refused for test'; end if;"
            " return new; end $$;"
            "create trigger refuse before insert on public.circuit_configurations"
            " for each row execute function refuse()"
        )
    outputs: list[str] = []

    def cli(*args: str, code: int = 0) -> None:
        result = CliRunner().invoke(app, list(args))
        outputs.append(result.output + repr(result.exception or ""))
        assert result.exit_code == code, result.output

    try:
        common = ["--source-url", url, "--target-url", url, "--report-dir", str(reports)]
        cli("run", *common, "--source-schema", "legacy", "--batch-size", "10", code=1)
        assert "refused for test" in outputs[0]
        run_id = str(query(admin, "select run_id::text from migration.runs")[0][0])
        report_md = (reports / run_id / "report.md").read_text()
        assert f"circuit-migrate retry {run_id}" in report_md and "refused for test" in report_md
        with psycopg.connect(admin) as conn:
            conn.execute("drop trigger refuse on public.circuit_configurations")
        cli("retry", run_id, *common)
        cli("report", run_id, "--target-url", url, "--report-dir", str(reports))
        cli(
            "report", run_id, "--target-url", url, "--report-dir", str(reports), "--compare", run_id
        )
        cli("status", run_id, "--target-url", url)
        # an unreachable server: the connection error names the URL
        dead = with_password(admin, port=1)
        cli("run", "--source-url", dead, "--target-url", dead, "--report-dir", str(reports), code=3)
        cli("report", run_id, "--target-url", dead, code=3)
        assert "***" in outputs[-1]
        for form in url_forms(url).values():  # trust auth: any password connects
            cli("status", run_id, "--target-url", form.url)
        report_dir = ["--report-dir", str(reports)]
        for form in url_forms(url, port="1").values():
            cli("status", "--target-url", form.url, code=3)
            cli("run", "--source-url", form.url, "--target-url", form.url, *report_dir, code=3)
            assert "***" in outputs[-1]
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
    APILogWorker.drain_all()
    EventsWorker.drain_all()

    texts: dict[str, str] = {f"cli output {i}": text for i, text in enumerate(outputs)}
    texts["log records"] = "\n".join(collect.lines)
    captured = capfd.readouterr()
    texts["stdout/stderr"] = captured.out + captured.err
    for path in reports.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text()
    for table in LEDGER_TABLES:
        texts[f"migration.{table.name}"] = str(
            query(admin, f"select string_agg(t::text, '|') from migration.{table.name} t")[0][0]
        )
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs()
        texts["prefect flow runs"] = "\n".join(r.model_dump_json() for r in flow_runs)
        texts["prefect task runs"] = "\n".join(r.model_dump_json() for r in client.read_task_runs())
        texts["prefect logs"] = "\n".join(log.message for log in client.read_logs())
        texts["prefect artifacts"] = "\n".join(a.model_dump_json() for a in client.read_artifacts())
    assert flow_runs and run_id in texts["prefect artifacts"]
    assert "Finished in state" in texts["log records"]  # the flow's log lines were captured

    leaks = [where for where, text in texts.items() if any(s in text for s in SECRETS)]
    # the Prefect test server's database, and PREFECT_HOME files written during the test
    database = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[-1])
    files = [p for p in database.parent.glob(database.name + "*") if p.is_file()]
    home = Path(PREFECT_HOME.value())
    if home.is_dir():
        files += [p for p in home.rglob("*") if p.is_file() and p.stat().st_mtime >= started]
    contents = {str(p): p.read_bytes() for p in files}
    # the byte scan sees what the runs stored (their ids), so it would see a password
    assert any(run_id.encode() in data for data in contents.values())
    leaks += [where for where, data in contents.items() if any(s.encode() in data for s in SECRETS)]
    assert leaks == []
