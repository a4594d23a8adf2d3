"""report.html: valid, self-contained HTML5 with every section, whatever the data holds."""

from __future__ import annotations

import polars as pl

from reports.html import SECTIONS, render_html
from reports.reconcile import QUARANTINE_EXAMPLES, run_report
from reports.review import CONFIG_NAMES, REVIEW_LINKS, review_frame
from schemas.contract import LINK_METHODS, QUARANTINE_REASONS, REPAIR_KINDS
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


def test_page_states_settings_explains_codes_and_escapes_examples() -> None:
    hostile = facts(
        quarantine_examples=pl.DataFrame(
            {
                "reason": ["invalid_parameters"],
                "source_table": ["tagged_models"],
                "source_id": ["m-1"],
                "detail": [HOSTILE],
                "payload": ['{"note": "<b>bold</b>"}'],
            },
            schema=dict(QUARANTINE_EXAMPLES),
        )
    )
    report = run_report(RUN, "succeeded", False, [batch(1)], hostile)
    page = render_html(report, review_frame(links(), NAMES))
    assert html5_errors(page) == []
    assert "<script>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    settings = page[page.index('id="settings"') : page.index('id="accounting"')]
    for label, value in (("source schema", "legacy"), ("link overrides file", "reviewed.csv")):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in settings
    assert QUARANTINE_REASONS["invalid_parameters"] in page
    glossary = page[page.index('id="glossary"') :]
    for code in (*QUARANTINE_REASONS, *REPAIR_KINDS, *LINK_METHODS):
        assert f"<dt>{code}</dt>" in glossary, code
    assert '<a href="../index.html">all runs</a>' in page


def test_tables_scroll_or_stack_on_a_phone() -> None:
    report = run_report(RUN, "succeeded", False, [batch(1), batch(2, review=3)], facts())
    page = render_html(report, review_frame(links(), NAMES))
    assert page.count('<div class="scroll"><table') == page.count("<table")
    assert "@media (max-width: 640px)" in page and "background-attachment: local" in page
    assert 'td class="ex" data-label="example row"' in page  # stacked: labelled lines
    assert 'data-label="candidate 1"' in page
    assert '<p class="hint">' in page  # under the wide batch table
    assert "</a> <a" in page  # the section links can wrap
