"""Reconciliation of a run from its batches' ledger counts: pure functions, fixed shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.tables import SOURCE_TABLES

ACCOUNTING_KEYS = ("source", "migrated", "merged", "quarantined")


@dataclass(frozen=True)
class BatchRow:
    """One batch as the ledger holds it."""

    batch_no: int
    status: str
    attempts: int
    error: str | None
    counts: Mapping[str, Any]
    seconds: float | None = None


def run_report(
    run_id: str, status: str, dry_run: bool, batches: Sequence[BatchRow]
) -> dict[str, Any]:
    """The report.json document (DESIGN.md section 8 fields, then extensions)."""
    tables = {name: dict.fromkeys(ACCOUNTING_KEYS, 0) for name in SOURCE_TABLES}
    by_method: dict[str, int] = {}
    needs_review = 0
    targets: dict[str, int] = {}
    timings: dict[str, float] = {}
    done = [b for b in batches if b.status == "succeeded"]
    for batch in done:
        for name, counts in batch.counts.get("tables", {}).items():
            for key in ACCOUNTING_KEYS:
                tables.setdefault(name, dict.fromkeys(ACCOUNTING_KEYS, 0))[key] += int(counts[key])
        links = batch.counts.get("links", {})
        for method, n in links.get("by_method", {}).items():
            by_method[method] = by_method.get(method, 0) + int(n)
        needs_review += int(links.get("needs_review", 0))
        for name, n in batch.counts.get("targets", {}).items():
            targets[name] = targets.get(name, 0) + int(n)
        for stage, seconds in batch.counts.get("timings", {}).items():
            timings[stage] = round(timings.get(stage, 0.0) + float(seconds), 4)
    balanced = {
        name: c["source"] == c["migrated"] + c["merged"] + c["quarantined"]
        for name, c in tables.items()
    }
    failed = sum(1 for b in batches if b.status == "failed")
    return {
        "run_id": run_id,
        "status": status,
        "dry_run": dry_run,
        "tables": tables,
        "links": {"by_method": dict(sorted(by_method.items())), "needs_review": needs_review},
        "batches": {"total": len(batches), "succeeded": len(done), "failed": failed},
        "accounting_balanced": all(balanced.values()),
        "complete": len(done) == len(batches),
        "target_rows_expected": targets,
        "stage_seconds": timings,
        "batch_list": [
            {
                "batch_no": b.batch_no,
                "status": b.status,
                "attempts": b.attempts,
                "users": int(b.counts.get("users", 0)),
                "rows": int(b.counts.get("rows", 0)),
                "seconds": b.seconds,
                "error": b.error,
            }
            for b in batches
        ],
    }


def render_markdown(report: Mapping[str, Any]) -> str:
    """The summary a reviewer reads first."""
    lines = [
        f"# Migration run {report['run_id']}",
        "",
        f"- **Status:** {report['status']}" + (" (dry run)" if report.get("dry_run") else ""),
        f"- **Batches:** {report['batches']['succeeded']} of {report['batches']['total']} "
        f"succeeded, {report['batches']['failed']} failed",
        f"- **Accounting balanced:** {'yes' if report['accounting_balanced'] else 'NO'}"
        + ("" if report["complete"] else " (over the succeeded batches only)"),
        "",
        "| source table | source | migrated | merged | quarantined |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, c in report["tables"].items():
        lines.append(
            f"| {name} | {c['source']} | {c['migrated']} | {c['merged']} | {c['quarantined']} |"
        )
    links = report["links"]
    lines += ["", f"**Links needing review:** {links['needs_review']}", ""]
    lines += ["| link method | models |", "| --- | ---: |"]
    lines += [f"| {method} | {n} |" for method, n in links["by_method"].items()]
    failed = [b for b in report["batch_list"] if b["status"] != "succeeded"]
    if failed:
        lines += ["", "## Batches not succeeded", ""]
        lines += [f"- batch {b['batch_no']} ({b['status']}): {b['error']}" for b in failed]
        lines += ["", f"Re-run them with `circuit-migrate retry {report['run_id']}`."]
    return "\n".join(lines) + "\n"
