"""The Prefect flow ``migrate``: plan batches of users, then extract, transform, validate and load
each batch as one task, recording everything in the target's ledger.

Between tasks only ids, ranges and secrets travel (never frames or engines); tasks do not cache
(``NO_CACHE``): a batch must run every time it is asked to, and the loader makes re-running it
harmless. Transient database errors are retried with backoff; any other error fails only its
batch, which stays recorded as failed for ``circuit-migrate retry``. A SIGINT or SIGTERM
(:mod:`flows.interrupts`) stops the run cleanly; a run that lost its lock commits no further
batch (:mod:`flows.lock`).
"""

from __future__ import annotations

import queue
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from flows import db, decisions, extract, interrupts, ledger, spill
from flows.inspect import Inspection
from flows.load import BatchUsers, write_ledger, write_target_isolating
from flows.lock import RunGuard, guard_commit, guard_of, held, lost, run_lock
from flows.memory import release_freed_memory
from flows.report_files import migrate_flow_run_name, publish_report_artifacts
from flows.settings import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY
from schemas.errors import (
    BatchReadMismatch,
    ConfigurationError,
    Interrupted,
    MigrationError,
    RunLockLost,
    Transient,
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
RETRY_DELAYS = (1.0, 4.0, 10.0)  # seconds before each new attempt after a transient error
NOT_STARTED = "not started: the run was interrupted"


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
    # Legacy columns the target has no place for that the operator chose to drop (TABLE.COLUMN).
    drop_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchOutcome:
    """How one batch ended."""

    batch_no: int
    status: str
    error: str | None = None
    counts: Mapping[str, Any] = field(default_factory=dict)
    halt: bool = False  # the run lost its lock: start no further batch


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
    stopped_by: int = 0  # the signal that interrupted the run (status 'interrupted')
    recorded: bool = True  # False: interrupted before its batches were in the ledger

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


def read_overrides(path: str | None, target_url: str | None = None) -> pl.DataFrame | None:
    """The link overrides a batch applies (``tagged_model_id, circuit_config_id``): the
    reviewer's decisions recorded in the ledger of ``target_url`` (``migration.review_decisions``,
    see :mod:`flows.decisions`), merged with the explicit choices of the decisions file ``path``
    (a filled-in review.csv; its rows win). A run imports its ``--link-overrides`` file into the
    ledger before any batch starts (:func:`preflight`), so its batches pass no file: rows the
    import rejected never apply. None when given neither."""
    if path is None and target_url is None:
        return None
    recorded = None if target_url is None else decisions.recorded_overrides(target_url)
    chosen = None if path is None else decisions.file_overrides(path)
    if recorded is None or chosen is None:
        return recorded if chosen is None else chosen
    kept = recorded.join(chosen, on="tagged_model_id", how="anti")
    return pl.concat([chosen, kept]).sort("tagged_model_id")


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
    guard: RunGuard | None = None,
) -> dict[str, Any]:
    """Extract (from the run's spill files if ``spill_dir``, else from the source in
    ``snapshot``), transform, validate and load one batch; the load and its ledger rows commit
    together, and only while the run holds its lock (``guard``). Returns the batch's counts.
    Raises on any failure (the task decides what then), :class:`Interrupted` when a signal
    stopped it before its load."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if spill_dir is not None:
        # an incremental run planned from its users' digests: the batch carries them
        spilled = spill.read_batch(Path(spill_dir), batch, digests=not options.incremental)
        data = spilled.data
        digests = batch.digests if options.incremental else spilled.digests
    else:
        with db.connect(source_url, autocommit=True) as src, interrupts.cancel_on_stop(src):
            extract.use_snapshot(src, snapshot)
            source = extract.check_source(src, options.source_schema, options.drop_columns)
            data = extract.extract_batch(src, source, batch)
            src.execute("rollback")
        digests = batch.digests
    timings["extract"] = time.perf_counter() - started
    _check_read(batch, data.read())
    interrupts.check()

    started = time.perf_counter()
    overrides = read_overrides(None, target_url)  # the run imported its file at its start
    result = transform(
        data.auth_users,
        data.user_sessions,
        data.tagged_models,
        data.user_profiles,
        overrides=overrides,
        app_configurations=data.app_configurations,
        profile_metadata=data.profile_metadata,
    )
    timings["transform"] = time.perf_counter() - started

    started = time.perf_counter()
    extra = (data.app_configurations, data.profile_metadata)
    books = accounting(data.user_sessions, data.tagged_models, data.user_profiles, result, *extra)
    books.raise_for_mismatch()
    _check_read(batch, {"saved_profiles": books.tables["saved_profiles"].source})
    timings["validate"] = time.perf_counter() - started

    interrupts.check()
    started = time.perf_counter()
    with (
        db.connect(target_url) as dst,
        interrupts.cancel_on_stop(dst, interrupts.LOAD_GRACE),
        dst.transaction(),
    ):
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
                *extra,
            )
            books = accounting(
                data.user_sessions, data.tagged_models, data.user_profiles, result, *extra
            )
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
        reviewed = decisions.record_review(
            dst, run_id, batch.batch_no, result, overrides, data.keys
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
            "links": {**_links_summary(result), "decisions": reviewed},
            "rejected_users": len(rejected),
            "repairs": result.repairs.height,
            "timings": {k: round(v, 4) for k, v in timings.items()},
        }
        ledger.finish_batch(dst, run_id, batch.batch_no, counts)
        if guard is not None:
            guard_commit(dst, guard, run_id)
    return counts


def _check_read(batch: extract.BatchRange, read: Mapping[str, int]) -> None:
    """Raise unless the batch read exactly the rows the plan counted for its users in the
    run's snapshot (a batch that read less must never succeed)."""
    planned = dict(batch.planned)
    wrong = {t: (planned[t], n) for t, n in read.items() if t in planned and planned[t] != n}
    if wrong:
        raise BatchReadMismatch(batch.batch_no, wrong)


