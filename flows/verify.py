"""``verify``: check the target against the legacy source with SQL of its own, read-only.

It shares no code with ``transforms`` (nor extract's SQL), so a bug there cannot hide itself.
From the source it computes, per user key (own ``user_id``, else the session's, else the
smallest user its session's tagged models name), what the target must hold: the tagged models
and sessions the ledger of the run did not quarantine (nor merge, for models), their payloads
normalised in SQL (``Rs`` read as ``Rsh``, numbers in strings read as numbers), the number of
distinct circuits (name, parameters and frequency range to ``FLOAT_SIG_DIGITS``; a legacy row's
clamped grid too; an element joins a legacy row of the same content) and the configuration ids
they map to (own id, or the run's ``migration.id_map``). The target side is read the same way,
plus its models' links against ``migration.links``; ``reports.verification`` compares.

Both databases are read in one read-only repeatable-read transaction each, by COPY of per-user
aggregates (counts, ``md5`` digests); only the users whose digests differ are then read row by
row, in one COPY per side, to say what differs with the float tolerance applied.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from flows import db
from flows.extract import check_source
from flows.ledger import require_ledger
from reports import verification as V
from schemas.errors import ConfigurationError
from schemas.tables import CIRCUIT_PARAMETER_KEYS
from schemas.tolerances import FLOAT_RTOL, FLOAT_SIG_DIGITS

# A saved_profiles element without a usable name is named this (DESIGN.md leaves it open; it
# only matters when such an element could merge with a legacy row of exactly this name).
UNNAMED = "Untitled circuit"
# Legacy column defaults (DESIGN.md section 3): what a missing grid or frequency setting means.
LEGACY_GRID = (10, 100)  # grid_size, num_points
LEGACY_FREQ = (0.1, 100000.0)  # min_freq, max_freq
GRID_SIZE_RANGE = (2, 25)  # DESIGN.md section 4 CHECK ranges (legacy values are clamped)
NUM_POINTS_RANGE = (10, 1000)

PARAMETERS = CIRCUIT_PARAMETER_KEYS[:5]  # Rsh, Ra, Ca, Rb, Cb
_WS = r"E' \t\n\r\f\v'"
_NUMBER = r"'^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]{1,4})?$'"


def _num(text: str) -> str:
    """SQL: the trimmed JSON text column ``text`` as float8, null unless it reads as a finite
    number (``text`` must be a plain column: it is referenced several times)."""
    return (
        f"(case when {text} ~ {_NUMBER} then (case when {text}::numeric = 0"
        f" or abs({text}::numeric) between 1e-300 and 1e300 then {text}::float8 end) end)"
    )


def _texts(json: str, *, legacy: bool, extra: Mapping[str, str] | None = None) -> str:
    """SQL: a ``cross join lateral`` subquery ``x`` with the trimmed text of each parameter of the
    JSON object ``json`` (``x.t_Rsh`` .. ``x.t_Cb``; legacy: ``Rsh`` else ``Rs``) and of the
    ``extra`` expressions, computed once per row (``offset 0`` keeps the planner from inlining
    them into every use)."""
    items = {"t_Rsh": f"coalesce({json}->>'Rsh', {json}->>'Rs')" if legacy else f"{json}->>'Rsh'"}
    items |= {f"t_{key}": f"{json}->>'{key}'" for key in PARAMETERS[1:]}
    items |= dict(extra or {})
    columns = ", ".join(f"btrim({expr}, {_WS}) as {name}" for name, expr in items.items())
    return f"cross join lateral (select {columns} offset 0) x"


def _values() -> str:
    """SQL select-list items "Rsh".."Cb": the numbers of the texts of :func:`_texts`."""
    return ", ".join(f'{_num(f"x.t_{key}")} as "{key}"' for key in PARAMETERS)


def _in_schema(text: str, schema: str) -> sql.Composed:
    """``text`` with every ``@schema@`` replaced by the quoted identifier ``schema``."""
    first, *rest = text.split("@schema@")
    out = sql.Composed([sql.SQL(first)])
    for part in rest:
        out += sql.Identifier(schema) + sql.SQL(part)
    return out


def _sig(expr: str) -> str:
    """SQL: float8 column ``expr`` (finite or null) rounded to FLOAT_SIG_DIGITS significant
    digits, as numeric: a content key."""
    return (
        f"(case when {expr} is null or {expr} = 0"
        f" then {expr}::numeric else round({expr}::numeric,"
        f" ({FLOAT_SIG_DIGITS} - 1 - floor(log(abs({expr}))))::int) end)"
    )


def _name(expr: str) -> str:
    return f"regexp_replace({expr}, '^\\s+|\\s+$', '', 'g')"


_MICROS = "(extract(epoch from {}) * 1000000)::bigint"

_MODEL_COLUMNS = (
    "id, user_id, session_id, model_id, tag_name, tag_category, resnorm_value, tagged_at,"
    ' notes, is_interesting, "Rsh", "Ra", "Ca", "Rb", "Cb"'
)
# One line per model, every field quoted (null-safe, unambiguous); floats as float8 text,
# which is exact under extra_float_digits = 1.
_MODEL_LINE = (
    "concat_ws(',', "
    + ", ".join(
        f"quote_nullable({c}::text)"
        for c in (
            "id",
            "session_id",
            "model_id",
            "tag_name",
            "tag_category",
            "resnorm_value",
            "tagged_at",
            "notes",
            "is_interesting",
            '"Rsh"',
            '"Ra"',
            '"Ca"',
            '"Rb"',
            '"Cb"',
        )
    )
    + ")"
)

_SUMMARIES = f"""
model_summary as (
  select user_id, count(*) as n,
         md5(string_agg({_MODEL_LINE}, E'\\n' order by id collate "C")) as digest
    from model_rows group by user_id
),
session_summary as (
  select user_id, count(*) as n, md5(string_agg(id, ',' order by id collate "C")) as digest
    from session_rows group by user_id
),
circuit_summary as (
  select user_id, count(*) as n, md5(string_agg(id, ',' order by id collate "C")) as digest
    from circuit_ids group by user_id
)"""


# Frequency range texts: a legacy row's parameters.frequency_range, an element's frequencyRange
# (then its parameters.frequency_range).
_PROFILE_TEXTS = {
    "t_lo": "p.parameters->'frequency_range'->>0",
    "t_hi": "p.parameters->'frequency_range'->>1",
}
_ELEMENT_TEXTS = {
    "t_elo": "e.el->'frequencyRange'->>0",
    "t_ehi": "e.el->'frequencyRange'->>1",
    "t_lo": "e.el->'parameters'->'frequency_range'->>0",
    "t_hi": "e.el->'parameters'->'frequency_range'->>1",
}


def _source_ctes(schema: str) -> sql.Composed:
    """The source CTEs: what the target must hold. ``model_rows``, ``session_rows`` and
    ``circuit_ids`` (configuration ids the circuits map to) per user key, ``circuit_counts``
    (distinct circuits), ``user_rows`` (every legacy row and element, quarantined or not),
    ``unowned`` and the summaries. Parameters (text arrays, from :func:`_ledger`): quarantined
    ids per source table, merged tagged model ids, the id map of circuit sources."""
    grid_lo, grid_hi = GRID_SIZE_RANGE
    pts_lo, pts_hi = NUM_POINTS_RANGE
    text = f"""
