"""The ``circuit-migrate`` command line: thin Typer commands; errors become one line and a code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from flows import db, schema_ops
from flows.settings import load_settings
from schemas import ddl
from schemas.errors import MigrationError

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
    from flows.seed import seed_database  # imported here: keeps the other commands light

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


def main() -> None:
    """Console entry point."""
    app()
