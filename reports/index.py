"""index.html: the report folder's list of every run in the ledger, newest first, with its
verdict and links to its report files (a self-contained page like report.html)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from reports.html import Markup, html_table, page
from reports.reconcile import duration_text, utc_text

INDEX_COLUMNS = ("run", "verdict", "started (UTC)", "status", "mode", "batches", "took", "files")


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _verdict(run: Mapping[str, Any]) -> Markup:
    verdict = run.get("verdict")
    if not verdict:
        text = "in progress" if run["status"] == "running" else "none"
        return Markup(f'<span class="badge none">{_e(text)}</span>')
    level = str(verdict["level"])
    note = " (from the ledger)" if run.get("verdict_from") == "ledger" else ""
    return Markup(
        f'<span class="badge {_e(level)}">{_e(level)}</span> {_e(verdict["headline"])}{_e(note)}'
    )


def _files(run: Mapping[str, Any]) -> Markup:
    present = list(run.get("files") or [])
    if not present:
        return Markup(
            f"none here: <code>circuit-migrate report {_e(run['run_id'])}</code> writes them"
        )
    links = " · ".join(
        f'<a href="{_e(run["run_id"])}/{_e(name)}">{_e(name)}</a>' for name in present
    )
    return Markup(links)


def _run_link(run: Mapping[str, Any]) -> Markup:
    run_id = _e(run["run_id"])
    if "report.html" in (run.get("files") or []):
        return Markup(f'<a href="{run_id}/report.html">{run_id}</a>')
    return Markup(run_id)


def render_index(runs: Sequence[Mapping[str, Any]], shown_files: Sequence[str]) -> str:
    """The page for ``runs`` (``ledger.RunListing.as_dict()`` rows, newest first, each with
    ``verdict`` (level and headline, or None), ``verdict_from`` (``report`` or ``ledger``) and
    ``files``: which of ``shown_files`` its folder holds)."""
    rows = []
    for run in runs:
        batches = run["batches"]
        mode = str(run.get("mode") or "") + (", dry run" if run.get("dry_run") else "")
        if run.get("retry_of"):
            mode += f", retry of {run['retry_of']}"
        rows.append(
            [
                _run_link(run),
                _verdict(run),
                utc_text(run.get("started_at")),
                run["status"],
                mode,
                f"{batches['succeeded']}/{batches['total']}",
                duration_text(run.get("seconds"))
                or ("running" if run["status"] == "running" else ""),
                _files(run),
            ]
        )
    listed = ", ".join(f"<code>{_e(name)}</code>" for name in shown_files)
    body = (
        "<h1>Migration runs</h1>"
        f'<p class="meta">{len(runs)} run{"s" if len(runs) != 1 else ""} in the ledger, newest '
        f"first. Each run's folder here holds its report ({listed}). A verdict is the one its "
        "report.json states; a run without one here is judged from the ledger (without the "
        "target row counts).</p>"
    )
    if not rows:
        return page("Migration runs", body + '<p class="empty">No run yet.</p>')
    return page(
        "Migration runs",
        body
        + '<section id="runs">'
        + html_table(
            INDEX_COLUMNS,
            rows,
            numeric=(5, 6),
            classes={0: "id", 1: "text", 7: "text"},
            stack=True,
        )
        + "</section>",
    )
