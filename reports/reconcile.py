"""Reconciliation of a run: pure functions over what the flow reads from the ledger.

Inputs are the run's batches (:class:`BatchRow`, counts as ``flows.migrate.run_batch`` records
them) and :class:`RunFacts` (grouped ledger frames and target row counts, fixed columns below).
:func:`run_report` returns the ``report.json`` document: the DESIGN.md section 8 fields, then
the extensions (targets, confidence histogram, quarantine and repairs with an example row per
code, stages, batches, verdict). ``reports.markdown`` and ``reports.html`` render it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from schemas.contract import LINK_METHODS, QUARANTINE_REASONS, REPAIR_KINDS
from schemas.tables import SOURCE_TABLES

ACCOUNTING_KEYS = ("source", "migrated", "merged", "quarantined")
TARGET_TABLES = ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models")
STAGES = ("extract", "transform", "validate", "load")
HISTOGRAM_BINS = 10
REPORT_FILES = ("report.json", "report.md", "report.html", "quarantine.csv", "review.csv")
INDEX_FILE = "index.html"
"""The page in the report folder (next to the runs' folders) that lists every run."""
EXAMPLE_CHARS = 300
"""An example row's payload or value is cut to this many characters in report.json."""

LINK_GROUPS: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "method": pl.String,
    "confidence": pl.Float64,
    "needs_review": pl.Boolean,
    "links": pl.Int64,
}
"""The run's ``migration.links`` rows grouped by (method, confidence, needs_review)."""

QUARANTINE_GROUPS: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "source_table": pl.String,
    "reason": pl.String,
    "rows": pl.Int64,
}
"""The run's ``migration.quarantine`` rows grouped by (source_table, reason)."""

REJECTED_GROUPS: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "constraint": pl.String,  # the constraint the server named, else its message
    "rows": pl.Int64,
}
"""Rows the target database rejected (quarantined ``database_rejected``), per constraint."""

REPAIR_GROUPS: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "source_table": pl.String,
    "kind": pl.String,
    "field": pl.String,
    "rows": pl.Int64,
}
"""The run's ``migration.repairs`` rows grouped by (source_table, kind, field)."""

QUARANTINE_EXAMPLES: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "reason": pl.String,
    "source_table": pl.String,
    "source_id": pl.String,
    "detail": pl.String,
    "payload": pl.String,  # the original as JSON text, cut to EXAMPLE_CHARS
}
"""One quarantined row of the run per reason (the first by source table and id)."""

REPAIR_EXAMPLES: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "kind": pl.String,
    "source_table": pl.String,
    "source_id": pl.String,
    "field": pl.String,
    "original": pl.String,
    "repaired": pl.String,
}
"""One repaired row of the run per kind (the first by source table and id)."""

HISTOGRAM: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "bin_from": pl.Float64,
    "bin_to": pl.Float64,
    "links": pl.Int64,
    "needs_review": pl.Int64,
}

BATCH_TABLE: Mapping[str, pl.DataType | type[pl.DataType]] = {
    "batch_no": pl.Int64,
    "status": pl.String,
    "attempts": pl.Int64,
    "users": pl.Int64,
    "rows": pl.Int64,
    "seconds": pl.Float64,
    "rows_per_second": pl.Float64,
    "started_offset": pl.Float64,
    "error": pl.String,
}


@dataclass(frozen=True)
class BatchRow:
    """One batch as the ledger holds it."""

    batch_no: int
    status: str
    attempts: int
    error: str | None
    counts: Mapping[str, Any]
    seconds: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def _empty(schema: Mapping[str, pl.DataType | type[pl.DataType]]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))


