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

Nothing is read row by row unless it differs: digests are computed inside PostgreSQL and
narrowed down the way data-diff bisects.

1. Per bucket of users (the first ``BUCKET_DIGITS`` hex digits of the user key) and per part of
   the check (``_PARTS``: tagged models, sessions and the profile; the number of circuits; the
   configuration ids), the count and the digest of the users' signatures, what the target must
   hold or holds. A digest is a sum of 64-bit hashes: order-independent, so no sort, and it
   aggregates in parallel workers. A clean target ends here, a few thousand rows shipped.
2. For the buckets that differ in some part only: per-user summaries (counts and digests).
3. For the users whose digests differ only: their rows, compared in Python with the float
   tolerance applied.

Each database is read in one read-only repeatable-read transaction: the source on one connection
per part, the target on one more, in one snapshot when they are the same database, all at once.
The target's links get a cheap global test first, the full query only when it fails. Hashes are
PostgreSQL's, of typed values (no text built per row; a circuit parameter hashes as its numeric
value, a legacy string as the number it reads as), or a prefix of ``md5`` of text when the two
servers disagree on them (another byte order). When the source is the target's database, the
source SQL reads the run's quarantined ids and id map from the ledger tables themselves, so
verify's memory does not grow with the ledger; otherwise they are read once and bound as array
parameters by the server under a generic plan, and looked up by hash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
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
BUCKET_DIGITS = 3  # users are bucketed by this many leading hex digits of their key (4,096)

PARAMETERS = CIRCUIT_PARAMETER_KEYS[:5]  # Rsh, Ra, Ca, Rb, Cb
_WS = r"E' \t\n\r\f\v'"
_NUMBER = r"'^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]{1,4})?$'"
# A JSON number's text (numeric_out: a plain decimal) of at most this many characters is zero or
# of magnitude within 1e-300..1e300, so it casts to float8 without the pattern or range checks.
_SHORT_NUMBER = 300

# One value per hash function the digests use: equal on both servers, or the portable hashes.
_PROBE = """
select hashtextextended('circuit-migrate', 0), jsonb_hash_extended('[1.5, "a"]', 1),
       uuid_hash_extended('00000000-0000-4000-8000-000000000001', 1), hashfloat8extended(1.5, 1),
       timestamp_hash_extended('2000-01-01 00:00:01', 1), hashint8extended(1, 1)
"""


def _num(text: str) -> str:
    """SQL: text ``text`` as float8, null unless it reads as a finite number within 1e-300..1e300
    or zero (``text`` is referenced several times)."""
    return (
        f"(case when {text} ~ {_NUMBER} then (case when {text}::numeric = 0"
        f" or abs({text}::numeric) between 1e-300 and 1e300 then {text}::float8 end) end)"
    )


def _number(value: str, text: str) -> str:
    """SQL: the JSON value ``value`` (``text``: the same as text, as ``->>`` gives it) as float8:
    a JSON number, or a string that reads as one once trimmed; null otherwise (see :func:`_num`).
    """
    trimmed = f"btrim({text}, {_WS})"
    return (
        f"(case jsonb_typeof({value}) when 'number' then (case when length({text})"
        f" <= {_SHORT_NUMBER} then {text}::float8 else {_num(text)} end)"
        f" when 'string' then {_num(trimmed)} end)"
    )


def _member(json: str, key: str) -> str:
    """SQL: member ``key`` of the JSON object ``json`` as float8 (:func:`_number`)."""
    return _number(f"({json}->'{key}')", f"({json}->>'{key}')")


def _item(json: str, index: int) -> str:
    """SQL: item ``index`` of the JSON array ``json`` as float8 (:func:`_number`)."""
    return _number(f"({json}->{index})", f"({json}->>{index})")


def _parameter(json: str, key: str, *, legacy: bool) -> str:
    """SQL: circuit parameter ``key`` of the JSON object ``json`` (legacy: ``Rsh`` else ``Rs``)."""
    if key == "Rsh" and legacy:
        return (
            f"(case when {json}->>'Rsh' is not null then {_member(json, 'Rsh')}"
            f" else {_member(json, 'Rs')} end)"
        )
    return _member(json, key)


def _values(json: str, *, legacy: bool) -> str:
    """SQL select-list items "Rsh".."Cb": the parameters of the JSON object ``json``."""
    return ", ".join(f'{_parameter(json, key, legacy=legacy)} as "{key}"' for key in PARAMETERS)


def _in_schema(text: str, schema: str) -> sql.Composed:
    """``text`` with every ``@schema@`` replaced by the quoted identifier ``schema``."""
    first, *rest = text.split("@schema@")
    out = sql.Composed([sql.SQL(first)])
    for part in rest:
        out += sql.Identifier(schema) + sql.SQL(part)
    return out


# 10^0 .. 10^22, each exact in float8.
_POWERS_OF_TEN = "'{" + ",".join(f"1e{k}" for k in range(23)) + "}'::float8[]"


