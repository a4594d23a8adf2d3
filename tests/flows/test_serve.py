"""``serve``: the scheduled deployment is built with its schedule, flow and non-secret
parameters (checked without serving it), and one scheduled run migrates with URLs from the
environment."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.deployments.runner import RunnerDeployment
from typer.testing import CliRunner

from flows import schema_ops, serve
from flows.cli import app
from flows.serve import ScheduleOptions, build_deployment, scheduled_migrate
from schemas.errors import ConfigurationError

runner = CliRunner()


def test_cron_deployment_has_the_schedule_flow_and_parameters() -> None:
    options = ScheduleOptions(source_schema="legacy", batch_size=100)
    deployment = build_deployment(cron="0 * * * *", options=options)
    assert deployment.name == "circuit-migrate"
    assert deployment.flow_name == "scheduled-migrate"
    assert deployment.entrypoint == "flows.serve.scheduled_migrate"
    assert deployment.parameters == {"source_schema": "legacy", "batch_size": 100}
    assert deployment.concurrency_limit == 1
    [entry] = deployment.schedules or []
    assert isinstance(entry.schedule, CronSchedule) and entry.schedule.cron == "0 * * * *"
    assert entry.active
    # The flow takes no URL: nothing secret can be stored as a deployment parameter.
    accepted = set(deployment._parameter_openapi_schema.properties)
    assert accepted == {
        "source_schema",
        "target_schema",
        "batch_size",
        "concurrency",
        "link_overrides",
        "report_dir",
        "incremental",
        "drop_columns",
    }


def test_interval_deployment() -> None:
    deployment = build_deployment(interval=900, name="resync")
    [entry] = deployment.schedules or []
    assert isinstance(entry.schedule, IntervalSchedule)
    assert entry.schedule.interval == timedelta(seconds=900)
    assert deployment.name == "resync" and deployment.parameters == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --cron or --interval"),
        ({"cron": "0 * * * *", "interval": 60.0}, "exactly one of --cron or --interval"),
        ({"cron": "not a cron"}, "Invalid cron string"),
        ({"interval": 0.0}, "positive"),
    ],
)
def test_bad_schedules_are_configuration_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        build_deployment(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_serve_command_builds_the_deployment_and_keeps_urls_out(
    make_db: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = make_db("serve_cli")
    schema_ops.apply_legacy(url, "legacy")
    schema_ops.apply_target(url)
    secret_url = url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    served: list[RunnerDeployment] = []
    monkeypatch.setattr(serve, "serve_deployment", served.append)
    # serve puts the URLs into os.environ for its runs: setenv makes the test undo that.
    monkeypatch.setenv("SOURCE_DATABASE_URL", "")
    monkeypatch.setenv("TARGET_DATABASE_URL", "")
    result = runner.invoke(
        app,
        [
            "serve",
            "--cron",
            "*/15 * * * *",
            "--source-url",
            secret_url,
            "--target-url",
            secret_url,
            "--source-schema",
            "legacy",
            "--report-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "serving deployment" in result.output
    [deployment] = served
    [entry] = deployment.schedules or []
    assert isinstance(entry.schedule, CronSchedule) and entry.schedule.cron == "*/15 * * * *"
    assert deployment.parameters["source_schema"] == "legacy"
    assert deployment.parameters["report_dir"] == str(tmp_path.resolve())
    assert deployment.parameters.get("incremental", True) is True  # scheduled: incremental
    assert "hunter2" not in json.dumps(deployment.model_dump(mode="json"), default=str)

    code = runner.invoke(app, ["serve", "--target-url", url, "--source-url", url]).exit_code
    assert code == 2  # neither --cron nor --interval
    result = runner.invoke(
        app, ["serve", "--interval", "60", "--source-url", url, "--target-url", url]
    )  # preflight: the legacy tables are in schema legacy, not public
    assert result.exit_code == 4 and "holds circuit-migrate's new tables" in result.output


@pytest.mark.usefixtures("prefect_harness")
def test_a_scheduled_run_reads_the_urls_from_the_environment(
    seeded_db: Callable[[int, int], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = seeded_db(20, 5)
    monkeypatch.setenv("SOURCE_DATABASE_URL", url)
    monkeypatch.setenv("TARGET_DATABASE_URL", url)
    run_id = scheduled_migrate(source_schema="legacy", batch_size=10, report_dir=str(tmp_path))
    assert (tmp_path / run_id / "report.json").is_file()
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select status, dry_run, options->'incremental' from migration.runs where run_id = %s",
            [run_id],
        ).fetchone()
    assert row == ("succeeded", False, True)  # scheduled runs are incremental by default
