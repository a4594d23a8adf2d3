"""The reviewer's decisions: recorded in the ledger, applied by every later run.

``review.csv`` (``reports.review``) leaves its decision column, ``circuit_config_id``, empty;
the reviewer fills in a candidate's id, ``accept`` (the tool's suggestion) or ``clear`` (withdraw
an earlier decision), and ``circuit-migrate review import FILE`` (:func:`import_file`) records
each filled row in ``migration.review_decisions`` with when and from which file. It validates
every row against the ledger's current review state of its tagged model first, in bulk:

- the model's *review state* is the newer of (a) its row in the latest run's review list
  (``migration.review_list``: written by every run, dry runs too, with every configuration of
  the model's user as candidates) and (b) its link in ``migration.links`` (real runs only; the
  candidates are then its user's configurations in the target);
- a row is recorded only if its model needs review in that state (flagged, or already decided:
  a decision can be changed), and a chosen id is one of the model's candidates; ``accept``
  records the suggestion of that state (the resolved id, never the word);
- rejected: malformed ids, unknown configuration ids, another user's configuration, models that
  no longer need review, conflicting rows for one model. An unedited file records nothing; an
  earlier review.csv, whose ``circuit_config_id`` held the tool's own choice, is read as
  undecided wherever that column still equals ``candidate_1_id``.

Runs read the recorded decisions at each batch's start (``flows.migrate.read_overrides``) and
pass them to ``transform(..., overrides=...)`` (method ``override``, confidence 1); a run given
``--link-overrides FILE`` imports it first (:func:`import_for_run`). Each batch writes its part
of the run's review list (:func:`record_review`): its flagged links, and the models whose
recorded decision it could not apply, with the reason.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import psycopg
from psycopg import sql

from flows import db
from flows.extract import copy_frame
from reports.review import (
    ACCEPT,
    CLEAR,
    CONFIG_NAMES,
    DECISION_COLUMN,
    REASONS,
    REVIEW_LINKS,
    review_frame,
)
from schemas.errors import ConfigurationError, TargetSchemaMissing

if TYPE_CHECKING:
    from transforms.pipeline import TransformResult

log = logging.getLogger(__name__)

OVERRIDES: dict[str, type[pl.DataType]] = {
    "tagged_model_id": pl.String,
    "circuit_config_id": pl.String,
}
"""The link overrides a transform takes (``transforms.pipeline.transform(overrides=...)``)."""

EXAMPLES = 5
"""Rejected rows named per reason in the import summary (``--json`` lists every one)."""


# --- the file -----------------------------------------------------------------------------------


def _uuid(text: str | None) -> str | None:
    """The canonical form of a uuid, or None."""
    if not text:
        return None
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class Rejected:
    """A row of a decisions file that was not recorded, and why."""

    line: int  # in the file (the header is line 1)
    tagged_model_id: str
    value: str
    reason: str  # a key of reports.review.REASONS
    detail: str


@dataclass(frozen=True)
class DecisionFile:
    """The filled rows of a decisions file (``rows``: line, tagged_model_id, decision
    (``choose``/``accept``/``clear``), circuit_config_id for ``choose``), what was left
    undecided, and the malformed or conflicting rows."""

    path: str
    rows_read: int
    undecided: int
    unedited: int  # earlier review.csv rows that still hold the tool's own choice
    rows: pl.DataFrame
    rejected: tuple[Rejected, ...]


_FILE_ROWS: dict[str, type[pl.DataType]] = {
    "line": pl.Int64,
    "tagged_model_id": pl.String,
    "decision": pl.String,
    "circuit_config_id": pl.String,
    "value": pl.String,
}


def read_file(path: str | Path) -> DecisionFile:
    """Read a decisions file: a review.csv (or any CSV with ``tagged_model_id`` and
    ``circuit_config_id``). Raises ConfigurationError (exit 2) when it cannot be read or lacks
    those columns."""
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"decisions file not found: {path}")
    try:
        frame = pl.read_csv(file, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"cannot read decisions file {path}: {first}") from None
    missing = {"tagged_model_id", DECISION_COLUMN} - set(frame.columns)
    if missing:
        raise ConfigurationError(
            f"decisions file {path} lacks columns {sorted(missing)} (a review.csv has them)"
        )
    # An earlier review.csv filled circuit_config_id with the tool's choice (= candidate_1_id).
    earlier = "candidate_1_id" in frame.columns and "suggested_config_id" not in frame.columns
    suggested = frame["candidate_1_id"] if earlier else pl.Series([None] * frame.height)
    rows: list[tuple[int, str, str, str | None, str]] = []
    rejected: list[Rejected] = []
    undecided = unedited = 0
    for index, (model, value, first) in enumerate(
        zip(frame["tagged_model_id"], frame[DECISION_COLUMN], suggested, strict=True)
    ):
        line = index + 2
        text = (value or "").strip()
        if not text:
            undecided += 1
            continue
        model_id = _uuid(model)
        chosen = _uuid(text)
        if earlier and chosen is not None and chosen == _uuid(first):
            unedited += 1
            continue
        if model_id is None:
            rejected.append(
                Rejected(line, model or "", text, "malformed", "tagged_model_id is not a uuid")
            )
            continue
        keyword = text.lower()
        if chosen is not None:
            rows.append((line, model_id, "choose", chosen, text))
        elif keyword in (ACCEPT, CLEAR):
            rows.append((line, model_id, keyword, None, text))
        else:
            rejected.append(
                Rejected(
                    line,
                    model_id,
                    text,
                    "malformed",
                    f"{DECISION_COLUMN} is neither a configuration id nor {ACCEPT} or {CLEAR}",
                )
            )
    parsed = pl.DataFrame(rows, schema=_FILE_ROWS, orient="row")
    # one decision per model: identical repeats collapse, different ones are all rejected
    per_model = parsed.group_by("tagged_model_id").agg(
        pl.struct("decision", "circuit_config_id").n_unique().alias("kinds"),
        pl.col("line").alias("lines"),
    )
    conflicting = per_model.filter(pl.col("kinds") > 1)
    if conflicting.height:
        lines = dict(zip(conflicting["tagged_model_id"], conflicting["lines"], strict=True))
        for line, model_id, _, _, text in parsed.filter(
            pl.col("tagged_model_id").is_in(conflicting["tagged_model_id"].implode())
        ).iter_rows():
            others = ", ".join(str(n) for n in sorted(lines[model_id]))
            rejected.append(
                Rejected(
                    line,
                    model_id,
                    text,
                    "conflicting",
                    f"the file gives this tagged model different decisions (lines {others})",
                )
            )
        parsed = parsed.filter(
            ~pl.col("tagged_model_id").is_in(conflicting["tagged_model_id"].implode())
        )
    parsed = parsed.unique("tagged_model_id", keep="first", maintain_order=True)
    return DecisionFile(
        str(path), frame.height, undecided, unedited, parsed, tuple(sorted(rejected, key=_line))
    )


def _line(rejected: Rejected) -> int:
    return rejected.line


def file_overrides(path: str | Path) -> pl.DataFrame:
    """The explicit choices of a decisions file as link overrides (``OVERRIDES``), without the
    ledger: ``accept`` and ``clear`` need the ledger's review state, so only an import
    (:func:`import_file`) records them."""
    rows = read_file(path).rows
    return rows.filter(pl.col("decision") == "choose").select(list(OVERRIDES))


# --- the ledger ----------------------------------------------------------------------------------


def require_tables(conn: psycopg.Connection) -> None:
    """Raise TargetSchemaMissing unless the ledger has the review tables."""
    missing = [
        f"migration.{t}"
        for t in ("review_decisions", "review_list", "links", "runs")
        if not db.table_exists(conn, "migration", t)
    ]
    if missing:
        raise TargetSchemaMissing(
            f"target lacks {', '.join(missing)}: run `circuit-migrate schema apply` first",
            missing=missing,
        )


def read_decisions(conn: psycopg.Connection) -> pl.DataFrame:
    """Every recorded decision as link overrides (``OVERRIDES``)."""
    return copy_frame(
        conn,
        sql.SQL(
            "select tagged_model_id::text, circuit_config_id::text"
            " from migration.review_decisions order by tagged_model_id"
        ),
        OVERRIDES,
    )


def recorded_overrides(target_url: str) -> pl.DataFrame:
    """:func:`read_decisions` on a connection of its own (an empty frame while the ledger has
    no review tables: a target that `schema apply` has not upgraded yet)."""
    with db.connect(target_url, autocommit=True) as conn:
        if not db.table_exists(conn, "migration", "review_decisions"):
            return pl.DataFrame(schema=OVERRIDES)
        return read_decisions(conn)


def _copy_rows(
    conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """COPY ``rows`` into ``table`` (a temp table name or ``migration.x``)."""
    target = sql.SQL(".").join(sql.Identifier(part) for part in table.split("."))
    query = sql.SQL("copy {} ({}) from stdin").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        for row in rows:
            copy.write_row(row)


_STATE: dict[str, pl.DataType | type[pl.DataType]] = {
    "tagged_model_id": pl.String,
    "list_run": pl.String,
    "list_started": pl.Datetime("us", "UTC"),
    "list_config": pl.String,
    "list_method": pl.String,
    "list_confidence": pl.Float64,
    "list_flagged": pl.Boolean,
    "list_undone": pl.String,
    "list_user": pl.String,
    "list_candidates": pl.String,
    "link_run": pl.String,
    "link_started": pl.Datetime("us", "UTC"),
    "link_config": pl.String,
    "link_method": pl.String,
    "link_confidence": pl.Float64,
    "link_flagged": pl.Boolean,
    "target_user": pl.String,
    "target_candidates": pl.String,
    "decided": pl.String,
    "decided_suggestion": pl.String,
}


def _states(conn: psycopg.Connection, target_schema: str) -> pl.DataFrame:
    """The review state of every model of temp table ``review_import`` (``_STATE``)."""
    target = sql.Identifier(target_schema)
    has_target = all(
        db.table_exists(conn, target_schema, t) for t in ("tagged_models", "circuit_configurations")
    )
    user = (
        sql.SQL("(select t.user_id::text from {}.tagged_models t where t.id = f.tagged_model_id)")
        if has_target
        else sql.SQL("null::text")
    ).format(target)
    candidates = (
        sql.SQL(
            "(select json_agg(c.id::text order by c.id)::text from {s}.tagged_models t"
            " join {s}.circuit_configurations c on c.user_id = t.user_id"
            " where t.id = f.tagged_model_id)"
        )
        if has_target
        else sql.SQL("null::text")
    ).format(s=target)
    query = sql.SQL(
        "select f.tagged_model_id::text, rl.run_id::text, rl.started_at,"
        " rl.circuit_config_id::text, rl.method, rl.confidence::float8, rl.needs_review,"
        " rl.decided_config_id::text, rl.user_key, rl.ids::text,"
        " l.run_id::text, lr.started_at, l.circuit_config_id::text, l.method,"
        " l.confidence::float8, l.needs_review, {user}, {candidates},"
        " d.circuit_config_id::text, d.suggested_config_id::text"
        " from review_import f"
        " left join lateral (select r.*, runs.started_at, (select json_agg(e->>'id')"
        "   from jsonb_array_elements(coalesce(r.candidates, '[]'::jsonb)) e) as ids"
        "  from migration.review_list r join migration.runs runs on runs.run_id = r.run_id"
        "  where r.tagged_model_id = f.tagged_model_id"
        "  order by runs.started_at desc, r.run_id desc limit 1) rl on true"
        " left join migration.links l on l.tagged_model_id = f.tagged_model_id"
        " left join migration.runs lr on lr.run_id = l.run_id"
        " left join migration.review_decisions d on d.tagged_model_id = f.tagged_model_id"
    ).format(user=user, candidates=candidates)
    rows = conn.execute(query).fetchall()
    return pl.DataFrame(rows, schema=_STATE, orient="row")


def _owners(conn: psycopg.Connection, ids: list[str], target_schema: str) -> dict[str, str | None]:
    """The user of each of the configuration ``ids`` the target or any review list knows."""
    if not ids:
        return {}
    owners: dict[str, str | None] = {}
    if db.table_exists(conn, target_schema, "circuit_configurations"):
        for cid, owner in conn.execute(
            sql.SQL(
                "select id::text, user_id::text from {}.circuit_configurations"
                " where id = any(%s::uuid[])"
            ).format(sql.Identifier(target_schema)),
            [ids],
        ).fetchall():
            owners[cid] = owner
    for cid, owner in conn.execute(
        "select distinct e->>'id', r.user_key from migration.review_list r,"
        " jsonb_array_elements(coalesce(r.candidates, '[]'::jsonb)) e where e->>'id' = any(%s)",
        [ids],
    ).fetchall():
        owners.setdefault(cid, owner)
    return owners


@dataclass(frozen=True)
class Recorded:
    """A decision an import recorded (or, for a check, would record)."""

    tagged_model_id: str
    circuit_config_id: str
    decision: str
    previous: str | None  # the decision it replaced
    suggested_config_id: str | None


@dataclass(frozen=True)
class ImportResult:
    """What an import of ``source_file`` recorded, left alone and rejected."""

    source_file: str
    rows_read: int
    undecided: int
    unedited: int
    recorded: tuple[Recorded, ...]
    unchanged: int
    cleared: tuple[str, ...]
    rejected: tuple[Rejected, ...]
    checked_only: bool = False
    decisions: int = 0  # recorded decisions in the ledger afterwards
    by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``review import --json``)."""
        return {
            **asdict(self),
            "recorded": [asdict(r) for r in self.recorded],
            "rejected": [asdict(r) for r in self.rejected],
            "cleared": list(self.cleared),
        }