def _sig(expr: str) -> str:
    """SQL: float8 column ``expr`` (finite or null) rounded to FLOAT_SIG_DIGITS significant
    digits, a content key: ``round(expr::numeric, d)`` (its 15-digit decimal rounded half away
    from zero, d = FLOAT_SIG_DIGITS - 1 - floor(log10|expr|)) as float8, which is one-to-one on
    such decimals. Computed in float8 at a fraction of the cost, as round(|expr| * 10^d) / 10^d
    (the divisor exact, the quotient correctly rounded), where 0 <= d <= 22 and the product lies
    more than 1e-4 from a half (its error is under 1e-5, so the rounding is the same); in
    numeric otherwise."""
    d = f"({FLOAT_SIG_DIGITS} - 1 - floor(log(abs({expr}))))"
    scaled = f"(abs({expr}) * 10::float8 ^ {d})"
    fast = f"sign({expr}) * round({scaled}) / ({_POWERS_OF_TEN})[{d}::int + 1]"
    return (
        f"(case when {expr} is null or {expr} = 0 then {expr}"
        f" when {d} between 0 and 22 and abs({scaled} - floor({scaled}) - 0.5) > 1e-4"
        f" then {fast} else round({expr}::numeric, {d}::int)::float8 end)"
    )


def _name(expr: str) -> str:
    return f"regexp_replace({expr}, '^\\s+|\\s+$', '', 'g')"


def _digest(count: str, total: str) -> str:
    """SQL: a set's digest as text, ``count:sum of row hashes``; null for an empty set."""
    return f"(case when {count} > 0 then {count}::bigint || ':' || {total}::text end)"


_MICROS = "(extract(epoch from {}) * 1000000)::bigint"


def _model_fields(*, legacy: bool) -> dict[str, str]:
    """SQL per ``MODEL_ROWS`` column but ``user_id``, over a tagged model ``t`` (a legacy one of
    CTE ``legacy_models``, whose session is null when the ledger quarantined it)."""
    session = "t.kept_session_id" if legacy else "t.session_id"
    fields = {
        "id": "t.id::text",
        "session_id": f"{session}::text",
        "model_id": "t.model_id::text",
        "tag_name": "t.tag_name::text",
        "tag_category": "t.tag_category::text",
        "resnorm_value": "t.resnorm_value::float8",
        "tagged_at": _MICROS.format("t.tagged_at"),
        "notes": "t.notes",
        "is_interesting": "t.is_interesting",
    }
    return fields | {k: _parameter("t.circuit_parameters", k, legacy=legacy) for k in PARAMETERS}


def _model_line(fields: Mapping[str, str]) -> str:
    """SQL: one text per model, every field quoted (null-safe, unambiguous); floats as float8
    text, which is exact under extra_float_digits = 1."""
    return (
        "concat_ws(',', " + ", ".join(f"quote_nullable(({e})::text)" for e in fields.values()) + ")"
    )


def _model_columns(fields: Mapping[str, str], user: str) -> str:
    """SQL select list of ``MODEL_ROWS``: ``fields`` and ``user`` as user_id."""
    columns = {"id": fields["id"], "user_id": user} | {
        name: expr for name, expr in fields.items() if name != "id"
    }
    assert list(columns) == list(V.MODEL_ROWS)
    return ", ".join(f'{expr} as "{name}"' for name, expr in columns.items())


def _parameter_hash(
    json: str, key: str, seed: int, *, legacy: bool, absent: str = "null::bigint"
) -> str:
    """SQL: the hash of member ``key`` of the JSON object ``json`` as a JSON number: of its value
    whatever its scale (``jsonb_hash_extended``), so equal hashes mean equal floats. A legacy
    string that reads as a number once trimmed hashes as that number; a legacy member that is
    missing or null is ``absent``; anything else is null. The target's member is hashed as it
    is (one lookup): a target string, or two spellings of one float (more digits than it needs),
    only makes its user's digest differ, and the user's rows are then compared (with the
    tolerance)."""
    value = f"({json}->'{key}')"
    if not legacy:
        return f"jsonb_hash_extended({value}, {seed})"
    trimmed = f"btrim({json}->>'{key}', {_WS})"
    return (
        f"(case jsonb_typeof({value}) when 'number' then jsonb_hash_extended({value}, {seed})"
        f" when 'string' then (case when {trimmed} ~ {_NUMBER}"
        f" then jsonb_hash_extended(to_jsonb({trimmed}::numeric), {seed}) end)"
        f" when 'null' then {absent} else (case when {value} is null then {absent} end) end)"
    )


