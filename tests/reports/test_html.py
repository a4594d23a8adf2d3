"""report.html: valid, self-contained HTML5 with every section, whatever the data holds."""

from __future__ import annotations

import polars as pl

from reports.html import SECTIONS, render_html
from reports.reconcile import run_report
from reports.review import CONFIG_NAMES, REVIEW_LINKS, review_frame
from tests.reports.htmlcheck import html5_errors, section_ids
from tests.reports.test_reconcile import RUN, BatchRow, batch, facts
from tests.reports.test_review import NAMES, links

HOSTILE = '<script>alert("x")</script> & "quotes" </section>'


def test_clean_run_page_is_valid_and_has_every_section() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1), batch(2, review=3)], facts())
    page = render_html(report, review_frame(links(), NAMES))
    assert html5_errors(page) == []
    assert {key for key, _ in SECTIONS} <= section_ids(page)
    assert page.count("<svg") >= 5  # accounting, methods, histogram, quarantine, timeline...
    assert "Control (twin)" in page and "circuit_config_id" in page
    assert "circuit-migrate retry" not in page


def test_failed_run_page_names_the_retry_command_and_escapes_errors() -> None:
    failed = BatchRow(3, "failed", 2, HOSTILE, {"users": 5}, 1.0, None, None)
    report = run_report(RUN, "failed", False, [batch(1), failed], facts())
    page = render_html(report, review_frame(pl.DataFrame(schema=dict(REVIEW_LINKS)), NAMES))
    assert html5_errors(page) == []
    assert f"circuit-migrate retry {RUN}" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "No link needs review" in page


def test_empty_run_page_is_valid() -> None:
    report = run_report(RUN, "succeeded", True, [], facts(target_rows=None))
    page = render_html(
        report,
        review_frame(pl.DataFrame(schema=dict(REVIEW_LINKS)), pl.DataFrame(schema=CONFIG_NAMES)),
    )
    assert html5_errors(page) == []
    assert {key for key, _ in SECTIONS} <= section_ids(page)


def test_checker_catches_broken_markup() -> None:
    page = render_html(run_report(RUN, "succeeded", False, [batch(1)], facts()), review_frame(
        pl.DataFrame(schema=dict(REVIEW_LINKS)), NAMES))  # fmt: skip
    assert html5_errors(page.replace("</table>", "", 1))
    assert html5_errors(page.replace("<main>", '<main><img src="https://x/y.png">'))
    assert html5_errors(page.replace("<!DOCTYPE html>", ""))