def _stopped_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is how an interrupt stopped a batch (nothing of it committed)."""
    if isinstance(exc, Interrupted):
        return True
    return interrupts.requested() and isinstance(exc, psycopg.errors.QueryCanceled)


def _record(target: str, write: Callable[[psycopg.Connection], None]) -> None:
    """Write a batch's outcome to the ledger; if that fails too, the batch stays 'running'
    (``retry`` re-runs it all the same)."""
    with suppress(psycopg.Error), db.connect(target, autocommit=True) as conn:
        write(conn)


def _not_started(
    batch: extract.BatchRange, error: str | None, reason: str, *, halt: bool = False
) -> BatchOutcome:
    """A batch that did not start (again): pending, or failed with its last attempt's error."""
    if error is None:
        return BatchOutcome(batch.batch_no, "pending", reason, halt=halt)
    return BatchOutcome(batch.batch_no, "failed", error, halt=halt)


@task(name="migrate-batch", task_run_name="batch-{batch.batch_no}", cache_policy=NO_CACHE)
def migrate_batch(
    run_id: str,
    batch: extract.BatchRange,
    snapshot: str | None,
    source_url: SecretStr,
    target_url: SecretStr,
    options: RunOptions,
    spill_dir: str | None = None,
    guard: RunGuard | None = None,
) -> BatchOutcome:
    """One batch as a Prefect task; never raises. A transient error is retried here after
    each of ``RETRY_DELAYS`` (a wait an interrupt cuts short), any other error fails the batch.
    It does not start once the run is interrupted or has lost its lock (``guard``); an
    interrupt that stops it before its commit puts it back to pending."""
    target, no = target_url.get_secret_value(), batch.batch_no
    error: str | None = None  # the last attempt's
    for delay in (*RETRY_DELAYS, None):
        try:
            with db.connect(target, autocommit=True) as conn:
                if guard is not None and not held(conn, guard):
                    return _not_started(batch, error, str(lost(run_id, guard)), halt=True)
                if interrupts.requested() or not ledger.claim_batch(conn, run_id, no):
                    return _not_started(batch, error, NOT_STARTED)
            source = source_url.get_secret_value()
            counts = run_batch(run_id, batch, snapshot, source, target, options, spill_dir, guard)
        except Exception as exc:
            release_freed_memory()
            error = _transient_error(exc)
            if _stopped_by_interrupt(exc):
                why = "stopped before its load" if isinstance(exc, Interrupted) else "rolled back"
                note = f"{interrupts.reason()}: {why}"
                release = partial(ledger.release_batch, run_id=run_id, batch_no=no, note=note)
                _record(target, release)
                return BatchOutcome(no, "pending", note)
            _record(target, partial(ledger.fail_batch, run_id=run_id, batch_no=no, error=error))
            if isinstance(exc, RunLockLost):
                return BatchOutcome(no, "failed", error, halt=True)
            if is_transient(exc) and delay is not None and not interrupts.wait(delay):
                continue
            return BatchOutcome(no, "failed", error)
        release_freed_memory()
        return BatchOutcome(no, "succeeded", None, counts)
    raise AssertionError("unreachable: the last attempt returns")