@dataclass(frozen=True)
class _Hashing:
    """The 64-bit hashes digests sum: PostgreSQL's hash functions on typed values (no text to
    build per row), or, when the two servers disagree on them (another byte order), a prefix
    of ``md5`` of text, slower but the same everywhere."""

    portable: bool

    def text(self, expr: str) -> str:
        """SQL: the hash of text ``expr``."""
        if self.portable:
            return f"('x' || left(md5({expr}), 16))::bit(64)::bigint"
        return f"hashtextextended({expr}, 0)"

    def pair(self, first: str, second: str) -> str:
        """SQL: the hash of the pair of uuids ``first``, ``second``."""
        if self.portable:
            return self.text(f"{first}::text || ',' || {second}::text")
        return (
            f"hashint8extended(uuid_hash_extended({first}, 1) # uuid_hash_extended({second}, 2), 0)"
        )

    def model(self, *, legacy: bool) -> str:
        """SQL: the hash of a tagged model ``t``'s ``MODEL_ROWS`` fields but ``user_id``: its
        fields' hashes (each with its own seed; null as 0) combined by xor, then hashed again,
        so that rows sum into a digest no exchange of values between rows preserves."""
        fields = _model_fields(legacy=legacy)
        if self.portable:
            return self.text(_model_line(fields))
        typed = {
            "id": "uuid_hash_extended(t.id, {})",
            "session_id": "uuid_hash_extended(t.{}, {{}})".format(
                "kept_session_id" if legacy else "session_id"
            ),
            "model_id": "hashtextextended(t.model_id, {})",
            "tag_name": "hashtextextended(t.tag_name, {})",
            "tag_category": "hashtextextended(t.tag_category, {})",
            "resnorm_value": "hashfloat8extended(t.resnorm_value, {})",
            "tagged_at": "timestamp_hash_extended(t.tagged_at::timestamp, {})",  # time zone UTC
            "notes": "hashtextextended(t.notes, {})",
            "is_interesting": "hashint8extended(t.is_interesting::int, {})",
        }
        assert list(typed) == list(fields)[: len(typed)]
        hashes = [expr.format(seed) for seed, expr in enumerate(typed.values(), 1)]
        json = "t.circuit_parameters"
        for seed, key in enumerate(PARAMETERS, len(hashes) + 1):
            absent = "null::bigint"
            if key == "Rsh" and legacy:  # Rsh, else Rs
                absent = _parameter_hash(json, "Rs", seed, legacy=True)
            hashes.append(_parameter_hash(json, key, seed, legacy=legacy, absent=absent))
        combined = " # ".join(f"coalesce({h}, 0)" for h in hashes)
        return f"hashint8extended({combined}, 0)"


def _listed(expr: str, param: str, type_: str) -> str:
    """SQL: whether ``expr`` is in the array parameter ``param`` (a hashed subplan; a function
    scan, unlike ``unnest`` in a select list, keeps the query parallel-safe)."""
    return f"{expr} in (select u.id from unnest(%({param})s::{type_}[]) u(id))"


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# source_id as uuid where it is one in canonical text, else null (a case: the cast never runs
# on other text, wherever the planner puts the join condition)
_SOURCE_UUID = f"(case when source_id ~ '^{_CANONICAL_UUID.pattern}$' then source_id::uuid end)"


def _ledger_ctes(in_database: bool) -> str:
    """SQL CTEs (each followed by a comma) with the sets of the run's ledger the source SQL
    needs: ``ledger_q_sessions``, ``ledger_q_profiles`` (uuid), ``ledger_q_elements``,
    ``ledger_q_users`` (text), ``ledger_dropped_models`` (uuid: quarantined or merged tagged
    models), ``id_map`` (circuit sources to configuration ids). ``in_database``: read from the
    ledger tables (parameter ``run_id``), the source being the target's database, so nothing
    of the ledger passes through Python; otherwise from :func:`_ledger`'s array parameters.
    Only canonical uuid texts can name a uuid row: the others are left out of the uuid sets."""
    if not in_database:
        sets = {
            "ledger_q_sessions": "select u.id from unnest(%(q_sessions)s::uuid[]) u(id)",
            "ledger_q_profiles": "select u.id from unnest(%(q_profiles)s::uuid[]) u(id)",
            "ledger_q_elements": "select u.id from unnest(%(q_elements)s::text[]) u(id)",
            "ledger_q_users": "select u.id from unnest(%(q_users)s::text[]) u(id)",
            "ledger_dropped_models": "select u.id from unnest(%(dropped_models)s::uuid[]) u(id)",
        }
        id_map = (
            "select * from unnest(%(map_tables)s::text[], %(map_sources)s::text[],"
            " %(map_targets)s::text[]) as m(source_table, source_id, target_id)"
        )
    else:
        run = "run_id = %(run_id)s::uuid"

        def quarantined(table: str, *, uuid: bool) -> str:
            if not uuid:
                return (
                    "select distinct source_id from migration.quarantine"
                    f" where {run} and source_table = '{table}'"
                )
            return (
                f"select distinct {_SOURCE_UUID} from migration.quarantine"
                f" where {run} and source_table = '{table}' and {_SOURCE_UUID} is not null"
            )

        sets = {
            "ledger_q_sessions": quarantined("user_sessions", uuid=True),
            "ledger_q_profiles": quarantined("user_profiles", uuid=True),
            "ledger_q_elements": quarantined("saved_profiles", uuid=False),
            "ledger_q_users": quarantined("auth_users", uuid=False),
            "ledger_dropped_models": (
                f"select {_SOURCE_UUID} from migration.quarantine"
                f" where {run} and source_table = 'tagged_models' and {_SOURCE_UUID} is not null"
                f" union select {_SOURCE_UUID} from migration.id_map"
                f" where {run} and source_table = 'tagged_models' and outcome = 'merged'"
                f" and {_SOURCE_UUID} is not null"
            ),
        }
        id_map = (
            "select source_table, source_id, target_id::text as target_id from migration.id_map"
            f" where {run} and target_table = 'circuit_configurations'"
        )
    ctes = [f"{name}(id) as not materialized ({query})," for name, query in sets.items()]
    return "\n".join([*ctes, f"id_map as ({id_map}),"])


