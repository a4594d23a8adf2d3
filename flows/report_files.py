"""Writes a run's report files from the ledger (the figures come from reports/)."""

from __future__ import annotations

import json
from pathlib import Path

from flows import db, ledger
from reports.reconcile import BatchRow, render_markdown, run_report


def write_run_report(target_url: str, run_id: str, report_dir: Path) -> Path:
    """Write ``report.json`` and ``report.md`` under ``report_dir/run_id``; returns the folder."""
    with db.connect(target_url, autocommit=True) as conn:
        record = ledger.get_run(conn, run_id)
        rows = conn.execute(
            "select batch_no, status, attempts, error, coalesce(counts, '{}'::jsonb),"
            " extract(epoch from finished_at - started_at)::float8"
            " from migration.batches where run_id = %s order by batch_no",
            [run_id],
        ).fetchall()
    batches = [BatchRow(*row) for row in rows]
    report = run_report(record.run_id, record.status, record.dry_run, batches)
    folder = report_dir / record.run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (folder / "report.md").write_text(render_markdown(report))
    return folder