@flow(
    name="migrate",
    flow_run_name=migrate_flow_run_name,
    persist_result=False,
    log_prints=False,
)
def migrate(
    source_url: SecretStr,
    target_url: SecretStr,
    options: RunOptions,
    run_id: str | None = None,
    retry: bool = False,
    take_lock: bool = True,
    guard: RunGuard | None = None,
) -> RunSummary:
    """Migrate every user (with ``options.incremental``, only the users whose legacy data
    changed; with ``retry``, the unfinished batches of ``run_id``). Holds the target's run
    lock unless ``take_lock`` is false (the caller holds it and passes its ``guard``:
    :func:`run_migration`)."""
    if not retry:
        run_id = run_id or str(uuid.uuid4())
    if not take_lock:
        return _migrate(source_url, target_url, options, run_id, retry, guard)
    lock_id = str(uuid.uuid4()) if retry or run_id is None else run_id
    with run_lock(
        target_url.get_secret_value(),
        options.target_schema,
        lock_id,
        dry_run=options.dry_run,
        options=_refused_options(options, run_id if retry else None),
    ) as conn:
        held_by = guard_of(conn, options.target_schema)
        return _migrate(source_url, target_url, options, run_id, retry, held_by)


def _refused_options(options: RunOptions, retry_of: str | None) -> dict[str, Any]:
    return {**asdict(options), **({"retry_of": retry_of} if retry_of else {})}


def _plan(
    coordinator: psycopg.Connection,
    target: str,
    options: RunOptions,
    digests: Mapping[str, str],
    source: Inspection,
) -> tuple[list[extract.BatchRange], dict[str, Any]]:
    """The batches of a new run, each with the rows its users own in the coordinator's
    snapshot, and what it planned (recorded as the run's ``plan``)."""
    if options.incremental:
        with db.connect(target, autocommit=True) as conn:
            stored = ledger.stored_digests(conn)
        counts = extract.user_row_counts(coordinator, source)
        plan = extract.plan_incremental(
            options.batch_size,
            digests,
            stored,
            orphans=bool(counts["user_key"].null_count()),
        )
        batches = extract.with_planned(plan.batches, counts)
        return batches, {"mode": "incremental", **plan.as_dict()}
    batches = extract.plan_batches(coordinator, source, options.batch_size)
    users = sum(batch.users for batch in batches)
    planned = {"mode": "full", "users_planned": users, "users_unchanged": 0}
    return extract.with_digests(batches, digests), planned


def spills(options: RunOptions, retry: bool) -> bool:
    """Whether a run extracts in one pass to local files (:mod:`flows.spill`): every new run
    whose batches run on this machine (not on a remote Dask cluster). A retry reads its
    batches from the source directly."""
    return not retry and not (options.task_runner == "dask" and options.dask_address)