@dataclass(frozen=True, eq=False)
class RunFacts:
    """What the flow reads about a run besides its batches (frames in the shapes above)."""

    started_at: datetime | None = None
    finished_at: datetime | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    target_rows: Mapping[str, int] | None = None  # count(*) per target table after the run
    links: pl.DataFrame = field(default_factory=lambda: _empty(LINK_GROUPS))
    quarantine: pl.DataFrame = field(default_factory=lambda: _empty(QUARANTINE_GROUPS))
    repairs: pl.DataFrame = field(default_factory=lambda: _empty(REPAIR_GROUPS))
    rejected: pl.DataFrame = field(default_factory=lambda: _empty(REJECTED_GROUPS))
    quarantine_examples: pl.DataFrame = field(default_factory=lambda: _empty(QUARANTINE_EXAMPLES))
    repair_examples: pl.DataFrame = field(default_factory=lambda: _empty(REPAIR_EXAMPLES))


@dataclass(frozen=True)
class Verdict:
    """The headline: ``ok`` (clean), ``review`` (complete, links to review) or ``failed``."""

    level: str
    headline: str
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The report.json shape."""
        return {"level": self.level, "headline": self.headline, "reasons": list(self.reasons)}


def _succeeded(batches: Sequence[BatchRow]) -> list[BatchRow]:
    return [b for b in batches if b.status == "succeeded"]


def table_accounting(batches: Sequence[BatchRow]) -> dict[str, dict[str, int]]:
    """Per source table: ``source`` as the plan counted it in the run's snapshot, over every
    batch (a batch that failed leaves its rows unaccounted for, so the identity does not hold);
    migrated, merged and quarantined over the succeeded batches. Batches recorded before plans
    counted rows take their source from what they read."""
    tables = {name: dict.fromkeys(ACCOUNTING_KEYS, 0) for name in SOURCE_TABLES}
    for batch in batches:
        planned = batch.counts.get("planned")
        done = batch.status == "succeeded"
        if planned:
            for name, n in planned.items():
                tables.setdefault(name, dict.fromkeys(ACCOUNTING_KEYS, 0))["source"] += int(n)
        for name, counts in (batch.counts.get("tables", {}) if done else {}).items():
            row = tables.setdefault(name, dict.fromkeys(ACCOUNTING_KEYS, 0))
            for key in ACCOUNTING_KEYS:
                if key != "source" or not planned:
                    row[key] += int(counts.get(key, 0))
    return tables


def identity(tables: Mapping[str, Mapping[str, int]]) -> dict[str, bool]:
    """Per source table: ``source == migrated + merged + quarantined``."""
    return {
        name: c["source"] == c["migrated"] + c["merged"] + c["quarantined"]
        for name, c in tables.items()
    }


def target_accounting(
    batches: Sequence[BatchRow], actual: Mapping[str, int] | None
) -> dict[str, dict[str, Any]]:
    """Per target table: rows the succeeded batches produced (``expected``), rows the table
    holds (``actual``, None when not read) and whether they agree."""
    expected = dict.fromkeys(TARGET_TABLES, 0)
    for batch in _succeeded(batches):
        for name, n in batch.counts.get("targets", {}).items():
            expected[name] = expected.get(name, 0) + int(n)
    out: dict[str, dict[str, Any]] = {}
    for name, n in expected.items():
        held = None if actual is None else actual.get(name)
        out[name] = {"expected": n, "actual": held, "match": held is not None and held == n}
    return out


def confidence_histogram(links: pl.DataFrame, bins: int = HISTOGRAM_BINS) -> pl.DataFrame:
    """Links per confidence bin ``[k/bins, (k+1)/bins)`` (the last bin includes 1.0), with how
    many of them need review; every bin present, in order (shape ``HISTOGRAM``)."""
    edges = pl.DataFrame({"bin": pl.int_range(0, bins, eager=True, dtype=pl.Int64)})
    # the epsilon keeps float32 confidences like 0.7 (0.69999999) in their bin
    binned = links.select(
        pl.min_horizontal((pl.col("confidence") * bins + 1e-6).floor(), bins - 1)
        .clip(0, bins - 1)
        .cast(pl.Int64)
        .alias("bin"),
        pl.col("links").cast(pl.Int64),
        (pl.col("links") * pl.col("needs_review").cast(pl.Int64)).alias("needs_review"),
    )
    counted = binned.group_by("bin").agg(pl.col("links").sum(), pl.col("needs_review").sum())
    return (
        edges.join(counted, on="bin", how="left")
        .sort("bin")
        .select(
            (pl.col("bin") / bins).alias("bin_from"),
            ((pl.col("bin") + 1) / bins).alias("bin_to"),
            pl.col("links").fill_null(0),
            pl.col("needs_review").fill_null(0),
        )
        .cast(dict(HISTOGRAM))  # type: ignore[arg-type]
    )


def link_report(batches: Sequence[BatchRow], links: pl.DataFrame) -> dict[str, Any]:
    """Link decisions: by method and needs-review as the batches counted them (section 8), and
    what ``migration.links`` still records for the run (``links``, shape ``LINK_GROUPS``):
    the same by method, the confidence histogram and the mean confidence."""
    by_method: dict[str, int] = {}
    needs_review = 0
    decisions: dict[str, int] = {}
    for batch in _succeeded(batches):
        counted = batch.counts.get("links", {})
        for method, n in counted.get("by_method", {}).items():
            by_method[method] = by_method.get(method, 0) + int(n)
        needs_review += int(counted.get("needs_review", 0))
        for key, n in (counted.get("decisions") or {}).items():
            decisions[key] = decisions.get(key, 0) + int(n)
    recorded = int(links["links"].sum()) if links.height else 0
    per_method = (
        links.group_by("method").agg(pl.col("links").sum()).sort("method").rows()
        if links.height
        else []
    )
    flagged = int(links.filter(pl.col("needs_review"))["links"].sum()) if links.height else 0
    mean = float((links["confidence"] * links["links"]).sum()) / recorded if recorded else None
    decided = sum(by_method.values())
    return {
        "by_method": dict(sorted(by_method.items())),
        "needs_review": needs_review,
        "decisions": decisions,  # the reviewer's recorded decisions: applied, not applied
        "decided": decided,
        "recorded": recorded,
        "recorded_by_method": {str(m): int(n) for m, n in per_method},
        "recorded_needs_review": flagged,
        "superseded": max(decided - recorded, 0),
        "mean_confidence": None if mean is None else round(mean, 4),
        "confidence_histogram": confidence_histogram(links).to_dicts(),
    }


def _examples(frame: pl.DataFrame | None, key: str) -> dict[str, dict[str, Any]]:
    """``{code: the example row without its code}``, values cut to ``EXAMPLE_CHARS``."""
    if frame is None or not frame.height:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for row in frame.sort(key).iter_rows(named=True):
        code = str(row.pop(key))
        out[code] = {k: v[:EXAMPLE_CHARS] if isinstance(v, str) else v for k, v in row.items()}
    return out


def quarantine_report(groups: pl.DataFrame, examples: pl.DataFrame | None = None) -> dict[str, Any]:
    """Quarantined rows: total, by reason, by (source table, reason), largest first, and one
    example row per reason (``examples``, shape ``QUARANTINE_EXAMPLES``)."""
    by_reason = groups.group_by("reason").agg(pl.col("rows").sum())
    by_reason = by_reason.sort(["rows", "reason"], descending=[True, False])
    detail = groups.sort(["rows", "source_table", "reason"], descending=[True, False, False])
    return {
        "total": int(groups["rows"].sum()) if groups.height else 0,
        "by_reason": {str(r): int(n) for r, n in by_reason.rows()},
        "by_table": detail.to_dicts(),
        "examples": _examples(examples, "reason"),
    }


def rejected_report(groups: pl.DataFrame) -> dict[str, Any]:
    """Rows the target database rejected: how many, and how many per constraint."""
    ordered = groups.sort(["rows", "constraint"], descending=[True, False])
    return {
        "rows": int(groups["rows"].sum()) if groups.height else 0,
        "by_constraint": {str(c): int(n) for c, n in ordered.rows()},
    }


def repairs_report(groups: pl.DataFrame, examples: pl.DataFrame | None = None) -> dict[str, Any]:
    """Repairs: total, by kind, by (source table, kind, field), largest first, and one example
    row per kind (``examples``, shape ``REPAIR_EXAMPLES``)."""
    by_kind = groups.group_by("kind").agg(pl.col("rows").sum())
    by_kind = by_kind.sort(["rows", "kind"], descending=[True, False])
    detail = groups.sort(
        ["rows", "source_table", "kind", "field"], descending=[True, False, False, False]
    )
    return {
        "total": int(groups["rows"].sum()) if groups.height else 0,
        "by_kind": {str(k): int(n) for k, n in by_kind.rows()},
        "by_field": detail.to_dicts(),
        "examples": _examples(examples, "kind"),
    }


def _seconds(batch: BatchRow) -> float | None:
    if batch.seconds is not None:
        return float(batch.seconds)
    if batch.started_at is not None and batch.finished_at is not None:
        return (batch.finished_at - batch.started_at).total_seconds()
    return None


def batch_table(batches: Sequence[BatchRow], run_started: datetime | None) -> pl.DataFrame:
    """One row per batch (shape ``BATCH_TABLE``): status, attempts, users, legacy rows, seconds
    of its last attempt, rows per second, start offset from the run's start, error."""
    records = []
    for b in sorted(batches, key=lambda b: b.batch_no):
        seconds = _seconds(b)
        rows = int(b.counts.get("rows", 0))
        offset = (
            (b.started_at - run_started).total_seconds()
            if b.started_at is not None and run_started is not None
            else None
        )
        records.append(
            {
                "batch_no": b.batch_no,
                "status": b.status,
                "attempts": b.attempts,
                "users": int(b.counts.get("users", 0)),
                "rows": rows,
                "seconds": None if seconds is None else round(seconds, 4),
                "rows_per_second": (
                    round(rows / seconds, 1)
                    if seconds and b.status == "succeeded" and seconds > 0
                    else None
                ),
                "started_offset": None if offset is None else round(offset, 4),
                "error": b.error,
            }
        )
    return pl.DataFrame(records, schema=dict(BATCH_TABLE), orient="row")