def _in_ledger(expr: str, name: str) -> str:
    """SQL: whether ``expr`` is in the ledger set ``name`` of :func:`_ledger_ctes`."""
    return f"{expr} in (select l.id from {name} l)"


@dataclass(frozen=True)
class _Scope:
    """The users a query covers: every user, or those of the buckets or the user keys listed in
    parameter ``scope`` (text[])."""

    kind: str  # "all", "buckets" or "users"

    def users(self, key: str) -> str:
        """SQL: whether the user key ``key`` (text) is in scope; a null key never is."""
        if self.kind == "all":
            return f"{key} is not null"
        if self.kind == "buckets":
            return _listed(f"left({key}, {BUCKET_DIGITS})", "scope", "text")
        return _listed(key, "scope", "text")

    def rows(self, column: str) -> str:
        """SQL: whether a row whose own user column is ``column`` may belong to a user in scope
        (a row with none may: its key comes from its session)."""
        if self.kind == "all":
            return "true"
        return f"({column} is null or {self.users(f'{column}::text')})"


_ALL = _Scope("all")


# The smallest user the tagged models of each session with no user name: that session's user key.
_SESSION_MODEL_USERS = """session_model_users as (
  select t.session_id, min(t.user_id::text) as user_id from @schema@.tagged_models t
   where t.session_id in (select s.id from @schema@.user_sessions s where s.user_id is null)
   group by t.session_id
),"""


