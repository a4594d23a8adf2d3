"""Reconciliation of a run: pure functions over what the flow reads from the ledger.

Inputs are the run's batches (:class:`BatchRow`, counts as ``flows.migrate.run_batch`` records
them) and :class:`RunFacts` (grouped ledger frames and target row counts, fixed columns below).
:func:`run_report` returns the ``report.json`` document: the DESIGN.md section 8 fields, then
the extensions (targets, confidence histogram, quarantine, repairs, stages, batches, verdict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from schemas.tables import SOURCE_TABLES

ACCOUNTING_KEYS = ("source", "migrated", "merged", "quarantined")
TARGET_TABLES = ("user_profiles", "circuit_configurations", "user_sessions", "tagged_models")
STAGES = ("extract", "transform", "validate", "load")
HISTOGRAM_BINS = 10
REPORT_FILES = ("report.json", "report.md", "report.html", "quarantine.csv", "review.csv")
# Batches listed one by one in report.md (the failed ones always are).
MARKDOWN_BATCHES = 50

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
    for batch in _succeeded(batches):
        counted = batch.counts.get("links", {})
        for method, n in counted.get("by_method", {}).items():
            by_method[method] = by_method.get(method, 0) + int(n)
        needs_review += int(counted.get("needs_review", 0))
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
        "decided": decided,
        "recorded": recorded,
        "recorded_by_method": {str(m): int(n) for m, n in per_method},
        "recorded_needs_review": flagged,
        "superseded": max(decided - recorded, 0),
        "mean_confidence": None if mean is None else round(mean, 4),
        "confidence_histogram": confidence_histogram(links).to_dicts(),
    }


def quarantine_report(groups: pl.DataFrame) -> dict[str, Any]:
    """Quarantined rows: total, by reason, and by (source table, reason), largest first."""
    by_reason = groups.group_by("reason").agg(pl.col("rows").sum())
    by_reason = by_reason.sort(["rows", "reason"], descending=[True, False])
    detail = groups.sort(["rows", "source_table", "reason"], descending=[True, False, False])
    return {
        "total": int(groups["rows"].sum()) if groups.height else 0,
        "by_reason": {str(r): int(n) for r, n in by_reason.rows()},
        "by_table": detail.to_dicts(),
    }


def rejected_report(groups: pl.DataFrame) -> dict[str, Any]:
    """Rows the target database rejected: how many, and how many per constraint."""
    ordered = groups.sort(["rows", "constraint"], descending=[True, False])
    return {
        "rows": int(groups["rows"].sum()) if groups.height else 0,
        "by_constraint": {str(c): int(n) for c, n in ordered.rows()},
    }


def repairs_report(groups: pl.DataFrame) -> dict[str, Any]:
    """Repairs: total, by kind, and by (source table, kind, field), largest first."""
    by_kind = groups.group_by("kind").agg(pl.col("rows").sum())
    by_kind = by_kind.sort(["rows", "kind"], descending=[True, False])
    detail = groups.sort(
        ["rows", "source_table", "kind", "field"], descending=[True, False, False, False]
    )
    return {
        "total": int(groups["rows"].sum()) if groups.height else 0,
        "by_kind": {str(k): int(n) for k, n in by_kind.rows()},
        "by_field": detail.to_dicts(),
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
        headline = "Failed: " + reasons[0]
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
        "quarantine": quarantine_report(facts.quarantine),
        "repairs": repairs_report(facts.repairs),
        "rejected": rejected_report(facts.rejected),
        "stages": timings,
        "retry_command": None if len(done) == len(batches) else retry_command(run_id),
        "files": list(REPORT_FILES),
        "sync": sync,
    }
    report["verdict"] = verdict(report).as_dict()
    return report


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:,.{digits}f}"


def _md_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Mapping[str, Any]) -> str:
    """The summary a reviewer reads first (also the Prefect markdown artifact)."""
    verdict_ = report.get("verdict") or verdict(report).as_dict()
    mark = {"ok": "✅", "review": "⚠️", "failed": "❌"}.get(verdict_["level"], "")
    batches = report["batches"]
    lines = [
        f"# Migration run {report['run_id']}",
        "",
        f"**{mark} {verdict_['headline']}**",
        "",
        f"- **Status:** {report['status']}" + (" (dry run)" if report.get("dry_run") else ""),
        f"- **Batches:** {batches['succeeded']} of {batches['total']} succeeded, "
        f"{batches['failed']} failed",
        f"- **Accounting balanced:** {'yes' if report['accounting_balanced'] else 'NO'}"
        + ("" if report["complete"] else " (over the succeeded batches only)"),
    ]
    sync = report.get("sync") or {}
    if sync.get("mode") == "incremental":
        lines.append(
            f"- **Incremental:** {sync.get('users_planned', 0)} users re-synced "
            f"({sync.get('users_new', 0)} new, {sync.get('users_changed', 0)} changed, "
            f"{sync.get('users_deleted', 0)} deleted), "
            f"{sync.get('users_unchanged', 0)} unchanged and skipped"
        )
    if report.get("wall_seconds") is not None:
        lines.append(f"- **Wall time:** {_num(report['wall_seconds'], 1)} s")
    lines += [f"- {reason}" for reason in verdict_["reasons"]]
    if report.get("retry_command"):
        lines += [
            "",
            "## Re-run the failed batches",
            "",
            f"Re-run them with `{report['retry_command']}` (same --source-url/--target-url, or "
            "SOURCE_DATABASE_URL/TARGET_DATABASE_URL).",
        ]
    lines += [
        "",
        "## Accounting per source table",
        "",
        "| source table | source | migrated | merged | quarantined | balanced |",
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    identity_ = report.get("identity", {})
    for name, c in report["tables"].items():
        ok = "yes" if identity_.get(name, True) else "**NO**"
        lines.append(
            f"| {name} | {c['source']} | {c['migrated']} | {c['merged']} | {c['quarantined']}"
            f" | {ok} |"
        )
    if "targets" in report:
        lines += [
            "",
            "## Target tables",
            "",
            "| target table | expected from the run | in the database | agree |",
            "| --- | ---: | ---: | :---: |",
        ]
        for name, t in report["targets"].items():
            held = "" if t["actual"] is None else t["actual"]
            agree = "yes" if t["match"] else target_disagreement(report, markdown=True)
            lines.append(f"| {name} | {t['expected']} | {held} | {agree} |")
    links = report["links"]
    lines += [
        "",
        "## Links of tagged models to configurations",
        "",
        f"**Links needing review:** {links['needs_review']}"
        + (" (listed in review.csv)" if links["needs_review"] else ""),
        "",
        "| link method | models |",
        "| --- | ---: |",
    ]
    lines += [f"| {method} | {n} |" for method, n in links["by_method"].items()]
    if links.get("superseded"):
        lines += [
            "",
            f"{links['superseded']} of this run's link decisions are no longer in the ledger "
            "(a later run re-linked those models, or a dry run, which records none): the "
            "histogram and review list cover the rest.",
        ]
    histogram = [h for h in links.get("confidence_histogram", []) if h["links"]]
    if histogram:
        lines += ["", "| confidence | links | need review |", "| --- | ---: | ---: |"]
        lines += [
            f"| {h['bin_from']:.1f}–{h['bin_to']:.1f} | {h['links']} | {h['needs_review']} |"
            for h in histogram
        ]
    quarantine = report.get("quarantine")
    if quarantine and quarantine["total"]:
        lines += [
            "",
            f"## Quarantine: {quarantine['total']} rows (quarantine.csv)",
            "",
            "| source table | reason | rows |",
            "| --- | --- | ---: |",
        ]
        lines += [
            f"| {q['source_table']} | {q['reason']} | {q['rows']} |" for q in quarantine["by_table"]
        ]
    repairs = report.get("repairs")
    if repairs and repairs["total"]:
        lines += [
            "",
            f"## Repairs: {repairs['total']}",
            "",
            "| kind | repairs |",
            "| --- | ---: |",
        ]
        lines += [f"| {kind} | {n} |" for kind, n in repairs["by_kind"].items()]
    stages = report.get("stages")
    if stages:
        lines += [
            "",
            "## Stage timings (summed over batches)",
            "",
            "| stage | seconds | share | slowest batch |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {stage} | {_num(t['seconds'])} | {t['share']:.0%} | "
            f"{_num(t['max_batch_seconds'])} |"
            for stage, t in stages.items()
        ]
    lines += _markdown_batches(report["batch_list"])
    if links["needs_review"]:
        lines += [
            "",
            "## Reviewing links",
            "",
            "review.csv lists every flagged link with its candidates. Put the configuration you "
            "choose in `circuit_config_id` (leave it empty to keep a row undecided; every "
            "non-empty row is applied) and run again with `--link-overrides review.csv`.",
        ]
    return "\n".join(lines) + "\n"


def _markdown_batches(batch_list: Sequence[Mapping[str, Any]]) -> list[str]:
    failed = [b for b in batch_list if b["status"] != "succeeded"]
    lines: list[str] = []
    if failed:
        lines += ["", "## Batches not succeeded", ""]
        lines += [f"- batch {b['batch_no']} ({b['status']}): {b['error']}" for b in failed]
    shown = batch_list if len(batch_list) <= MARKDOWN_BATCHES else failed
    if not shown:
        return lines
    title = "## Batches" if shown is batch_list else "## Batches (the not succeeded ones)"
    lines += [
        "",
        title,
        "",
        "| batch | status | attempts | users | rows | seconds | rows/s | error |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {b['batch_no']} | {b['status']} | {b['attempts']} | {b['users']} | {b['rows']} | "
        f"{_num(b['seconds'])} | {_num(b['rows_per_second'], 0)} | {_md_cell(b['error'])} |"
        for b in shown
    ]
    return lines