def stage_timings(batches: Sequence[BatchRow]) -> dict[str, dict[str, float]]:
    """Per stage (extract, transform, validate, load): seconds summed over the succeeded batches,
    share of the batches' total, and the slowest batch's seconds."""
    totals = dict.fromkeys(STAGES, 0.0)
    slowest = dict.fromkeys(STAGES, 0.0)
    for batch in _succeeded(batches):
        for stage, seconds in batch.counts.get("timings", {}).items():
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
            slowest[stage] = max(slowest.get(stage, 0.0), float(seconds))
    whole = sum(totals.values())
    return {
        stage: {
            "seconds": round(total, 4),
            "share": round(total / whole, 4) if whole else 0.0,
            "max_batch_seconds": round(slowest[stage], 4),
        }
        for stage, total in totals.items()
    }


def target_disagreement(report: Mapping[str, Any], *, markdown: bool = False) -> str:
    """How to read a target count that differs: not comparable, or a real difference."""
    if report.get("dry_run"):
        return "n/a (dry run)"
    if not report.get("complete", True):
        return "n/a (run incomplete)"
    return "**NO**" if markdown else "NO"


def retry_command(run_id: str) -> str:
    """The command that re-runs a run's failed or unfinished batches."""
    return f"circuit-migrate retry {run_id}"


