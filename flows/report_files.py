"""A run's report files and Prefect artifacts, read from the ledger (the figures come from
``reports/``, which never touches a database or a file).

``<report-dir>/<run_id>/`` holds ``report.json``, ``report.md``, ``report.html``,
``quarantine.csv`` and ``review.csv``; ``compare-<other run>.json`` when compared;
``<report-dir>/index.html`` lists every run of the ledger. No URL is ever written: the ledger
holds none, and errors pass through ``db.redact``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from rich.table import Table

from flows import db, ledger
from flows.decisions import review_list
from flows.extract import copy_frame
from reports.compare import FLAGGED, QUARANTINE_KEYS, compare_runs
from reports.html import render_html
from reports.index import render_index
from reports.markdown import render_markdown
from reports.reconcile import (
    EXAMPLE_CHARS,
    INDEX_FILE,
    LINK_GROUPS,
    QUARANTINE_EXAMPLES,
    QUARANTINE_GROUPS,
    REJECTED_GROUPS,
    REPAIR_EXAMPLES,
    REPAIR_GROUPS,
    REPORT_FILES,
    TARGET_TABLES,
    BatchRow,
    RunFacts,
    run_report,
)
from reports.review import (
    CONFIG_NAMES,
    QUARANTINE_ROWS,
    REVIEW,
    REVIEW_LINKS,
    review_frame,
)
from schemas.errors import ConfigurationError, TargetSchemaMissing

MARKDOWN_ARTIFACT_KEY = "migration-report"
BATCHES_ARTIFACT_KEY = "migration-batches"


@dataclass(frozen=True, eq=False)
class RunData:
    """A run's report document and, when read, its review list (the quarantine list is
    streamed to its file by :func:`write_quarantine`, never held)."""

    report: dict[str, Any]
    review: pl.DataFrame
    target_schema: str


def _grouped(
    conn: psycopg.Connection,
    query: str,
    run_id: str,
    schema: Mapping[str, pl.DataType | type[pl.DataType]],
) -> pl.DataFrame:
    rows = conn.execute(query, [run_id]).fetchall()
    return pl.DataFrame(rows, schema=dict(schema), orient="row")


def _target_rows(conn: psycopg.Connection, schema: str) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    for table in TARGET_TABLES:
        if not db.table_exists(conn, schema, table):
            return None
        row = conn.execute(
            sql.SQL("select count(*) from {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def _require_ledger(conn: psycopg.Connection) -> None:
    if not db.table_exists(conn, "migration", "runs"):
        raise TargetSchemaMissing(
            "target has no ledger (migration.runs): run `circuit-migrate schema apply` first",
            missing=["migration.runs"],
        )


def _review(conn: psycopg.Connection, run_id: str, schema: str) -> pl.DataFrame:
    return review_list(conn, run_id, schema)  # the run's review list, dry runs too


_REJECTED_CONSTRAINT = "coalesce(substring(detail from '[(]([^()]+)[)]$'), detail, 'unknown')"
"""SQL: the constraint a ``database_rejected`` row's detail names, else the detail."""


