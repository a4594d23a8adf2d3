"""report.md: the summary a reviewer reads first (also the Prefect markdown artifact), rendered
from a ``run_report`` document."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from reports.reconcile import (
    GLOSSARIES,
    example_text,
    meaning,
    run_settings,
    target_disagreement,
    verdict,
)
from schemas.contract import LINK_METHODS, QUARANTINE_REASONS, REPAIR_KINDS

MARKDOWN_BATCHES = 50
"""Batches listed one by one in report.md (the failed ones always are)."""


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:,.{digits}f}"


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Mapping[str, Any]) -> str:
    """The whole report.md."""
    lines = [
        *_headline(report),
        *_retry(report),
        *_settings(report),
        *_accounting(report),
        *_targets(report),
        *_links(report),
        *_quarantine(report),
        *_repairs(report),
        *_stages(report),
        *_batches(report["batch_list"]),
        *_reviewing(report),
        *_glossary(),
    ]
    return "\n".join(lines) + "\n"


def _headline(report: Mapping[str, Any]) -> list[str]:
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
    return lines + [f"- {reason}" for reason in verdict_["reasons"]]


def _retry(report: Mapping[str, Any]) -> list[str]:
    if not report.get("retry_command"):
        return []
    return [
        "",
        "## Re-run the failed batches",
        "",
        f"Re-run them with `{report['retry_command']}` (same --source-url/--target-url, or "
        "SOURCE_DATABASE_URL/TARGET_DATABASE_URL).",
    ]


def _settings(report: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Settings", "", "| setting | value |", "| --- | --- |"]
    return lines + [f"| {label} | {_cell(value)} |" for label, value in run_settings(report)]


def _accounting(report: Mapping[str, Any]) -> list[str]:
    lines = [
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
    return lines


def _targets(report: Mapping[str, Any]) -> list[str]:
    if "targets" not in report:
        return []
    lines = [
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
    return lines


def _links(report: Mapping[str, Any]) -> list[str]:
    links = report["links"]
    lines = [
        "",
        "## Links of tagged models to configurations",
        "",
        f"**Links needing review:** {links['needs_review']}"
        + (" (listed in review.csv)" if links["needs_review"] else ""),
        *_decision_lines(links),
        "",
        "| link method | models | what it means |",
        "| --- | ---: | --- |",
    ]
    lines += [
        f"| {method} | {n} | {_cell(meaning(LINK_METHODS, method))} |"
        for method, n in links["by_method"].items()
    ]
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
    return lines


def _explained(
    counts: Mapping[str, int], codes: Mapping[str, str], examples: Mapping[str, Any]
) -> list[str]:
    """Rows of code, count, meaning and example row, in the order of ``counts``."""
    return [
        f"| {code} | {n} | {_cell(meaning(codes, code))} | "
        f"{_cell(example_text(examples.get(code)))} |"
        for code, n in counts.items()
    ]


def _quarantine(report: Mapping[str, Any]) -> list[str]:
    quarantine = report.get("quarantine")
    if not quarantine or not quarantine["total"]:
        return []
    lines = [
        "",
        f"## Quarantine: {quarantine['total']} rows (quarantine.csv)",
        "",
        "| reason | rows | what it means | example row |",
        "| --- | ---: | --- | --- |",
        *_explained(quarantine["by_reason"], QUARANTINE_REASONS, quarantine.get("examples") or {}),
        "",
        "| source table | reason | rows |",
        "| --- | --- | ---: |",
    ]
    return lines + [
        f"| {q['source_table']} | {q['reason']} | {q['rows']} |" for q in quarantine["by_table"]
    ]


def _repairs(report: Mapping[str, Any]) -> list[str]:
    repairs = report.get("repairs")
    if not repairs or not repairs["total"]:
        return []
    return [
        "",
        f"## Repairs: {repairs['total']}",
        "",
        "| kind | repairs | what it means | example row |",
        "| --- | ---: | --- | --- |",
        *_explained(repairs["by_kind"], REPAIR_KINDS, repairs.get("examples") or {}),
    ]


def _stages(report: Mapping[str, Any]) -> list[str]:
    stages = report.get("stages")
    if not stages:
        return []
    lines = [
        "",
        "## Stage timings (summed over batches)",
        "",
        "| stage | seconds | share | slowest batch |",
        "| --- | ---: | ---: | ---: |",
    ]
    return lines + [
        f"| {stage} | {_num(t['seconds'])} | {t['share']:.0%} | {_num(t['max_batch_seconds'])} |"
        for stage, t in stages.items()
    ]


def _batches(batch_list: Sequence[Mapping[str, Any]]) -> list[str]:
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
    return lines + [
        f"| {b['batch_no']} | {b['status']} | {b['attempts']} | {b['users']} | {b['rows']} | "
        f"{_num(b['seconds'])} | {_num(b['rows_per_second'], 0)} | {_cell(b['error'])} |"
        for b in shown
    ]


def _decision_lines(links: Mapping[str, Any]) -> list[str]:
    """The reviewer's recorded decisions this run applied, and those that no longer apply."""
    decisions = links.get("decisions") or {}
    applied, stale = int(decisions.get("applied", 0)), int(decisions.get("not_applied", 0))
    if not applied and not stale:
        return []
    return [
        "",
        f"**Reviewer's decisions:** {applied} applied"
        + (f", {stale} no longer apply (listed in review.csv)" if stale else ""),
    ]


def _reviewing(report: Mapping[str, Any]) -> list[str]:
    if not report["links"]["needs_review"]:
        return []
    return [
        "",
        "## Reviewing links",
        "",
        "review.csv lists every flagged link with its candidates. Fill `circuit_config_id` in a "
        "copy of review.csv (a candidate's id, or `accept` for the suggestion; leave a row "
        "empty to keep it undecided), then `circuit-migrate review import FILE`: every later "
        "run applies the recorded decisions.",
    ]


def _glossary() -> list[str]:
    lines = ["", "## Glossary"]
    for title, _, codes in GLOSSARIES:
        lines += ["", f"**{title}**", ""]
        lines += [f"- `{code}`: {text}" for code, text in codes.items()]
    return lines
