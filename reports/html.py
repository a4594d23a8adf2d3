"""report.html: one self-contained HTML5 page (inline CSS, charts as inline SVG, no script, no
network) rendered from a ``run_report`` document and the review frame.

Wide tables scroll sideways inside their box, with a shadow at the edge that has more (and a
hint on narrow screens), so nothing is cut off on a phone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import polars as pl

from reports.reconcile import (
    GLOSSARIES,
    INDEX_FILE,
    meaning,
    run_settings,
    target_disagreement,
    utc_text,
)
from schemas.contract import LINK_METHODS, QUARANTINE_REASONS, REPAIR_KINDS

SECTIONS = (
    ("verdict", "Verdict"),
    ("settings", "Settings"),
    ("accounting", "Accounting per source table"),
    ("targets", "Target tables"),
    ("links", "Links and confidence"),
    ("quarantine", "Quarantine reasons"),
    ("repairs", "Repairs"),
    ("batches", "Batch timeline"),
    ("stages", "Stage timings"),
    ("review", "Review list"),
    ("glossary", "Glossary"),
)
"""Section ids and titles, in page order (every page has them all)."""

REVIEW_ROWS_SHOWN = 500
BATCH_ROWS_SHOWN = 200
WIDE_COLUMNS = 5
"""Tables with this many columns get a "scroll sideways" hint on narrow screens."""
EXAMPLE_SHOWN = 120
"""Characters of an example row's detail, payload or value shown."""

COLORS = {
    "migrated": "#2e7d32",
    "merged": "#1565c0",
    "quarantined": "#ef6c00",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "running": "#6a1b9a",
    "pending": "#9e9e9e",
    "bar": "#1565c0",
    "review": "#ef6c00",
}

PAGE_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2328; background: #f6f8fa; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 0 0 12px; }
h3 { font-size: 1rem; margin: 12px 0 6px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 16px 20px;
  margin: 16px 0; min-width: 0; }