def _verdict(row: Mapping[str, Any], owners: Mapping[str, str | None]) -> tuple[str, Any]:
    """(``record``, (config id, suggestion, run, user)) or (``clear``, None) or
    (``unchanged``, None) or (a rejection reason, detail) for one file row with its state."""
    list_at, link_at = row["list_started"], row["link_started"]
    if row["link_run"] is None or (list_at is not None and link_at is None):
        use_link = False
    else:  # the same run wrote both: its review list has the candidates' names
        use_link = list_at is None or link_at > list_at
    decided = row["decided"]
    if use_link:
        run, suggestion, method = row["link_run"], row["link_config"], row["link_method"]
        flagged = bool(row["link_flagged"]) or method == "override"
        user, listed = row["target_user"], row["target_candidates"]
        if method == "override":  # the link is a decision: the tool's own choice is unknown
            suggestion = row["decided_suggestion"] or suggestion
    elif row["list_run"] is not None:
        run, suggestion, method = row["list_run"], row["list_config"], row["list_method"]
        flagged = bool(row["list_flagged"]) or row["list_undone"] is not None
        user, listed = row["list_user"], row["list_candidates"]
    else:
        return "unknown_model", "no run has linked or listed this tagged model"
    decision = row["decision"]
    if decision == CLEAR:
        return ("clear", None) if decided else ("nothing_to_clear", "nothing is recorded for it")
    if not flagged and decided is None:
        confidence = row["link_confidence"] if use_link else row["list_confidence"]
        how = f"linked by {method}" + (f", confidence {confidence:.2f}" if confidence else "")
        return "no_longer_needs_review", f"run {run} {how}; it needs no review"
    candidates = set(json.loads(listed)) if listed else set()
    if decision == ACCEPT:
        if suggestion is None:
            return "no_suggestion", "the run suggested no configuration"
        chosen = suggestion
    else:
        chosen = row["circuit_config_id"]
        if chosen not in candidates:
            if chosen not in owners:
                return "unknown_configuration", f"no configuration {chosen} is known"
            if owners[chosen] != user:
                return "other_user", f"configuration {chosen} belongs to another user"
            return "not_a_candidate", f"configuration {chosen} is not among its candidates"
    if decided == chosen:
        return "unchanged", None
    return "record", (chosen, suggestion, run, user)