def _source_ctes(
    schema: str, scope: _Scope, hashing: _Hashing, *, in_database: bool
) -> sql.Composed:
    """The source CTEs: what the target must hold for the users in ``scope``. Row sets
    ``model_rows``, ``session_rows`` and ``circuit_ids`` (the configuration ids the circuits map
    to), ``expected_users`` (``EXPECTED_USERS``), the signatures of :data:`_PARTS`.
    Parameters: those of :func:`_ledger_ctes`, ``scope``."""
    grid_lo, grid_hi = GRID_SIZE_RANGE
    pts_lo, pts_hi = NUM_POINTS_RANGE
    fields = _model_fields(legacy=True)
    profile_lo, profile_hi = (_item("p.parameters->'frequency_range'", i) for i in (0, 1))
    element_lo, element_hi = (_item("e.el->'frequencyRange'", i) for i in (0, 1))
    params_lo, params_hi = (_item("e.el->'parameters'->'frequency_range'", i) for i in (0, 1))
    key = "user_id, name, rsh, ra, ca, rb, cb, lo, hi"
    text = f"""
with
{_ledger_ctes(in_database)}
{_SESSION_MODEL_USERS}
session_keys as (
  select s.id, coalesce(s.user_id::text, mu.user_id) as user_key,
         {_in_ledger("s.id", "ledger_q_sessions")} as quarantined
    from @schema@.user_sessions s left join session_model_users mu on mu.session_id = s.id
   where {scope.rows("s.user_id")}
),
legacy_models as not materialized (
  select t.*, x.id is null as kept, case when q.id is null then t.session_id end as kept_session_id
    from @schema@.tagged_models t
    left join ledger_dropped_models x on x.id = t.id
    left join ledger_q_sessions q on q.id = t.session_id
   where {scope.rows("t.user_id")}
),
model_groups as (
  select t.user_id, case when t.user_id is null then t.session_id end as session_id,
         count(*) as legacy_rows, count(*) filter (where t.kept) as kept_rows,
         sum({hashing.model(legacy=True)}) filter (where t.kept) as digest
    from legacy_models t
   group by 1, 2
),
models as (
  select coalesce(g.user_id::text, k.user_key) as user_key, sum(g.legacy_rows) as legacy_rows,
         sum(g.kept_rows) as kept_rows, sum(g.digest) as digest
    from model_groups g left join session_keys k on g.user_id is null and k.id = g.session_id
   group by 1
),
model_rows as (
  select {_model_columns(fields, "coalesce(t.user_id::text, k.user_key)")}
    from legacy_models t left join session_keys k on t.user_id is null and k.id = t.session_id
   where t.kept
),
session_rows as (
  select id::text as id, user_key as user_id from session_keys
   where user_key is not null and not quarantined
),
profiles as (
  select p.id, p.user_id::text as user_key, p.name, p.parameters, p.min_freq, p.max_freq,
         p.grid_size, p.num_points, {_in_ledger("p.id", "ledger_q_profiles")} as quarantined
    from @schema@.user_profiles p
   where {scope.rows("p.user_id")}
),
elements as (
  select x.*, {_in_ledger("x.source_id", "ledger_q_elements")} as quarantined from (
    select k.user_key, s.id::text || '#' || (e.n - 1) as source_id, e.value as el
      from @schema@.user_sessions s join session_keys k on k.id = s.id
     cross join lateral jsonb_array_elements(
           case when jsonb_typeof(s.saved_profiles) = 'array' then s.saved_profiles
                else '[]'::jsonb end) with ordinality as e(value, n)
  ) x
),
circuit_rows as materialized (
  select p.user_key as user_id, {_name("p.name")} as name, {_values("p.parameters", legacy=True)},
         coalesce(p.min_freq::float8, {profile_lo}, {LEGACY_FREQ[0]}) as min_freq,
         coalesce(p.max_freq::float8, {profile_hi}, {LEGACY_FREQ[1]}) as max_freq,
         least(greatest(coalesce(p.grid_size, {LEGACY_GRID[0]}), {grid_lo}), {grid_hi}) as grid,
         least(greatest(coalesce(p.num_points, {LEGACY_GRID[1]}), {pts_lo}), {pts_hi}) as points
    from profiles p
   where not p.quarantined
),
circuit_elements as materialized (
  select e.user_key as user_id,
         coalesce(nullif({_name("e.el->>'name'")}, ''), '{UNNAMED}') as name,
         {_values("(e.el->'parameters')", legacy=True)},
         coalesce({element_lo}, {params_lo}, {LEGACY_FREQ[0]}) as min_freq,
         coalesce({element_hi}, {params_hi}, {LEGACY_FREQ[1]}) as max_freq
    from elements e
   where e.user_key is not null and not e.quarantined
),
circuit_keys as (
  select user_id, name, {_sig('"Rsh"')} as rsh, {_sig('"Ra"')} as ra, {_sig('"Ca"')} as ca,
         {_sig('"Rb"')} as rb, {_sig('"Cb"')} as cb, {_sig("min_freq")} as lo,
         {_sig("max_freq")} as hi, grid, points
    from circuit_rows
  union all
  select user_id, name, {_sig('"Rsh"')}, {_sig('"Ra"')}, {_sig('"Ca"')}, {_sig('"Rb"')},
         {_sig('"Cb"')}, {_sig("min_freq")}, {_sig("max_freq")}, null, null
    from circuit_elements
),
circuit_variants as (
  select {key}, grid, points from circuit_keys group by {key}, grid, points
),
circuit_counts as (
  select user_id, sum(variants) as n from (
    select user_id, greatest(count(grid), 1) as variants from circuit_variants group by {key}
  ) v group by user_id
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
session_summary as (
  select user_id, count(*) as n, sum({hashing.text("id")}) as digest
    from session_rows group by user_id
),
circuit_summary as (
  select user_id, count(*) as n, sum({hashing.text("id")}) as digest
    from circuit_ids group by user_id
),
user_counts as (
  select user_key, sum(legacy_rows) as legacy_rows, sum(kept_rows) as kept_rows from (
    select user_key, count(*) as legacy_rows, count(*) filter (where not quarantined) as kept_rows
      from session_keys group by user_key
    union all select user_key, legacy_rows, kept_rows from models
    union all select user_key, count(*), count(*) filter (where not quarantined)
      from profiles group by user_key
  ) r where {scope.users("user_key")} group by user_key
),
element_counts as (
  select user_key, count(*) filter (where not quarantined) as kept_rows from elements
   group by user_key
),
expected_users as (
  select u.user_key as user_id, u.legacy_rows::bigint as legacy_rows,
         (u.kept_rows + coalesce(e.kept_rows, 0))::bigint as kept_rows,
         {_in_ledger("u.user_key", "ledger_q_users")} as profile_quarantined,
         coalesce(m.kept_rows, 0)::bigint as tagged_models,
         {_digest("m.kept_rows", "m.digest")} as tagged_models_digest,
         coalesce(s.n, 0) as sessions, {_digest("s.n", "s.digest")} as sessions_digest,
         coalesce(c.n, 0)::bigint as circuits, {_digest("ci.n", "ci.digest")} as circuits_digest
    from user_counts u
    left join element_counts e on e.user_key = u.user_key
    left join models m on m.user_key = u.user_key
    left join session_summary s on s.user_id = u.user_key
    left join circuit_counts c on c.user_id = u.user_key
    left join circuit_summary ci on ci.user_id = u.user_key
),
expected_rows as (
  select u.user_key as user_id, case when m.kept_rows > 0 or s.n > 0 or p.due then
         concat_ws('|', u.user_key, coalesce(m.kept_rows, 0)::bigint,
                   coalesce({_digest("m.kept_rows", "m.digest")}, ''), coalesce(s.n, 0),
                   coalesce({_digest("s.n", "s.digest")}, ''), p.due::int) end as signature
    from user_counts u
    left join models m on m.user_key = u.user_key
    left join session_summary s on s.user_id = u.user_key
   cross join lateral (select (u.kept_rows > 0 or u.user_key in (select id::text from auth.users))
                              and not {_in_ledger("u.user_key", "ledger_q_users")} as due) p
),
expected_circuits as (
  select user_id, concat_ws('|', user_id, n) as signature from circuit_counts
   where {scope.users("user_id")}
),
expected_configurations as (
  select user_id, concat_ws('|', user_id, {_digest("n", "digest")}) as signature
    from circuit_summary where {scope.users("user_id")}
)
"""
    return _in_schema(text, schema)


