"""``explain ID`` for people: the document ``flows.explain.explain`` builds, rendered for a
terminal (rich). ``--json`` prints the document itself. Ids are never cut."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from reports.reconcile import utc_text

KINDS = {
    "tagged_model": "tagged model",
    "user_session": "session",
    "saved_profiles_element": "saved_profiles element",
    "circuit_configuration": "configuration",
    "user": "user",
}
SHOWN = 8
"""Members, elements and legacy fields listed at most (``--json`` has every one)."""


def _cut(value: Any, width: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _when(value: Any) -> str:
    return f"{utc_text(value)} UTC" if value else "?"


def _named(config_id: Any, name: Any) -> str:
    if not config_id:
        return "none"
    return f'{config_id} "{name}"' if name else str(config_id)


def _written(written: Mapping[str, Any] | None) -> str:
    if not written:
        return "no run in the ledger describes it now"
    kind = "dry run" if written["dry_run"] else "run"
    text = (
        f"{kind} {written['run_id']} batch {written['batch_no']} ({written['status']},"
        f" started {_when(written['started_at'])})"
    )
    if not written["current"]:
        text += "; no real run has loaded its user yet: this is the dry run's view"
    return text


def outcome_text(subject: Mapping[str, Any]) -> str:
    """One sentence: what became (or, in a dry run, would become) of the legacy row."""
    outcome = subject.get("outcome") or {}
    status = outcome.get("status")
    dry = bool(outcome.get("dry_run"))
    if status == "quarantined":
        detail = f": {outcome['detail']}" if outcome.get("detail") else ""
        verb = "would be quarantined" if dry else "quarantined"
        return f"{verb}, reason {outcome['reason']}{detail}"
    target = _named(outcome.get("target_id"), outcome.get("name"))
    if status == "merged":
        verb = "would be merged" if dry else "merged"
        return f"{verb} into {outcome['target_table']} {target}"
    if status == "migrated":
        verb = "would be migrated" if dry else "migrated"
        if outcome.get("target_id") == subject.get("id"):
            gone = not dry and not outcome.get("in_target", True)
            return f"{verb} under its own id" + (" (the target no longer holds it)" if gone else "")
        return f"{verb} to {outcome['target_table']} {target}"
    if status == "in target":
        return "in the target, but the ledger has no record of its user"
    if status == "not recorded":
        return "no ledger row: its session's batch recorded nothing for it"
    return "not processed: no run has covered its user yet"


def _link_line(link: Mapping[str, Any] | None) -> str:
    if not link:
        return "link: none recorded"
    flag = ", needs review" if link.get("needs_review") else ""
    return (
        f"link: {_named(link.get('circuit_config_id'), link.get('name'))} by"
        f" {link.get('method')}, confidence {_num(link.get('confidence'))}{flag}"
        f" (from {link.get('from')})"
    )


def candidate_lines(subject: Mapping[str, Any]) -> list[str]:
    """Every candidate of a tagged model: rank, id and name, then its figures."""
    rows: Sequence[Mapping[str, Any]] = subject.get("candidates") or []
    if not rows:
        return []
    recomputed = any(c.get("from") == "recomputed" for c in rows)
    head = f"candidates ({len(rows)}, every configuration of the user"
    head += (
        "; scores recomputed from the source now, ranked as the link decision ranks them):"
        if recomputed
        else "; the ledger records the scores of the two best):"
    )
    out = [head]
    for c in rows:
        marks = [m for m, on in (("linked", c.get("linked")), ("decided", c.get("decided"))) if on]
        rank = f"{c['rank']}." if c.get("rank") else "-"
        out.append(
            f"  {rank} {_named(c.get('id'), c.get('name'))}"
            + (f"  [{', '.join(marks)}]" if marks else "")
        )
        evidence = c.get("evidence")
        if evidence is None:
            continue
        extra = ""
        if c.get("recorded_rank"):
            extra = f"; ledger rank {c['recorded_rank']}"
        resnorm = _num(c.get("resnorm"))
        if c.get("resnorm") is None and subject.get("stored_resnorm") is not None:
            resnorm = "far from the stored value"
        out.append(
            f"     resnorm {resnorm}, distance {_num(c.get('distance'))},"
            f" evidence: {', '.join(evidence) or 'none'}{extra}"
        )
    return out


def _repair_lines(subject: Mapping[str, Any]) -> list[str]:
    rows: Sequence[Mapping[str, Any]] = subject.get("repairs") or []
    return [
        f"repair {r.get('kind')} of {r.get('field')}"
        + (f" (row {r['source_id']})" if r.get("source_id") != subject.get("id") else "")
        + f": {_cut(r.get('original')) or 'empty'} -> {_cut(r.get('repaired')) or 'empty'}"
        for r in rows
    ]


def _decision(decision: Mapping[str, Any] | None) -> str:
    if not decision:
        return "reviewer's decision: none recorded"
    applies = "applied" if decision.get("applies") else "not applied"
    note = f" ({decision['note']})" if decision.get("note") else ""
    return (
        f"reviewer's decision: {decision['decision']} {decision['circuit_config_id']}, recorded"
        f" {_when(decision.get('decided_at'))} from {decision.get('source_file')}; {applies}{note}"
    )


def _legacy_line(subject: Mapping[str, Any]) -> str | None:
    legacy = subject.get("legacy")
    if not legacy:
        return None
    where = f"legacy {legacy['table']} {legacy['id']}"
    if legacy.get("in_source") is None:
        return f"{where} (the source was not read)"
    if not legacy.get("in_source"):
        return f"{where}: not in the source now"
    row = legacy.get("row") or {}
    if not isinstance(row, Mapping):
        return f"{where}: {_cut(row, 120)}"
    skip = ("id", "circuit_parameters", "saved_profiles", "parameters", "computation_results")
    shown = [f"{k}={_cut(v, 40)}" for k, v in row.items() if k not in skip and v is not None]
    return f"{where}: " + ", ".join(shown[:SHOWN])


def _kind_lines(subject: Mapping[str, Any]) -> list[str]:
    target = subject.get("target")
    kind = subject["kind"]
    out: list[str] = []
    if kind == "tagged_model":
        note = f" ({subject['link_note']})" if subject.get("link_note") else ""
        out.append(_link_line(subject.get("link")) + note)
        now = subject.get("recomputed")
        if now and now.get("linked"):
            out.append(
                "from the source now: "
                + _named(now.get("circuit_config_id"), now.get("name"))
                + f" by {now.get('method')}, confidence {_num(now.get('confidence'))}"
                + (", needs review" if now.get("needs_review") else "")
            )
        if subject.get("stored_resnorm") is not None:
            out.append(f"stored resnorm: {_num(subject['stored_resnorm'])}")
        survivor = subject.get("survivor")
        if survivor:
            out.append(
                f"its survivor {survivor['tagged_model_id']} is linked to"
                f" {survivor['circuit_config_id']} by {survivor['method']}"
            )
        out.append(_decision(subject.get("decision")))
        out += candidate_lines(subject)
    elif kind == "user_session":
        if target:
            current = _named(
                target.get("current_circuit_config_id"), target.get("current_circuit_config_name")
            )
            out.append(
                f'in the target: "{_cut(target.get("session_name"))}", current configuration'
                f" {current}, {target.get('tagged_models')} tagged models"
            )
        elements = subject.get("elements") or []
        for e in elements[:SHOWN]:
            what = (
                e["reason"] if e["outcome"] == "quarantined" else _named(e["target_id"], e["name"])
            )
            out.append(f"element {e['source_id']}: {e['outcome']} {what}")
        if len(elements) > SHOWN:
            out.append(f"... and {len(elements) - SHOWN} more elements")
    elif kind == "circuit_configuration":
        if target:
            out.append(f'in the target: "{target.get("name")}" of user {target.get("user_id")}')
        else:
            out.append("not in the target")
        if subject.get("recovered_from_models_of"):
            out.append("recovered: its user had tagged models but no configuration")
        members = subject.get("members") or []
        if members:
            listed = "; ".join(
                f"{m['source_table']} {m['source_id']} ({m['outcome']})" for m in members[:SHOWN]
            )
            more = f"; and {len(members) - SHOWN} more" if len(members) > SHOWN else ""
            out.append(f"made from: {listed}{more}")
        links = subject.get("links") or []
        if links:
            listed = ", ".join(f"{r['models']} by {r['method']}" for r in links)
            flagged = sum(int(r["flagged"]) for r in links)
            out.append(f"tagged models linked to it: {listed}; {flagged} need review")
        if subject.get("decisions_naming_it"):
            out.append(f"reviewer's decisions choosing it: {subject['decisions_naming_it']}")
    elif kind == "user":
        counts = subject.get("counts") or {}
        out.append("in the target: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
        for q in subject.get("quarantined") or []:
            out.append(f"quarantined: {q['n']} {q['source_table']} ({q['reason']})")
        if subject.get("links_needing_review") is not None:
            out.append(f"links needing review: {subject['links_needing_review']}")
    return out


def subject_lines(subject: Mapping[str, Any]) -> list[str]:
    """One subject of an explanation as lines (the first is its title)."""
    kind = KINDS.get(subject["kind"], subject["kind"])
    legacy = subject.get("legacy")
    if subject["kind"] == "circuit_configuration" and legacy:
        kind = f"legacy {legacy['table']} row" + (
            " and configuration" if subject.get("target") else ""
        )
    user = f" (user {subject['user']})" if subject.get("user") and kind != "user" else ""
    out = [f"{kind} {subject['id']}{user}"]
    if subject.get("outcome"):
        out.append(f"  what became of it: {outcome_text(subject)}")
    line = _legacy_line(subject)
    if line:
        out.append(f"  {line}")
    out += [f"  {line}" for line in _kind_lines(subject)]
    out += [f"  {line}" for line in _repair_lines(subject)]
    out.append(f"  written by: {_written(subject.get('written_by'))}")
    return out


def explain_view(document: Mapping[str, Any]) -> Group:
    """The whole explanation for a terminal."""
    parts: list[RenderableType] = []
    for i, subject in enumerate(document["subjects"]):
        if i:
            parts.append(Text(""))
        lines = subject_lines(subject)
        parts.append(Text(lines[0], style="bold"))
        parts += [Text(line) for line in lines[1:]]
    if not document.get("source_checked"):
        parts.append(
            Text(
                "(the legacy source was not read: pass --source-url for the legacy row and"
                " every candidate's score now)",
                style="dim",
            )
        )
    for note in document.get("notes") or []:
        parts.append(Text(f"note: {note}", style="dim"))
    return Group(*parts)