with
q_sessions as (select unnest(%(q_sessions)s::text[]) as id),
q_models as (select unnest(%(q_models)s::text[]) as id),
q_profiles as (select unnest(%(q_profiles)s::text[]) as id),
q_elements as (select unnest(%(q_elements)s::text[]) as id),
merged as (select unnest(%(merged)s::text[]) as id),
id_map as (
  select * from unnest(%(map_tables)s::text[], %(map_sources)s::text[], %(map_targets)s::text[])
    as m(source_table, source_id, target_id)
),
model_users as (
  select session_id, min(user_id::text) as user_id from @schema@.tagged_models
   where session_id is not null group by session_id
),
sessions as (
  select s.id::text as id, coalesce(s.user_id::text, mu.user_id) as user_key, s.saved_profiles,
         s.id::text in (select id from q_sessions) as quarantined
    from @schema@.user_sessions s left join model_users mu on mu.session_id = s.id
),
models as (
  select t.*, coalesce(t.user_id::text, k.user_key) as user_key,
         t.id::text in (select id from q_models) as quarantined,
         t.id::text in (select id from merged) as merged,
         coalesce(k.quarantined, false) as session_quarantined
    from @schema@.tagged_models t left join sessions k on k.id = t.session_id::text
),
profiles as (
  select p.*, p.user_id::text as user_key, p.id::text in (select id from q_profiles) as quarantined
    from @schema@.user_profiles p
),
elements as (
  select k.user_key, k.id || '#' || (e.n - 1) as source_id, e.value as el,
         (k.id || '#' || (e.n - 1)) in (select id from q_elements) as quarantined
    from sessions k cross join lateral jsonb_array_elements(
           case when jsonb_typeof(k.saved_profiles) = 'array' then k.saved_profiles
                else '[]'::jsonb end) with ordinality as e(value, n)
),
model_rows as (
  select m.id::text as id, m.user_key as user_id,
         case when not m.session_quarantined then m.session_id::text end as session_id,
         m.model_id::text as model_id, m.tag_name::text as tag_name,
         m.tag_category::text as tag_category, m.resnorm_value::float8 as resnorm_value,
         {_MICROS.format("m.tagged_at")} as tagged_at, m.notes, m.is_interesting, {_values()}
    from models m {_texts("m.circuit_parameters", legacy=True)}
   where m.user_key is not null and not m.quarantined and not m.merged
),
session_rows as (
  select id, user_key as user_id from sessions where user_key is not null and not quarantined
),
circuit_rows as materialized (
  select p.user_key as user_id, {_name("p.name")} as name, {_values()},
         coalesce(p.min_freq::float8, {_num("x.t_lo")}, {LEGACY_FREQ[0]}) as min_freq,
         coalesce(p.max_freq::float8, {_num("x.t_hi")}, {LEGACY_FREQ[1]}) as max_freq,
         least(greatest(coalesce(p.grid_size, {LEGACY_GRID[0]}), {grid_lo}), {grid_hi}) as grid,
         least(greatest(coalesce(p.num_points, {LEGACY_GRID[1]}), {pts_lo}), {pts_hi}) as points
    from profiles p {_texts("p.parameters", legacy=True, extra=_PROFILE_TEXTS)}
   where not p.quarantined
),
circuit_elements as materialized (
  select e.user_key as user_id,
         coalesce(nullif({_name("e.el->>'name'")}, ''), '{UNNAMED}') as name, {_values()},
         coalesce({_num("x.t_elo")}, {_num("x.t_lo")}, {LEGACY_FREQ[0]}) as min_freq,
         coalesce({_num("x.t_ehi")}, {_num("x.t_hi")}, {LEGACY_FREQ[1]}) as max_freq
    from elements e {_texts("(e.el->'parameters')", legacy=True, extra=_ELEMENT_TEXTS)}
   where e.user_key is not null and not e.quarantined
),
row_keys as (
  select distinct user_id, name, {_sig('"Rsh"')} as rsh, {_sig('"Ra"')} as ra,
         {_sig('"Ca"')} as ca, {_sig('"Rb"')} as rb, {_sig('"Cb"')} as cb,
         {_sig("min_freq")} as lo, {_sig("max_freq")} as hi, grid, points
    from circuit_rows
),
element_keys as (
  select user_id, name, {_sig('"Rsh"')}, {_sig('"Ra"')}, {_sig('"Ca"')}, {_sig('"Rb"')},
         {_sig('"Cb"')}, {_sig("min_freq")}, {_sig("max_freq")}
    from circuit_elements
  except
  select user_id, name, rsh, ra, ca, rb, cb, lo, hi from row_keys
),
circuit_ids as (
  select p.user_key as user_id, coalesce(m.target_id, p.id::text) as id
    from profiles p left join id_map m
      on m.source_table = 'user_profiles' and m.source_id = p.id::text
   where not p.quarantined
  union
  select e.user_key, coalesce(m.target_id, e.source_id)
    from elements e left join id_map m
      on m.source_table = 'saved_profiles' and m.source_id = e.source_id
   where e.user_key is not null and not e.quarantined
),
circuit_counts as (
  select user_id, count(*) as n from (
    select user_id from row_keys union all select user_id from element_keys
  ) k group by user_id
),
user_rows as (
  select user_key, quarantined, true as legacy from sessions
  union all select user_key, quarantined or merged, true from models
  union all select user_key, quarantined, true from profiles
  union all select user_key, quarantined, false from elements
),
unowned as (
  select 'user_sessions' as source_table, id as source_id from sessions
   where user_key is null and not quarantined
  union all select 'tagged_models', id::text from models
   where user_key is null and not quarantined and not merged
  union all select 'saved_profiles', source_id from elements
   where user_key is null and not quarantined
),
{_SUMMARIES.strip()}
"""
    return _in_schema(text, schema)


_SOURCE_SUMMARY = """
select u.user_id, u.legacy_rows, u.kept_rows,
       u.user_id in (select unnest(%(q_users)s::text[])) as profile_quarantined,
       coalesce(m.n, 0), m.digest, coalesce(s.n, 0), s.digest, coalesce(c.n, 0), ci.digest
  from (select user_key as user_id, count(*) filter (where legacy) as legacy_rows,
               count(*) filter (where not quarantined) as kept_rows
          from user_rows where user_key is not null group by user_key) u
  left join model_summary m on m.user_id = u.user_id
  left join session_summary s on s.user_id = u.user_id
  left join circuit_counts c on c.user_id = u.user_id
  left join circuit_summary ci on ci.user_id = u.user_id