def _unowned(schema: str, *, in_database: bool) -> sql.Composed:
    """Legacy rows with no user key the ledger did not quarantine (``UNOWNED_ROWS``): sessions
    with no user whose tagged models name none, their saved_profiles elements, and tagged models
    with no user of their own and no such session's."""
    text = f"""
with
{_ledger_ctes(in_database)}
{_SESSION_MODEL_USERS}
unowned_sessions as (
  select s.id, s.saved_profiles from @schema@.user_sessions s
    left join session_model_users mu on mu.session_id = s.id
   where s.user_id is null and mu.user_id is null
)
select 'user_sessions', id::text from unowned_sessions
 where not {_in_ledger("id", "ledger_q_sessions")}
union all
select 'tagged_models', t.id::text from @schema@.tagged_models t
  left join ledger_dropped_models x on x.id = t.id
  left join @schema@.user_sessions s on s.id = t.session_id
  left join session_model_users mu on mu.session_id = t.session_id
 where t.user_id is null and s.user_id is null and mu.user_id is null and x.id is null
union all
select 'saved_profiles', e.source_id from (
  select s.id::text || '#' || (e.n - 1) as source_id from unowned_sessions s
   cross join lateral jsonb_array_elements(
         case when jsonb_typeof(s.saved_profiles) = 'array' then s.saved_profiles
              else '[]'::jsonb end) with ordinality as e(value, n)
) e where not {_in_ledger("e.source_id", "ledger_q_elements")}
"""
    return _in_schema(text, schema)


# A user's signature in each part of the check: its key and what the target must hold (expected
# side) or holds: "rows" (tagged models and sessions, counts and digests, and whether a profile
# is due: required where rows were kept, else the one the migration writes for an auth user),
# "circuits" (how many configurations) and "configurations" (their ids). A part is compared per
# bucket, as a count and a digest, so each can be computed on a connection of its own. A user
# whose profile is due only for saved_profiles elements, or who has a recovered configuration
# (no circuit), or no profile where one is optional, matches in no part: its bucket is compared
# per user, which allows them.
_PARTS = {  # part: (expected signatures, target signatures)
    "rows": (
        "select user_id, signature from expected_rows",
        """select user_id, concat_ws('|', user_id, tagged_models,
                  coalesce(tagged_models_digest, ''), sessions, coalesce(sessions_digest, ''),
                  least(profiles, 1))
             from actual_users where tagged_models + sessions + profiles > 0""",
    ),
    "circuits": (
        "select user_id, signature from expected_circuits",
        "select user_id, concat_ws('|', user_id, circuits) from actual_users where circuits > 0",
    ),
    "configurations": (
        "select user_id, signature from expected_configurations",
        """select user_id, concat_ws('|', user_id, circuits_digest) from actual_users
            where circuits > 0""",
    ),
}


def _buckets(part: str, signatures: str, hashing: _Hashing) -> str:
    """``BUCKETS`` of part ``part``: of the (user_id, signature) rows of query ``signatures``."""
    return (
        f"select '{part}', left(user_id, {BUCKET_DIGITS}), count(*), count(signature),"
        f" sum({hashing.text('signature')})::text"
        f" from ({signatures}) s(user_id, signature) group by 2"
    )


def _target_ctes(schema: str, scope: _Scope, hashing: _Hashing) -> sql.Composed:
    """The target CTEs, shaped like the source's: ``model_rows``, ``session_rows``,
    ``circuit_ids`` and ``actual_users`` (``ACTUAL_USERS``), for the users in ``scope``."""
    fields = _model_fields(legacy=False)
    line_hash = hashing.model(legacy=False)
    rows = scope.rows("user_id")
    text = f"""
with
model_rows as (
  select {_model_columns(fields, "t.user_id::text")}
    from @schema@.tagged_models t where {scope.rows("t.user_id")}
),
session_rows as (
  select id::text as id, user_id::text as user_id from @schema@.user_sessions where {rows}
),
circuit_ids as (
  select id::text as id, user_id::text as user_id from @schema@.circuit_configurations
   where {rows}
),
model_summary as (
  select t.user_id, count(*) as n, sum({line_hash}) as digest
    from @schema@.tagged_models t where {scope.rows("t.user_id")} group by t.user_id
),
session_summary as (
  select user_id, count(*) as n, sum({hashing.text("id::text")}) as digest
    from @schema@.user_sessions where {rows} group by user_id
),
circuit_summary as (
  select user_id, count(*) as n, sum({hashing.text("id::text")}) as digest
    from @schema@.circuit_configurations where {rows} group by user_id
),
profile_summary as (
  select user_id, count(*) as n from @schema@.user_profiles where {rows} group by user_id
),
actual_users as (
  select user_id::text as user_id, coalesce(m.n, 0) as tagged_models,
         {_digest("m.n", "m.digest")} as tagged_models_digest, coalesce(s.n, 0) as sessions,
         {_digest("s.n", "s.digest")} as sessions_digest, coalesce(c.n, 0) as circuits,
         {_digest("c.n", "c.digest")} as circuits_digest, coalesce(p.n, 0) as profiles
    from model_summary m
    full join session_summary s using (user_id)
    full join circuit_summary c using (user_id)
    full join profile_summary p using (user_id)
)
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


def _links_hold(schema: str, hashing: _Hashing) -> sql.Composed:
    """Whether :func:`_links` can find nothing, cheaply: every model's configuration is its
    user's (an anti-join with the configurations), and the models' (id, configuration) pairs
    are the links' (equal counts and digests), each model then having its ledger link."""
    pair = hashing.pair("{}", "{}")
    models = pair.format("t.id", "t.circuit_config_id")
    links = pair.format("l.tagged_model_id", "l.circuit_config_id")
    text = f"""
select not exists (
         select from @schema@.tagged_models t
          where not exists (select from @schema@.circuit_configurations c
                             where c.id = t.circuit_config_id and c.user_id = t.user_id))
   and (select count(*) || ':' || coalesce(sum({models}), 0) from @schema@.tagged_models t)
     = (select count(*) || ':' || coalesce(sum({links}), 0) from migration.links l)
"""
    return _in_schema(text, schema)