def plan_import(
    conn: psycopg.Connection, parsed: DecisionFile, target_schema: str
) -> tuple[list[Recorded], list[str], int, list[Rejected], list[tuple[Any, ...]]]:
    """Validate the file's rows against the ledger (inside the caller's transaction): the
    decisions to record, the models to clear, how many are already recorded, the rejected
    rows, and the rows to write (``review_decisions`` columns but ``decided_at``)."""
    conn.execute(
        "create temp table review_import (tagged_model_id uuid primary key) on commit drop"
    )
    _copy_rows(
        conn, "review_import", ["tagged_model_id"], parsed.rows.select("tagged_model_id").rows()
    )
    states = _states(conn, target_schema)
    rows = parsed.rows.join(states, on="tagged_model_id", how="left", maintain_order="left")
    unknown_ids = [
        cid
        for cid in rows.filter(pl.col("decision") == "choose")["circuit_config_id"].unique()
        if cid is not None
    ]
    owners = _owners(conn, unknown_ids, target_schema)
    recorded: list[Recorded] = []
    cleared: list[str] = []
    rejected: list[Rejected] = []
    writes: list[tuple[Any, ...]] = []
    unchanged = 0
    source = str(Path(parsed.path).resolve())
    for row in rows.iter_rows(named=True):
        outcome, detail = _verdict(row, owners)
        model = row["tagged_model_id"]
        if outcome == "record":
            chosen, suggestion, run, user = detail
            kind = "accept" if row["decision"] == ACCEPT else "choose"
            recorded.append(Recorded(model, chosen, kind, row["decided"], suggestion))
            writes.append((model, chosen, kind, source, suggestion, run, user))
        elif outcome == "clear":
            cleared.append(model)
        elif outcome == "unchanged":
            unchanged += 1
        else:
            rejected.append(Rejected(row["line"], model, row["value"], outcome, str(detail)))
    return recorded, cleared, unchanged, rejected, writes