nav { font-size: .9rem; margin: 8px 0 0; line-height: 1.9; }
nav a { margin-right: 12px; color: #0969da; text-decoration: none; white-space: nowrap; }
a { color: #0969da; }
.meta { color: #57606a; font-size: .9rem; overflow-wrap: anywhere; }
.verdict { border-left: 8px solid; }
.verdict-ok { border-left-color: #2e7d32; }
.verdict-review { border-left-color: #ef6c00; }
.verdict-failed { border-left-color: #c62828; }
.headline { font-size: 1.25rem; font-weight: 600; margin: 0 0 8px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
  font-size: .8rem; font-weight: 600; text-transform: uppercase; vertical-align: middle; }
.ok { background: #2e7d32; } .review { background: #ef6c00; } .failed { background: #c62828; }
.none { background: #8c959f; }
code, .cmd { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .88rem; overflow-wrap: anywhere; }
.cmd { display: block; background: #1f2328; color: #fff; padding: 8px 12px; border-radius: 6px;
  margin: 8px 0; overflow-x: auto; }
.scroll { overflow-x: auto; margin: 8px 0; background-color: #fff;
  background-image: linear-gradient(to right, #fff 40%, rgba(255,255,255,0)),
    linear-gradient(to left, #fff 40%, rgba(255,255,255,0)),
    radial-gradient(farthest-side at 0 50%, rgba(31,35,40,.3), rgba(31,35,40,0)),
    radial-gradient(farthest-side at 100% 50%, rgba(31,35,40,.3), rgba(31,35,40,0));
  background-position: left center, right center, left center, right center;
  background-size: 40px 100%, 40px 100%, 14px 100%, 14px 100%;
  background-repeat: no-repeat;
  background-attachment: local, local, scroll, scroll; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border-bottom: 1px solid #d8dee4; padding: 4px 8px; text-align: left;
  vertical-align: top; }
th { border-bottom: 2px solid #d0d7de; font-weight: 600; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.err { color: #c62828; min-width: 16em; max-width: 420px; overflow-wrap: anywhere; }
td.id { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .8rem;
  overflow-wrap: anywhere; min-width: 12em; }
td.text { min-width: 14em; }
td.ex { min-width: 16em; max-width: 520px; overflow-wrap: anywhere; font-size: .85rem; }
.payload { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .8rem;
  color: #57606a; }
.hint { display: none; color: #57606a; font-size: .8rem; margin: -4px 0 8px; }
.bad { color: #c62828; font-weight: 600; } .good { color: #2e7d32; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
.grid > div { min-width: 0; }
.chart { margin: 8px 0; }
svg { max-width: 100%; height: auto; display: block; }
svg text { font: 12px system-ui, sans-serif; fill: #1f2328; }
.legend span { display: inline-block; margin-right: 14px; font-size: .85rem; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
dl.settings { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px;
  margin: 0; }
dl.settings dt { color: #57606a; }
dl.settings dd { margin: 0; overflow-wrap: anywhere; }
dl.codes dt { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .88rem;
  margin-top: 6px; }
dl.codes dd { margin: 0 0 0 16px; }
details summary { cursor: pointer; color: #0969da; }
.empty { color: #57606a; font-style: italic; }
@media (max-width: 640px) {
  body { font-size: 14px; }
  main { padding: 12px 8px 32px; }
  section { padding: 12px 10px; margin: 12px 0; }
  h1 { font-size: 1.2rem; }
  .headline { font-size: 1.05rem; }
  table { font-size: .82rem; }
  th, td { padding: 3px 6px; }
  .hint { display: block; }
  .chart svg text { font-size: 16px; }
  table.stack thead { display: none; }
  table.stack tr { display: block; border-bottom: 1px solid #d8dee4; padding: 4px 0; }
  table.stack td { display: block; border: 0; padding: 1px 4px; min-width: 0; max-width: none;
    text-align: left; }
  table.stack td[data-label]::before { content: attr(data-label) ": "; color: #57606a;
    font-family: system-ui, sans-serif; font-size: .8rem; }
}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:,.{digits}f}"


class Markup(str):
    """Cell text that is already HTML (built here from escaped parts): not escaped again."""


def _cell(value: object) -> str:
    return value if isinstance(value, Markup) else _e(value)


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    numeric: Sequence[int] = (),
    classes: Mapping[int, str] | None = None,
    *,
    stack: bool = False,
) -> str:
    """A table of escaped cells (``Markup`` cells as they are); columns in ``numeric``
    right-aligned. On a narrow screen a ``stack`` table shows each row as a block of labelled
    lines; any other scrolls sideways in its box, with a shadow at the edge that has more (and
    a hint under a wide one)."""
    classes = dict(classes or {})
    for i in numeric:
        classes.setdefault(i, "n")
    head = "".join(
        f'<th class="{classes[i]}">{_e(h)}</th>' if classes.get(i) == "n" else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f"<td{_attrs(classes.get(i), headers[i] if stack else None)}>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    opening = '<table class="stack">' if stack else "<table>"
    table = f"{opening}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    hint = (
        '<p class="hint">Wider than the screen: scroll the table sideways →</p>'
        if len(headers) >= WIDE_COLUMNS and not stack
        else ""
    )
    return f'<div class="scroll">{table}</div>{hint}'


def _attrs(css_class: str | None, label: str | None) -> str:
    out = f' class="{_e(css_class)}"' if css_class else ""
    return out + (f' data-label="{_e(label)}"' if label else "")


def _decisions_note(links: Mapping[str, Any]) -> str:
    decisions = links.get("decisions") or {}
    applied, stale = int(decisions.get("applied", 0)), int(decisions.get("not_applied", 0))
    if not applied and not stale:
        return ""
    text = f"Reviewer's decisions: {_n(applied)} applied"
    if stale:
        text += f", {_n(stale)} no longer apply (listed in review.csv)"
    return f"<p>{_e(text)}.</p>"


def _chart(svg: str) -> str:
    """A chart that keeps a readable size on a narrow screen and scrolls sideways there."""
    return f'<div class="chart">{svg}</div>'


def _svg(width: int, height: int, label: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_e(label)}">'
        f"<title>{_e(label)}</title>{body}</svg>"
    )


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(
        f'<span><i style="background:{color}"></i>{_e(name)}</span>' for name, color in items
    )
    return f'<p class="legend">{spans}</p>'


def hbar_chart(
    items: Sequence[tuple[str, float]],
    label: str,
    color: str = COLORS["bar"],
    width: int = 480,
    digits: int = 0,
    unit: str = "",
) -> str:
    """Horizontal bars, one per (label, value): the label above its bar (so long labels need
    no margin and the chart stays readable scaled to a phone), the value at the bar's end."""
    if not items:
        return '<p class="empty">nothing to chart</p>'
    right, row = 70, 38
    top = max((v for _, v in items), default=0) or 1
    span = width - right
    parts = []
    for i, (name, value) in enumerate(items):
        y = i * row
        w = span * value / top
        parts.append(
            f'<text x="0" y="{y + 14}">{_e(name)}</text>'
            f'<rect x="0" y="{y + 19}" width="{w:.1f}" height="13" fill="{color}">'
            f"<title>{_e(name)}: {_e(_n(value, digits))}{unit}</title></rect>"
            f'<text x="{w + 6:.1f}" y="{y + 30}">{_e(_n(value, digits))}{unit}</text>'
        )
    return _svg(width, row * len(items) + 2, label, "".join(parts))


def stacked_chart(
    rows: Sequence[tuple[str, Sequence[tuple[str, float]]]], label: str, width: int = 480
) -> str:
    """One horizontal bar per row, under its label, split into (segment, value) parts coloured
    by segment."""
    row = 38
    parts = []
    for i, (name, segments) in enumerate(rows):
        y = i * row
        total = sum(v for _, v in segments) or 1
        x = 0.0
        parts.append(f'<text x="0" y="{y + 14}">{_e(name)}</text>')
        for segment, value in segments:
            w = width * value / total
            if w <= 0:
                continue
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 19}" width="{w:.1f}" height="13" '
                f'fill="{COLORS.get(segment, COLORS["bar"])}">'
                f"<title>{_e(name)} {_e(segment)}: {_e(_n(value))}</title></rect>"
            )
            x += w
    return _svg(width, row * len(rows) + 2, label, "".join(parts))


def histogram_chart(bins: Sequence[Mapping[str, Any]], label: str, width: int = 480) -> str:
    """Vertical bars per confidence bin; the part that needs review drawn on top in orange."""
    if not bins:
        return '<p class="empty">no link recorded</p>'
    left, bottom, top_pad, height = 50, 36, 18, 220
    plot_h = height - bottom - top_pad
    step = (width - left - 10) / len(bins)
    peak = max(int(b["links"]) for b in bins) or 1
    filled = [int(b["links"]) for b in bins if b["links"]]
    # a long tail next to one tall bin: a square-root scale keeps the tail visible
    skewed = len(filled) > 1 and max(filled) > 20 * min(filled)

    def scale(n: int) -> float:
        return plot_h * (math.sqrt(n / peak) if skewed else n / peak)

    parts = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#8c959f"/>',
        f'<text x="{left - 6}" y="{top_pad + 4}" text-anchor="end">{_e(_n(peak))}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>',
    ]
    for i, b in enumerate(bins):
        x = left + i * step
        n, flagged = int(b["links"]), int(b["needs_review"])
        h, hr = scale(n), scale(flagged)
        base = height - bottom
        tip = f"{b['bin_from']:.1f}–{b['bin_to']:.1f}: {n} links, {flagged} need review"
        parts.append(
            f'<rect x="{x + 3:.1f}" y="{base - h:.1f}" width="{step - 6:.1f}" height="{h:.1f}" '
            f'fill="{COLORS["bar"]}"><title>{_e(tip)}</title></rect>'
        )
        if hr > 0:
            parts.append(
                f'<rect x="{x + 3:.1f}" y="{base - hr:.1f}" width="{step - 6:.1f}" '
                f'height="{hr:.1f}" fill="{COLORS["review"]}"><title>{_e(tip)}</title></rect>'
            )
        if n:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{base - h - 4:.1f}" text-anchor="middle">'
                f"{_e(_n(n))}</text>"
            )
        parts.append(
            f'<text x="{x + step / 2:.1f}" y="{base + 16}" text-anchor="middle">'
            f"{b['bin_from']:.1f}</text>"
        )
    parts.append(
        f'<text x="{(left + width) / 2:.0f}" y="{height - 4}" text-anchor="middle">'
        "confidence (bin start)" + (", square-root scale" if skewed else "") + "</text>"
    )
    return _svg(width, height, label, "".join(parts))


def timeline_chart(batches: Sequence[Mapping[str, Any]], label: str, width: int = 720) -> str:
    """Batches as bars from their start to their end, relative to the run's start."""
    timed = [b for b in batches if b.get("started_offset") is not None]
    if not timed:
        return '<p class="empty">no batch has started</p>'
    left, right, axis = 70, 20, 28
    row = max(3.0, min(16.0, 480 / len(timed)))
    end = max(float(b["started_offset"]) + float(b["seconds"] or 0) for b in timed) or 1.0
    span = width - left - right
    height = row * len(timed) + axis + 6
    parts = []
    labelled = len(timed) <= 40
    for i, b in enumerate(timed):
        y = i * row + 2
        x = left + span * float(b["started_offset"]) / end
        w = max(span * float(b["seconds"] or 0) / end, 1.5)
        tip = (
            f"batch {b['batch_no']} {b['status']}: {_n(b['seconds'], 2)} s, {b['rows']} rows, "
            f"{b['attempts']} attempt(s)" + (f": {b['error']}" if b.get("error") else "")
        )
        if labelled:
            parts.append(
                f'<text x="{left - 6}" y="{y + row - 3:.1f}" text-anchor="end">'
                f"#{_e(b['batch_no'])}</text>"
            )
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{max(row - 2, 1.5):.1f}" '
            f'fill="{COLORS.get(str(b["status"]), COLORS["pending"])}"><title>{_e(tip)}</title>'
            "</rect>"
        )
    base = row * len(timed) + 6
    parts.append(
        f'<line x1="{left}" y1="{base:.1f}" x2="{width - right}" y2="{base:.1f}" stroke="#8c959f"/>'
    )
    for k in range(5):
        t = end * k / 4
        x = left + span * k / 4
        parts.append(f'<text x="{x:.1f}" y="{base + 18:.1f}" text-anchor="middle">{t:.1f} s</text>')
    return _svg(width, int(height), label, "".join(parts))


def _section(key: str, body: str) -> str:
    if key == "verdict":  # its own section, coloured by the verdict
        return body
    return f'<section id="{key}"><h2>{_e(dict(SECTIONS)[key])}</h2>{body}</section>'


def _verdict(report: Mapping[str, Any]) -> str:
    v = report["verdict"]
    level = v["level"]
    batches = report["batches"]
    reasons = "".join(f"<li>{_e(r)}</li>" for r in v["reasons"])
    retry = ""
    if report.get("retry_command"):
        retry = (
            "<p>Re-run the failed batches (same <code>--source-url</code>/"
            "<code>--target-url</code>, or SOURCE_DATABASE_URL/TARGET_DATABASE_URL):</p>"
            f'<code class="cmd">{_e(report["retry_command"])}</code>'
        )
    facts = (
        f"status <strong>{_e(report['status'])}</strong>"
        + (" (dry run: no target table written)" if report.get("dry_run") else "")
        + f" · batches {batches['succeeded']}/{batches['total']} succeeded, "
        f"{batches['failed']} failed"
        + f" · accounting {'balanced' if report['accounting_balanced'] else 'NOT balanced'}"
        + f" · quarantined {_n(report['quarantine']['total'])}"
        + f" · links to review {_n(report['links']['needs_review'])}"
    )
    if report.get("wall_seconds") is not None:
        facts += f" · wall time {_n(report['wall_seconds'], 1)} s"
    return (
        f'<section id="verdict" class="verdict verdict-{_e(level)}">'
        f'<h2>Verdict <span class="badge {_e(level)}">{_e(level)}</span></h2>'
        f'<p class="headline">{_e(v["headline"])}</p><p class="meta">{facts}</p>'
        + (f"<ul>{reasons}</ul>" if reasons else "")
        + retry
        + "</section>"
    )


def _accounting(report: Mapping[str, Any]) -> str:
    rows, bars = [], []
    for name, c in report["tables"].items():
        ok = report["identity"].get(name, True)
        rows.append(
            [name, c["source"], c["migrated"], c["merged"], c["quarantined"], "yes" if ok else "NO"]
        )
        bars.append((name, [(k, float(c[k])) for k in ("migrated", "merged", "quarantined")]))
    return (
        "<p>Every legacy row and <code>saved_profiles</code> element is migrated, merged into a "
        "named target row, or quarantined with a reason: source = migrated + merged + "
        "quarantined.</p>"
        + html_table(
            ["source table", "source", "migrated", "merged", "quarantined", "balanced"],
            rows,
            numeric=(1, 2, 3, 4),
        )
        + _chart(stacked_chart(bars, "Outcome of the source rows per table"))
        + _legend([(k, COLORS[k]) for k in ("migrated", "merged", "quarantined")])
    )


def _targets(report: Mapping[str, Any]) -> str:
    rows = []
    for name, t in report["targets"].items():
        if t["actual"] is None:
            agree = "not read"
        elif t["match"]:
            agree = "yes"
        else:
            agree = target_disagreement(report)
        rows.append([name, t["expected"], t["actual"], agree])
    return (
        "<p>Rows the run produced per target table, and rows the table held when this report "
        "was written.</p>"
        + html_table(
            ["target table", "expected from the run", "in the database", "agree"],
            rows,
            numeric=(1, 2),
        )
    )


def _links(report: Mapping[str, Any]) -> str:
    links = report["links"]
    methods = sorted(links["by_method"].items(), key=lambda kv: (-kv[1], kv[0]))
    note = ""
    if links.get("superseded"):
        note = (
            f'<p class="meta">{_e(links["superseded"])} of this run\'s link decisions are no '
            "longer in the ledger (re-linked by a later run, or a dry run, which records none); "
            "the histogram covers the rest.</p>"
        )
    mean = links.get("mean_confidence")
    return (
        f"<p>{_e(_n(links['decided']))} tagged models linked; "
        f"<strong>{_e(_n(links['needs_review']))}</strong> need review"
        + (f"; mean confidence {mean:.3f}" if mean is not None else "")
        + ".</p>"
        + _decisions_note(links)
        + note
        + '<div class="grid"><div><h3>By method</h3>'
        + _chart(hbar_chart([(m, float(n)) for m, n in methods], "Links by method"))
        + html_table(
            ["method", "models", "what it means"],
            [[m, n, meaning(LINK_METHODS, m)] for m, n in methods],
            numeric=(1,),
            classes={2: "text"},
            stack=True,
        )
        + "</div><div><h3>Confidence</h3>"
        + _chart(histogram_chart(links.get("confidence_histogram", []), "Confidence histogram"))
        + _legend([("links", COLORS["bar"]), ("need review", COLORS["review"])])
        + "</div></div>"
    )


def _example(example: Mapping[str, Any] | None) -> Markup:
    """An example row: its table and id, then the detail and payload (quarantine) or the field
    with its original and repaired value (repair), each cut to ``EXAMPLE_SHOWN``."""
    if not example:
        return Markup("")
    where = f"<code>{_e(example.get('source_table'))} {_e(example.get('source_id'))}</code>"
    if "field" in example:
        change = f"{_e(_shown(example.get('original')))} → {_e(_shown(example.get('repaired')))}"
        return Markup(f"{where}<br>{_e(example['field'])}: {change}")
    detail = f"<br>{_e(_shown(example['detail']))}" if example.get("detail") else ""
    payload = (
        f'<br><span class="payload">{_e(_shown(example["payload"]))}</span>'
        if example.get("payload")
        else ""
    )
    return Markup(where + detail + payload)


def _shown(value: object) -> str:
    text = "null" if value is None else " ".join(str(value).split())
    return text if len(text) <= EXAMPLE_SHOWN else text[: EXAMPLE_SHOWN - 1] + "…"


def _explained(
    counts: Mapping[str, int], codes: Mapping[str, str], examples: Mapping[str, Any]
) -> list[list[object]]:
    return [
        [code, n, meaning(codes, code), _example(examples.get(code))] for code, n in counts.items()
    ]


def _quarantine(report: Mapping[str, Any]) -> str:
    q = report["quarantine"]
    if not q["total"]:
        return '<p class="empty">No row was quarantined.</p>'
    items = [(r, float(n)) for r, n in q["by_reason"].items()]
    return (
        f"<p>{_e(_n(q['total']))} rows set aside with their full original payload "
        "(<code>quarantine.csv</code>). Each reason with one of this run's rows as example:</p>"
        + html_table(
            ["reason", "rows", "what it means", "example row"],
            _explained(q["by_reason"], QUARANTINE_REASONS, q.get("examples") or {}),
            numeric=(1,),
            classes={2: "text", 3: "ex"},
            stack=True,
        )
        + _chart(hbar_chart(items, "Quarantined rows by reason", color=COLORS["quarantined"]))
        + "<details><summary>by source table</summary>"
        + html_table(
            ["source table", "reason", "rows"],
            [[d["source_table"], d["reason"], d["rows"]] for d in q["by_table"]],
            numeric=(2,),
        )
        + "</details>"
    )


def _repairs(report: Mapping[str, Any]) -> str:
    r = report["repairs"]
    if not r["total"]:
        return '<p class="empty">No repair was needed.</p>'
    return (
        f"<p>{_e(_n(r['total']))} values repaired, each recorded with its original value "
        "(ledger table <code>migration.repairs</code>). Each kind with one of this run's rows "
        "as example:</p>"
        + html_table(
            ["kind", "repairs", "what it means", "example row"],
            _explained(r["by_kind"], REPAIR_KINDS, r.get("examples") or {}),
            numeric=(1,),
            classes={2: "text", 3: "ex"},
            stack=True,
        )
        + _chart(hbar_chart([(k, float(n)) for k, n in r["by_kind"].items()], "Repairs by kind"))
        + "<details><summary>by table and field</summary>"
        + html_table(
            ["source table", "kind", "field", "repairs"],
            [[d["source_table"], d["kind"], d["field"], d["rows"]] for d in r["by_field"]],
            numeric=(3,),
        )
        + "</details>"
    )


def _batches(report: Mapping[str, Any]) -> str:
    batch_list = report["batch_list"]
    statuses = sorted({str(b["status"]) for b in batch_list})
    failed = [b for b in batch_list if b["status"] != "succeeded"]
    shown = batch_list[:BATCH_ROWS_SHOWN]
    extra = [b for b in failed if b not in shown]
    rows = [
        [
            b["batch_no"],
            b["status"],
            b["attempts"],
            b["users"],
            b["rows"],
            _n(b["seconds"], 2),
            _n(b["rows_per_second"]),
            b["error"],
        ]
        for b in [*shown, *extra]
    ]
    table = html_table(
        ["batch", "status", "attempts", "users", "rows", "seconds", "rows/s", "error"],
        rows,
        numeric=(0, 2, 3, 4, 5, 6),
        classes={7: "err"},
    )
    more = (
        f'<p class="meta">{len(batch_list) - len(shown)} more batches in report.json.</p>'
        if len(batch_list) > len(shown)
        else ""
    )
    wrapped = (
        table
        if len(rows) <= 30 or failed
        else f"<details><summary>{len(rows)} batches</summary>{table}</details>"
    )
    return (
        _chart(timeline_chart(batch_list, "Batch timeline"))
        + _legend([(s, COLORS.get(s, COLORS["pending"])) for s in statuses])
        + wrapped
        + more
    )


def _stages(report: Mapping[str, Any]) -> str:
    stages = report["stages"]
    items = [(s, float(t["seconds"])) for s, t in stages.items()]
    rows = [
        [s, _n(t["seconds"], 2), f"{t['share']:.0%}", _n(t["max_batch_seconds"], 2)]
        for s, t in stages.items()
    ]
    chart = (
        _chart(hbar_chart(items, "Seconds per stage", digits=2, unit=" s"))
        if any(v for _, v in items)
        else ""
    )
    return (
        "<p>Seconds per stage, summed over the succeeded batches (batches run concurrently).</p>"
        + chart
        + html_table(["stage", "seconds", "share", "slowest batch (s)"], rows, numeric=(1, 2, 3))
    )


def _settings(report: Mapping[str, Any]) -> str:
    items = "".join(
        f"<dt>{_e(label)}</dt><dd>{_e(value)}</dd>" for label, value in run_settings(report)
    )
    return f'<dl class="settings">{items}</dl>'


def _glossary() -> str:
    parts = []
    for title, _, codes in GLOSSARIES:
        items = "".join(f"<dt>{_e(code)}</dt><dd>{_e(text)}</dd>" for code, text in codes.items())
        parts.append(f'<h3>{_e(title)}</h3><dl class="codes">{items}</dl>')
    return "".join(parts)


def _candidate(name: str | None, config_id: str | None, evidence: str | None) -> str:
    if not config_id:
        return ""
    signals = "" if evidence is None else f" [{evidence or 'no evidence'}]"
    return f"{name or '(unnamed)'} · {config_id}{signals}"


def _review(report: Mapping[str, Any], review: pl.DataFrame) -> str:
    if review.height == 0:
        return '<p class="empty">No link needs review.</p>'
    head = review.head(REVIEW_ROWS_SHOWN)
    rows = [
        [
            r["tagged_model_id"],
            r["model_id"],
            r["tag_name"],
            r["method"],
            _n(r["confidence"], 2),
            _candidate(r["suggested_name"], r["suggested_config_id"], None),
            _candidate(r["candidate_1_name"], r["candidate_1_id"], r["candidate_1_evidence"]),
            _candidate(r["candidate_2_name"], r["candidate_2_id"], r["candidate_2_evidence"]),
        ]
        for r in head.iter_rows(named=True)
    ]
    more = (
        f'<p class="meta">Showing {REVIEW_ROWS_SHOWN} of {review.height}; all are in '
        "review.csv.</p>"
        if review.height > REVIEW_ROWS_SHOWN
        else ""
    )
    return (
        f"<p>{_e(_n(review.height))} links need a reviewer. Fill <code>circuit_config_id</code> "
        "in a copy of <code>review.csv</code> (a candidate's id, or <code>accept</code> for the "
        "suggestion; leave a row empty to keep it undecided), then "
        "<code>circuit-migrate review import FILE</code>: every later run applies the recorded "
        "decisions.</p>"
        + html_table(
            [
                "tagged model",
                "model_id",
                "tag",
                "method",
                "confidence",
                "suggested configuration",
                "candidate 1",
                "candidate 2",
            ],
            rows,
            numeric=(4,),
            classes={0: "id", 5: "id", 6: "id", 7: "id"},
            stack=True,
        )
        + more
    )


def page(title: str, body: str) -> str:
    """A whole self-contained HTML5 page around ``body`` (this module's CSS, no script)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{PAGE_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def render_html(report: Mapping[str, Any], review: pl.DataFrame) -> str:
    """The whole page for a ``run_report`` document and its review frame (``reports.review``)."""
    nav = " ".join(f'<a href="#{key}">{_e(title)}</a>' for key, title in SECTIONS)
    bodies = {
        "verdict": _verdict(report),
        "settings": _settings(report),
        "accounting": _accounting(report),
        "targets": _targets(report),
        "links": _links(report),
        "quarantine": _quarantine(report),
        "repairs": _repairs(report),
        "batches": _batches(report),
        "stages": _stages(report),
        "review": _review(report, review),
        "glossary": _glossary(),
    }
    files = ", ".join(f'<a href="{_e(name)}">{_e(name)}</a>' for name in report.get("files", []))
    sections = "".join(_section(key, bodies[key]) for key, _ in SECTIONS)
    return page(
        f"Migration run {report['run_id']}",
        f"<h1>Migration run {_e(report['run_id'])}</h1>"
        f'<p class="meta"><a href="../{INDEX_FILE}">all runs</a> · started '
        f"{_e(utc_text(report.get('started_at')))} UTC · files: {files}</p>"
        f"<nav>{nav}</nav>{sections}",
    )