_EXPECTED_USERS = "select * from expected_users"
_ACTUAL_USERS = "select * from actual_users"
_DETAIL_ROWS = {  # set: (CTE, its columns, schema)
    "tagged_models": ("model_rows", ", ".join(f'"{c}"' for c in V.MODEL_ROWS), V.MODEL_ROWS),
    "sessions": ("session_rows", "id, user_id", V.ID_ROWS),
    "circuits": ("circuit_ids", "id, user_id", V.ID_ROWS),
}


# --- reading ------------------------------------------------------------------------------------


def _read(
    conn: psycopg.Connection,
    query: sql.Composed,
    params: Mapping[str, Any] | None,
    schema: V.Schema,
) -> pl.DataFrame:
    """The rows of ``query`` as a frame of ``schema`` (values in binary: floats exact, NaN and
    Infinity included). Parameters are bound by the server, sent once in binary: the ledger's
    many thousand ids are no multi-megabyte literal to parse, and, under the generic plan
    :func:`_read_only` asks for, no constant copied into the plan of every parallel worker."""
    with conn.cursor(binary=True) as cursor:
        cursor.execute(query, params, prepare=False)
        rows = cursor.fetchall()
    return pl.DataFrame(rows, schema=dict(schema), orient="row")


@contextmanager
def _read_only(url: str, snapshot: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection in one read-only repeatable-read transaction (in the exported ``snapshot``,
    if given), rolled back at the end."""
    with db.connect(url, autocommit=True) as conn:
        conn.execute("begin transaction isolation level repeatable read read only")
        try:
            if snapshot is not None:
                conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
            conn.execute("set local extra_float_digits = 1")  # float8 text is exact
            conn.execute("set local jit = off")  # compiling these expressions costs more
            conn.execute("set local work_mem = '64MB'")  # hash, not sort, the per-user groups
            conn.execute("set local timezone = 'UTC'")  # timestamptz::timestamp is its UTC time
            conn.execute("set local plan_cache_mode = force_generic_plan")  # see _read
            # a cache of saved_profiles expansions keyed by the whole jsonb costs more than it saves
            conn.execute("set local enable_memoize = off")
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


def _uuids(ids: Iterable[str]) -> list[str]:
    """The distinct ids that are uuids in their canonical text: only those can equal a uuid
    column's text, and they compare as uuids (a hash lookup, no cast per row)."""
    return sorted({text for text in ids if _CANONICAL_UUID.fullmatch(text)})


def _ledger(conn: psycopg.Connection, run_id: str) -> dict[str, list[str]]:
    """The run's quarantined ids per source table, the tagged models it quarantined or merged
    (``dropped_models``) and the id map of circuit sources to configurations (the source SQL's
    array parameters)."""
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
        "q_sessions": _uuids(quarantined.get("user_sessions", [])),
        "q_profiles": _uuids(quarantined.get("user_profiles", [])),
        "q_elements": sorted(set(quarantined.get("saved_profiles", []))),
        "q_users": sorted(set(quarantined.get("auth_users", []))),
        "dropped_models": _uuids([*quarantined.get("tagged_models", []), *merged[0]]),
        "map_tables": list(mapped[0]),
        "map_sources": list(mapped[1]),
        "map_targets": list(mapped[2]),
    }


def _hashing(source: psycopg.Connection, target: psycopg.Connection) -> _Hashing:
    """PostgreSQL's hash functions, unless the two servers disagree on them."""
    probes = {conn.execute(_PROBE).fetchone() for conn in (source, target)}
    return _Hashing(portable=len(probes) > 1)


@dataclass(frozen=True)
class _Side:
    """One side's connection, CTE builder and parameters."""

    conn: psycopg.Connection
    ctes: Callable[[_Scope], sql.Composed]
    params: Mapping[str, Any]

    def read(
        self, scope: _Scope, select: str, schema: V.Schema, values: Sequence[str] = ()
    ) -> pl.DataFrame:
        """``select`` after the CTEs of ``scope`` (parameter ``scope``: ``values``)."""
        query = self.ctes(scope) + sql.SQL(select)
        return _read(self.conn, query, {**self.params, "scope": list(values)}, schema)

    def on(self, conn: psycopg.Connection) -> _Side:
        """The same side on another connection (in the same snapshot)."""
        return _Side(conn, self.ctes, self.params)

    def rows(self, name: str, users: Sequence[str]) -> pl.DataFrame:
        """The rows of set ``name`` (of ``_DETAIL_ROWS``) of ``users``."""
        cte, columns, schema = _DETAIL_ROWS[name]
        if not users:
            return pl.DataFrame(schema=dict(schema))
        select = f"select {columns} from {cte} where {_Scope('users').users('user_id')}"
        return self.read(_Scope("users"), select, schema, users)


