"""The Prefect flow ``migrate``: plan batches of users, then extract, transform, validate and load
each batch as one task, recording everything in the target's ledger.

Between tasks only ids, ranges and secrets travel (never frames or engines); tasks do not cache
(``NO_CACHE``): a batch must run every time it is asked to, and the loader makes re-running it
harmless. Transient database errors are retried by Prefect with backoff; any other error fails
only its batch, which stays recorded as failed for ``circuit-migrate retry``.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from flows import db, extract, ledger, spill
from flows.load import BatchUsers, write_ledger, write_target_isolating
from flows.lock import run_lock
from flows.memory import release_freed_memory
from flows.report_files import publish_report_artifacts
from flows.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY
from schemas.errors import (
    BatchReadMismatch,
    ConfigurationError,
    MigrationError,
    Transient,
    TransientLoadError,
)
from transforms.accounting import accounting
from transforms.pipeline import TransformResult, transform
from transforms.rejections import without_rejected_users

TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "57P01",  # admin_shutdown (pg_terminate_backend)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "08000",
    "08003",
    "08006",
    "08001",
    "08004",
}


@dataclass(frozen=True)
class RunOptions:
    """What a run does, as plain values (recorded in ``migration.runs.options``)."""

    source_schema: str = "public"
    target_schema: str = "public"
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    dry_run: bool = False
    link_overrides: str | None = None
    # Only users whose legacy digest changed, new users and deleted users (plus orphans).
    incremental: bool = False
    task_runner: str = "thread"  # thread | dask
    dask_address: str | None = None  # a running Dask scheduler; None: a local cluster


@dataclass(frozen=True)
class BatchOutcome:
    """How one batch ended."""

    batch_no: int
    status: str
    error: str | None = None
    counts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: its id, status, and batch outcomes."""

    run_id: str
    status: str
    batches: tuple[BatchOutcome, ...]
    plan: Mapping[str, Any] = field(default_factory=dict)  # a new run's mode and user counts
    # Seconds of the run's own stages: "plan" (snapshot, digests, batches), "report" (ledger
    # totals and Prefect artifacts); the batches record theirs in the ledger.
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Number of failed batches."""
        return sum(1 for b in self.batches if b.status != "succeeded")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the batch may help (connection lost, serialization, deadlock)."""
    if isinstance(exc, Transient):
        return True
    if isinstance(exc, psycopg.Error):
        state = getattr(exc, "sqlstate", None)
        if state in TRANSIENT_SQLSTATES:
            return True
        return isinstance(exc, psycopg.OperationalError) and state is None
    return False