def verdict(report: Mapping[str, Any]) -> Verdict:
    """The headline of a report (a ``run_report`` document without its verdict)."""
    batches = report["batches"]
    if report.get("status") == "refused":
        return Verdict(
            "failed",
            "Refused: another run held the target's run lock; this run did nothing",
            ("refused: another run was in progress",),
        )
    reasons: list[str] = []
    unfinished = batches["total"] - batches["succeeded"]
    if batches["failed"]:
        reasons.append(f"{batches['failed']} of {batches['total']} batches failed")
    if unfinished - batches["failed"] > 0:
        reasons.append(f"{unfinished - batches['failed']} batches pending or running")
    unbalanced = [name for name, ok in report["identity"].items() if not ok]
    if unbalanced:
        reasons.append("accounting does not balance for " + ", ".join(unbalanced))
    if not report["dry_run"] and not unfinished:
        differ = [
            f"{name} (expected {t['expected']}, found {t['actual']})"
            for name, t in report["targets"].items()
            if t["actual"] is not None and not t["match"]
        ]
        if differ:
            reasons.append("target row counts differ: " + "; ".join(differ))
    rejected = report.get("rejected", {}).get("rows", 0)
    if rejected:
        per = ", ".join(
            f"{c}: {n}" for c, n in list(report["rejected"]["by_constraint"].items())[:3]
        )
        reasons.append(f"the target database rejected {rejected} rows ({per})")
    if reasons:
        stopped = report.get("status") == "interrupted"  # by SIGINT or SIGTERM
        headline = ("Interrupted: " if stopped else "Failed: ") + reasons[0]
        if unfinished:
            headline += f"; re-run with `{retry_command(report['run_id'])}`"
        return Verdict("failed", headline, tuple(reasons))
    quarantined = report["quarantine"]["total"]
    review = report["links"]["needs_review"]
    accounted = "every legacy row migrated, merged or quarantined with a reason"
    if review:
        return Verdict(
            "review",
            f"Complete, {review} link{'s' if review != 1 else ''} need review; {accounted}",
            (f"{review} tagged-model links need review (review.csv)",),
        )
    note = (f"{quarantined} rows quarantined (quarantine.csv)",) if quarantined else ()
    return Verdict("ok", "Clean: " + accounted, note)


