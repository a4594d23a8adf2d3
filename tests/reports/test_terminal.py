"""What the commands print: run ids never cut at 80 columns, JSON documents."""

from __future__ import annotations

import json

import polars as pl
from rich.console import Console

from reports.reconcile import run_report
from reports.terminal import (
    batches_table,
    run_document,
    run_summary,
    runs_table,
    to_json,
    verification_document,
)
from reports.verification import DIFFERENCES, verification
from tests.reports.test_index import BARE_RUN, OK_RUN, run
from tests.reports.test_reconcile import RUN, batch, facts


def rendered(table: object, width: int = 80) -> str:
    console = Console(width=width, record=True, highlight=False)
    console.print(table)
    return console.export_text()


def test_runs_table_keeps_whole_run_ids_at_80_columns() -> None:
    runs = [run(OK_RUN), run(BARE_RUN, mode="incremental", dry_run=True,
                             batches={"total": 12, "succeeded": 11, "failed": 1})]  # fmt: skip
    text = rendered(runs_table(runs))
    assert OK_RUN in text and BARE_RUN in text and "…" not in text
    assert "11/12, 1 failed" in text.replace("\n", " ") or "11/12," in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "no run in the ledger yet" in rendered(runs_table([]))


def test_batches_table_names_the_run_and_folds_long_errors() -> None:
    batch_rows = [
        {"batch_no": 1, "status": "failed", "attempts": 2, "users": 2500, "rows": 51234,
         "started_at": "2025-01-01T00:00:00+00:00", "seconds": 3.5, "error": "x" * 150},
    ]  # fmt: skip
    text = rendered(batches_table(run(OK_RUN), batch_rows))
    assert OK_RUN in text and "2,500" in text and "51,234" in text and "3.5 s" in text
    assert text.count("x") == 150  # folded over lines, not cut


def test_summary_table_and_run_document() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1), batch(2)], facts())
    text = rendered(run_summary(report), width=100)
    assert report["verdict"]["headline"] in text.replace("\n", " ")
    assert "tagged_models" in text and "invalid_parameters 5" in text
    document = json.loads(to_json(run_document(report, "reports/x", "http://ui/runs/1")))
    assert document["run_id"] == RUN and document["report_folder"] == "reports/x"
    assert document["prefect_flow_run_url"] == "http://ui/runs/1"


def test_verification_document_lists_every_difference() -> None:
    differences = pl.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "check": ["a", "b", "c"], "expected": ["1"] * 3,
         "actual": ["2"] * 3},
        schema=dict(DIFFERENCES),
    )  # fmt: skip
    document = verification_document(verification(differences, 10, RUN))
    assert document["ok"] is False and document["users_differing"] == 2
    assert document["differences"][0] == {"user_id": "u1", "check": "a", "expected": "1",
                                          "actual": "2"}  # fmt: skip
    clean = verification_document(verification(differences.clear(), 10))
    assert clean == {"ok": True, "users_checked": 10, "users_differing": 0, "differences": [],
                     "latest_run_id": None}  # fmt: skip