def read_overrides(path: str | None) -> pl.DataFrame | None:
    """The reviewer's override CSV: ``tagged_model_id,circuit_config_id`` (others ignored)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"link overrides file not found: {path}")
    try:
        frame = pl.read_csv(file, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ConfigurationError(f"cannot read link overrides {path}: {exc}") from None
    missing = {"tagged_model_id", "circuit_config_id"} - set(frame.columns)
    if missing:
        raise ConfigurationError(f"link overrides {path} lack columns {sorted(missing)}")
    return (
        frame.select("tagged_model_id", "circuit_config_id")
        .with_columns(pl.all().str.strip_chars().str.to_lowercase())
        .filter(pl.col("tagged_model_id").is_not_null() & pl.col("circuit_config_id").is_not_null())
        .filter(pl.col("circuit_config_id") != "")
    )


def _transient_error(exc: BaseException) -> str:
    return db.redact(
        f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    )


def _links_summary(result: TransformResult) -> dict[str, Any]:
    by_method = result.links.group_by("method").len().sort("method").rows()
    return {
        "by_method": {method: int(n) for method, n in by_method},
        "needs_review": int(result.links["needs_review"].sum()),
    }


def run_batch(
    run_id: str,
    batch: extract.BatchRange,
    snapshot: str | None,
    source_url: str,
    target_url: str,
    options: RunOptions,
    spill_dir: str | None = None,
) -> dict[str, Any]:
    """Extract (from the run's spill files if ``spill_dir``, else from the source in
    ``snapshot``), transform, validate and load one batch; the load and its ledger rows commit
    together. Returns the batch's counts. Raises on any failure (the task decides what then)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if spill_dir is not None:
        # an incremental run planned from its users' digests: the batch carries them
        spilled = spill.read_batch(Path(spill_dir), batch, digests=not options.incremental)
        data = spilled.data
        digests = batch.digests if options.incremental else spilled.digests
    else:
        with db.connect(source_url, autocommit=True) as src:
            extract.use_snapshot(src, snapshot)
            data = extract.extract_batch(src, options.source_schema, batch)
            src.execute("rollback")
        digests = batch.digests
    timings["extract"] = time.perf_counter() - started
    _check_read(batch, data.read())

    started = time.perf_counter()
    result = transform(
        data.auth_users,
        data.user_sessions,
        data.tagged_models,
        data.user_profiles,
        overrides=read_overrides(options.link_overrides),
    )
    timings["transform"] = time.perf_counter() - started

    started = time.perf_counter()
    books = accounting(data.user_sessions, data.tagged_models, data.user_profiles, result)
    books.raise_for_mismatch()
    _check_read(batch, {"saved_profiles": books.tables["saved_profiles"].source})
    timings["validate"] = time.perf_counter() - started

    started = time.perf_counter()
    with db.connect(target_url) as dst, dst.transaction():
        # Only a batch whose earlier attempt committed has ledger rows to replace.
        replace = ledger.batch_loaded(dst, run_id, batch.batch_no)
        loaded = None
        rejected: dict[str, str] = {}
        if not options.dry_run:
            loaded, rejected = write_target_isolating(
                dst,
                options.target_schema,
                BatchUsers(batch.user_from, batch.user_to, batch.user_keys),
                {
                    "user_profiles": result.user_profiles,
                    "circuit_configurations": result.circuit_configurations,
                    "user_sessions": result.user_sessions,
                    "tagged_models": result.tagged_models,
                },
            )
        if rejected:
            result = without_rejected_users(
                data.user_sessions,
                data.tagged_models,
                data.user_profiles,
                result,
                pl.DataFrame(
                    {"user_id": list(rejected), "detail": list(rejected.values())},
                    schema={"user_id": pl.String, "detail": pl.String},
                ),
            )
            books = accounting(data.user_sessions, data.tagged_models, data.user_profiles, result)
            books.raise_for_mismatch()
        write_ledger(
            dst,
            run_id,
            batch.batch_no,
            {
                "id_map": result.id_map,
                "quarantine": result.quarantine,
                "repairs": result.repairs,
                "links": result.links,
            },
            keys=data.keys,
            links=not options.dry_run,
            replace=replace,
        )
        if not options.dry_run:
            ledger.write_digests(dst, run_id, batch.key_filter(), digests, rejected)
            ledger.write_user_runs(dst, run_id, batch, data.keys["user_key"].unique())
        timings["load"] = time.perf_counter() - started
        counts: dict[str, Any] = {
            "users": batch.users,
            "kind": "users" if batch.user_keys is not None else "range",
            "rows": data.rows(),
            "planned": dict(batch.planned),
            "tables": books.as_dict(),
            "targets": {
                "circuit_configurations": result.circuit_configurations.height,
                "user_profiles": result.user_profiles.height,
                "user_sessions": result.user_sessions.height,
                "tagged_models": result.tagged_models.height,
            },
            "written": asdict(loaded) if loaded else None,
            "links": _links_summary(result),
            "rejected_users": len(rejected),
            "repairs": result.repairs.height,
            "timings": {k: round(v, 4) for k, v in timings.items()},
        }
        ledger.finish_batch(dst, run_id, batch.batch_no, counts)
    return counts


def _check_read(batch: extract.BatchRange, read: Mapping[str, int]) -> None:
    """Raise unless the batch read exactly the rows the plan counted for its users in the
    run's snapshot (a batch that read less must never succeed)."""
    planned = dict(batch.planned)
    wrong = {t: (planned[t], n) for t, n in read.items() if t in planned and planned[t] != n}
    if wrong:
        raise BatchReadMismatch(batch.batch_no, wrong)


def _retry_transient(_task: object, _run: object, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # the state's exception, re-raised by Prefect
        return is_transient(exc)
    return False


@task(
    name="migrate-batch",
    task_run_name="batch-{batch.batch_no}",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 4, 10],
    retry_condition_fn=_retry_transient,
)
def migrate_batch(
    run_id: str,
    batch: extract.BatchRange,
    snapshot: str | None,
    source_url: SecretStr,
    target_url: SecretStr,
    options: RunOptions,
    spill_dir: str | None = None,
) -> BatchOutcome:
    """One batch as a Prefect task: transient errors raise (Prefect retries), others fail it."""
    target = target_url.get_secret_value()
    with db.connect(target, autocommit=True) as conn:
        ledger.start_batch(conn, run_id, batch.batch_no)
    try:
        counts = run_batch(
            run_id, batch, snapshot, source_url.get_secret_value(), target, options, spill_dir
        )
    except Exception as exc:
        release_freed_memory()
        message = _transient_error(exc)
        with db.connect(target, autocommit=True) as conn:
            ledger.fail_batch(conn, run_id, batch.batch_no, message)
        if is_transient(exc):
            raise TransientLoadError(message) from exc
        return BatchOutcome(batch.batch_no, "failed", message)
    release_freed_memory()
    return BatchOutcome(batch.batch_no, "succeeded", None, counts)