_WRITE_COLUMNS = (
    "tagged_model_id",
    "circuit_config_id",
    "decision",
    "source_file",
    "suggested_config_id",
    "suggestion_run_id",
    "user_key",
)


def import_decisions(
    conn: psycopg.Connection, path: str | Path, target_schema: str, *, check: bool = False
) -> ImportResult:
    """Record the decisions of the file ``path`` (see the module docstring) in one transaction
    on ``conn``; with ``check``, only say what it would record."""
    parsed = read_file(path)
    require_tables(conn)
    with conn.transaction(force_rollback=check):
        recorded, cleared, unchanged, rejected, writes = plan_import(conn, parsed, target_schema)
        if writes:
            conn.execute(
                "create temp table review_recorded (tagged_model_id uuid, circuit_config_id uuid,"
                " decision text, source_file text, suggested_config_id uuid,"
                " suggestion_run_id uuid, user_key text) on commit drop"
            )
            _copy_rows(conn, "review_recorded", _WRITE_COLUMNS, writes)
            columns = sql.SQL(", ").join(map(sql.Identifier, _WRITE_COLUMNS))
            conn.execute(
                sql.SQL(
                    "insert into migration.review_decisions ({cols}, decided_at)"
                    " select {cols}, now() from review_recorded"
                    " on conflict (tagged_model_id) do update set {sets}, decided_at = now()"
                ).format(
                    cols=columns,
                    sets=sql.SQL(", ").join(
                        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
                        for c in _WRITE_COLUMNS[1:]
                    ),
                )
            )
        if cleared:
            conn.execute(
                "delete from migration.review_decisions where tagged_model_id = any(%s::uuid[])",
                [cleared],
            )
        total = conn.execute("select count(*) from migration.review_decisions").fetchone()
    all_rejected = sorted([*parsed.rejected, *rejected], key=_line)
    by_reason: dict[str, int] = {}
    for r in all_rejected:
        by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
    return ImportResult(
        source_file=str(Path(path).resolve()),
        rows_read=parsed.rows_read,
        undecided=parsed.undecided,
        unedited=parsed.unedited,
        recorded=tuple(recorded),
        unchanged=unchanged,
        cleared=tuple(cleared),
        rejected=tuple(all_rejected),
        checked_only=check,
        decisions=int(total[0]) if total else 0,
        by_reason=by_reason,
    )