def _window(options: RunOptions, batches: int) -> int:
    """How many batches may be in flight at once: as many as the thread pool or the local Dask
    cluster runs; a remote Dask cluster gets them all (its size decides; once a run is
    interrupted, the ledger keeps those not started from starting)."""
    if options.task_runner == "dask":
        if options.dask_address:
            return max(1, batches)
        return 2 * max(1, (options.concurrency + 1) // 2)
    return options.concurrency


def _run_batches(
    batches: Sequence[extract.BatchRange],
    submit: Callable[[extract.BatchRange], Any],
    window: int,
    on_stop: Callable[[], None],
) -> list[BatchOutcome]:
    """Submit the batches, at most ``window`` in flight, until all ran, a signal asked to stop
    (``on_stop`` is called once), or a batch found the run's lock lost; returns when every
    submitted task has ended. Batches never submitted are pending."""
    done: queue.SimpleQueue[int] = queue.SimpleQueue()
    todo = deque(batches)
    running: dict[int, Any] = {}
    outcomes: dict[int, BatchOutcome] = {}
    halted = stopping = False
    try:
        while todo or running:
            if interrupts.requested() and not stopping:
                stopping = True
                on_stop()
            while todo and len(running) < window and not (halted or stopping):
                batch = todo.popleft()
                running[batch.batch_no] = future = submit(batch)
                future.add_done_callback(lambda _f, no=batch.batch_no: done.put(no))
            if not running:
                break
            try:
                no = done.get(timeout=0.25)
            except queue.Empty:
                continue
            try:
                outcome = running.pop(no).result()
            except Exception as exc:  # migrate_batch never raises; a crashed task does
                outcome = BatchOutcome(no, "failed", _transient_error(exc))
            halted = halted or outcome.halt
            outcomes[no] = outcome
    finally:
        for future in running.values():  # an error above: still let every task end first
            future.wait()
    reason = "not started: the run lost its lock" if halted else NOT_STARTED
    for batch in todo:
        outcomes[batch.batch_no] = BatchOutcome(batch.batch_no, "pending", reason)
    return [outcomes[batch.batch_no] for batch in batches if batch.batch_no in outcomes]


def _mark_interrupted(target: str, run_id: str) -> None:
    # best effort: a thread pool's tasks also see the flag in this process
    with suppress(psycopg.Error), db.connect(target, autocommit=True) as conn:
        ledger.mark_interrupted(conn, run_id)


def _migrate(
    source_url: SecretStr,
    target_url: SecretStr,
    options: RunOptions,
    run_id: str | None,
    retry: bool,
    guard: RunGuard | None = None,
) -> RunSummary:
    from prefect import get_run_logger

    source, target = source_url.get_secret_value(), target_url.get_secret_value()
    planned: dict[str, Any] = {}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    spilling = spills(options, retry)
    spill_dir: str | None = None
    batches: list[extract.BatchRange] = []
    outcomes: list[BatchOutcome] = []
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
            interrupts.resumable(run_id)
    run_id = run_id or str(uuid.uuid4())
    recorded = retry
    try:
        with db.connect(source, autocommit=True) as coordinator:
            try:
                # a signal cancels the planning queries (full scans) at once
                with interrupts.cancel_on_stop(coordinator):
                    interrupts.check()
                    legacy = extract.check_source(
                        coordinator, options.source_schema, options.drop_columns
                    )
                    # Held open until every batch has read (or the one-pass extract is done):
                    # every read of the run sees this snapshot.
                    exported = extract.begin_snapshot(coordinator)
                    snapshot: str | None = exported
                    # Each batch writes its users' digests with its load (the next incremental
                    # run's base); a spilled batch of a full run computes them from its rows.
                    digests = (
                        extract.user_digests(coordinator, legacy)
                        if retry or options.incremental or not spilling
                        else {}
                    )
                    if retry:
                        counts = extract.user_row_counts(coordinator, legacy)
                        batches = extract.with_planned(
                            extract.with_digests(batches, digests), counts
                        )
                    else:
                        batches, planned = _plan(coordinator, target, options, digests, legacy)
                    timings["plan"] = time.perf_counter() - started
            except psycopg.errors.QueryCanceled:
                interrupts.check()
                raise
            if spilling:
                started = time.perf_counter()
                for stale in spill.remove_stale_folders():
                    get_run_logger().info(f"removed {stale}, left by a run that was killed")
                spill_dir = folder = str(spill.new_folder())
                interrupts.at_hard_stop(lambda: shutil.rmtree(folder, ignore_errors=True))
                spill.spill(
                    source,
                    exported,
                    legacy,
                    batches,
                    Path(spill_dir),
                    workers=min(options.concurrency, 4),
                    row_digests=not options.incremental,  # else the plan computed them
                    progress=get_run_logger().info,
                    check=interrupts.check,
                )
                coordinator.execute("rollback")  # the snapshot is no longer needed
                snapshot = None
                release_freed_memory()
                timings["extract"] = time.perf_counter() - started
            if not retry:
                interrupts.check()
                with db.connect(target) as conn, conn.transaction():
                    ledger.create_run(
                        conn,
                        run_id,
                        dry_run=options.dry_run,
                        options={
                            **asdict(options),
                            "plan": planned,
                            "inspection": legacy.summary(),
                        },
                    )
                    ledger.add_batches(conn, run_id, batches)
                recorded = True
                interrupts.resumable(run_id)
            outcomes = _run_batches(
                batches,
                lambda batch: migrate_batch.submit(
                    run_id, batch, snapshot, source_url, target_url, options, spill_dir, guard
                ),
                _window(options, len(batches)),
                on_stop=lambda: _mark_interrupted(target, run_id),
            )
            if snapshot is not None:
                coordinator.execute("rollback")
    except Interrupted as exc:
        if not recorded:
            return RunSummary(run_id, "interrupted", (), planned, timings, exc.signum, False)
        outcomes = [BatchOutcome(b.batch_no, "pending", NOT_STARTED) for b in batches]
    finally:
        # only now: every task that read these files has ended
        if spill_dir is not None:
            shutil.rmtree(spill_dir, ignore_errors=True)
    started = time.perf_counter()
    with db.connect(target, autocommit=True) as conn:
        if interrupts.requested():
            status = ledger.finish_interrupted_run(conn, run_id)
        else:
            status = ledger.finish_run(conn, run_id)
        lock_lost = guard is not None and status == "failed" and not held(conn, guard)
    if status == "interrupted":
        stopped_by = interrupts.signal_number()
        return RunSummary(run_id, status, tuple(outcomes), planned, timings, stopped_by)
    if lock_lost:
        assert guard is not None
        done = sum(1 for o in outcomes if o.status == "succeeded")
        raise RunLockLost(
            f"{lost(run_id, guard)}; {done} of {len(outcomes)} batches succeeded, the rest"
            f" are left for: circuit-migrate retry {run_id}",
            run_id=run_id,
        )
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
        extract.check_source(conn, options.source_schema, options.drop_columns)
    decisions.import_for_run(target_url, options.link_overrides, options.target_schema)
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
    workers, or Dask), holding the target's run lock from the preflight checks to the end.
    Raises :class:`Interrupted` when a signal stopped it before its batches were recorded."""
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
        ) as conn:
            guard = guard_of(conn, options.target_schema)
            preflight(source_url, target_url, options)
            interrupts.check()
            summary = migrate.with_options(task_runner=runner)(
                SecretStr(source_url),
                SecretStr(target_url),
                options,
                run_id=run_id,
                retry=retry,
                take_lock=False,
                guard=guard,
            )
    except MigrationError:
        raise
    except psycopg.Error as exc:
        raise MigrationError(_transient_error(exc)) from None
    if not summary.recorded:
        raise Interrupted(
            summary.stopped_by,
            f"interrupted by {interrupts.signal_name(summary.stopped_by)} before run"
            f" {summary.run_id} was recorded: nothing was written",
        )
    return summary
