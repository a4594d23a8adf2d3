"""Scheduled runs: the ``scheduled-migrate`` flow served as a Prefect deployment.

The deployment's parameters are only non-secret options (schemas, batch sizing, the overrides
file, the report folder). The database URLs never enter Prefect: each scheduled run reads them
from ``SOURCE_DATABASE_URL`` / ``TARGET_DATABASE_URL`` in the environment of the process that
serves it (the runner passes its environment to the flow runs it starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from pydantic import ValidationError

from flows.migrate import RunOptions, RunSummary, run_migration
from flows.report_files import write_run_report
from flows.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, load_settings
from schemas.errors import ConfigurationError, MigrationError, RowsRejected

DEPLOYMENT_NAME = "circuit-migrate"


@dataclass(frozen=True)
class ScheduleOptions:
    """The non-secret options of a scheduled run: what the deployment stores as parameters."""

    source_schema: str | None = None
    target_schema: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    link_overrides: str | None = None
    report_dir: str = "migration-reports"
    incremental: bool = True
    drop_columns: tuple[str, ...] = ()

    def parameters(self) -> dict[str, Any]:
        """The deployment parameters (only values that differ from the flow's defaults)."""
        defaults = ScheduleOptions()
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name in self.__dataclass_fields__
            if (value := getattr(self, name)) != getattr(defaults, name)
        }


def run_options(
    source_schema: str | None,
    target_schema: str | None,
    batch_size: int,
    concurrency: int,
    link_overrides: str | None,
    incremental: bool = True,
    drop_columns: tuple[str, ...] = (),
) -> RunOptions:
    """The options of one scheduled run (incremental by default: only the users whose legacy
    data changed); unset schemas come from the settings/environment."""
    settings = load_settings(source_schema=source_schema, target_schema=target_schema)
    return RunOptions(
        source_schema=settings.source_schema,
        target_schema=settings.target_schema,
        batch_size=batch_size,
        concurrency=concurrency,
        link_overrides=link_overrides,
        incremental=incremental,
        drop_columns=tuple(drop_columns),
    )


@flow(name="scheduled-migrate", persist_result=False, log_prints=False)
def scheduled_migrate(
    source_schema: str | None = None,
    target_schema: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    link_overrides: str | None = None,
    report_dir: str = "migration-reports",
    incremental: bool = True,
    drop_columns: list[str] | None = None,
) -> str:
    """One scheduled run: URLs from the environment, then the ``migrate`` flow and its report
    files; fails (so Prefect shows it failed) when any batch failed or the target rejected
    rows. Returns the run id."""
    settings = load_settings()
    options = run_options(
        source_schema,
        target_schema,
        batch_size,
        concurrency,
        link_overrides,
        incremental,
        tuple(drop_columns or ()),
    )
    summary: RunSummary = run_migration(settings.source_url(), settings.target_url(), options)
    written = write_run_report(settings.target_url(), summary.run_id, Path(report_dir))
    if summary.failed:
        raise MigrationError(
            f"run {summary.run_id}: {summary.failed} of {len(summary.batches)} batches failed;"
            f" re-run them with: circuit-migrate retry {summary.run_id}",
            run_id=summary.run_id,
        )
    if written.rejected_rows:
        raise RowsRejected(f"run {summary.run_id}: {written.verdict['headline']}")
    return summary.run_id


def build_deployment(
    *,
    cron: str | None = None,
    interval: float | None = None,
    options: ScheduleOptions | None = None,
    name: str = DEPLOYMENT_NAME,
) -> RunnerDeployment:
    """The deployment of ``scheduled-migrate`` on exactly one of ``cron`` or ``interval``
    (seconds). At most one of its runs at a time (``concurrency_limit=1``)."""
    if (cron is None) == (interval is None):
        raise ConfigurationError("give exactly one of --cron or --interval")
    if interval is not None and interval <= 0:
        raise ConfigurationError("--interval must be a positive number of seconds")
    try:
        deployment = scheduled_migrate.to_deployment(
            name,
            cron=cron,
            interval=timedelta(seconds=interval) if interval is not None else None,
            parameters=(options or ScheduleOptions()).parameters(),
            concurrency_limit=1,
            description="circuit-migrate re-sync of the legacy database into the new schema"
            " (URLs from SOURCE_DATABASE_URL / TARGET_DATABASE_URL of the serving process).",
            tags=["circuit-migrate"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
    except ValidationError as exc:  # a malformed cron expression
        reason = "; ".join(str(e["msg"]) for e in exc.errors())
        raise ConfigurationError(f"cannot build the deployment: {reason}") from None
    except ValueError as exc:  # a banned character in the name
        raise ConfigurationError(f"cannot build the deployment: {exc}") from None
    assert isinstance(deployment, RunnerDeployment)  # sync context: not a coroutine
    return deployment


def serve_deployment(deployment: RunnerDeployment) -> None:
    """Serve ``deployment`` until interrupted (a long-running process)."""
    from prefect import serve

    serve(deployment)
