"""Scale-out: the same migration on a local Dask cluster and on the thread pool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from flows.migrate import RunOptions, run_migration, task_runner
from schemas.errors import ConfigurationError
from tests.flows.conftest import target_digest

pytest.importorskip("prefect_dask")

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS, SEED = 40, 13


def test_dask_and_thread_pool_give_identical_targets(
    seeded_db: Callable[[int, int], str],
) -> None:
    threads_url, dask_url = seeded_db(USERS, SEED), seeded_db(USERS, SEED)
    options = RunOptions(source_schema="legacy", batch_size=10, concurrency=2)
    on_threads = run_migration(threads_url, threads_url, options)
    on_dask = run_migration(dask_url, dask_url, replace(options, task_runner="dask"))
    assert on_threads.status == on_dask.status == "succeeded"
    assert len(on_dask.batches) == len(on_threads.batches) >= 4
    digest = target_digest(threads_url)
    assert set(digest.values()) != {"0:"}
    assert target_digest(dask_url) == digest


def test_task_runner_choice() -> None:
    from prefect_dask import DaskTaskRunner

    remote = task_runner(RunOptions(task_runner="dask", dask_address="tcp://10.0.0.1:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.1:8786"
    with pytest.raises(ConfigurationError, match="unknown task runner"):
        task_runner(RunOptions(task_runner="ray"))
