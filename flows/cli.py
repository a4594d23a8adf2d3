"""The ``circuit-migrate`` command line: thin Typer commands; errors become one line and a code."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import psycopg
import psycopg.errors
import typer
from rich.console import Console

from flows import db, ledger, schema_ops
from flows.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, load_settings
from schemas import ddl
from schemas.errors import (
    ConnectionFailed,
    Interrupted,
    MigrationError,
    MissingPrivilege,
    ReconciliationMismatch,
    RowsRejected,
)

if TYPE_CHECKING:
    from flows.migrate import RunOptions, RunSummary

# Plain help (no rich markup): rich would eat "[env var: ...]" and "[default: ...]", and it keeps
# the docstrings' line breaks; plain help shows each command's first sentence, rewrapped.
app = typer.Typer(
    name="circuit-migrate",
    help="Migrate a legacy Supabase circuit database to the per-user circuit schema.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
schema_app = typer.Typer(
    help="The target schema: print or apply its DDL.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(schema_app, name="schema")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

P = ParamSpec("P")
R = TypeVar("R")

# The environment variables are read by flows.settings too; envvar= here shows them in --help.
SourceUrl = Annotated[
    str | None,
    typer.Option("--source-url", envvar="SOURCE_DATABASE_URL", help="Legacy database URL."),
]
TargetUrl = Annotated[
    str | None,
    typer.Option("--target-url", envvar="TARGET_DATABASE_URL", help="Target database URL."),
]
TargetSchema = Annotated[
    str | None,
    typer.Option(
        "--target-schema",
        envvar="TARGET_SCHEMA",
        show_default="public",
        help="Schema of the target tables.",
    ),
]
SourceSchema = Annotated[
    str | None,
    typer.Option(
        "--source-schema",
        envvar="SOURCE_SCHEMA",
        show_default="public",
        help="Schema of the legacy tables.",
    ),
]
RunIdArgument = Annotated[
    str,
    typer.Argument(metavar="RUN_ID", help="A run's id (as `status` lists them) or latest."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of tables or lines.")
]


def clean_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a MigrationError into one red line and its exit code; redact any URL password."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Interrupted as exc:
            err.print(f"[yellow]{db.redact(str(exc))}[/yellow]", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except MigrationError as exc:
            err.print(f"[red]error:[/red] {db.redact(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None
        except psycopg.Error as exc:
            code, what = _database_failure(exc)
            line = " ".join(str(exc).split())
            err.print(f"[red]error:[/red] {what}: {db.redact(line)}", soft_wrap=True)
            raise typer.Exit(code) from None
        except OSError as exc:
            err.print(f"[red]error:[/red] {db.redact(str(exc))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _database_failure(exc: psycopg.Error) -> tuple[int, str]:
    """(exit code, what happened) for a database error no check foresaw: the README's codes."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return MissingPrivilege.exit_code, "the connecting role lacks a privilege"
    if isinstance(exc, psycopg.OperationalError):
        return ConnectionFailed.exit_code, "the database connection failed or was ended"
    return 1, "the database refused"


@schema_app.command("sql")
def schema_sql(target_schema: TargetSchema = None) -> None:
    """Print the target DDL as one idempotent SQL file.

    Tables, row-level security and the migration ledger, for supabase/migrations/.
    """
    sys.stdout.write(ddl.schema_sql(target_schema or "public"))


@schema_app.command("shim-sql")
def schema_shim_sql() -> None:
    """Print a Supabase auth shim for plain PostgreSQL.

    For tests and demos; never on Supabase.
    """
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
    """Apply the target DDL and the ledger (idempotent)."""
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
    """Move the legacy tables from public into schema legacy.

    For one database holding both: the new tables can then take the public names.
    """
    url = load_settings(source_database_url=source_url).source_url()
    moved = schema_ops.stage_legacy(url, schema)
    out.print(f"moved {', '.join(moved.tables)}; now run with --source-schema {schema}")
    for dependent in moved.dependents:
        out.print(f"depends on a moved table: {dependent}", soft_wrap=True, markup=False)