def _examples(conn: psycopg.Connection, run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One quarantined row per reason and one repaired row per kind of the run (the first by
    source table and id), values cut to ``EXAMPLE_CHARS``."""
    cut = sql.Literal(EXAMPLE_CHARS)
    run = sql.Literal(run_id)
    quarantine = copy_frame(
        conn,
        sql.SQL(
            "select distinct on (reason) reason, source_table, source_id, left(detail, {cut}),"
            " left(payload::text, {cut}) from migration.quarantine where run_id = {run}"
            ' order by reason, source_table collate "C", source_id collate "C"'
        ).format(cut=cut, run=run),
        QUARANTINE_EXAMPLES,
    )
    repairs = copy_frame(
        conn,
        sql.SQL(
            "select distinct on (kind) kind, source_table, source_id, field,"
            " left(original, {cut}), left(repaired, {cut}) from migration.repairs"
            ' where run_id = {run} order by kind, source_table collate "C", source_id collate "C"'
        ).format(cut=cut, run=run),
        REPAIR_EXAMPLES,
    )
    return quarantine, repairs


def read_run(conn: psycopg.Connection, run_id: str, *, lists: bool = True) -> RunData:
    """Everything the report of ``run_id`` (a uuid or ``latest``) needs, read in bulk; the
    quarantine and review lists only when ``lists``."""
    _require_ledger(conn)
    record = ledger.get_run(conn, run_id)
    run_id = record.run_id
    started, finished = record.started_at, record.finished_at
    rows = conn.execute(
        "select batch_no, status, attempts, error, coalesce(counts, '{}'::jsonb),"
        " extract(epoch from finished_at - started_at)::float8, started_at, finished_at"
        " from migration.batches where run_id = %s order by batch_no",
        [run_id],
    ).fetchall()
    schema = str(record.options.get("target_schema") or "public")
    quarantine_examples, repair_examples = _examples(conn, run_id)
    facts = RunFacts(
        started_at=started,
        finished_at=finished,
        options=record.options,
        target_rows=_target_rows(conn, schema),
        links=_grouped(
            conn,
            "select method, confidence::float8, needs_review, count(*) from migration.links"
            " where run_id = %s group by 1, 2, 3 order by 1, 2, 3",
            run_id,
            LINK_GROUPS,
        ),
        quarantine=_grouped(
            conn,
            "select source_table, reason, count(*) from migration.quarantine"
            " where run_id = %s group by 1, 2 order by 1, 2",
            run_id,
            QUARANTINE_GROUPS,
        ),
        repairs=_grouped(
            conn,
            "select source_table, kind, field, count(*) from migration.repairs"
            " where run_id = %s group by 1, 2, 3 order by 1, 2, 3",
            run_id,
            REPAIR_GROUPS,
        ),
        rejected=_grouped(
            conn,
            f"select {_REJECTED_CONSTRAINT}, count(*) from migration.quarantine"
            " where run_id = %s and reason = 'database_rejected' group by 1 order by 1",
            run_id,
            REJECTED_GROUPS,
        ),
        quarantine_examples=quarantine_examples,
        repair_examples=repair_examples,
    )
    report = run_report(
        run_id, record.status, record.dry_run, [BatchRow(*row) for row in rows], facts
    )
    review = review_frame(
        pl.DataFrame(schema=dict(REVIEW_LINKS)), pl.DataFrame(schema=dict(CONFIG_NAMES))
    )
    if lists:
        review = _review(conn, run_id, schema)
    return RunData(report, review, schema)


def write_quarantine(conn: psycopg.Connection, run_id: str, path: Path) -> int:
    """Stream the run's quarantine rows (``QUARANTINE_ROWS``, ordered by source table and id)
    from the ledger into the CSV file ``path``, a chunk at a time: memory stays flat however
    many rows (and payloads) the run quarantined. Returns the bytes written."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in QUARANTINE_ROWS)
    query = sql.SQL(
        "copy (select {columns} from migration.quarantine where run_id = {run}"
        ' order by source_table collate "C", source_id collate "C")'
        " to stdout (format csv, header)"
    ).format(columns=columns, run=sql.Literal(run_id))
    written = 0
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out, conn.cursor().copy(query) as stream:
        for chunk in stream:
            written += out.write(chunk)
    partial.replace(path)
    return written


@dataclass(frozen=True)
class WrittenReport:
    """Where a run's report files went, the verdict and rejected rows they state, and the
    whole report.json document."""

    folder: Path
    verdict: Mapping[str, Any]
    rejected_rows: int
    report: Mapping[str, Any]


def require_writable(report_dir: Path) -> None:
    """Raise ConfigurationError unless ``report_dir`` is, or could be created as, a folder this
    process may write in: checked before a run writes anything, creating nothing."""
    folder = report_dir.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable by this user"
    if problem:
        raise ConfigurationError(
            f"--report-dir {report_dir} cannot be written ({problem}): choose another folder;"
            " nothing was run",
            report_dir=str(report_dir),
        )


def write_run_report(target_url: str, run_id: str, report_dir: Path) -> WrittenReport:
    """Write the run's report files under ``report_dir/run_id`` (``run_id`` a uuid or
    ``latest``), and the runs index ``report_dir/index.html``."""
    with db.connect(target_url, autocommit=True) as conn:
        data = read_run(conn, run_id)
        report = data.report
        folder = report_dir / report["run_id"]
        folder.mkdir(parents=True, exist_ok=True)
        write_quarantine(conn, report["run_id"], folder / "quarantine.csv")
        review = _kept_review(report, folder / "review.csv")
        report["links"]["review_list"] = "ledger" if review is None else "kept review.csv"
        review = data.review if review is None else review
        (folder / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (folder / "report.md").write_text(render_markdown(report))
        (folder / "report.html").write_text(render_html(report, review))
        review.write_csv(folder / "review.csv")
        write_index(conn, report_dir)
    return WrittenReport(folder, report["verdict"], int(report["rejected"]["rows"]), report)


def _ledger_verdicts(
    conn: psycopg.Connection, runs: list[ledger.RunListing]
) -> dict[str, Mapping[str, Any]]:
    """The verdict of each of ``runs`` judged from the ledger alone (without the target row
    counts), read in bulk: three queries whatever the number of runs."""
    if not runs:
        return {}
    ids = [run.run_id for run in runs]
    batches: dict[str, list[BatchRow]] = {run_id: [] for run_id in ids}
    for run_id, *row in conn.execute(
        "select run_id::text, batch_no, status, attempts, error, coalesce(counts, '{}'::jsonb)"
        " from migration.batches where run_id = any(%s::uuid[]) order by run_id, batch_no",
        [ids],
    ).fetchall():
        batches[run_id].append(BatchRow(*row))
    quarantine = _grouped_by_run(
        conn,
        "select run_id::text, source_table, reason, count(*) from migration.quarantine"
        " where run_id = any(%s::uuid[]) group by 1, 2, 3",
        ids,
        QUARANTINE_GROUPS,
    )
    rejected = _grouped_by_run(
        conn,
        f"select run_id::text, {_REJECTED_CONSTRAINT}, count(*) from migration.quarantine"
        " where run_id = any(%s::uuid[]) and reason = 'database_rejected' group by 1, 2",
        ids,
        REJECTED_GROUPS,
    )
    verdicts: dict[str, Mapping[str, Any]] = {}
    for run in runs:
        facts = RunFacts(
            options=run.options,
            quarantine=quarantine.get(run.run_id, pl.DataFrame(schema=dict(QUARANTINE_GROUPS))),
            rejected=rejected.get(run.run_id, pl.DataFrame(schema=dict(REJECTED_GROUPS))),
        )
        report = run_report(run.run_id, run.status, run.dry_run, batches[run.run_id], facts)
        verdicts[run.run_id] = report["verdict"]
    return verdicts


def _grouped_by_run(
    conn: psycopg.Connection,
    query: str,
    ids: list[str],
    schema: Mapping[str, pl.DataType | type[pl.DataType]],
) -> dict[str, pl.DataFrame]:
    rows = conn.execute(query, [ids]).fetchall()
    frame = pl.DataFrame(rows, schema={"run_id": pl.String, **schema}, orient="row")
    return {
        str(key[0]): part.drop("run_id")
        for key, part in frame.partition_by("run_id", as_dict=True).items()
    }


def _stated_verdict(folder: Path) -> Mapping[str, Any] | None:
    """The verdict the run's report.json in ``folder`` states, if it is there and ours."""
    try:
        stated = json.loads((folder / "report.json").read_text()).get("verdict")
    except (OSError, ValueError, AttributeError):
        return None
    return stated if isinstance(stated, dict) and "level" in stated else None


def write_index(conn: psycopg.Connection, report_dir: Path) -> Path:
    """Write ``report_dir/index.html``: every run of the ledger, newest first, with the verdict
    its report.json states (from the ledger for a run with no report here) and links to the
    report files its folder holds. Returns the path."""
    runs = ledger.recent_runs(conn, limit=None)
    rows: list[dict[str, Any]] = []
    for run in runs:
        folder = report_dir / run.run_id
        stated = _stated_verdict(folder)
        rows.append(
            {
                **run.as_dict(),
                "verdict": stated,
                "verdict_from": "report" if stated else "ledger",
                "files": [name for name in REPORT_FILES if (folder / name).is_file()],
            }
        )
    unstated = [
        run
        for run, row in zip(runs, rows, strict=True)
        if not row["verdict"] and run.status != "running"
    ]
    judged = _ledger_verdicts(conn, unstated)
    for row in rows:
        row["verdict"] = row["verdict"] or judged.get(row["run_id"])
    path = report_dir / INDEX_FILE
    report_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(render_index(rows, REPORT_FILES))
    partial.replace(path)
    return path


def _kept_review(report: Mapping[str, Any], path: Path) -> pl.DataFrame | None:
    """The review list written when the run's links were all in the ledger, once a later run
    has re-linked some of them (the ledger keeps one decision per model); else None."""
    links = report["links"]
    if links["recorded_needs_review"] >= links["needs_review"] or not path.is_file():
        return None
    try:
        kept = pl.read_csv(path, schema=dict(REVIEW))
    except (pl.exceptions.PolarsError, OSError):
        return None  # not ours any more: render from the ledger
    return kept if kept.height > links["recorded_needs_review"] else None


def publish_report_artifacts(target_url: str, run_id: str) -> None:
    """Publish the run's report.md as a Prefect markdown artifact and its batches as a table
    artifact (call inside the flow). A failure is logged, never raised: the files are the
    record, the artifacts a view."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.exceptions import MissingContextError

    try:
        with db.connect(target_url, autocommit=True) as conn:
            report = read_run(conn, run_id, lists=False).report
        create_markdown_artifact(
            markdown=render_markdown(report),
            key=MARKDOWN_ARTIFACT_KEY,
            description=f"Reconciliation of migration run {report['run_id']}",
        )
        create_table_artifact(
            table=[
                {k: v for k, v in batch.items() if k != "timings"} for batch in report["batch_list"]
            ],
            key=BATCHES_ARTIFACT_KEY,
            description=f"Batches of migration run {report['run_id']}",
        )
    except Exception as exc:  # the artifacts are a courtesy: never fail the run for them
        try:
            logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
        except MissingContextError:
            logger = logging.getLogger(__name__)
        logger.warning(
            "report artifacts not published: %s", db.redact(f"{type(exc).__name__}: {exc}")
        )


def migrate_flow_run_name() -> str:
    """The name of a ``migrate`` flow run (its decorator's ``flow_run_name``): the run id it
    migrates, ``retry-<run id>`` for a retry, so the Prefect UI and the ledger agree."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    run_id = parameters.get("run_id")
    if not run_id:
        return "migrate-new-run"
    return f"retry-{run_id}" if parameters.get("retry") else str(run_id)


def flow_run_url(run_id: str) -> str | None:
    """The Prefect UI page of the latest flow run named after ``run_id`` (its retries too),
    when a Prefect server is configured (``PREFECT_API_URL``); None without one, when the run
    is not found, or when the server does not answer (never raises)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import get_current_settings
    from prefect.utilities.urls import url_for

    settings = get_current_settings()
    if not settings.api.url:
        return None
    try:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[run_id, f"retry-{run_id}"])
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=1,
            )
    except Exception as exc:  # the link is a courtesy: never fail a command for it
        logging.getLogger(__name__).debug("no Prefect flow run link: %s", exc)
        return None
    if not found:
        return None
    base = settings.ui_url or settings.api.url.removesuffix("/api")
    return url_for("flow-run", obj_id=found[0].id, default_base_url=base)


def _flagged(conn: psycopg.Connection, run_id: str) -> pl.DataFrame:
    rows = conn.execute(
        "select tagged_model_id::text, circuit_config_id::text, method, confidence::float8"
        " from migration.links where run_id = %s and needs_review",
        [run_id],
    ).fetchall()
    return pl.DataFrame(rows, schema=dict(FLAGGED), orient="row")


def _quarantine_keys(conn: psycopg.Connection, run_id: str) -> pl.DataFrame:
    return copy_frame(
        conn,
        sql.SQL(
            "select source_table, source_id, reason, detail from migration.quarantine"
            " where run_id = {}"
        ).format(sql.Literal(run_id)),
        QUARANTINE_KEYS,
    )


def _flagged_of(
    conn: psycopg.Connection, report: Mapping[str, Any], report_dir: Path
) -> tuple[pl.DataFrame, bool]:
    """The run's flagged links: from the run's own review list (``migration.review_list``,
    dry runs included), else, for runs recorded before it existed, from ``migration.links``
    while it still holds them all (a later run re-links models and takes their rows)."""
    links = report["links"]
    rows = conn.execute(
        "select tagged_model_id::text, circuit_config_id::text, method, confidence::float8"
        " from migration.review_list where run_id = %s and needs_review",
        [report["run_id"]],
    ).fetchall()
    listed = pl.DataFrame(rows, schema=dict(FLAGGED), orient="row")
    if listed.height >= links["needs_review"]:
        return listed, True
    flagged = _flagged(conn, report["run_id"])
    return flagged, flagged.height >= links["needs_review"]


def compare_reports(
    target_url: str, run_id: str, other_run_id: str, report_dir: Path
) -> tuple[dict[str, Any], Path]:
    """What changed from ``other_run_id`` to ``run_id``; written to
    ``report_dir/run_id/compare-<other>.json``. Returns the document and its path."""
    with db.connect(target_url, autocommit=True) as conn:
        this = read_run(conn, run_id, lists=False).report
        other = read_run(conn, other_run_id, lists=False).report
        flagged_this, complete_this = _flagged_of(conn, this, report_dir)
        flagged_other, complete_other = _flagged_of(conn, other, report_dir)
        comparison = compare_runs(
            this,
            other,
            _quarantine_keys(conn, this["run_id"]),
            _quarantine_keys(conn, other["run_id"]),
            flagged_this,
            flagged_other,
            flagged_complete=complete_this and complete_other,
        )
    folder = report_dir / this["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"compare-{other['run_id']}.json"
    path.write_text(json.dumps(comparison, indent=2, default=str) + "\n")
    return comparison, path


def _signed(value: int | None) -> str:
    return "" if value is None else f"{value:+d}" if value else "0"


def comparison_tables(comparison: Mapping[str, Any], rows_shown: int = 20) -> list[Table]:
    """The comparison as rich tables: counts that changed, then the row-level changes."""
    counts = Table(
        "what",
        "other run",
        "this run",
        "change",
        title=f"run {comparison['run_id']} against {comparison['other_run_id']}",
    )

    def add(what: str, delta: Mapping[str, Any], always: bool = False) -> None:
        if always or delta["change"]:
            counts.add_row(
                what,
                "" if delta["other"] is None else str(delta["other"]),
                "" if delta["this"] is None else str(delta["this"]),
                _signed(delta["change"]),
            )

    status = comparison["status"]
    counts.add_row("status", status["other"], status["this"], "")
    for table, keys in comparison["tables"].items():
        for key, delta in keys.items():
            add(f"{table}.{key}", delta, always=key == "source")
    for table, keys in comparison["targets"].items():
        for key, delta in keys.items():
            add(f"target {table}.{key}", delta)
    for method, delta in comparison["links"]["by_method"].items():
        add(f"links by {method}", delta)
    add("links needing review", comparison["links"]["needs_review"], always=True)
    for why, delta in comparison["quarantine"]["by_reason"].items():
        add(f"quarantined: {why}", delta)
    add("quarantined", comparison["quarantine"]["total"], always=True)

    changes = Table(title="rows that changed")
    changes.add_column("change", no_wrap=True)
    changes.add_column("table")
    changes.add_column("id", no_wrap=True, min_width=36)
    changes.add_column("reason / link")
    quarantine = comparison["quarantine"]
    flagged = comparison["flagged_links"]

    def reason(q: Mapping[str, Any]) -> str:
        return f"{q['reason']}: {q['detail']}" if q.get("detail") else str(q["reason"])

    listed = [
        *[
            ("newly quarantined", q["source_table"], q["source_id"], reason(q))
            for q in quarantine["new"]
        ],
        *[
            ("no longer quarantined", q["source_table"], q["source_id"], reason(q))
            for q in quarantine["gone"]
        ],
        *[
            (
                "reason changed",
                q["source_table"],
                q["source_id"],
                f"{q['other_reason']} -> {q['reason']}",
            )
            for q in quarantine["reason_changed"]
        ],
        *[
            (
                "newly flagged",
                "tagged_models",
                f["tagged_model_id"],
                f"{f['method']} {f['confidence']:.2f}",
            )
            for f in flagged["new"]
        ],
        *[
            ("no longer flagged", "tagged_models", f["tagged_model_id"], f["method"])
            for f in flagged["gone"]
        ],
    ]
    for row in listed[:rows_shown]:
        changes.add_row(*[str(v) if v is not None else "" for v in row])
    if len(listed) > rows_shown:
        changes.caption = f"{len(listed) - rows_shown} more in the comparison file"
    if not flagged["complete"]:
        changes.caption = (changes.caption or "") + (
            " (flagged links of a run a later run re-linked are unknown: no review.csv of it)"
        )
    return [counts, changes]