"""


def _target_ctes(schema: str) -> sql.Composed:
    """The target CTEs, shaped like the source's: ``model_rows``, ``session_rows``,
    ``circuit_ids`` and the summaries."""
    text = f"""
with
model_rows as (
  select t.id::text as id, t.user_id::text as user_id, t.session_id::text as session_id,
         t.model_id::text as model_id, t.tag_name::text as tag_name,
         t.tag_category::text as tag_category, t.resnorm_value::float8 as resnorm_value,
         {_MICROS.format("t.tagged_at")} as tagged_at, t.notes, t.is_interesting, {_values()}
    from @schema@.tagged_models t {_texts("t.circuit_parameters", legacy=False)}
),
session_rows as (select id::text as id, user_id::text as user_id from @schema@.user_sessions),
circuit_ids as (
  select id::text as id, user_id::text as user_id from @schema@.circuit_configurations
),
{_SUMMARIES.strip()}
"""
    return _in_schema(text, schema)


def _target_summary(schema: str) -> sql.Composed:
    """Per target user: counts and digests of models, sessions, configurations; profiles."""
    text = """
select user_id, coalesce(m.n, 0), m.digest, coalesce(s.n, 0), s.digest, coalesce(c.n, 0),
       c.digest, coalesce(p.n, 0)
  from model_summary m
  full join session_summary s using (user_id)
  full join circuit_summary c using (user_id)
  full join (select user_id::text as user_id, count(*) as n
               from @schema@.user_profiles group by user_id) p using (user_id)
