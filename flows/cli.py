"""The ``circuit-migrate`` command line: thin Typer commands; errors become one line and a code."""

from __future__ import annotations

import functools
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from flows import db, ledger, schema_ops
from flows.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, load_settings
from schemas import ddl
from schemas.errors import MigrationError, ReconciliationMismatch, RowsRejected

if TYPE_CHECKING:
    from flows.migrate import RunOptions

app = typer.Typer(
    name="circuit-migrate",
    help="Migrate a legacy Supabase circuit database to the per-user circuit schema.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="The target schema: print or apply its DDL.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

P = ParamSpec("P")
R = TypeVar("R")

SourceUrl = Annotated[
    str | None,
    typer.Option("--source-url", help="Legacy database URL [env: SOURCE_DATABASE_URL]."),
]


TargetUrl = Annotated[
    str | None,
    typer.Option("--target-url", help="Target database URL [env: TARGET_DATABASE_URL]."),
]
TargetSchema = Annotated[
    str | None,
    typer.Option("--target-schema", help="Schema of the target tables [default: public]."),
]
SourceSchema = Annotated[
    str | None,
    typer.Option("--source-schema", help="Schema of the legacy tables [default: public]."),
]


def clean_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a MigrationError into one red line and its exit code; redact any URL password."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except MigrationError as exc:
            err.print(f"[red]error:[/red] {db.redact(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper


@schema_app.command("sql")
def schema_sql(target_schema: TargetSchema = None) -> None:
    """Print the whole target DDL (tables, RLS, ledger) as one idempotent SQL file."""
    sys.stdout.write(ddl.schema_sql(target_schema or "public"))


@schema_app.command("shim-sql")
def schema_shim_sql() -> None:
    """Print the Supabase auth SHIM for plain PostgreSQL (tests and demos, never Supabase)."""
    sys.stdout.write(ddl.auth_shim_sql())


@schema_app.command("apply")
@clean_errors
def schema_apply(
    target_url: TargetUrl = None,
    target_schema: TargetSchema = None,
    auth_shim: Annotated[
        bool,
        typer.Option(
            "--auth-shim",
            help="On plain PostgreSQL: first add the Supabase auth shim where no auth schema is.",
        ),
    ] = False,
) -> None:
    """Apply the target DDL and the ledger to the target database (idempotent)."""
    settings = load_settings(target_database_url=target_url, target_schema=target_schema)
    url = settings.target_url()
    schema_ops.apply_target(url, settings.target_schema, auth_shim=auth_shim)
    out.print(f"target schema applied to {db.redact(url)} (schema {settings.target_schema})")


@app.command("stage-legacy")
@clean_errors
def stage_legacy(
    source_url: SourceUrl = None,
    schema: Annotated[str, typer.Option(help="Schema to move the legacy tables into.")] = "legacy",
) -> None:
    """One database for both: move the legacy tables from public into schema legacy."""
    url = load_settings(source_database_url=source_url).source_url()
    moved = schema_ops.stage_legacy(url, schema)
    out.print(f"moved {', '.join(moved)}; now run with --source-schema {schema}")


@app.command("unstage-legacy")
@clean_errors
def unstage_legacy(
    source_url: SourceUrl = None,
    schema: Annotated[str, typer.Option(help="Schema the legacy tables are in.")] = "legacy",
) -> None:
    """Undo stage-legacy: move the legacy tables back into public (refuses to overwrite)."""
    url = load_settings(source_database_url=source_url).source_url()
    moved = schema_ops.unstage_legacy(url, schema)
    out.print(f"moved {', '.join(moved)}")


@app.command("seed")
@clean_errors
def seed(
    users: Annotated[int, typer.Option(min=1, help="Number of users to generate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 0,
    target_url: TargetUrl = None,
    source_schema: SourceSchema = None,
    truth_schema: Annotated[
        str, typer.Option(help="Schema for the ground truth the pipeline never reads.")
    ] = "seed_truth",
    auth_shim: Annotated[
        bool, typer.Option("--auth-shim", help="Add the Supabase auth shim where none is.")
    ] = False,
) -> None:
    """Generate messy synthetic legacy data and load it (with its ground truth) by COPY."""
    from flows.seed import seed_database

    settings = load_settings(target_database_url=target_url, source_schema=source_schema)
    url = settings.target_url()
    if auth_shim:
        schema_ops.apply_auth_shim(url)
    summary = seed_database(
        url,
        users=users,
        seed=seed,
        source_schema=settings.source_schema,
        truth_schema=truth_schema,
    )
    out.print(
        f"seeded {summary.users} users: {summary.user_profiles} user_profiles, "
        f"{summary.user_sessions} user_sessions, {summary.tagged_models} tagged_models "
        f"in {summary.seconds:.1f} s (schema {settings.source_schema}; truth in {truth_schema})"
    )


TaskRunnerOption = Annotated[
    str,
    typer.Option(
        "--task-runner",
        help="Where batch tasks run: thread (a local thread pool) or dask (the dask extra).",
    ),
]
DaskAddressOption = Annotated[
    str | None,
    typer.Option(
        "--dask-address",
        help="With --task-runner dask: a scheduler, tcp://HOST:PORT [default: a local cluster].",
    ),
]


@app.command("run")
@clean_errors
def run(
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    source_schema: SourceSchema = None,
    target_schema: TargetSchema = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Users per batch.")] = DEFAULT_BATCH_SIZE,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Batches loaded at once.")
    ] = DEFAULT_CONCURRENCY,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Everything but the writes to target tables.")
    ] = False,
    link_overrides: Annotated[
        Path | None,
        typer.Option(help="CSV tagged_model_id,circuit_config_id (an edited review.csv)."),
    ] = None,
    report_dir: Annotated[Path, typer.Option(help="Where the run's report folder goes.")] = Path(
        "migration-reports"
    ),
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental/--full",
            help="Only users whose legacy data changed, new or deleted since they were last "
            "loaded (--incremental), or every user (--full).",
        ),
    ] = False,
    task_runner: TaskRunnerOption = "thread",
    dask_address: DaskAddressOption = None,
) -> None:
    """Migrate every legacy user to the target; exit 0 only when no batch failed, 6 when
    another run holds the target's run lock."""
    from flows.migrate import RunOptions  # Prefect loads only for the commands that run flows

    settings = load_settings(
        source_database_url=source_url,
        target_database_url=target_url,
        source_schema=source_schema,
        target_schema=target_schema,
    )
    options = RunOptions(
        source_schema=settings.source_schema,
        target_schema=settings.target_schema,
        batch_size=batch_size,
        concurrency=concurrency,
        dry_run=dry_run,
        link_overrides=str(link_overrides) if link_overrides else None,
        incremental=incremental,
        task_runner=task_runner,
        dask_address=dask_address,
    )
    _execute(settings.source_url(), settings.target_url(), options, report_dir)