@flow(name="migrate", persist_result=False, log_prints=False)
def migrate(
    source_url: SecretStr,
    target_url: SecretStr,
    options: RunOptions,
    run_id: str | None = None,
    retry: bool = False,
    take_lock: bool = True,
) -> RunSummary:
    """Migrate every user (with ``options.incremental``, only the users whose legacy data
    changed; with ``retry``, the unfinished batches of ``run_id``). Holds the target's run
    lock unless ``take_lock`` is false (the caller holds it: :func:`run_migration`)."""
    if not retry:
        run_id = run_id or str(uuid.uuid4())
    if not take_lock:
        return _migrate(source_url, target_url, options, run_id, retry)
    lock_id = str(uuid.uuid4()) if retry or run_id is None else run_id
    with run_lock(
        target_url.get_secret_value(),
        options.target_schema,
        lock_id,
        dry_run=options.dry_run,
        options=_refused_options(options, run_id if retry else None),
    ):
        return _migrate(source_url, target_url, options, run_id, retry)


def _refused_options(options: RunOptions, retry_of: str | None) -> dict[str, Any]:
    return {**asdict(options), **({"retry_of": retry_of} if retry_of else {})}


def _plan(
    coordinator: psycopg.Connection,
    target: str,
    options: RunOptions,
    digests: Mapping[str, str],
) -> tuple[list[extract.BatchRange], dict[str, Any]]:
    """The batches of a new run, each with the rows its users own in the coordinator's
    snapshot, and what it planned (recorded as the run's ``plan``)."""
    if options.incremental:
        with db.connect(target, autocommit=True) as conn:
            stored = ledger.stored_digests(conn)
        counts = extract.user_row_counts(coordinator, options.source_schema)
        plan = extract.plan_incremental(
            options.batch_size,
            digests,
            stored,
            orphans=bool(counts["user_key"].null_count()),
        )
        batches = extract.with_planned(plan.batches, counts)
        return batches, {"mode": "incremental", **plan.as_dict()}
    batches = extract.plan_batches(coordinator, options.source_schema, options.batch_size)
    users = sum(batch.users for batch in batches)
    planned = {"mode": "full", "users_planned": users, "users_unchanged": 0}
    return extract.with_digests(batches, digests), planned


def spills(options: RunOptions, retry: bool) -> bool:
    """Whether a run extracts in one pass to local files (:mod:`flows.spill`): every new run
    whose batches run on this machine (not on a remote Dask cluster). A retry reads its
    batches from the source directly."""
    return not retry and not (options.task_runner == "dask" and options.dask_address)


