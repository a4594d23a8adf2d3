"""``circuit-migrate explain ID``: what became of one row and why, from the ledger, the target
and, when given, the legacy source.

ID is any legacy id (a ``user_profiles`` row, a session, a tagged model, a ``saved_profiles``
element as ``<session id>#<index>`` or by the element's own ``"id"``) or any target id (a
configuration, a session, a tagged model, a user profile or its user). :func:`explain` returns
a JSON-ready document (``reports.explain`` renders it): per subject the id matches, the legacy
row, its outcome (migrated, merged into which row, quarantined why), the target row, the
repairs, the run and batch that wrote it, and for a tagged model its link (method, confidence,
every candidate with its score and evidence) and the reviewer's decision that applies.

The ledger's state of a user is the run and batch ``migration.user_runs`` names (the last batch
that loaded it); for a user only dry runs covered, the latest dry-run batch that did. With the
source, a tagged model's candidates are recomputed by the transform itself on the user's legacy
rows as they are now: once as a run would (with the recorded decisions), then once per
candidate pinned to it, so every candidate shows the resnorm, distance and signals the link
decision weighs (the ledger records them for the two best only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from flows import db, extract, user_keys
from flows.decisions import recorded_overrides
from flows.inspect import Inspection
from schemas.errors import ConfigurationError

MAX_RECOMPUTED = 40
"""Candidates recomputed one by one at most (each is a transform of the user's rows)."""
PAYLOAD_CHARS = 400
"""Quarantine payloads are cut to this many characters (``--json`` too)."""

_CONFIG_SOURCES = ("user_profiles", "saved_configurations", "circuit_configurations")
"""Legacy tables whose rows become configurations (with saved_profiles elements)."""


def _uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return None


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _dict(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or ()]
    return [{k: _iso(v) for k, v in zip(names, row, strict=True)} for row in cur.fetchall()]


Params = Mapping[str, Any] | list[Any] | None


@dataclass
class _Context:
    """Connections and what has been read once."""

    conn: psycopg.Connection
    target_schema: str
    src: psycopg.Connection | None = None
    source: Inspection | None = None
    recompute: bool = True
    target_url: str = ""
    batches: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def rows(self, query: sql.Composable | str, params: Params = None) -> list[dict[str, Any]]:
        return _dict(self.conn.execute(query, params or []))  # type: ignore[arg-type]

    def one(self, query: sql.Composable | str, params: Params = None) -> dict[str, Any] | None:
        found = self.rows(query, params)
        return found[0] if found else None

    def table(self, name: str) -> sql.Composable:
        return sql.SQL("{}.{}").format(sql.Identifier(self.target_schema), sql.Identifier(name))

    def has(self, schema: str, table: str) -> bool:
        return db.table_exists(self.conn, schema, table)

    def user_batch(self, user_key: str | None) -> extract.LegacyBatch | None:
        """The legacy rows of one user as a run reads them, or (``user_key`` None or ``''``)
        the rows of no user; None without the source."""
        if self.src is None or self.source is None:
            return None
        key = user_key or ""
        if key not in self.batches:
            batch = (
                extract.BatchRange(0, key, key, 1, (key,))
                if key
                else extract.BatchRange(0, None, None, 0)
            )
            self.batches[key] = extract.extract_batch(self.src, self.source, batch)
        data: extract.LegacyBatch = self.batches[key]
        return data


# --- the ledger's state of a user ----------------------------------------------------------------


def _state(ctx: _Context, user_key: str | None) -> dict[str, Any] | None:
    """The run and batch whose ledger rows describe ``user_key`` now (``''``/None: the rows of no
    user), with the run's status, start and dry-run flag; ``current`` false for a dry run's."""
    key = user_key or ""
    found = ctx.one(
        "select u.run_id::text, u.batch_no, r.status, r.dry_run, r.started_at, true as current"
        " from migration.user_runs u join migration.runs r on r.run_id = u.run_id"
        " where u.user_key = %s",
        [key],
    )
    if found:
        return found
    if key:
        covers = (
            "case when b.user_keys is not null then b.user_keys ? %s"
            " else b.user_id_from is not null and %s::uuid between b.user_id_from and b.user_id_to"
            " end"
        )
        params: list[Any] = [key, key]
    else:
        covers, params = "b.user_keys is null and b.user_id_from is null", []
    return ctx.one(
        "select b.run_id::text, b.batch_no, r.status, r.dry_run, r.started_at, false as current"
        " from migration.batches b join migration.runs r on r.run_id = b.run_id"
        f" where b.status = 'succeeded' and {covers}"
        " order by r.started_at desc, b.run_id desc limit 1",
        params,
    )


def _ledger_user(ctx: _Context, source_table: str, source_id: str) -> str | None:
    """The user key the ledger recorded for a legacy row (any run; scans the ledger)."""
    found = ctx.one(
        "select user_key from (select user_key, run_id from migration.quarantine"
        "  where source_table = %(t)s and source_id = %(i)s"
        " union all select user_key, run_id from migration.id_map"
        "  where source_table = %(t)s and source_id = %(i)s"
        " union all select user_key, run_id from migration.repairs"
        "  where source_table = %(t)s and source_id = %(i)s) x"
        " join migration.runs r using (run_id) where user_key is not null"
        " order by r.started_at desc limit 1",
        {"t": source_table, "i": source_id},
    )
    return None if found is None else str(found["user_key"])


def _recorded(
    ctx: _Context, state: Mapping[str, Any] | None, source_table: str, source_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """The quarantine, id_map and repairs rows of the legacy rows ``source_ids`` in ``state``."""
    if state is None:
        return {"quarantine": [], "id_map": [], "repairs": []}
    params = [state["run_id"], source_table, source_ids]
    return {
        "quarantine": ctx.rows(
            "select source_id, reason, detail, left(payload::text, %s) as payload"
            " from migration.quarantine where run_id = %s and source_table = %s"
            " and source_id = any(%s) order by source_id",
            [PAYLOAD_CHARS, *params],
        ),
        "id_map": ctx.rows(
            "select source_id, target_table, target_id::text, outcome from migration.id_map"
            " where run_id = %s and source_table = %s and source_id = any(%s)"
            " order by source_id, target_table",
            params,
        ),
        "repairs": ctx.rows(
            "select source_id, field, kind, original, repaired from migration.repairs"
            " where run_id = %s and batch_no = %s and source_table = %s and source_id = any(%s)"
            " order by source_id, field, kind",
            [state["run_id"], state["batch_no"], source_table, source_ids],
        ),
    }


def _settled(
    ctx: _Context, user: str | None, source_table: str, source_ids: list[str]
) -> tuple[dict[str, Any] | None, dict[str, list[dict[str, Any]]]]:
    """The state of ``user`` and the rows of ``source_ids`` in it. A row whose user is unknown
    is looked for among the rows of no user (every one of them is quarantined there): not
    found there, nothing is known of it."""
    state = _state(ctx, user)
    recorded = _recorded(ctx, state, source_table, source_ids)
    if user is None and not (recorded["quarantine"] or recorded["id_map"]):
        return None, _recorded(ctx, None, source_table, source_ids)
    return state, recorded


def _outcome(
    recorded: Mapping[str, list[dict[str, Any]]],
    state: Mapping[str, Any] | None,
    target: Mapping[str, Any] | None,
    target_table: str,
    source_id: str,
) -> dict[str, Any]:
    """What became of one legacy row: quarantined, merged, migrated (under its id or another),
    or not processed."""
    held = [q for q in recorded["quarantine"] if q["source_id"] == source_id]
    mapped = [m for m in recorded["id_map"] if m["source_id"] == source_id]
    would = state is not None and not state["current"]
    if held:
        q = held[0]
        return {
            "status": "quarantined",
            "reason": q["reason"],
            "detail": q["detail"],
            "payload": q["payload"],
            "dry_run": would,
        }
    if mapped:
        m = mapped[0]
        return {
            "status": m["outcome"],
            "target_table": m["target_table"],
            "target_id": m["target_id"],
            "dry_run": would,
        }
    if state is not None:
        return {
            "status": "migrated",
            "target_table": target_table,
            "target_id": source_id,
            "dry_run": would,
            "in_target": target is not None,
        }
    if target is not None:
        return {
            "status": "in target",
            "target_table": target_table,
            "target_id": source_id,
            "dry_run": False,
        }
    return {"status": "not processed", "dry_run": False}


# --- finding what an id names --------------------------------------------------------------------


def _legacy_matches(ctx: _Context, item: str) -> list[tuple[str, str | None]]:
    """(legacy table, user key) of the legacy rows whose id is ``item`` (scans each table)."""
    if ctx.src is None or ctx.source is None:
        return []
    found: list[tuple[str, str | None]] = []
    for table in ("tagged_models", "user_sessions", "user_profiles", "app_configurations"):
        k = user_keys.keyed(ctx.source, table)
        pick = sql.SQL("x.source_table") if table == "app_configurations" else sql.Literal(table)
        for name, key in ctx.src.execute(
            sql.SQL(
                "select {pick}, ({key})::text from {rel} x {join} where x.id::text = %s"
            ).format(pick=pick, key=k.key, rel=k.relation, join=k.join),
            [item],
        ).fetchall():
            found.append((str(name), key))
    return found


def _element_ids(ctx: _Context, element_id: str) -> list[tuple[str, str | None]]:
    """(``<session>#<index>``, user key) of the saved_profiles elements whose own ``"id"`` is
    ``element_id`` (a scan of the legacy sessions' saved_profiles text)."""
    if ctx.src is None or ctx.source is None:
        raise ConfigurationError(
            f"{element_id!r} is neither a uuid nor <session id>#<index>: looking an element up by"
            " its own id reads the legacy source (pass --source-url or set SOURCE_DATABASE_URL)"
        )
    k = user_keys.keyed(ctx.source, "user_sessions")
    like = "%" + element_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = ctx.src.execute(
        sql.SQL(
            "select x.id::text, ({key})::text, x.saved_profiles::text from {rel} x {join}"
            " where x.saved_profiles::text like %s order by x.id"
        ).format(key=k.key, rel=k.relation, join=k.join),
        [like],
    ).fetchall()
    found = []
    for session, key, text in rows:
        for index, element in enumerate(_elements(text)):
            if isinstance(element, dict) and str(element.get("id")) == element_id:
                found.append((f"{session}#{index}", key))
    return found


def _elements(text: str | None) -> list[Any]:
    """The elements of a saved_profiles value (a JSON array, or a JSON string holding one)."""
    value: Any = text
    for _ in range(3):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def _target_kinds(ctx: _Context, item: str) -> set[str]:
    kinds: set[str] = set()
    for table in ("tagged_models", "user_sessions", "circuit_configurations", "user_profiles"):
        if ctx.has(ctx.target_schema, table) and ctx.rows(
            sql.SQL("select 1 from {} where id = %s").format(ctx.table(table)), [item]
        ):
            kinds.add("user" if table == "user_profiles" else table)  # a user's profile
    if ctx.has(ctx.target_schema, "user_profiles") and ctx.rows(
        sql.SQL("select 1 from {} where user_id = %s").format(ctx.table("user_profiles")), [item]
    ):
        kinds.add("user")
    if ctx.rows("select 1 from migration.links where tagged_model_id = %s", [item]):
        kinds.add("tagged_models")
    if ctx.has("migration", "review_decisions") and ctx.rows(
        "select 1 from migration.review_decisions where circuit_config_id = %s", [item]
    ):
        kinds.add("circuit_configurations")
    for table in ("review_list", "review_decisions"):
        if ctx.has("migration", table) and ctx.rows(
            sql.SQL("select 1 from migration.{} where tagged_model_id = %s").format(
                sql.Identifier(table)
            ),
            [item],
        ):
            kinds.add("tagged_models")
    if ctx.rows("select 1 from migration.user_runs where user_key = %s", [item]):
        kinds.add("user")
    return kinds


def _ledger_kinds(ctx: _Context, item: str) -> set[str]:
    """Legacy tables the ledger names ``item`` under (any run; scans the ledger)."""
    rows = ctx.rows(
        "select source_table from migration.quarantine where source_id = %(i)s"
        " union select source_table from migration.id_map where source_id = %(i)s"
        " union select target_table from migration.id_map where target_id::text = %(i)s"
        " union select source_table from migration.repairs where source_id = %(i)s",
        {"i": item},
    )
    return {str(r["source_table"]) for r in rows}


# --- subjects ------------------------------------------------------------------------------------


def _target_row(ctx: _Context, table: str, item: str, columns: str) -> dict[str, Any] | None:
    if not ctx.has(ctx.target_schema, table):
        return None
    return ctx.one(
        sql.SQL("select {} from {} where id = %s").format(sql.SQL(columns), ctx.table(table)),
        [item],
    )


def _config_names(ctx: _Context, ids: list[str]) -> dict[str, str | None]:
    if not ids or not ctx.has(ctx.target_schema, "circuit_configurations"):
        return {}
    rows = ctx.rows(
        sql.SQL("select id::text, name from {} where id = any(%s::uuid[])").format(
            ctx.table("circuit_configurations")
        ),
        [ids],
    )
    return {r["id"]: r["name"] for r in rows}


def _legacy_row(ctx: _Context, user: str | None, frame: str, row_id: str) -> dict[str, Any] | None:
    """The legacy row ``row_id`` of frame ``frame`` of the user's legacy batch, as a run reads
    it (jsonb columns as text, cut); None when not in the source (or no source). ``user``
    None: the rows of no user."""
    data = ctx.user_batch(user)
    if data is None:
        return None
    rows = getattr(data, frame).filter(pl.col("id") == row_id)
    if rows.height == 0:
        return None
    row = rows.row(0, named=True)
    return {
        k: (v[:PAYLOAD_CHARS] + "…" if isinstance(v, str) and len(v) > PAYLOAD_CHARS else _iso(v))
        for k, v in row.items()
    }


def _written_by(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        k: state[k] for k in ("run_id", "batch_no", "status", "dry_run", "started_at", "current")
    }


def _user_of_model(ctx: _Context, model: str, target: Mapping[str, Any] | None) -> str | None:
    if target is not None and target.get("user_id"):
        return str(target["user_id"])
    for table in ("review_list", "review_decisions"):
        if ctx.has("migration", table):
            found = ctx.one(
                sql.SQL(
                    "select user_key from migration.{} where tagged_model_id = %s"
                    " and user_key is not null limit 1"
                ).format(sql.Identifier(table)),
                [model],
            )
            if found:
                return str(found["user_key"])
    return None


def _evidence(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tagged_model(ctx: _Context, model: str, user_hint: str | None) -> dict[str, Any]:
    target = _target_row(
        ctx,
        "tagged_models",
        model,
        "id::text, user_id::text, session_id::text, circuit_config_id::text, model_id, tag_name,"
        " resnorm_value, tagged_at",
    )
    user = _user_of_model(ctx, model, target) or user_hint
    if user is None:
        user = _ledger_user(ctx, "tagged_models", model)
    state, recorded = _settled(ctx, user, "tagged_models", [model])
    outcome = _outcome(recorded, state, target, "tagged_models", model)
    link = ctx.one(
        "select l.circuit_config_id::text, l.method, l.confidence::float8, l.needs_review,"
        " l.evidence::text, l.run_id::text, r.dry_run, r.started_at from migration.links l"
        " left join migration.runs r on r.run_id = l.run_id where l.tagged_model_id = %s",
        [model],
    )
    listed = None
    if ctx.has("migration", "review_list"):
        listed = ctx.one(
            "select r.run_id::text, r.batch_no, r.circuit_config_id::text, r.method,"
            " r.confidence::float8, r.needs_review, r.evidence::text, r.candidates::text,"
            " r.decided_config_id::text, r.decision_note, x.dry_run, x.started_at"
            " from migration.review_list r join migration.runs x on x.run_id = r.run_id"
            " where r.tagged_model_id = %s order by x.started_at desc limit 1",
            [model],
        )
    # the link that describes the model in its state: migration.links for a real run, the
    # dry run's review list for a dry run (only flagged links are listed there)
    chosen: dict[str, Any] | None = None
    if link is not None and (state is None or state["current"]):
        chosen = {**link, "from": "migration.links"}
    elif listed is not None and state is not None and listed["run_id"] == state["run_id"]:
        chosen = {**listed, "from": "review list of run " + listed["run_id"]}
    survivor = None
    if outcome["status"] == "merged" and outcome.get("target_id"):
        survivor = ctx.one(
            "select tagged_model_id::text, circuit_config_id::text, method, confidence::float8,"
            " needs_review from migration.links where tagged_model_id = %s",
            [outcome["target_id"]],
        )
    decision = None
    if ctx.has("migration", "review_decisions"):
        decision = ctx.one(
            "select circuit_config_id::text, decision, decided_at, source_file,"
            " suggested_config_id::text, suggestion_run_id::text"
            " from migration.review_decisions where tagged_model_id = %s",
            [model],
        )
    if decision is not None:
        applied = (
            chosen is not None
            and chosen.get("method") == "override"
            and chosen.get("circuit_config_id") == decision["circuit_config_id"]
        )
        note = None
        if listed is not None and state is not None and listed["run_id"] == state["run_id"]:
            note = listed["decision_note"]
        later = state is not None and datetime.fromisoformat(
            decision["decided_at"]
        ) > datetime.fromisoformat(state["started_at"])
        if not applied and note is None and later:
            note = "recorded after the run that wrote this; the next run applies it"
        decision = {**decision, "applies": applied, "note": note}
    evidence = _evidence(chosen.get("evidence") if chosen else None)
    names = _names_for(ctx, user, listed)
    linked = outcome["status"] == "migrated"
    candidates = _recorded_candidates(evidence, names, chosen, decision) if linked else []
    recomputed = None
    if ctx.recompute and user and linked:
        recomputed = _recompute(ctx, user, model)
        if recomputed is not None:
            candidates = _merge_candidates(candidates, recomputed, names, chosen, decision)
    legacy = _legacy_row(ctx, user, "tagged_models", model)
    return {
        "kind": "tagged_model",
        "id": model,
        "user": user,
        "legacy": {
            "table": "tagged_models",
            "id": model,
            "row": legacy,
            "in_source": None if ctx.src is None else legacy is not None,
        },
        "outcome": outcome,
        "target": target,
        "written_by": _written_by(state),
        "link": None if chosen is None else _link_doc(chosen, names),
        "link_note": (
            "a dry run records only the links that need review"
            if chosen is None and linked and state is not None and not state["current"]
            else None
        ),
        "stored_resnorm": evidence.get("stored_resnorm"),
        "candidate_count": evidence.get("candidates"),
        "candidates": candidates,
        "recomputed": None if recomputed is None else recomputed["now"],
        "survivor": survivor,
        "repairs": recorded["repairs"],
        "decision": decision,
    }


def _names_for(ctx: _Context, user: str | None, listed: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every configuration of the user: id -> name (the target's, else a review list's)."""
    names: dict[str, Any] = {}
    if listed is not None and listed.get("candidates"):
        for c in json.loads(listed["candidates"]):
            names[str(c.get("id"))] = c.get("name")
    if user and ctx.has(ctx.target_schema, "circuit_configurations"):
        for r in ctx.rows(
            sql.SQL("select id::text, name from {} where user_id::text = %s order by id").format(
                ctx.table("circuit_configurations")
            ),
            [user],
        ):
            names[r["id"]] = r["name"]
    return names


def _link_doc(chosen: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
    config = chosen.get("circuit_config_id")
    return {
        "circuit_config_id": config,
        "name": names.get(config) if config else None,
        "method": chosen.get("method"),
        "confidence": None if chosen.get("confidence") is None else round(chosen["confidence"], 4),
        "needs_review": chosen.get("needs_review"),
        "run_id": chosen.get("run_id"),
        "from": chosen.get("from"),
    }


def _recorded_candidates(
    evidence: Mapping[str, Any],
    names: Mapping[str, Any],
    chosen: Mapping[str, Any] | None,
    decision: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """The user's configurations, the two best first with the evidence the ledger recorded."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rank, top in enumerate(evidence.get("top") or [], start=1):
        cid = str(top.get("id"))
        seen.add(cid)
        out.append(
            {
                "id": cid,
                "name": names.get(cid),
                "rank": rank,
                "resnorm": top.get("resnorm"),
                "distance": top.get("distance"),
                "evidence": [s for s in top.get("evidence") or [] if s != "override"],
                "from": "ledger",
            }
        )
    for cid in sorted(names):
        if cid not in seen:
            out.append(
                {
                    "id": cid,
                    "name": names[cid],
                    "rank": None,
                    "resnorm": None,
                    "distance": None,
                    "evidence": None,
                    "from": None,
                }
            )
    return _mark(out, chosen, decision)


def _mark(
    out: list[dict[str, Any]],
    chosen: Mapping[str, Any] | None,
    decision: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    linked = chosen.get("circuit_config_id") if chosen else None
    decided = decision.get("circuit_config_id") if decision else None
    for c in out:
        c["linked"] = c["id"] == linked
        c["decided"] = c["id"] == decided
    return out


def _transform(data: extract.LegacyBatch, overrides: pl.DataFrame | None) -> Any:
    """The transform exactly as ``flows.migrate.run_batch`` calls it (keep the two alike)."""
    from transforms.pipeline import transform

    return transform(
        data.auth_users,
        data.user_sessions,
        data.tagged_models,
        data.user_profiles,
        overrides=overrides,
        app_configurations=data.app_configurations,
        profile_metadata=data.profile_metadata,
    )


_SCORE = {"resnorm": 4, "session": 2, "time": 1}
"""The weight of each signal in the link decision's ranking (``transforms.links.decide``)."""


def _recompute(ctx: _Context, user: str, model: str) -> dict[str, Any] | None:
    """The model's link recomputed from the source now (as a run would: with the recorded
    decisions), and each candidate's evidence with the model pinned to it."""
    data = ctx.user_batch(user)
    if data is None:
        return None
    recorded = recorded_overrides(ctx.target_url)
    now = _transform(data, recorded)
    mine = now.links.filter(pl.col("tagged_model_id") == model)
    if mine.height == 0:
        return {"now": {"linked": False}, "candidates": {}}
    row = mine.row(0, named=True)
    configs = now.circuit_configurations.filter(pl.col("user_id") == user).sort("id")
    per: dict[str, dict[str, Any]] = {}
    if row["method"] != "recovered":
        ids = configs["id"].to_list()
        if len(ids) > MAX_RECOMPUTED:
            ctx.notes.append(
                f"{len(ids)} candidates: only the first {MAX_RECOMPUTED} were recomputed"
            )
        for cid in ids[:MAX_RECOMPUTED]:
            pinned = pl.DataFrame({"tagged_model_id": [model], "circuit_config_id": [cid]})
            result = _transform(data, pinned)
            link = result.links.filter(pl.col("tagged_model_id") == model)
            top = _evidence(link["evidence"][0] if link.height else None).get("top") or []
            first = next((t for t in top if t.get("id") == cid), None)
            signals = [] if first is None else [s for s in first["evidence"] if s != "override"]
            per[cid] = {
                "resnorm": None if first is None else first.get("resnorm"),
                "distance": None if first is None else first.get("distance"),
                "evidence": signals,
                "score": sum(_SCORE.get(s, 0) for s in signals),
            }
    ranked = sorted(per, key=lambda c: (-per[c]["score"], per[c]["distance"] or 9e9, c))
    for rank, cid in enumerate(ranked, start=1):
        per[cid]["rank"] = rank
    names = dict(zip(configs["id"], configs["name"], strict=True))
    return {
        "now": {
            "linked": True,
            "circuit_config_id": row["circuit_config_id"],
            "name": names.get(row["circuit_config_id"]),
            "method": row["method"],
            "confidence": round(float(row["confidence"]), 4),
            "needs_review": row["needs_review"],
        },
        "candidates": per,
        "names": names,
    }


def _merge_candidates(
    recorded: list[dict[str, Any]],
    recomputed: Mapping[str, Any],
    names: Mapping[str, Any],
    chosen: Mapping[str, Any] | None,
    decision: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """Every candidate with its recomputed score (ranked as the link decision ranks them),
    the ledger's recorded figures alongside."""
    per: Mapping[str, dict[str, Any]] = recomputed["candidates"]
    if not per:
        return recorded
    by_id = {c["id"]: c for c in recorded}
    out = []
    all_names = {**recomputed.get("names", {}), **names}
    for cid in sorted(per, key=lambda c: per[c]["rank"]):
        c = per[cid]
        was = by_id.get(cid) or {}
        out.append(
            {
                "id": cid,
                "name": all_names.get(cid),
                "rank": c["rank"],
                "resnorm": c["resnorm"],
                "distance": c["distance"],
                "evidence": c["evidence"],
                "from": "recomputed",
                "recorded_rank": was.get("rank") if was.get("from") == "ledger" else None,
            }
        )
    for c in recorded:  # configurations the source no longer gives the user
        if c["id"] not in per:
            out.append({**c, "from": c["from"] or "target only"})
    return _mark(out, chosen, decision)


def _session(ctx: _Context, session: str, user_hint: str | None) -> dict[str, Any]:
    target = _target_row(
        ctx,
        "user_sessions",
        session,
        "id::text, user_id::text, session_name, current_circuit_config_id::text,"
        " created_at, updated_at",
    )
    user = (target or {}).get("user_id") or user_hint or _ledger_user(ctx, "user_sessions", session)
    state, recorded = _settled(ctx, user, "user_sessions", [session])
    elements: list[dict[str, Any]] = []
    if state is not None:
        elements = ctx.rows(
            "select source_id, 'quarantined' as outcome, reason, null::text as target_id"
            " from migration.quarantine where run_id = %(r)s and source_table = 'saved_profiles'"
            " and source_id like %(p)s"
            " union all select source_id, outcome, null, target_id::text from migration.id_map"
            " where run_id = %(r)s and source_table = 'saved_profiles' and source_id like %(p)s",
            {"r": state["run_id"], "p": session + "#%"},
        )
        elements.sort(key=lambda e: int(str(e["source_id"]).rsplit("#", 1)[-1]))
    names = _config_names(
        ctx,
        sorted(
            {str(e["target_id"]) for e in elements if e["target_id"]}
            | (
                {target["current_circuit_config_id"]}
                if target and target.get("current_circuit_config_id")
                else set()
            )
        ),
    )
    for e in elements:
        e["name"] = names.get(e["target_id"]) if e["target_id"] else None
    models = None
    if target is not None and ctx.has(ctx.target_schema, "tagged_models"):
        models = ctx.one(
            sql.SQL("select count(*) as n from {} where session_id = %s").format(
                ctx.table("tagged_models")
            ),
            [session],
        )
    legacy = _legacy_row(ctx, user, "user_sessions", session)
    return {
        "kind": "user_session",
        "id": session,
        "user": user,
        "legacy": {
            "table": "user_sessions",
            "id": session,
            "row": legacy,
            "in_source": None if ctx.src is None else legacy is not None,
        },
        "outcome": _outcome(recorded, state, target, "user_sessions", session),
        "target": None
        if target is None
        else {
            **target,
            "current_circuit_config_name": names.get(target.get("current_circuit_config_id") or ""),
            "tagged_models": None if models is None else models["n"],
        },
        "written_by": _written_by(state),
        "elements": elements,
        "repairs": recorded["repairs"],
    }


def _element(ctx: _Context, element: str, user_hint: str | None) -> dict[str, Any]:
    session, _, index = element.rpartition("#")
    session_row = _target_row(ctx, "user_sessions", session, "user_id::text")
    user = (
        (session_row or {}).get("user_id")
        or user_hint
        or _ledger_user(ctx, "saved_profiles", element)
        or _ledger_user(ctx, "user_sessions", session)
    )
    if user is None and ctx.src is not None:
        user = next((key for table, key in _legacy_matches(ctx, session) if key), None)
    state, recorded = _settled(ctx, user, "saved_profiles", [element])
    outcome = _outcome(recorded, state, None, "circuit_configurations", element)
    if (
        outcome["status"] == "migrated"
        and "target_id" in outcome
        and outcome["target_id"] == element
    ):
        outcome = {"status": "not recorded", "dry_run": outcome["dry_run"]}
    if outcome.get("target_id"):
        outcome["name"] = _config_names(ctx, [outcome["target_id"]]).get(outcome["target_id"])
    legacy_session = _legacy_row(ctx, user, "user_sessions", session)
    row = None
    data = ctx.user_batch(user)
    if data is not None:
        found = data.user_sessions.filter(pl.col("id") == session)
        if found.height:
            items = _elements(found["saved_profiles"][0])
            if index.isdigit() and int(index) < len(items):
                row = items[int(index)]
            elif index == "*":  # the whole value, when it is no JSON array
                row = found["saved_profiles"][0]
    return {
        "kind": "saved_profiles_element",
        "id": element,
        "user": user,
        "legacy": {
            "table": "saved_profiles",
            "id": element,
            "row": row,
            "session": session,
            "in_source": None if ctx.src is None else row is not None,
            "session_in_source": None if ctx.src is None else legacy_session is not None,
        },
        "outcome": outcome,
        "written_by": _written_by(state),
        "repairs": recorded["repairs"],
    }


def _configuration(ctx: _Context, config: str, user_hint: str | None) -> dict[str, Any]:
    target = _target_row(
        ctx,
        "circuit_configurations",
        config,
        "id::text, user_id::text, name, description, created_at, updated_at",
    )
    user = (target or {}).get("user_id") or user_hint
    legacy_table = "user_profiles"
    if user is None:
        for table in _CONFIG_SOURCES:
            user = _ledger_user(ctx, table, config)
            if user:
                legacy_table = table
                break
    if user is None:
        owner = ctx.one(
            "select user_key from migration.id_map where target_id::text = %s"
            " and user_key is not null limit 1",
            [config],
        )
        user = None if owner is None else owner["user_key"]
    state = None if user is None else _state(ctx, user)
    recorded = _recorded(ctx, state, legacy_table, [config])
    legacy = _legacy_row(ctx, user, "user_profiles", config)
    if legacy is None:
        legacy = _legacy_row(ctx, user, "app_configurations", config)
        legacy_table = str(legacy["source_table"]) if legacy else legacy_table
    is_legacy = legacy is not None or any(recorded[k] for k in ("quarantine", "id_map"))
    members: list[dict[str, Any]] = []
    recovered = None
    links: list[dict[str, Any]] = []
    if state is not None:
        members = ctx.rows(
            "select source_table, source_id, outcome from migration.id_map"
            " where run_id = %s and target_table = 'circuit_configurations' and target_id = %s"
            " order by source_table, source_id",
            [state["run_id"], config],
        )
        recovered = ctx.one(
            "select source_id from migration.repairs where run_id = %s and batch_no = %s"
            " and kind = 'recovered_configuration' and repaired = %s",
            [state["run_id"], state["batch_no"], config],
        )
    if target is not None:
        links = ctx.rows(
            "select method, count(*) as models, count(*) filter (where needs_review) as flagged"
            " from migration.links where circuit_config_id = %s group by method order by method",
            [config],
        )
    decisions = None
    if ctx.has("migration", "review_decisions"):
        decisions = ctx.one(
            "select count(*) as n from migration.review_decisions where circuit_config_id = %s",
            [config],
        )
    return {
        "kind": "circuit_configuration",
        "id": config,
        "user": user,
        "legacy": None
        if not is_legacy
        else {
            "table": legacy_table,
            "id": config,
            "row": legacy,
            "in_source": None if ctx.src is None else legacy is not None,
        },
        "outcome": None
        if not is_legacy
        else _outcome(recorded, state, target, "circuit_configurations", config),
        "target": target,
        "written_by": _written_by(state),
        "members": members,
        "recovered_from_models_of": None if recovered is None else user,
        "links": links,
        "decisions_naming_it": None if decisions is None else decisions["n"],
        "repairs": recorded["repairs"],
    }


def _user(ctx: _Context, user: str) -> dict[str, Any]:
    profile = None
    if ctx.has(ctx.target_schema, "user_profiles"):
        profile = ctx.one(
            sql.SQL(
                "select id::text, user_id::text, username, full_name, created_at, updated_at"
                " from {} where id = %s or user_id = %s"
            ).format(ctx.table("user_profiles")),
            [user, user],
        )
    key = (profile or {}).get("user_id") or user
    state = _state(ctx, key)
    counts: dict[str, Any] = {}
    for table in ("circuit_configurations", "user_sessions", "tagged_models"):
        if ctx.has(ctx.target_schema, table):
            row = ctx.one(
                sql.SQL("select count(*) as n from {} where user_id::text = %s").format(
                    ctx.table(table)
                ),
                [key],
            )
            counts[table] = row["n"] if row else 0
    quarantined: list[dict[str, Any]] = []
    if state is not None:
        quarantined = ctx.rows(
            "select source_table, reason, count(*) as n from migration.quarantine"
            " where run_id = %s and batch_no = %s and user_key = %s group by 1, 2 order by 1, 2",
            [state["run_id"], state["batch_no"], key],
        )
    flagged = None
    if ctx.has(ctx.target_schema, "tagged_models"):
        flagged = ctx.one(
            sql.SQL(
                "select count(*) as n from migration.links l join {} t on t.id = l.tagged_model_id"
                " where t.user_id::text = %s and l.needs_review"
            ).format(ctx.table("tagged_models")),
            [key],
        )
    return {
        "kind": "user",
        "id": user,
        "user": key,
        "target": profile,
        "written_by": _written_by(state),
        "counts": counts,
        "quarantined": quarantined,
        "links_needing_review": None if flagged is None else flagged["n"],
    }


# --- the command ---------------------------------------------------------------------------------


def _subjects(ctx: _Context, item: str) -> list[dict[str, Any]]:
    """Every subject ``item`` names (usually one)."""
    if "#" in item:
        session, _, index = item.rpartition("#")
        canonical = _uuid(session)
        if canonical is None or not (index.isdigit() or index == "*"):
            raise ConfigurationError(
                f"not an element id: {item!r} (an element is <session id>#<index>, e.g."
                " 0d9c…#0, or its own id from saved_profiles)"
            )
        return [_element(ctx, f"{canonical}#{int(index) if index.isdigit() else index}", None)]
    canonical = _uuid(item)
    if canonical is None:
        return [_element(ctx, element, key) for element, key in _element_ids(ctx, item)]
    kinds = _target_kinds(ctx, canonical)
    legacy = _legacy_matches(ctx, canonical)
    kinds |= {table for table, _ in legacy}
    hint = next((key for _, key in legacy if key), None)
    if not kinds:
        kinds = _ledger_kinds(ctx, canonical)
    out: list[dict[str, Any]] = []
    if "tagged_models" in kinds:
        out.append(_tagged_model(ctx, canonical, hint))
    if "user_sessions" in kinds:
        out.append(_session(ctx, canonical, hint))
    if kinds & {"circuit_configurations", *_CONFIG_SOURCES}:
        out.append(_configuration(ctx, canonical, hint))
    if "user" in kinds or "auth_users" in kinds:
        out.append(_user(ctx, canonical))
    return out


def explain(
    target_url: str,
    item: str,
    *,
    source_url: str | None = None,
    source_schema: str | None = None,
    target_schema: str = "public",
    recompute: bool = True,
) -> dict[str, Any]:
    """The explain document of ``item`` (see the module docstring). Without ``source_url``
    only the ledger and the target are read. ``source_schema`` defaults to the latest run's.
    Raises ConfigurationError (exit 2) when nothing has that id."""
    query = item.strip()
    with db.connect(target_url, autocommit=True) as conn:
        if not db.table_exists(conn, "migration", "runs"):
            raise ConfigurationError(
                "the target has no ledger (migration.runs): nothing has been migrated there yet"
            )
        latest = conn.execute(
            "select options from migration.runs where status <> 'refused'"
            " order by started_at desc limit 1"
        ).fetchone()
        options: Mapping[str, Any] = (latest[0] if latest else None) or {}
        ctx = _Context(conn, target_schema, recompute=recompute, target_url=target_url)
        schema = source_schema or str(options.get("source_schema") or "public")
        if source_url is None:
            return _document(ctx, query, schema, checked=False)
        with db.connect(source_url, autocommit=True) as src:
            extract.use_snapshot(src, None)
            ctx.src = src
            ctx.source = extract.check_source(src, schema, options.get("drop_columns") or ())
            try:
                return _document(ctx, query, schema, checked=True)
            finally:
                src.execute("rollback")


def _document(ctx: _Context, query: str, schema: str, *, checked: bool) -> dict[str, Any]:
    subjects = _subjects(ctx, query)
    if not subjects:
        where = "the legacy source, " if checked else ""
        hint = "" if checked else " (the legacy source was not read: pass --source-url)"
        raise ConfigurationError(
            f"nothing has id {query!r}: not in {where}the target or the ledger{hint}"
        )
    return {
        "query": query,
        "source_schema": schema if checked else None,
        "source_checked": checked,
        "subjects": subjects,
        "notes": ctx.notes,
    }