@app.command("retry")
@clean_errors
def retry(
    run_id: Annotated[str, typer.Argument(help="The run whose unfinished batches to re-run.")],
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Batches at once.")] = None,
    report_dir: Annotated[Path, typer.Option(help="Where the run's report folder goes.")] = Path(
        "migration-reports"
    ),
    task_runner: TaskRunnerOption = "thread",
    dask_address: DaskAddressOption = None,
) -> None:
    """Re-run the run's failed batches, and those a killed process left pending or running."""
    from flows.migrate import RunOptions

    settings = load_settings(source_database_url=source_url, target_database_url=target_url)
    target = settings.target_url()
    with db.connect(target, autocommit=True) as conn:
        ledger.require_ledger(conn, settings.target_schema)
        record = ledger.get_run(conn, run_id)
        todo = ledger.unfinished_batches(conn, record.run_id)
    if not todo:
        out.print(f"run {record.run_id}: no failed or unfinished batch, nothing to retry")
        return
    known = {k: v for k, v in record.options.items() if k in RunOptions.__dataclass_fields__}
    options = RunOptions(**known)
    options = replace(options, task_runner=task_runner, dask_address=dask_address)
    if concurrency:
        options = replace(options, concurrency=concurrency)
    _execute(settings.source_url(), target, options, report_dir, run_id=record.run_id)


