"""What the commands print: rich tables and JSON documents, from the shapes the ledger listings
(``as_dict``), ``run_report`` and ``verify`` give. Run ids are never cut."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from reports.reconcile import duration_text, utc_text
from reports.verification import Verification


def to_json(document: Any) -> str:
    """``document`` as indented JSON (dates and other values as text)."""
    return json.dumps(document, indent=2, default=str)


def _mode(run: Mapping[str, Any]) -> str:
    mode = str(run.get("mode") or "full")
    return mode + (" (dry run)" if run.get("dry_run") else "")


def runs_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    """The latest runs (``RunListing.as_dict()`` rows), newest first; fits 80 columns with the
    run ids whole (durations are in ``status RUN_ID`` and ``--json``)."""
    table = Table(
        box=None, padding=(0, 1, 0, 0), header_style="bold underline", title="runs, newest first"
    )
    table.add_column("run_id", no_wrap=True, min_width=36)
    table.add_column("started (UTC)", min_width=10)
    table.add_column("status", no_wrap=True)
    table.add_column("mode", min_width=11)
    table.add_column("batches", justify="right")
    for run in runs:
        batches = run["batches"]
        table.add_row(
            run["run_id"],
            utc_text(run.get("started_at")),
            run["status"],
            _mode(run),
            f"{batches['succeeded']}/{batches['total']}"
            + (f", {batches['failed']} failed" if batches["failed"] else ""),
        )
    if not runs:
        table.caption = "no run in the ledger yet"
    return table


def batches_table(run: Mapping[str, Any], batches: Sequence[Mapping[str, Any]]) -> Table:
    """One run's batches (``BatchListing.as_dict()`` rows) under a title naming the run."""
    title = f"run {run['run_id']}: {run['status']}, {_mode(run)}"
    if run.get("seconds") is not None:
        title += f", took {duration_text(run['seconds'])}"
    table = Table(box=None, pad_edge=False, header_style="bold underline", title=title)
    for name in ("batch", "status", "attempts", "users", "rows"):
        table.add_column(name, justify="left" if name == "status" else "right", no_wrap=True)
    table.add_column("started (UTC)")
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold")
    for b in batches:
        table.add_row(
            str(b["batch_no"]),
            b["status"],
            str(b["attempts"]),
            f"{b['users']:,}",
            f"{b['rows']:,}",
            utc_text(b.get("started_at")),
            duration_text(b.get("seconds")),
            b.get("error") or "",
        )
    return table


def run_summary(report: Mapping[str, Any]) -> Group:
    """The end of a run in a terminal, from its ``run_report`` document: the verdict's headline,
    then per source table what became of its rows, and the quarantine and review totals."""
    verdict = report["verdict"]
    style = {"ok": "green", "review": "yellow", "failed": "red"}.get(verdict["level"], "")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("source table")
    for key in ("source", "migrated", "merged", "quarantined"):
        table.add_column(key, justify="right")
    for name, c in report["tables"].items():
        table.add_row(
            name, *(f"{c[key]:,}" for key in ("source", "migrated", "merged", "quarantined"))
        )
    reasons = ", ".join(f"{r} {n:,}" for r, n in report["quarantine"]["by_reason"].items())
    totals = (
        f"quarantined: {reasons or 'none'}; links to review: {report['links']['needs_review']:,}"
    )
    return Group(Text(verdict["headline"], style=style), table, Text(totals))


def run_document(
    report: Mapping[str, Any], folder: str, flow_run_url: str | None = None
) -> dict[str, Any]:
    """``run --json``: the run's report.json document, its report folder and, when a Prefect
    server is configured, the UI page of its flow run."""
    return {**report, "report_folder": folder, "prefect_flow_run_url": flow_run_url}


def verification_document(result: Verification) -> dict[str, Any]:
    """``verify --json``: the outcome and every difference (user, check, expected, found)."""
    differences = result.differences
    return {
        "ok": result.ok,
        "users_checked": result.users_checked,
        "users_differing": differences["user_id"].n_unique() if differences.height else 0,
        "differences": differences.to_dicts(),
        "latest_run_id": result.run_id,
    }