def sync_report(options: Mapping[str, Any]) -> dict[str, Any]:
    """What the run planned (its options' ``plan``): ``mode`` full or incremental, and users
    planned, new, changed, deleted, and unchanged (skipped)."""
    plan = options.get("plan")
    if not isinstance(plan, Mapping):
        return {"mode": "full"}
    return {"mode": str(plan.get("mode", "full")), **{k: v for k, v in plan.items() if k != "mode"}}


def run_report(
    run_id: str,
    status: str,
    dry_run: bool,
    batches: Sequence[BatchRow],
    facts: RunFacts | None = None,
) -> dict[str, Any]:
    """The report.json document (DESIGN.md section 8 fields, then extensions)."""
    facts = facts or RunFacts()
    tables = table_accounting(batches)
    balanced = identity(tables)
    sync = sync_report(facts.options)
    # An incremental run produces only its planned users' rows: no whole-table count to match.
    targets = target_accounting(
        batches, None if sync["mode"] == "incremental" else facts.target_rows
    )
    done = _succeeded(batches)
    failed = sum(1 for b in batches if b.status == "failed")
    timings = stage_timings(batches)
    listed = batch_table(batches, facts.started_at)
    per_batch = {b.batch_no: b for b in batches}
    wall = (
        (facts.finished_at - facts.started_at).total_seconds()
        if facts.started_at and facts.finished_at
        else None
    )
    report: dict[str, Any] = {
        "run_id": run_id,
        "status": status,
        "dry_run": dry_run,
        "tables": tables,
        "links": link_report(batches, facts.links),
        "batches": {"total": len(batches), "succeeded": len(done), "failed": failed},
        "accounting_balanced": all(balanced.values()),
        "complete": len(done) == len(batches),
        "target_rows_expected": {name: t["expected"] for name, t in targets.items()},
        "stage_seconds": {stage: t["seconds"] for stage, t in timings.items()},
        "batch_list": [
            {
                **row,
                "timings": dict(per_batch[row["batch_no"]].counts.get("timings", {})),
            }
            for row in listed.to_dicts()
        ],
        "started_at": facts.started_at.isoformat() if facts.started_at else None,
        "finished_at": facts.finished_at.isoformat() if facts.finished_at else None,
        "wall_seconds": None if wall is None else round(wall, 3),
        "options": dict(facts.options),
        "identity": balanced,
        "targets": targets,
        "quarantine": quarantine_report(facts.quarantine, facts.quarantine_examples),
        "repairs": repairs_report(facts.repairs, facts.repair_examples),
        "rejected": rejected_report(facts.rejected),
        "stages": timings,
        "retry_command": None if len(done) == len(batches) else retry_command(run_id),
        "files": list(REPORT_FILES),
        "sync": sync,
    }
    report["verdict"] = verdict(report).as_dict()
    return report