def _execute(
    source: str, target: str, options: RunOptions, report_dir: Path, run_id: str | None = None
) -> None:
    from flows.migrate import run_migration
    from flows.progress import progress_over_batches
    from flows.report_files import write_run_report

    retrying = run_id is not None
    run_id = run_id or str(uuid.uuid4())
    with progress_over_batches(target, run_id, err):
        summary = run_migration(source, target, options, run_id=run_id, retry=retrying)
    written = write_run_report(target, summary.run_id, report_dir)
    folder = written.folder
    style = "green" if summary.status == "succeeded" else "red"
    out.print(
        f"run {summary.run_id} [{style}]{summary.status}[/{style}]: "
        f"{len(summary.batches) - summary.failed} of {len(summary.batches)} batches succeeded"
        + (" (dry run: target tables untouched)" if options.dry_run else "")
    )
    if summary.plan.get("mode") == "incremental":
        out.print(
            f"incremental: {summary.plan.get('users_planned', 0)} users re-synced, "
            f"{summary.plan.get('users_unchanged', 0)} unchanged and skipped"
        )
    out.print(f"report: {folder}/ (report.md first; report.html in a browser)", soft_wrap=True)
    if summary.failed:
        for batch in summary.batches:
            if batch.status != "succeeded":
                err.print(f"  batch {batch.batch_no} failed: {batch.error}", soft_wrap=True)
        err.print(
            f"re-run the failed batches with: circuit-migrate retry {summary.run_id}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if written.rejected_rows:
        err.print(f"[red]{written.verdict['headline']}[/red]", soft_wrap=True)
        err.print(
            "these rows are quarantined (database_rejected) with the server's message in"
            f" {folder}/quarantine.csv; fix the cause and run again",
            soft_wrap=True,
        )
        raise typer.Exit(RowsRejected.exit_code)


@app.command("status")
@clean_errors
def status(
    run_id: Annotated[
        str | None, typer.Argument(help="A run; without it, the latest runs.")
    ] = None,
    target_url: TargetUrl = None,
) -> None:
    """Runs, or one run's batches, as a table."""
    settings = load_settings(target_database_url=target_url)
    with db.connect(settings.target_url(), autocommit=True) as conn:
        ledger.require_ledger(conn, settings.target_schema)
        if run_id is None:
            table = Table("run_id", "status", "dry run", "started", "finished", "batches")
            for row in ledger.recent_runs(conn):
                table.add_row(*[str(v) if v is not None else "" for v in row])
        else:
            record = ledger.get_run(conn, run_id)
            table = Table(
                "batch",
                "status",
                "attempts",
                "users",
                "started",
                "finished",
                "error",
                title=f"run {record.run_id}: {record.status}"
                + (" (dry run)" if record.dry_run else ""),
            )
            for row in ledger.batch_rows(conn, record.run_id):
                table.add_row(*[str(v) if v is not None else "" for v in row])
    out.print(table)


@app.command("verify")
@clean_errors
def verify(
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    source_schema: SourceSchema = None,
    target_schema: TargetSchema = None,
) -> None:
    """Check the target against the source with independent SQL (read-only), after any
    sequence of runs; exit 5 on any difference, naming every user that differs."""
    from flows.verify import verify as run_verify
    from reports.verification import summary_lines

    settings = load_settings(
        source_database_url=source_url,
        target_database_url=target_url,
        source_schema=source_schema,
        target_schema=target_schema,
    )
    result = run_verify(
        settings.source_url(),
        settings.target_url(),
        source_schema=settings.source_schema,
        target_schema=settings.target_schema,
    )
    for line in summary_lines(result):
        (out if result.ok else err).print(line, soft_wrap=True, markup=False)
    if not result.ok:
        raise typer.Exit(ReconciliationMismatch.exit_code)


@app.command("demo")
@clean_errors
def demo(
    target_url: Annotated[
        str | None,
        typer.Option(
            "--target-url",
            help="Use this server instead of an embedded one (database "
            "circuit_migrate_demo on it is dropped and recreated).",
        ),
    ] = None,
    users: Annotated[int, typer.Option(min=1, help="Synthetic users to seed.")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic data.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Users per batch.")] = 500,
    concurrency: Annotated[int, typer.Option(min=1, help="Batches loaded at once.")] = 2,
    report_dir: Annotated[Path, typer.Option(help="Where the run's report folder goes.")] = Path(
        "migration-reports"
    ),
) -> None:
    """Seed messy legacy data on a throwaway PostgreSQL and migrate it, end to end."""
    from contextlib import nullcontext

    from flows.demo import elapsed, embedded_server, fresh_database, prepare
    from flows.migrate import RunOptions
    from flows.verify import verify as run_verify
    from reports.verification import summary_lines

    start = time.perf_counter()
    server = nullcontext(target_url) if target_url else embedded_server(Path(".demo") / "postgres")
    with server as server_url:
        url = fresh_database(server_url)
        out.print(f"database: {db.redact(url)}")
        seeded = prepare(url, users=users, seed=seed)
        out.print(
            f"seeded {seeded.users} users: {seeded.user_profiles} legacy user_profiles, "
            f"{seeded.user_sessions} user_sessions, {seeded.tagged_models} tagged_models "
            f"(schema legacy) in {elapsed(start)}"
        )
        options = RunOptions(source_schema="legacy", batch_size=batch_size, concurrency=concurrency)
        _execute(url, url, options, report_dir)
        result = run_verify(url, url, source_schema="legacy")
        for line in summary_lines(result):
            (out if result.ok else err).print(line, soft_wrap=True, markup=False)
        if not result.ok:
            raise typer.Exit(ReconciliationMismatch.exit_code)
    out.print(f"demo finished in {elapsed(start)}")


@app.command("report")
@clean_errors
def report(
    run_id: Annotated[str, typer.Argument(help="The run whose report files to re-render.")],
    target_url: TargetUrl = None,
    report_dir: Annotated[Path, typer.Option(help="Where the run's report folder goes.")] = Path(
        "migration-reports"
    ),
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            metavar="OTHER_RUN_ID",
            help="Also show what changed from this other run (written as compare-<other>.json).",
        ),
    ] = None,
) -> None:
    """Re-render a run's report files from the ledger; --compare shows what changed."""
    from flows.report_files import compare_reports, comparison_tables, write_run_report

    target = load_settings(target_database_url=target_url).target_url()
    folder = write_run_report(target, run_id, report_dir).folder
    out.print(
        f"report: {folder / 'report.html'} (and report.json, report.md, CSV lists)",
        soft_wrap=True,
    )
    if compare is not None:
        comparison, path = compare_reports(target, folder.name, compare, report_dir)
        for table in comparison_tables(comparison):
            out.print(table)
        out.print(f"comparison: {path}", soft_wrap=True)