def _detail(sides: Sequence[_Side], users: pl.DataFrame, detail: Mapping[str, list[str]]) -> V.Side:
    """One side's rows of the users ``detail`` names per set, one query per set, the sets
    spread over ``sides`` (connections in one snapshot) and read at once."""
    work: dict[int, list[str]] = {}
    for i, name in enumerate(_DETAIL_ROWS):
        work.setdefault(i % len(sides), []).append(name)

    def read(i: int) -> dict[str, pl.DataFrame]:
        return {name: sides[i].rows(name, detail[name]) for name in work[i]}

    rows: dict[str, pl.DataFrame] = {}
    for part in _concurrently(*[lambda i=i: read(i) for i in work]):
        rows |= part
    return V.Side(users=users, **rows)


def _concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """The results of ``calls``, each run on a thread of its own (one per connection)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def _snapshot(conn: psycopg.Connection) -> str:
    """The snapshot of ``conn``'s transaction, exported for another connection to share."""
    return str(conn.execute("select pg_export_snapshot()").fetchone()[0])  # type: ignore[index]


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
    same = db.libpq_url(source_url) == db.libpq_url(target_url)
    with ExitStack() as stack:
        dst = stack.enter_context(_read_only(target_url))
        require_ledger(dst, target_schema)
        run = _pick_run(dst, run_id)
        # one database: the source SQL reads the ledger where it is, in dst's snapshot
        params: dict[str, Any] = {"run_id": run} if same else dict(_ledger(dst, run))
        src = stack.enter_context(_read_only(source_url, _snapshot(dst) if same else None))
        check_source(src, source_schema)
        hashing = _hashing(src, dst)
        source = _Side(
            src,
            lambda scope: _source_ctes(source_schema, scope, hashing, in_database=same),
            params,
        )
        target = _Side(dst, lambda scope: _target_ctes(target_schema, scope, hashing), {})
        parts = {  # one connection per part of the source, all in src's snapshot
            part: source.on(stack.enter_context(_read_only(source_url, _snapshot(src))))
            if part != "rows"
            else source
            for part in _PARTS
        }
        queries = (
            _unowned(source_schema, in_database=same),
            _links_hold(target_schema, hashing),
            _links(target_schema),
        )
        return _compare(source, parts, target, queries, hashing, run)


def _compare(
    source: _Side,
    parts: Mapping[str, _Side],
    target: _Side,
    queries: tuple[sql.Composed, sql.Composed, sql.Composed],
    hashing: _Hashing,
    run: str,
) -> V.Verification:
    """Buckets (each part of the source on a connection of its own, the target on another, all
    at once), then the users of differing buckets, then the rows of differing users."""
    unowned_query, links_hold, links_query = queries

    def expected(side: _Side, part: str) -> pl.DataFrame:
        return side.read(_ALL, _buckets(part, _PARTS[part][0], hashing), V.BUCKETS)

    def unowned() -> pl.DataFrame:  # on the connection of the smallest part
        side = parts["configurations"]
        return _read(side.conn, unowned_query, side.params, V.UNOWNED_ROWS)

    def actual() -> pl.DataFrame:
        selects = [_buckets(part, target_sql, hashing) for part, (_, target_sql) in _PARTS.items()]
        return target.read(_ALL, " union all ".join(selects), V.BUCKETS)

    def links() -> pl.DataFrame:
        if target.conn.execute(links_hold).fetchone()[0]:  # type: ignore[index]
            return pl.DataFrame(schema=dict(V.LINK_ROWS))
        return _read(target.conn, links_query, None, V.LINK_ROWS)

    results = _concurrently(
        lambda: expected(parts["rows"], "rows"),
        lambda: expected(parts["circuits"], "circuits"),
        lambda: (expected(parts["configurations"], "configurations"), unowned()),
        lambda: (actual(), links()),
    )
    e_rows, e_circuits, (e_configurations, unowned_rows), (a_buckets, link_rows) = results
    e_buckets = pl.concat([e_rows, e_circuits, e_configurations])
    drilled = V.buckets_to_drill(e_buckets, a_buckets)
    if drilled:
        buckets = _Scope("buckets")
        e_users, a_users = _concurrently(
            lambda: source.read(buckets, _EXPECTED_USERS, V.EXPECTED_USERS, drilled),
            lambda: target.read(buckets, _ACTUAL_USERS, V.ACTUAL_USERS, drilled),
        )
    else:
        e_users = pl.DataFrame(schema=dict(V.EXPECTED_USERS))
        a_users = pl.DataFrame(schema=dict(V.ACTUAL_USERS))
    detail = {t: V.users_to_detail(e_users, a_users, t) for t in V.DETAILED}
    expected_side, actual_side = _concurrently(
        lambda: _detail(list(parts.values()), e_users, detail),
        lambda: _detail([target], a_users, detail),
    )
    differences = V.compare(expected_side, actual_side, link_rows, unowned_rows, rtol=FLOAT_RTOL)
    checked = V.users_checked(e_users, a_users) + V.users_in_matching_buckets(e_buckets, drilled)
    return V.verification(differences, checked, run)