"""
    return _in_schema(text, schema)


def _links(schema: str) -> sql.Composed:
    """Target models whose configuration is missing, another user's, or not the ledger link's."""
    text = """
select t.user_id::text, t.id::text, t.circuit_config_id::text, c.user_id::text,
       l.circuit_config_id::text
  from @schema@.tagged_models t
  left join @schema@.circuit_configurations c on c.id = t.circuit_config_id
  left join migration.links l on l.tagged_model_id = t.id
 where c.id is null or c.user_id <> t.user_id
    or l.circuit_config_id is distinct from t.circuit_config_id
"""
    return _in_schema(text, schema)


def _rows_of(table: str, columns: str) -> sql.SQL:
    """The rows of ``table`` (a CTE) of the users in parameter ``users``."""
    return sql.SQL(
        f"select {columns} from {table} where user_id in (select unnest(%(users)s::text[]))"
    )


# --- reading ------------------------------------------------------------------------------------


def _read(
    conn: psycopg.Connection,
    query: sql.Composable,
    params: Mapping[str, Any] | None,
    schema: V.Schema,
) -> pl.DataFrame:
    """``COPY (query) TO STDOUT`` as CSV, every column read as text, then cast to ``schema``
    (booleans arrive as t/f, floats as float8 text: NaN and Infinity included). CSV's own null
    (an unquoted empty field; an empty string is quoted) keeps every text value apart from
    null: no null marker text (``\\N``) can be mistaken for one."""
    buffer = bytearray()
    copy = sql.SQL("copy ({}) to stdout (format csv)").format(query)
    with conn.cursor().copy(copy, params) as stream:
        for chunk in stream:
            buffer += chunk
    if not buffer:
        return pl.DataFrame(schema=dict(schema))
    raw = pl.read_csv(
        io.BytesIO(bytes(buffer)),
        has_header=False,
        new_columns=list(schema),
        schema_overrides={name: pl.String for name in schema},
        infer_schema=False,
    )
    casts = []
    for name, dtype in schema.items():
        col = pl.col(name)
        if dtype == pl.Boolean:
            casts.append(col.replace_strict({"t": True, "f": False}, return_dtype=pl.Boolean))
        else:
            casts.append(col.cast(dtype))  # type: ignore[arg-type]
    return raw.select(casts)


@contextmanager
def _read_only(url: str) -> Iterator[psycopg.Connection]:
    """A connection in one read-only repeatable-read transaction, rolled back at the end."""
    with db.connect(url, autocommit=True) as conn:
        conn.execute("begin transaction isolation level repeatable read read only")
        try:
            conn.execute("set local extra_float_digits = 1")  # float8 text is exact
            conn.execute("set local jit = off")  # compiling these expressions costs more
            yield conn
        finally:
            conn.execute("rollback")


_INCREMENTAL = "coalesce((options->>'incremental')::boolean, false)"


def _pick_run(conn: psycopg.Connection, run_id: str | None) -> str:
    """The run whose ledger (quarantine, id map) verification trusts: ``run_id``, or the latest
    run that is not a dry run, preferring succeeded ones. An incremental run records only the
    users it re-synced, so it cannot be the reference: a clear error asks for a full run."""
    if run_id is not None:
        row = conn.execute(
            f"select run_id::text, {_INCREMENTAL} from migration.runs where run_id::text = %s",
            [run_id],
        ).fetchone()
        if row is None:
            raise ConfigurationError(f"no migration run {run_id} in the target's ledger")
    else:
        row = conn.execute(
            f"select run_id::text, {_INCREMENTAL} from migration.runs"
            " where status <> 'refused'"
            " order by (status = 'succeeded' and not dry_run) desc, (not dry_run) desc,"
            " started_at desc, run_id limit 1"
        ).fetchone()
        if row is None:
            raise ConfigurationError("the target's ledger records no migration run to verify")
    if row[1]:
        raise ConfigurationError(
            f"run {row[0]} is incremental: its ledger holds only the users it re-synced; "
            "verify against a full run (`circuit-migrate run --full`, then `verify`)"
        )
    return str(row[0])


def _ledger(conn: psycopg.Connection, run_id: str) -> dict[str, list[str]]:
    """The run's quarantined ids per source table, merged tagged model ids and the id map of
    circuit sources to configurations (the source SQL's array parameters)."""
    quarantined: dict[str, list[str]] = dict(
        conn.execute(
            "select source_table, array_agg(source_id) from migration.quarantine"
            " where run_id = %s group by source_table",
            [run_id],
        ).fetchall()
    )
    merged = conn.execute(
        "select coalesce(array_agg(source_id), '{}') from migration.id_map where run_id = %s"
        " and source_table = 'tagged_models' and outcome = 'merged'",
        [run_id],
    ).fetchone()
    mapped = conn.execute(
        "select coalesce(array_agg(source_table), '{}'), coalesce(array_agg(source_id), '{}'),"
        " coalesce(array_agg(target_id::text), '{}') from migration.id_map where run_id = %s"
        " and target_table = 'circuit_configurations'",
        [run_id],
    ).fetchone()
    assert merged is not None and mapped is not None
    return {
        "q_sessions": list(quarantined.get("user_sessions", [])),
        "q_models": list(quarantined.get("tagged_models", [])),
        "q_profiles": list(quarantined.get("user_profiles", [])),
        "q_elements": list(quarantined.get("saved_profiles", [])),
        "q_users": list(quarantined.get("auth_users", [])),
        "merged": list(merged[0]),
        "map_tables": list(mapped[0]),
        "map_sources": list(mapped[1]),
        "map_targets": list(mapped[2]),
    }


def verify(
    source_url: str,
    target_url: str,
    *,
    source_schema: str = "public",
    target_schema: str = "public",
    run_id: str | None = None,
) -> V.Verification:
    """Verify the target against the source and the ledger of ``run_id`` (default: the latest
    succeeded run that was not a dry run, else the latest run). Read-only; raises
    ``ConfigurationError`` when the ledger has no such run, ``SourceSchemaMismatch`` /
    ``TargetSchemaMissing`` when a side lacks its tables."""
    db.libpq_url(source_url)
    db.libpq_url(target_url)
    with _read_only(target_url) as dst:
        require_ledger(dst, target_schema)
        run = _pick_run(dst, run_id)
        params: dict[str, Any] = dict(_ledger(dst, run))
        target = _target_ctes(target_schema)
        a_users = _read(dst, target + _target_summary(target_schema), None, V.ACTUAL_USERS)
        links = _read(dst, _links(target_schema), None, V.LINK_ROWS)
        with _source(source_url, target_url, dst) as src:
            check_source(src, source_schema)
            source = _source_ctes(source_schema)
            e_users = _read(src, source + sql.SQL(_SOURCE_SUMMARY), params, V.EXPECTED_USERS)
            unowned = _read(src, source + sql.SQL(_UNOWNED), params, V.UNOWNED_ROWS)
            detail = {t: V.users_to_detail(e_users, a_users, t) for t in V.DETAILED}
            expected = _detail(src, source, params, e_users, detail)
        actual = _detail(dst, target, {}, a_users, detail)
    differences = V.compare(expected, actual, links, unowned, rtol=FLOAT_RTOL)
    return V.verification(differences, V.users_checked(e_users, a_users), run)


_UNOWNED = "select source_table, source_id from unowned"
_DETAIL_ROWS = {
    "tagged_models": ("model_rows", _MODEL_COLUMNS, V.MODEL_ROWS),
    "sessions": ("session_rows", "id, user_id", V.ID_ROWS),
    "circuits": ("circuit_ids", "id, user_id", V.ID_ROWS),
}


def _detail(
    conn: psycopg.Connection,
    ctes: sql.Composed,
    params: Mapping[str, Any],
    users: pl.DataFrame,
    detail: Mapping[str, list[str]],
) -> V.Side:
    """One side's rows of the users ``detail`` names per set, in one COPY per set."""
    rows = {}
    for name, (cte, columns, schema) in _DETAIL_ROWS.items():
        if detail[name]:
            query = ctes + _rows_of(cte, columns)
            rows[name] = _read(conn, query, {**params, "users": detail[name]}, schema)
        else:
            rows[name] = pl.DataFrame(schema=dict(schema))
    return V.Side(users=users, **rows)


@contextmanager
def _source(
    source_url: str, target_url: str, target: psycopg.Connection
) -> Iterator[psycopg.Connection]:
    """The source connection: the target's own (one snapshot) when both URLs are the same."""
    if db.libpq_url(source_url) == db.libpq_url(target_url):
        yield target
        return
    with _read_only(source_url) as conn:
        yield conn