@app.command("serve")
@clean_errors
def serve(
    cron: Annotated[
        str | None, typer.Option("--cron", help='Cron schedule, e.g. "0 * * * *" (hourly).')
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", min=1, help="Seconds between runs.")
    ] = None,
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    source_schema: SourceSchema = None,
    target_schema: TargetSchema = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Users per batch.")] = DEFAULT_BATCH_SIZE,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Batches loaded at once.")
    ] = DEFAULT_CONCURRENCY,
    link_overrides: Annotated[
        Path | None,
        typer.Option(help="CSV tagged_model_id,circuit_config_id (an edited review.csv)."),
    ] = None,
    report_dir: Annotated[Path, typer.Option(help="Where each run's report folder goes.")] = Path(
        "migration-reports"
    ),
    name: Annotated[str, typer.Option(help="Name of the Prefect deployment.")] = "circuit-migrate",
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental/--full",
            help="Each run re-syncs only the users whose legacy data changed (--incremental), "
            "or every user (--full).",
        ),
    ] = True,
) -> None:
    """Serve the migration as a Prefect deployment on a schedule, until interrupted. The URLs
    stay in this process's environment for its runs; Prefect never stores them."""
    import os

    from flows.migrate import RunOptions, preflight
    from flows.serve import ScheduleOptions, build_deployment, serve_deployment

    settings = load_settings(
        source_database_url=source_url,
        target_database_url=target_url,
        source_schema=source_schema,
        target_schema=target_schema,
    )
    source, target = settings.source_url(), settings.target_url()
    overrides = str(link_overrides.resolve()) if link_overrides else None
    schedule = ScheduleOptions(
        source_schema=settings.source_schema,
        target_schema=settings.target_schema,
        batch_size=batch_size,
        concurrency=concurrency,
        link_overrides=overrides,
        report_dir=str(report_dir.resolve()),
        incremental=incremental,
    )
    deployment = build_deployment(cron=cron, interval=interval, options=schedule, name=name)
    preflight(
        source,
        target,
        RunOptions(
            source_schema=settings.source_schema,
            target_schema=settings.target_schema,
            link_overrides=overrides,
        ),
    )
    os.environ["SOURCE_DATABASE_URL"] = source  # inherited by the flow runs this process starts
    os.environ["TARGET_DATABASE_URL"] = target
    every = f"cron {cron!r}" if cron else f"every {interval:g} s"
    mode = "incremental" if incremental else "full"
    out.print(
        f"serving deployment scheduled-migrate/{name} ({every}, {mode} runs) from "
        f"{db.redact(source)} to {db.redact(target)}; Ctrl-C stops it",
        soft_wrap=True,
    )
    serve_deployment(deployment)