def import_file(
    target_url: str, path: str | Path, target_schema: str = "public", *, check: bool = False
) -> ImportResult:
    """:func:`import_decisions` on a connection of its own."""
    with db.connect(target_url, autocommit=True) as conn:
        return import_decisions(conn, path, target_schema, check=check)


def import_for_run(target_url: str, path: str | None, target_schema: str) -> ImportResult | None:
    """``--link-overrides FILE``: import the file before the run (a shortcut for
    ``review import FILE`` then ``run``), logging what it recorded and rejected."""
    if path is None:
        return None
    result = import_file(target_url, path, target_schema)
    log.info(
        "review decisions from %s: %d recorded, %d already recorded, %d cleared, %d rejected",
        result.source_file,
        len(result.recorded),
        result.unchanged,
        len(result.cleared),
        len(result.rejected),
    )
    for reason, n in result.by_reason.items():
        log.warning("%d rows of %s rejected: %s", n, path, REASONS.get(reason, reason))
    return result


# --- each run's review list ----------------------------------------------------------------------

_LIST_COLUMNS = (
    "run_id",
    "batch_no",
    "tagged_model_id",
    "user_key",
    "model_id",
    "tag_name",
    "circuit_config_id",
    "method",
    "confidence",
    "needs_review",
    "evidence",
    "candidates",
    "decided_config_id",
    "decision_note",
)


