"""The README's two-project runbook, end to end, on two Supabase-faithful databases
(../shared/supabase-like) as Supabase's non-superuser ``postgres`` role (``supa_postgres``),
through the real console command in its own processes: schema apply, copy-auth-users, dry run,
run, verify, the cleanup guard, cleanup --confirm and --drop. Each refusal on the way (legacy
users missing, tables another role owns, a view on a legacy table) is one line and the
README's exit code, with nothing changed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.seed import seed_database
from tests.cli_process import cli, one_line

LEGACY = ("user_sessions", "tagged_models", "user_profiles")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


def where(url: str) -> list[tuple[Any, ...]]:
    """(schema, table) of every legacy table in ``url``'s database."""
    names = ", ".join(f"'{t}'" for t in LEGACY)
    return rows(
        url,
        "select table_schema, table_name from information_schema.tables"
        f" where table_name in ({names}) and table_schema <> 'seed_truth' order by 1, 2",
    )


@pytest.mark.slow
def test_two_project_runbook(
    make_supabase_db: Callable[[str], tuple[str, str]], tmp_path: Path
) -> None:
    source, source_admin = make_supabase_db("runbooksrc")
    target, target_admin = make_supabase_db("runbooktgt")
    # The legacy app's tables and users (seeding needs the superuser), then owned, as tables
    # made with Supabase's SQL editor are, by Supabase's postgres role; except at first.
    seeded = seed_database(source_admin, users=40, seed=5)
    urls = ["--source-url", source, "--target-url", target]
    reports = tmp_path / "reports"
    report_dir = ["--report-dir", str(reports)]

    ok(cli("schema", "apply", "--target-url", target, cwd=tmp_path))
    one_line(cli("run", *urls, *report_dir, cwd=tmp_path), 4, "copy-auth-users")
    ok(cli("copy-auth-users", "--dry-run", *urls, cwd=tmp_path))
    assert rows(target_admin, "select count(*) from auth.users") == [(0,)]
    ok(cli("copy-auth-users", *urls, cwd=tmp_path))
    assert rows(target_admin, "select count(*) from auth.users")[0][0] > 0
    assert "copied 0" in ok(cli("copy-auth-users", *urls, cwd=tmp_path))

    ok(cli("run", "--dry-run", *urls, *report_dir, cwd=tmp_path))
    assert rows(target_admin, "select count(*) from public.tagged_models") == [(0,)]
    run = json.loads(ok(cli("run", "--json", *urls, *report_dir, cwd=tmp_path)))
    report = json.loads((Path(run["report_folder"]) / "report.json").read_text())
    assert report["rejected"]["rows"] == 0 and report["verdict"]["level"] in ("ok", "review")
    assert report["tables"]["tagged_models"]["source"] == seeded.tagged_models
    assert rows(target_admin, "select count(*) from public.tagged_models") == [
        (report["tables"]["tagged_models"]["migrated"],)
    ]
    # Quarantined: exactly what the generator meant to be, for its reasons.
    decided = "select source_table, source_id, reason from {} order by 1, 2"
    ledger = f"migration.quarantine where run_id = '{run['run_id']}'"
    assert rows(target_admin, decided.format(ledger)) == rows(
        source_admin, decided.format("seed_truth.quarantine")
    )
    assert "verification passed" in ok(cli("verify", *urls, cwd=tmp_path))

    # The guard passes; the tables belong to another role: refused by name, nothing moved.
    preview = ok(cli("cleanup", *urls, cwd=tmp_path))
    assert "guard passed" in preview and "would be refused" in preview
    before = where(source_admin)
    one_line(cli("cleanup", "--confirm", *urls, cwd=tmp_path), 4, "public.tagged_models", "owner")
    assert where(source_admin) == before
    with psycopg.connect(source_admin) as conn:
        for table in LEGACY:
            conn.execute(f"alter table public.{table} owner to supa_postgres".encode())
        conn.execute(b"create view public.session_names as select session_name from user_sessions")
    one_line(cli("cleanup", "--confirm", "--drop", *urls, cwd=tmp_path), 7, "session_names")
    assert where(source_admin) == before

    ok(cli("cleanup", "--confirm", *urls, cwd=tmp_path))
    assert where(source_admin) == [("legacy_archive", t) for t in sorted(LEGACY)]
    assert "verification passed" in ok(cli("verify", *urls, cwd=tmp_path))
    with psycopg.connect(source_admin) as conn:
        conn.execute(b"drop view public.session_names")
    ok(cli("cleanup", "--confirm", "--drop", *urls, cwd=tmp_path))
    assert where(source_admin) == []