@app.command("cleanup")
@clean_errors
def cleanup(
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    source_schema: SourceSchema = None,
    target_schema: TargetSchema = None,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Do it (without: only say what would be done).")
    ] = False,
    drop: Annotated[
        bool, typer.Option("--drop", help="With --confirm: drop the archived legacy tables.")
    ] = False,
) -> None:
    """Retire the legacy tables, only after a clean run that verify confirms now: --confirm
    moves them into schema legacy_archive (undo: restore-legacy), --drop --confirm drops them."""
    from flows.cleanup import ARCHIVE_SCHEMA
    from flows.cleanup import cleanup as run_cleanup

    settings = load_settings(
        source_database_url=source_url,
        target_database_url=target_url,
        source_schema=source_schema,
        target_schema=target_schema,
    )
    result = run_cleanup(
        settings.source_url(),
        settings.target_url(),
        source_schema=settings.source_schema,
        target_schema=settings.target_schema,
        confirm=confirm,
        drop=drop,
    )
    out.print(
        f"guard passed: run {result.run_id} finished with every batch succeeded and verify "
        f"passes ({result.users_checked} users checked)",
        soft_wrap=True,
    )
    if not result.steps:
        out.print(
            f"the legacy tables are already in schema {ARCHIVE_SCHEMA}: nothing to do"
            " (--drop --confirm drops them; restore-legacy moves them back)",
            soft_wrap=True,
        )
    elif result.done:
        for step in result.steps:
            out.print(f"done: {step}", soft_wrap=True)
        if not drop:
            out.print("undo with: circuit-migrate restore-legacy", soft_wrap=True)
    else:
        for step in result.steps:
            out.print(f"would {step}", soft_wrap=True)
        out.print("nothing changed: add --confirm to do it", soft_wrap=True)


@app.command("restore-legacy")
@clean_errors
def restore_legacy(source_url: SourceUrl = None) -> None:
    """Undo cleanup --confirm: move the archived legacy tables back to the schema they came
    from (refuses to overwrite)."""
    from flows.cleanup import restore_legacy as run_restore

    url = load_settings(source_database_url=source_url).source_url()
    schema, moved = run_restore(url)
    out.print(f"moved {', '.join(moved)} (back into schema {schema})", soft_wrap=True)


@app.command("copy-auth-users")
@clean_errors
def copy_auth_users(
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    source_schema: SourceSchema = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be copied; change nothing.")
    ] = False,
) -> None:
    """Two databases: copy the auth users the legacy data needs (auth.users, auth.identities;
    ids and password hashes unchanged) from source to target in one transaction; idempotent;
    refuses (exit 4), copying nothing, when a target user with the same id differs."""
    from flows.auth_users import copy_auth_users as run_copy

    settings = load_settings(
        source_database_url=source_url, target_database_url=target_url, source_schema=source_schema
    )
    result = run_copy(
        settings.source_url(), settings.target_url(), settings.source_schema, dry_run=dry_run
    )
    if result.same_database:
        out.print("source and target are one database: its auth.users serves both; nothing to copy")
        return
    verb = "would copy" if dry_run else "copied"
    identities = (
        f"; {verb} {result.identities_copied:,} identities "
        f"({result.identities_present:,} already present)"
        if result.identities
        else "; auth.identities is not on both sides: no identities copied"
    )
    out.print(
        f"{result.needed:,} users the legacy data needs: {verb} {result.users_copied:,}, "
        f"{result.users_present:,} already present{identities}"
        + (" (dry run: nothing changed)" if dry_run else ""),
        soft_wrap=True,
    )


def main() -> None:
    """Console entry point."""
    app()