SETTING_LABELS = {
    "source_schema": "source schema",
    "target_schema": "target schema",
    "batch_size": "batch size",
    "concurrency": "concurrency",
    "task_runner": "task runner",
    "dask_address": "Dask scheduler",
    "link_overrides": "link overrides file",
    "retry_of": "retry of",
}
"""Run options shown under their own label, in this order; others follow by key."""
_NOT_SETTINGS = {"plan", "dry_run", "incremental"}  # shown as the mode


def utc_text(iso: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` in UTC (empty for None)."""
    if not iso:
        return ""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration_text(seconds: float | None) -> str:
    """A duration as ``42.0 s``, ``3m 05s`` or ``2h 07m`` (empty for None)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def run_settings(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of what the run was asked to do: mode, schemas, options, overrides
    file, start and end; options added later appear under their key."""
    options = dict(report.get("options") or {})
    mode = str((report.get("sync") or {}).get("mode") or "full")
    if report.get("dry_run"):
        mode += ", dry run (no target table written)"
    rows = [("mode", mode)]
    for key, label in SETTING_LABELS.items():
        if key == "link_overrides":
            rows.append((label, str(options.get(key) or "none")))
        elif options.get(key) not in (None, ""):
            rows.append((label, str(options[key])))
    for key in sorted(options):
        if key not in SETTING_LABELS and key not in _NOT_SETTINGS:
            value = options[key]
            rows.append((key.replace("_", " "), "none" if value in (None, "") else str(value)))
    started, finished = utc_text(report.get("started_at")), utc_text(report.get("finished_at"))
    rows.append(("started", f"{started} UTC" if started else ""))
    rows.append(("finished", f"{finished} UTC" if finished else "not yet"))
    return rows


GLOSSARIES = (
    ("Quarantine reasons", "reason", QUARANTINE_REASONS),
    ("Repair kinds", "kind", REPAIR_KINDS),
    ("Link methods", "method", LINK_METHODS),
)
"""The glossary's parts: title, what a code is, and the codes with their meaning."""
UNEXPLAINED = "(no explanation in schemas/contract.py)"


def meaning(codes: Mapping[str, str], code: str) -> str:
    """What ``code`` means, or a note that the contract does not explain it."""
    return codes.get(code, UNEXPLAINED)


def example_text(example: Mapping[str, Any] | None, width: int = 120) -> str:
    """One line for an example row: table and id, then the detail and payload (quarantine)
    or the field with its original and repaired value (repair)."""
    if not example:
        return ""

    def cut(value: object) -> str:
        text = "null" if value is None else " ".join(str(value).split())
        return text if len(text) <= width else text[: width - 1] + "…"

    where = f"{example.get('source_table')} {example.get('source_id')}"
    if "field" in example:
        change = f"{cut(example.get('original'))} → {cut(example.get('repaired'))}"
        return f"{where}, {example['field']}: {change}"
    detail = f": {cut(example['detail'])}" if example.get("detail") else ""
    payload = f"; payload {cut(example['payload'])}" if example.get("payload") else ""
    return where + detail + payload