def review_rows(
    links: pl.DataFrame,
    tagged_models: pl.DataFrame,
    configurations: pl.DataFrame,
    id_map: pl.DataFrame,
    quarantine: pl.DataFrame,
    decisions: pl.DataFrame | None,
    legacy_models: pl.DataFrame,
) -> pl.DataFrame:
    """A batch's part of the run's review list (the ``review_list`` columns from
    ``tagged_model_id`` on): its links that need review, and the models of ``legacy_models``
    (``id``, ``user_key``: the batch's legacy tagged models) whose recorded decision
    (``decisions``, ``OVERRIDES``) it did not apply, with the reason in ``decision_note``."""
    decided = (
        pl.DataFrame(schema=OVERRIDES) if decisions is None else decisions.select(list(OVERRIDES))
    ).rename({"circuit_config_id": "decided_config_id"})
    decided = decided.join(
        legacy_models.select(pl.col("id").alias("tagged_model_id"), "user_key"),
        on="tagged_model_id",
        how="inner",
    )
    linked = links.join(decided, on="tagged_model_id", how="left")
    applied = (pl.col("method") == "override") & (
        pl.col("circuit_config_id") == pl.col("decided_config_id")
    )
    listed = linked.filter(
        pl.col("needs_review") | (pl.col("decided_config_id").is_not_null() & ~applied)
    )
    models = tagged_models.select(
        pl.col("id").alias("tagged_model_id"),
        pl.col("user_id").alias("_user"),
        "model_id",
        "tag_name",
    )
    listed = listed.join(models, on="tagged_model_id", how="left").with_columns(
        pl.coalesce("_user", "user_key").alias("user_key")
    )
    own = configurations.select(pl.col("id").alias("_cfg"), pl.col("user_id").alias("_owner"))
    listed = listed.join(
        own, left_on="decided_config_id", right_on="_cfg", how="left"
    ).with_columns(
        pl.when(pl.col("decided_config_id").is_null() | applied)
        .then(None)
        .when(pl.col("_owner").is_null() | (pl.col("_owner") != pl.col("user_key")))
        .then(
            pl.format(
                "configuration {} is no longer one of the user's configurations",
                "decided_config_id",
            )
        )
        .otherwise(pl.lit("the decision was not applied"))
        .alias("decision_note")
    )
    # decided models the batch did not link: merged into another, quarantined, or dropped
    unlinked = decided.join(links.select("tagged_model_id"), on="tagged_model_id", how="anti")
    merged = id_map.filter(pl.col("source_table") == "tagged_models").select(
        pl.col("source_id").alias("tagged_model_id"), "target_id"
    )
    held = quarantine.filter(pl.col("source_table") == "tagged_models").select(
        pl.col("source_id").alias("tagged_model_id"), "reason"
    )
    unlinked = (
        unlinked.join(merged, on="tagged_model_id", how="left")
        .join(held, on="tagged_model_id", how="left")
        .join(models.drop("_user"), on="tagged_model_id", how="left")
        .with_columns(
            pl.when(pl.col("target_id").is_not_null())
            .then(pl.format("the tagged model was merged into tagged model {}", "target_id"))
            .when(pl.col("reason").is_not_null())
            .then(pl.format("the tagged model is quarantined ({})", "reason"))
            .otherwise(pl.lit("the tagged model was not linked"))
            .alias("decision_note"),
            pl.lit(None, dtype=pl.String).alias("circuit_config_id"),
            pl.lit(None, dtype=pl.String).alias("method"),
            pl.lit(None, dtype=pl.Float64).alias("confidence"),
            pl.lit(False).alias("needs_review"),
            pl.lit(None, dtype=pl.String).alias("evidence"),
        )
    )
    columns = [*_LIST_COLUMNS[2:-3], "decided_config_id", "decision_note"]
    rows = pl.concat([listed.select(columns), unlinked.select(columns)], how="vertical_relaxed")
    return rows.join(_candidates(configurations), on="user_key", how="left").select(
        list(_LIST_COLUMNS[2:])
    )


