"""index.html: every run, newest first, with its verdict and links to the files it has."""

from __future__ import annotations

from typing import Any

from reports.index import render_index
from reports.reconcile import REPORT_FILES
from tests.reports.htmlcheck import html5_errors

OK_RUN = "00000000-0000-4000-8000-00000000000a"
BARE_RUN = "00000000-0000-4000-8000-00000000000b"


def run(run_id: str, **kw: Any) -> dict[str, Any]:
    """A run as ``ledger.RunListing.as_dict()`` gives it, with the index's fields."""
    return {
        "run_id": run_id,
        "status": "succeeded",
        "dry_run": False,
        "mode": "full",
        "started_at": "2025-01-01T01:00:00+01:00",
        "finished_at": "2025-01-01T01:02:05+01:00",
        "seconds": 125.0,
        "batches": {"total": 4, "succeeded": 4, "failed": 0},
        "verdict": {"level": "ok", "headline": "Clean: <every> row", "reasons": []},
        "verdict_from": "report",
        "files": list(REPORT_FILES),
        **kw,
    }


def test_index_links_each_run_to_its_files_and_states_its_verdict() -> None:
    runs = [
        run(OK_RUN),
        run(BARE_RUN, files=[], verdict_from="ledger", dry_run=True, mode="incremental",
            verdict={"level": "failed", "headline": "Failed: 1 of 4 batches failed"}),
    ]  # fmt: skip
    page = render_index(runs, REPORT_FILES)
    assert html5_errors(page) == []
    assert f'<a href="{OK_RUN}/report.html">{OK_RUN}</a>' in page
    assert f'<a href="{OK_RUN}/quarantine.csv">quarantine.csv</a>' in page
    assert "Clean: &lt;every&gt; row" in page and '<span class="badge ok">ok</span>' in page
    assert "2025-01-01 00:00:00" in page and "2m 05s" in page  # UTC, and how long it took
    assert f"<code>circuit-migrate report {BARE_RUN}</code>" in page
    assert f'href="{BARE_RUN}/' not in page
    assert "(from the ledger)" in page and "incremental, dry run" in page
    assert page.index(OK_RUN) < page.index(BARE_RUN)  # in the order given: newest first
    assert 'data-label="verdict"' in page  # each run stacks as a block on a phone


def test_index_of_an_empty_ledger_and_of_a_running_run() -> None:
    empty = render_index([], REPORT_FILES)
    assert html5_errors(empty) == [] and "No run yet" in empty
    running = render_index([run(OK_RUN, status="running", verdict=None, files=[])], REPORT_FILES)
    assert html5_errors(running) == [] and "in progress" in running