def _migrate(
    source_url: SecretStr,
    target_url: SecretStr,
    options: RunOptions,
    run_id: str | None,
    retry: bool,
) -> RunSummary:
    from prefect import get_run_logger

    source, target = source_url.get_secret_value(), target_url.get_secret_value()
    planned: dict[str, Any] = {}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    spilling = spills(options, retry)
    spill_dir: str | None = None
    with db.connect(target, autocommit=True) as conn:
        ledger.require_ledger(conn, options.target_schema)
        if retry:
            assert run_id is not None
            ledger.get_run(conn, run_id)
            batches = ledger.unfinished_batches(conn, run_id)
            conn.execute(
                "update migration.runs set status = 'running', finished_at = null"
                " where run_id = %s",
                [run_id],
            )
    try:
        with db.connect(source, autocommit=True) as coordinator:
            extract.check_source(coordinator, options.source_schema)
            # Held open until every batch has read (or the one-pass extract is done): every
            # read of the run sees this snapshot.
            exported = extract.begin_snapshot(coordinator)
            snapshot: str | None = exported
            # Each batch writes its users' digests with its load (the next incremental run's
            # base); a spilled batch of a full run computes them from its own rows.
            digests = (
                extract.user_digests(coordinator, options.source_schema)
                if retry or options.incremental or not spilling
                else {}
            )
            if retry:
                counts = extract.user_row_counts(coordinator, options.source_schema)
                batches = extract.with_planned(extract.with_digests(batches, digests), counts)
            else:
                run_id = run_id or str(uuid.uuid4())
                batches, planned = _plan(coordinator, target, options, digests)
            timings["plan"] = time.perf_counter() - started
            if spilling:
                started = time.perf_counter()
                for stale in spill.remove_stale_folders():
                    get_run_logger().info(f"removed {stale}, left by a run that was killed")
                spill_dir = str(spill.new_folder())
                spill.spill(
                    source,
                    exported,
                    options.source_schema,
                    batches,
                    Path(spill_dir),
                    workers=min(options.concurrency, 4),
                    row_digests=not options.incremental,  # else the plan computed them
                    progress=get_run_logger().info,
                )
                coordinator.execute("rollback")  # the snapshot is no longer needed
                snapshot = None
                release_freed_memory()
                timings["extract"] = time.perf_counter() - started
            if not retry:
                with db.connect(target) as conn, conn.transaction():
                    ledger.create_run(
                        conn,
                        run_id,  # type: ignore[arg-type]
                        dry_run=options.dry_run,
                        options={**asdict(options), "plan": planned},
                    )
                    ledger.add_batches(conn, run_id, batches)  # type: ignore[arg-type]
            assert run_id is not None
            futures = [
                migrate_batch.submit(
                    run_id, batch, snapshot, source_url, target_url, options, spill_dir
                )
                for batch in batches
            ]
            outcomes = []
            for batch, future in zip(batches, futures, strict=True):
                try:
                    outcomes.append(future.result())
                except Exception as exc:  # transient errors that outlived their retries
                    outcomes.append(BatchOutcome(batch.batch_no, "failed", _transient_error(exc)))
            if snapshot is not None:
                coordinator.execute("rollback")
    finally:
        if spill_dir is not None:
            shutil.rmtree(spill_dir, ignore_errors=True)
    started = time.perf_counter()
    with db.connect(target, autocommit=True) as conn:
        status = ledger.finish_run(conn, run_id)
    publish_report_artifacts(target, run_id)
    timings["report"] = time.perf_counter() - started
    return RunSummary(run_id, status, tuple(outcomes), planned, timings)


def preflight(source_url: str, target_url: str, options: RunOptions) -> None:
    """Fail fast, before any flow starts, on bad URLs, unreachable servers, a missing target
    schema or ledger, a legacy schema that does not match, an unreadable overrides file, or
    (two databases) legacy users the target's auth.users lacks."""
    with db.connect(target_url, autocommit=True) as conn:
        ledger.require_ledger(conn, options.target_schema)
    with db.connect(source_url, autocommit=True) as conn:
        extract.check_source(conn, options.source_schema)
    read_overrides(options.link_overrides)
    from flows.auth_users import require_in_target

    require_in_target(source_url, target_url, options.source_schema)


def task_runner(options: RunOptions) -> Any:
    """The Prefect task runner of ``options``: a thread pool, or Dask (``prefect-dask``, the
    ``dask`` extra): the scheduler at ``dask_address``, else a small local cluster."""
    if options.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=options.concurrency)
    if options.task_runner != "dask":
        raise ConfigurationError(
            f"unknown task runner {options.task_runner!r} (expected thread or dask)"
        )
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigurationError(
            "--task-runner dask needs prefect-dask: pip install 'circuit-migrate[dask]'"
        ) from None
    if options.dask_address:
        return DaskTaskRunner(address=options.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": 2,
            "threads_per_worker": max(1, (options.concurrency + 1) // 2),
            "processes": False,
            "dashboard_address": None,
        }
    )


def run_migration(
    source_url: str,
    target_url: str,
    options: RunOptions,
    *,
    run_id: str | None = None,
    retry: bool = False,
) -> RunSummary:
    """Run the flow on the task runner of ``options`` (a thread pool of ``options.concurrency``
    workers, or Dask), holding the target's run lock from the preflight checks to the end."""
    if options.batch_size < 1 or options.concurrency < 1:
        raise ConfigurationError("--batch-size and --concurrency must be at least 1")
    runner = task_runner(options)
    run_id = run_id or str(uuid.uuid4())
    try:
        with run_lock(
            target_url,
            options.target_schema,
            str(uuid.uuid4()) if retry else run_id,
            dry_run=options.dry_run,
            options=_refused_options(options, run_id if retry else None),
        ):
            preflight(source_url, target_url, options)
            return migrate.with_options(task_runner=runner)(
                SecretStr(source_url),
                SecretStr(target_url),
                options,
                run_id=run_id,
                retry=retry,
                take_lock=False,
            )
    except MigrationError:
        raise
    except psycopg.Error as exc:
        raise MigrationError(_transient_error(exc)) from None