def _candidates(configurations: pl.DataFrame) -> pl.DataFrame:
    """Per user (``user_key``), every configuration as JSON text ``[{"id", "name"}]``."""
    return (
        configurations.select(pl.col("user_id").alias("user_key"), "id", "name")
        .sort("user_key", "id")
        .group_by("user_key", maintain_order=True)
        .agg(pl.struct("id", "name").struct.json_encode().str.join(",").alias("candidates"))
        .with_columns(pl.format("[{}]", "candidates").alias("candidates"))
    )


def record_review(
    conn: psycopg.Connection,
    run_id: str,
    batch_no: int,
    result: TransformResult,
    decisions: pl.DataFrame | None,
    keys: pl.DataFrame,
) -> dict[str, int]:
    """Replace the batch's rows of the run's review list (inside its load transaction; dry runs
    too) from its ``TransformResult``, the decisions it applied (``decisions``) and the user
    key of each legacy row it read (``keys``, ``flows.extract.KEY_MAP``). Returns, for the
    batch's counts, how many decisions it applied and how many it could not."""
    legacy = keys.filter(pl.col("source_table") == "tagged_models").select(
        pl.col("source_id").alias("id"), "user_key"
    )
    rows = review_rows(
        result.links,
        result.tagged_models,
        result.circuit_configurations,
        result.id_map,
        result.quarantine,
        decisions,
        legacy,
    )
    conn.execute(
        "delete from migration.review_list where run_id = %s and batch_no = %s", [run_id, batch_no]
    )
    if rows.height:
        _copy_rows(
            conn,
            "migration.review_list",
            _LIST_COLUMNS,
            ((run_id, batch_no, *row) for row in rows.iter_rows()),
        )
    in_batch = 0
    if decisions is not None and decisions.height:
        in_batch = decisions.join(
            legacy.select(pl.col("id").alias("tagged_model_id")), on="tagged_model_id", how="semi"
        ).height
    not_applied = int(rows["decision_note"].is_not_null().sum())
    return {"applied": in_batch - not_applied, "not_applied": not_applied}