@app.command("unstage-legacy")
@clean_errors
def unstage_legacy(
    source_url: SourceUrl = None,
    schema: Annotated[str, typer.Option(help="Schema the legacy tables are in.")] = "legacy",
) -> None:
    """Undo stage-legacy: move the legacy tables back to public.

    Refuses to overwrite anything.
    """
    url = load_settings(source_database_url=source_url).source_url()
    moved = schema_ops.unstage_legacy(url, schema)
    out.print(f"moved {', '.join(moved.tables)}")
    for dependent in moved.dependents:
        out.print(f"depends on a moved table: {dependent}", soft_wrap=True, markup=False)


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
    schema_state: Annotated[
        str,
        typer.Option(
            "--schema-state",
            help="Legacy schema state to build: S1 (DESIGN.md section 3), S2, S3 or S4.",
        ),
    ] = "S1",
) -> None:
    """Generate messy synthetic legacy data and load it by COPY.

    The ground truth goes to --truth-schema, which the pipeline never reads.
    """
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
        schema_state=schema_state,
    )
    configs = "".join(
        f"{n} {table}, "
        for table, n in (
            ("saved_configurations", summary.saved_configurations),
            ("circuit_configurations", summary.circuit_configurations),
        )
        if n
    )
    state = "" if summary.schema_state == "S1" else f", state {summary.schema_state}"
    out.print(
        f"seeded {summary.users} users: {summary.user_profiles} user_profiles, {configs}"
        f"{summary.user_sessions} user_sessions, {summary.tagged_models} tagged_models "
        f"in {summary.seconds:.1f} s (schema {settings.source_schema}{state}; "
        f"truth in {truth_schema})"
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


DropColumnOption = Annotated[
    list[str] | None,
    typer.Option(
        "--drop-column",
        metavar="TABLE.COLUMN",
        help="Drop this legacy column the target has no place for (repeatable; see `inspect`).",
    ),
]


@app.command("inspect")
@clean_errors
def inspect_source(
    source_url: SourceUrl = None,
    source_schema: SourceSchema = None,
    drop_column: DropColumnOption = None,
) -> None:
    """Name the legacy schema's state and every legacy column's fate; exit 4 on a problem."""
    from flows.inspect import inspect

    settings = load_settings(source_database_url=source_url, source_schema=source_schema)
    with db.connect(settings.source_url(), autocommit=True) as conn:
        found = inspect(conn, settings.source_schema, drop_column or ())
    for line in found.lines():
        out.print(line, soft_wrap=True, markup=False)
    found.raise_for_problems()


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
    drop_column: DropColumnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Migrate every legacy user to the target.

    Exit 0 only when no batch failed and the target rejected no row; 6 when another run holds
    the target's run lock.
    """
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
        drop_columns=tuple(drop_column or ()),
    )
    _execute(settings.source_url(), settings.target_url(), options, report_dir, as_json=as_json)


@app.command("retry")
@clean_errors
def retry(
    run_id: RunIdArgument,
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Batches at once.")] = None,
    report_dir: Annotated[Path, typer.Option(help="Where the run's report folder goes.")] = Path(
        "migration-reports"
    ),
    task_runner: TaskRunnerOption = "thread",
    dask_address: DaskAddressOption = None,
) -> None:
    """Re-run a run's failed and unfinished batches.

    Those a killed or interrupted process left pending or running too, with the run's own
    options; the reviewer's recorded decisions apply (no overrides file is read again).
    """
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
    options = replace(
        options,
        task_runner=task_runner,
        dask_address=dask_address,
        link_overrides=None,  # imported into the ledger by the run: its decisions apply
        drop_columns=tuple(options.drop_columns),
    )
    if concurrency:
        options = replace(options, concurrency=concurrency)
    _execute(settings.source_url(), target, options, report_dir, run_id=record.run_id)


def _report_interrupted(summary: RunSummary) -> NoReturn:
    """Say how far an interrupted run got and how to resume it; exit 128 + the signal."""
    from flows.interrupts import signal_name

    done = len(summary.batches) - summary.failed
    failed = sum(1 for batch in summary.batches if batch.status == "failed")
    out.print(
        f"run {summary.run_id} [yellow]interrupted[/yellow] by"
        f" {signal_name(summary.stopped_by)}: {done} of {len(summary.batches)} batches"
        f" succeeded" + (f", {failed} failed" if failed else ""),
        soft_wrap=True,
    )
    err.print(f"resume with: circuit-migrate retry {summary.run_id}", soft_wrap=True)
    raise typer.Exit(128 + summary.stopped_by)


def _execute(
    source: str,
    target: str,
    options: RunOptions,
    report_dir: Path,
    run_id: str | None = None,
    *,
    as_json: bool = False,
) -> None:
    from flows import interrupts
    from flows.migrate import run_migration
    from flows.prefect_runtime import quiet_migration_errors, start_temporary_server
    from flows.progress import progress_over_batches
    from flows.report_files import flow_run_url, require_writable, write_run_report
    from reports.terminal import run_document, run_summary, to_json

    require_writable(report_dir)
    retrying = run_id is not None
    the_run = run_id or str(uuid.uuid4())
    prefect_configured = bool(os.environ.get("PREFECT_API_URL"))  # not our temporary server
    # SIGINT and SIGTERM stop the run cleanly (flows/interrupts.py): the flow runs in a worker
    # thread, this one handles the signals.
    with interrupts.handling_signals():
        quiet_migration_errors()
        server = start_temporary_server()
        if server is not None:
            interrupts.at_hard_stop(lambda: os.kill(server, signal.SIGKILL))
        with progress_over_batches(target, the_run, err):
            summary = interrupts.run_in_thread(
                lambda: run_migration(source, target, options, run_id=the_run, retry=retrying)
            )
    if summary.status == "interrupted":
        _report_interrupted(summary)
    written = write_run_report(target, summary.run_id, report_dir)
    folder = written.folder
    link = flow_run_url(summary.run_id) if prefect_configured else None
    if as_json:
        sys.stdout.write(to_json(run_document(written.report, str(folder), link)) + "\n")
    else:
        style = "green" if summary.status == "succeeded" else "red"
        out.print(
            f"run {summary.run_id} [{style}]{summary.status}[/{style}]: "
            f"{len(summary.batches) - summary.failed} of {len(summary.batches)} batches"
            " succeeded" + (" (dry run: target tables untouched)" if options.dry_run else "")
        )
        if summary.plan.get("mode") == "incremental":
            out.print(
                f"incremental: {summary.plan.get('users_planned', 0)} users re-synced, "
                f"{summary.plan.get('users_unchanged', 0)} unchanged and skipped"
            )
        out.print(run_summary(written.report))
        out.print(f"report: {folder}/ (report.md first; report.html in a browser)", soft_wrap=True)
        if link:
            out.print(f"Prefect flow run: {link}", soft_wrap=True)
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
        str | None,
        typer.Argument(metavar="RUN_ID", help="A run's id or latest; without it, the latest runs."),
    ] = None,
    target_url: TargetUrl = None,
    limit: Annotated[int, typer.Option(min=1, help="Runs listed without RUN_ID.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the latest runs, or one run's batches.

    Run ids are printed whole; RUN_ID may be latest.
    """
    from reports.terminal import batches_table, runs_table, to_json

    settings = load_settings(target_database_url=target_url)
    with db.connect(settings.target_url(), autocommit=True) as conn:
        ledger.require_ledger(conn, settings.target_schema)
        if run_id is None:
            runs = [run.as_dict() for run in ledger.recent_runs(conn, limit)]
            if as_json:
                sys.stdout.write(to_json(runs) + "\n")
                return
            out.print(runs_table(runs))
            return
        record = ledger.get_run(conn, run_id)
        run = {**ledger.run_listing(conn, record).as_dict(), "options": dict(record.options)}
        batches = [batch.as_dict() for batch in ledger.batch_rows(conn, record.run_id)]
    if as_json:
        sys.stdout.write(to_json({**run, "batch_list": batches}) + "\n")
        return
    out.print(batches_table(run, batches))


@app.command("verify")
@clean_errors
def verify(
    source_url: SourceUrl = None,
    target_url: TargetUrl = None,
    source_schema: SourceSchema = None,
    target_schema: TargetSchema = None,
    as_json: JsonOption = False,
) -> None:
    """Check the target against the source, independently.

    Read-only, with its own SQL, after any sequence of runs; exit 5 on any difference, naming
    every user that differs (--json: every difference as JSON on stdout).
    """
    from flows.cleanup import locate_legacy
    from flows.verify import verify as run_verify
    from reports.terminal import to_json, verification_document
    from reports.verification import summary_lines

    settings = load_settings(
        source_database_url=source_url,
        target_database_url=target_url,
        source_schema=source_schema,
        target_schema=target_schema,
    )
    location = locate_legacy(settings.source_url(), settings.source_schema)
    if location != settings.source_schema:
        err.print(
            f"the legacy tables are in schema {location} (`cleanup --confirm` archived them):"
            " verifying against them",
            soft_wrap=True,
        )
    result = run_verify(
        settings.source_url(),
        settings.target_url(),
        source_schema=location,
        target_schema=settings.target_schema,
    )
    if as_json:
        sys.stdout.write(to_json(verification_document(result)) + "\n")
    else:
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
    """Seed messy data on a throwaway PostgreSQL and migrate it.

    End to end: seed, schema, run, report and verify.
    """
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
    run_id: RunIdArgument,
    target_url: TargetUrl = None,
    report_dir: Annotated[Path, typer.Option(help="Where the run's report folder goes.")] = Path(
        "migration-reports"
    ),
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            metavar="OTHER_RUN_ID",
            help="Also show what changed from this other run (written as compare-<other>.json; "
            "a run's id or latest).",
        ),
    ] = None,
) -> None:
    """Re-render a run's report files from the ledger.

    Also rewrites index.html (every run) in --report-dir; --compare shows what changed from
    another run.
    """
    from flows.report_files import compare_reports, comparison_tables, write_run_report
    from reports.reconcile import INDEX_FILE

    target = load_settings(target_database_url=target_url).target_url()
    folder = write_run_report(target, run_id, report_dir).folder
    out.print(
        f"report: {folder / 'report.html'} (and report.json, report.md, CSV lists)",
        soft_wrap=True,
    )
    out.print(f"every run: {report_dir / INDEX_FILE}", soft_wrap=True)
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
    drop_column: DropColumnOption = None,
) -> None:
    """Serve the migration on a schedule (a Prefect deployment).

    Until interrupted. The URLs stay in this process's environment for its runs; Prefect never
    stores them.
    """
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
        drop_columns=tuple(drop_column or ()),
    )
    from flows.report_files import require_writable

    require_writable(report_dir)
    deployment = build_deployment(cron=cron, interval=interval, options=schedule, name=name)
    preflight(
        source,
        target,
        RunOptions(
            source_schema=settings.source_schema,
            target_schema=settings.target_schema,
            link_overrides=overrides,
            drop_columns=tuple(drop_column or ()),
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
    """Retire the legacy tables after a clean, verified run.

    Only after a clean run that verify confirms now: --confirm moves them into schema
    legacy_archive (undo: restore-legacy), --drop --confirm drops them.
    """
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
        if result.blocker:
            out.print(f"[yellow]but --confirm would be refused:[/yellow] {result.blocker}")
        out.print("nothing changed: add --confirm to do it", soft_wrap=True)


@app.command("restore-legacy")
@clean_errors
def restore_legacy(source_url: SourceUrl = None) -> None:
    """Undo cleanup --confirm: move the legacy tables back.

    Into the schema they came from (refuses to overwrite).
    """
    from flows.cleanup import restore_legacy as run_restore

    url = load_settings(source_database_url=source_url).source_url()
    schema, moved = run_restore(url)
    out.print(f"moved {', '.join(moved)} (back into schema {schema})", soft_wrap=True)


review_app = typer.Typer(
    help="The reviewer's link decisions, recorded in the ledger.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(review_app, name="review")


@review_app.command("import")
@clean_errors
def review_import(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A review.csv with circuit_config_id filled in."),
    ],
    target_url: TargetUrl = None,
    target_schema: TargetSchema = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only say what would be recorded; record nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Record the decisions filled in a review.csv in the ledger.

    In circuit_config_id: a candidate's id, accept (the suggestion) or clear (withdraw an
    earlier decision); empty rows stay undecided. Every later run applies what is recorded.
    """
    from flows.decisions import import_file
    from reports.review import import_lines
    from reports.terminal import to_json

    settings = load_settings(target_database_url=target_url, target_schema=target_schema)
    result = import_file(settings.target_url(), file, settings.target_schema, check=check)
    if as_json:
        sys.stdout.write(to_json(result.as_dict()) + "\n")
        return
    for line in import_lines(result.as_dict()):
        out.print(line, soft_wrap=True, markup=False, highlight=False)


@app.command("explain")
@clean_errors
def explain(
    item: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="A legacy id (user_profiles row, session, tagged model, <session id>#<index> or"
            " a saved_profiles element's own id) or a target id.",
        ),
    ],
    source_url: Annotated[
        str | None,
        typer.Option(
            "--source-url",
            envvar="SOURCE_DATABASE_URL",
            help="Legacy database URL (optional: adds the legacy row and every candidate's score"
            " recomputed now; needed for an element's own id).",
        ),
    ] = None,
    target_url: TargetUrl = None,
    source_schema: Annotated[
        str | None,
        typer.Option(
            "--source-schema",
            envvar="SOURCE_SCHEMA",
            show_default="the latest run's",
            help="Schema of the legacy tables.",
        ),
    ] = None,
    target_schema: TargetSchema = None,
    recompute: Annotated[
        bool,
        typer.Option(
            "--recompute/--no-recompute",
            help="With the source: recompute every candidate of a tagged model.",
        ),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Say what became of one legacy or target row, and why.

    Migrated, merged into which row or quarantined why; its link, every candidate with its
    score and evidence, the repairs, the reviewer's decision and the run and batch that wrote
    it (--json for tools).
    """
    from flows.explain import explain as run_explain
    from reports.explain import explain_view
    from reports.terminal import to_json

    settings = load_settings(
        source_database_url=source_url, target_database_url=target_url, target_schema=target_schema
    )
    source = settings.source_url() if settings.source_database_url else None
    document = run_explain(
        settings.target_url(),
        item,
        source_url=source,
        source_schema=source_schema,
        target_schema=settings.target_schema,
        recompute=recompute,
    )
    if as_json:
        sys.stdout.write(to_json(document) + "\n")
        return
    out.print(explain_view(document), soft_wrap=True)


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
    """Copy the auth users the legacy data needs to the target.

    Two databases: auth.users and auth.identities rows, ids and password hashes unchanged,
    from source to target in one transaction; idempotent; refuses (exit 4), copying nothing,
    when a target user with the same id differs.
    """
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