_LEGACY_LINKS = (
    "select l.tagged_model_id::text, l.circuit_config_id::text, l.method,"
    " l.confidence::float8, t.user_id::text, t.model_id, t.tag_name, l.evidence::text,"
    " null::text, null::text"
    " from migration.links l left join {tables} t on t.id = l.tagged_model_id"
    " where l.run_id = {run} and l.needs_review"
    " order by t.user_id nulls last, l.tagged_model_id"
)


def review_list(conn: psycopg.Connection, run_id: str, target_schema: str) -> pl.DataFrame:
    """The run's review.csv frame (``reports.review.REVIEW``) from its review list in the ledger
    (a run recorded before the ledger kept one: from its flagged links in ``migration.links``
    and the configurations in the target)."""
    run = sql.Literal(run_id)
    if db.table_exists(conn, "migration", "review_list") and conn.execute(
        "select exists (select 1 from migration.review_list where run_id = %s)", [run_id]
    ).fetchone() == (True,):
        links = copy_frame(
            conn,
            sql.SQL(
                "select tagged_model_id::text, circuit_config_id::text, method,"
                " confidence::float8, user_key, model_id, tag_name, evidence::text,"
                " decided_config_id::text, decision_note from migration.review_list"
                " where run_id = {run} order by user_key nulls last, tagged_model_id"
            ).format(run=run),
            REVIEW_LINKS,
        )
        names = copy_frame(
            conn,
            sql.SQL(
                "select distinct e->>'id', e->>'name', r.user_key from migration.review_list r,"
                " jsonb_array_elements(coalesce(r.candidates, '[]'::jsonb)) e"
                " where r.run_id = {run}"
            ).format(run=run),
            CONFIG_NAMES,
        )
        return review_frame(links, names)
    tables: sql.Composable
    configs: sql.Composable
    if not all(
        db.table_exists(conn, target_schema, t) for t in ("tagged_models", "circuit_configurations")
    ):
        tables = sql.SQL(
            "(select null::uuid as id, null::uuid as user_id, null::text as model_id,"
            " null::text as tag_name where false)"
        )
        configs = sql.SQL(
            "(select null::uuid as id, null::text as name, null::uuid as user_id where false)"
        )
    else:
        tables = sql.SQL("{}.tagged_models").format(sql.Identifier(target_schema))
        configs = sql.SQL("{}.circuit_configurations").format(sql.Identifier(target_schema))
    links = copy_frame(conn, sql.SQL(_LEGACY_LINKS).format(tables=tables, run=run), REVIEW_LINKS)
    names = copy_frame(
        conn,
        sql.SQL(
            "select c.id::text, c.name, c.user_id::text from {configs} c where c.user_id in ("
            " select t.user_id from migration.links l join {tables} t on t.id = l.tagged_model_id"
            " where l.run_id = {run} and l.needs_review)"
        ).format(configs=configs, tables=tables, run=run),
        CONFIG_NAMES,
    )
    return review_frame(links, names)
