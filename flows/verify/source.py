"""What the target must hold, derived from the legacy tables with ``verify``'s own SQL.

This is the second home of DESIGN.md section 5's rules (the first is ``transforms/``), written
apart on purpose and tested to agree on the generator's worlds. Per user key (a row's own
``user_id``; a tagged model without one, its session's; ``''`` for rows of no user) it derives:

- which legacy rows must be quarantined, and why (``quarantine_rows``): a session or tagged
  model of no user (``no_user``) or of a user ``auth.users`` lacks (``unknown_user``), a circuit
  whose parameters are not five finite positive numbers (``invalid_parameters``) or whose
  frequency range is not 0 < min < max (``invalid_frequency_range``), a ``saved_profiles`` that
  is not an array (``malformed_saved_profiles``), an element that is not an object with a
  parameters object (``malformed_element``); an element of a quarantined session shares its
  reason;
- every row of every target table, column by column (``<table>_rows``, the columns of
  ``reports.verification.PARTS``): tagged models keep their session only when it is their own
  user's and migrates; circuits merge when their user, trimmed name, parameters and frequency
  range agree to ``FLOAT_SIG_DIGITS`` (legacy rows: and their clamped grid), field by field
  from the most recently updated member with a value; users with tagged models and no circuit
  get one recovered configuration of their models' median parameters.

Which duplicate tagged models merged depends on the links (a resnorm decision): the ledger's
merged ids come in as parameter ``merged`` (text[]), and the target side checks each survivor.
"""

from __future__ import annotations

from psycopg import sql

from flows.inspect import SOURCES, Inspection
from flows.verify import values as v
from flows.verify.common import Scope, in_relations

PARAMETERS = ("Rsh", "Ra", "Ca", "Rb", "Cb")
UNNAMED = "Untitled circuit"  # a saved_profiles element without a usable name
LEGACY_GRID = (10, 100)  # legacy column defaults of grid_size, num_points (DESIGN.md section 3)
LEGACY_FREQ = (0.1, 100000.0)
GRID_RANGE = (2, 25)  # the target's CHECK ranges (DESIGN.md section 4): legacy values are clamped
POINTS_RANGE = (10, 1000)
PROFILE_DEFAULTS = (5, 0.1, 100000.0, 100)  # user_profiles defaults (grid, min, max, points)
KEYS = "'Ca,Cb,Ra,Rb,Rsh'"
KEYS_WITH_RANGE = "'Ca,Cb,Ra,Rb,Rsh,frequency_range'"
RECOVERED = "Recovered configuration"


def _params(json: str) -> str:
    return ", ".join(f'{v.parameter(json, k)} as "{k}"' for k in PARAMETERS)


def _all_usable() -> str:
    return " and ".join(v.usable(f'"{k}"') for k in PARAMETERS)


def _keys(prefix: str = "") -> str:
    """The content key's columns (rounded parameters and range)."""
    return ", ".join(f"{prefix}k{i}" for i in range(7))


def _key_join() -> str:
    return " and ".join(f"b.k{i} = k.k{i}" for i in range(7))


def source_ctes(source: Inspection, scope: Scope) -> sql.Composed:
    """``with ...`` defining ``tagged_models_rows``, ``user_sessions_rows``,
    ``circuit_configurations_rows``, ``user_profiles_rows`` and ``quarantine_rows`` for the users
    in ``scope`` (parameters: ``scope``, ``merged``, ``undecodable``), from the legacy tables
    as ``source`` reads them (an absent optional column as its default)."""
    grid_lo, grid_hi = GRID_RANGE
    pts_lo, pts_hi = POINTS_RANGE
    d_grid, d_lo, d_hi, d_points = PROFILE_DEFAULTS
    sig_cols = ", ".join(
        f"{v.sig(c)} as k{i}" for i, c in enumerate([*(f'"{k}"' for k in PARAMETERS), "lo", "hi"])
    )
    order_latest = f'coalesce(updated_at, {v.EPOCH}) desc, source_id collate "C"'
    created = f"coalesce(u.created_at, a.first_at, a.last_at, {v.EPOCH})"
    el_params = v.decoded(
        "(e.value->'parameters')", "'saved_profiles:' || s.id || '#' || (e.n - 1)"
    )
    merged_pick = {
        f: (
            f'(array_agg({f} order by updated_at desc nulls last, source_id collate "C")'
            f" filter (where {f} is not null))[1] as {f}"
        )
        for f in (
            "description",
            "is_public",
            "ui_settings",
            "is_computed",
            "computation_time",
            "total_points",
            "valid_points",
            "computation_results",
        )
    }
    text = f"""
with
sess as materialized (
  select s.id, coalesce(s.user_id::text, '') as user_key,
         case when s.user_id is null then 'no_user' when u.id is null then 'unknown_user'
              when {v.bad_ts("s.last_accessed")} or {v.bad_ts("s.created_at")}
                or {v.bad_ts("s.updated_at")} then 'invalid_value' end as reason,
         s.session_name, s.description, s.environment_variables, s.visualization_settings,
         s.performance_settings, s.is_active, {v.ts("s.last_accessed")} as last_accessed,
         {v.ts("s.created_at")} as created_at, {v.ts("s.updated_at")} as updated_at,
         s.current_circuit_config_id,
         {v.readable(v.decoded("s.saved_profiles", "'user_sessions:' || s.id"))}
           as saved_profiles
    from @user_sessions@ s left join auth.users u on u.id = s.user_id
   where {scope.users("coalesce(s.user_id::text, '')")}
),
mods as materialized (
  select t.id, t.session_id, t.model_id, t.tag_name, t.tag_category,
         {v.decoded("t.circuit_parameters", "'tagged_models:' || t.id")} as cp,
         t.resnorm_value, {v.ts("t.tagged_at")} as tagged_at, t.notes, t.is_interesting,
         t.explicit_config_id, {v.bad_ts("t.tagged_at")} as bad_value,
         coalesce(t.user_id::text, s.user_id::text, '') as user_key,
         case when t.user_id is not null then ou.id else su.id end as uid,
         case when t.user_id is null and su.id is null then 'no_user'
              when t.user_id is not null and ou.id is null then 'unknown_user' end as user_reason,
         case when su.id is not null
               and s.user_id = (case when t.user_id is not null then ou.id else su.id end)
               and not ({v.bad_ts("s.last_accessed")} or {v.bad_ts("s.created_at")}
                        or {v.bad_ts("s.updated_at")})
              then s.id end as kept_session
    from @tagged_models@ t
    left join @user_sessions@ s on s.id = t.session_id
    left join auth.users su on su.id = s.user_id
    left join auth.users ou on ou.id = t.user_id
   where {scope.users("coalesce(t.user_id::text, s.user_id::text, '')")}
),
mod_values as materialized (
  select m.id, m.session_id, m.model_id, m.tag_name, m.tag_category, m.resnorm_value,
         m.tagged_at, m.notes, m.is_interesting, m.user_key, m.uid, m.kept_session,
         m.explicit_config_id,
         "Rsh", "Ra", "Ca", "Rb", "Cb", m.fr_lo_raw, m.fr_hi_raw,
         case when m.user_reason is not null then m.user_reason
              when m.bad_value then 'invalid_value'
              when {v.too_deep("m.cp")} or not ({_all_usable()}) then 'invalid_parameters'
         end as reason,
         m.fr_lo_raw is not null and m.fr_hi_raw is not null as has_range
    from (select x.*, {_params("x.cp")}, {v.item("x.cp->'frequency_range'", 0)} as fr_lo_raw,
                 {v.item("x.cp->'frequency_range'", 1)} as fr_hi_raw
            from mods x) m
),
profs as materialized (
  select 'user_profiles'::text as source_table, p.id, coalesce(p.user_id::text, '') as user_key,
         u.id is not null as known, p.name, p.description,
         {v.decoded("p.parameters", "'user_profiles:' || p.id")} as pj,
         p.grid_size, p.num_points, null::boolean as is_public, p.is_computed,
         {v.numeric("p.computation_time")} as computation_time, p.total_points, p.valid_points,
         p.computation_results, null::jsonb as ui_settings, {v.ts("p.created_at")} as created_at,
         {v.ts("p.updated_at")} as updated_at,
         {v.numeric("p.min_freq")} as min_col, {v.numeric("p.max_freq")} as max_col,
         {v.bad_ts("p.created_at")} or {v.bad_ts("p.updated_at")}
           or {v.bad_number("p.computation_time")} as bad_value
    from @user_profiles@ p left join auth.users u on u.id = p.user_id
   where {scope.users("coalesce(p.user_id::text, '')")}
  union all
  select a.source_table, a.id, coalesce(a.user_id::text, ''), u.id is not null, a.name,
         a.description, {v.decoded("a.circuit_parameters", "a.source_table || ':' || a.id")},
         a.grid_size, a.num_points, a.is_public, a.is_computed,
         {v.numeric("a.computation_time")}, a.total_points, a.valid_points,
         a.computation_results, a.ui_settings, {v.ts("a.created_at")}, {v.ts("a.updated_at")},
         {v.numeric("a.min_freq")}, {v.numeric("a.max_freq")},
         {v.bad_ts("a.created_at")} or {v.bad_ts("a.updated_at")}
           or {v.bad_number("a.computation_time")}
    from @app_configurations@ a left join auth.users u on u.id = a.user_id
   where {scope.users("coalesce(a.user_id::text, '')")}
),
meta as (
  select m.id, m.id::text as user_key, u.id is not null as known, m.username, m.full_name,
         m.avatar_url, {v.ts("m.created_at")} as created_at, {v.ts("m.updated_at")} as updated_at,
         {v.bad_ts("m.created_at")} or {v.bad_ts("m.updated_at")} as bad_value
    from @profile_metadata@ m left join auth.users u on u.id = m.id
   where {scope.users("m.id::text")}
),
prof_values as materialized (
  select x.*,
         case when x.user_key = '' then 'no_user' when not x.known then 'unknown_user'
              when x.bad_value then 'invalid_value'
              when {v.too_deep("x.pj")} or not ({_all_usable()}) then 'invalid_parameters'
              when not {v.valid_range("x.lo", "x.hi")} then 'invalid_frequency_range' end as reason
    from (select p.*, {_params("p.pj")},
                 coalesce(p.min_col, {v.item("p.pj->'frequency_range'", 0)}, {LEGACY_FREQ[0]})
                   as lo,
                 coalesce(p.max_col, {v.item("p.pj->'frequency_range'", 1)}, {LEGACY_FREQ[1]})
                   as hi,
                 least(greatest(coalesce(p.grid_size, {LEGACY_GRID[0]}), {grid_lo}), {grid_hi})
                   as grid,
                 least(greatest(coalesce(p.num_points, {LEGACY_GRID[1]}), {pts_lo}), {pts_hi})
                   as points
            from profs p) x
),
els as materialized (
  select s.id as session_id, s.user_key, s.reason as s_reason, s.session_name,
         s.created_at as s_created, s.updated_at as s_updated,
         (case when jsonb_typeof(e.value) = 'object' and e.value ? 'parameters'
               then jsonb_set(e.value, '{{parameters}}', {el_params})
               else e.value end) as el,
         (e.n - 1)::int as idx, s.id::text || '#' || (e.n - 1) as source_id
    from sess s
   cross join lateral jsonb_array_elements(
         case when jsonb_typeof(s.saved_profiles) = 'array' then s.saved_profiles
              else '[]'::jsonb end) with ordinality as e(value, n)
),
el_values as materialized (
  select x.*,
         case when x.s_reason is not null then x.s_reason
              when jsonb_typeof(x.el) <> 'object' then 'malformed_element'
              when jsonb_typeof(x.el->'parameters') is distinct from 'object'
                then 'malformed_element'
              when {v.too_deep("(x.el->'parameters')")} or not ({_all_usable()})
                then 'invalid_parameters'
              when not {v.valid_range("x.lo", "x.hi")} then 'invalid_frequency_range' end as reason
    from (select e.*, {_params("(e.el->'parameters')")},
                 coalesce({v.item("e.el->'frequencyRange'", 0)},
                          {v.item("e.el->'parameters'->'frequency_range'", 0)}, {LEGACY_FREQ[0]})
                   as lo,
                 coalesce({v.item("e.el->'frequencyRange'", 1)},
                          {v.item("e.el->'parameters'->'frequency_range'", 1)}, {LEGACY_FREQ[1]})
                   as hi,
                 coalesce(nullif({v.trimmed("e.el->>'name'")}, ''), '{UNNAMED}') as name,
                 e.el->>'description' as description,
                 {v.timestamp("(e.el->>'createdAt')")} as created
            from els e) x
),
sources as materialized (
  select p.source_table, p.id::text as source_id, p.user_key as user_id, null::uuid as session_id,
         null::int as idx, null::text as session_name, {v.trimmed("p.name")} as name,
         p.description, "Rsh", "Ra", "Ca", "Rb", "Cb", p.lo, p.hi, p.grid, p.points,
         p.is_public, p.ui_settings, p.is_computed, p.computation_time, p.total_points,
         p.valid_points, p.computation_results, p.created_at, p.updated_at, true as is_row
    from prof_values p where p.reason is null
  union all
  select 'saved_profiles', e.source_id, e.user_key, e.session_id, e.idx, e.session_name,
         {v.trimmed("e.name")}, e.description, "Rsh", "Ra", "Ca", "Rb", "Cb", e.lo, e.hi,
         {LEGACY_GRID[0]}, {LEGACY_GRID[1]}, null::boolean, null::jsonb, null::boolean,
         null::float8, null::int, null::int, null::jsonb,
         coalesce(e.created, e.s_created), coalesce(e.created, e.s_updated, e.s_created), false
    from el_values e where e.reason is null
),
keyed as (
  select s.*, {sig_cols} from sources s
),
row_groups as (
  select k.*, first_value(k.source_id) over (
           partition by k.user_id, k.name, {_keys("k.")}, k.grid, k.points
           order by coalesce(k.updated_at, {v.EPOCH}) desc, k.source_id collate "C") as config_id
    from keyed k where k.is_row
),
best as (
  select distinct on (user_id, name, {_keys()}) user_id, name, {_keys()}, config_id
    from row_groups order by user_id, name, {_keys()}, {order_latest}
),
element_groups as (
  select k.*, coalesce(b.config_id, {
        v.stable_uuid(
            "circuit_configurations",
            '''k.user_id || '/' ||
           first_value(k.source_id) over (partition by k.user_id, k.name, '''
            + _keys("k.")
            + ''' order by k.source_id collate "C")''',
        )
    }) as config_id
    from keyed k left join best b on b.user_id = k.user_id and b.name = k.name and {_key_join()}
   where not k.is_row
),
members as materialized (
  select * from row_groups union all select * from element_groups
),
reps as (
  select distinct on (config_id) * from members
   order by config_id, (source_id = config_id) desc, is_row desc, source_id collate "C"
),
aggs as (
  select config_id, bool_or(is_row) as has_row, min(created_at) as created_min,
         max(updated_at) as updated_max, {", ".join(merged_pick.values())}
    from members group by config_id
),
configs as (
  select r.config_id as id, r.user_id, r.name as base, r.is_row as rep_row, r.session_name,
         r."Rsh", r."Ra", r."Ca", r."Rb", r."Cb", r.lo, r.hi, r.grid, r.points, a.*,
         coalesce(a.created_min, a.updated_max, {v.EPOCH}) as created,
         coalesce(a.updated_max, a.created_min, {v.EPOCH}) as updated
    from reps r join aggs a using (config_id)
),
ranked as (
  select c.*, row_number() over (partition by c.user_id, c.base
           order by c.has_row desc, c.updated desc, c.id collate "C") - 1 as rank
    from configs c
),
recovered as (
  select m.uid::text as user_id, count(*) as n, min(m.id::text collate "C") as first_model,
         {
        ", ".join(
            f'percentile_cont(0.5) within group (order by m."{k}") as "{k}"' for k in PARAMETERS
        )
    },
         min(m.tagged_at) as first_at, max(m.tagged_at) as last_at
    from mod_values m
   where m.reason is null and not exists (select from members c where c.user_id = m.uid::text)
   group by m.uid
),
current_configs as (
  select distinct on (m.session_id) m.session_id, m.config_id from members m
   where not m.is_row order by m.session_id, m.created_at desc nulls last, m.idx desc
),
app_members as (
  select source_id, user_id, config_id from members
   where source_table in ('saved_configurations', 'circuit_configurations')
),
activity as (
  select user_key as uid, created_at as first_at, updated_at as last_at from sess
   where reason is null or reason = 'invalid_value'
  union all
  select uid::text, tagged_at, tagged_at from mod_values where uid is not null
  union all
  select user_key, created_at, updated_at from prof_values where known
  union all
  select user_key, created_at, updated_at from meta where known and not bad_value
),
good_meta as (select * from meta where known and not bad_value),
acts as (
  select uid, min(first_at) as first_at, max(last_at) as last_at from activity group by uid
),
latest as (
  select distinct on (user_id) user_id, grid, points, lo, hi from configs
   order by user_id, updated desc, id collate "C"
),
tagged_models_rows as (
  select m.id::text as id, m.uid::text as user_id, m.kept_session::text as session_id,
         m.model_id::text as model_id, m.tag_name::text as tag_name,
         m.tag_category::text as tag_category, m.resnorm_value::float8 as resnorm_value,
         {v.micros("m.tagged_at")} as tagged_at, m.notes, m.is_interesting,
         case when m.has_range then {KEYS_WITH_RANGE} else {KEYS} end as parameter_keys,
         m."Rsh", m."Ra", m."Ca", m."Rb", m."Cb",
         case when m.has_range then m.fr_lo_raw end as fr_lo,
         case when m.has_range then m.fr_hi_raw end as fr_hi,
         am.config_id as explicit_link
    from mod_values m
    left join app_members am
      on am.source_id = m.explicit_config_id::text and am.user_id = m.uid::text
   where m.reason is null and not (m.id::text = any(%(merged)s::text[]))
),
user_sessions_rows as (
  select s.id::text as id, s.user_key as user_id,
         case when row_number() over w = 1 then s.session_name::text
              else s.session_name || ' (' || row_number() over w || ')' end as session_name,
         s.description, s.environment_variables::text as environment_variables,
         s.visualization_settings::text as visualization_settings,
         s.performance_settings::text as performance_settings, s.is_active,
         {v.micros("s.last_accessed")} as last_accessed, {v.micros("s.created_at")} as created_at,
         {v.micros("s.updated_at")} as updated_at,
         coalesce(am.config_id, c.config_id) as current_circuit_config_id
    from sess s left join current_configs c on c.session_id = s.id
    left join app_members am
      on am.source_id = s.current_circuit_config_id::text and am.user_id = s.user_key
   where s.reason is null
  window w as (partition by s.user_key, s.session_name order by s.created_at nulls last, s.id)
),
circuit_configurations_rows as (
  select r.id, r.user_id,
         case when r.rank = 0 then r.base
              when not r.rep_row then r.base || ' (session ' || coalesce(r.session_name, '?') || ')'
              else r.base || ' (copy ' || (r.rank + 1) || ')' end as name,
         r.description, coalesce(r.is_public, false) as is_public,
         {KEYS_WITH_RANGE} as parameter_keys,
         r."Rsh", r."Ra", r."Ca", r."Rb", r."Cb", r.lo as fr_lo, r.hi as fr_hi,
         r.grid as grid_size, r.lo as min_freq, r.hi as max_freq, r.points as num_points,
         coalesce(r.is_computed, false) as is_computed, r.computation_time, r.total_points,
         r.valid_points, r.computation_results::text as computation_results,
         r.ui_settings::text as ui_settings, {v.micros("r.created")} as created_at,
         {v.micros("r.updated")} as updated_at
    from ranked r
  union all
  select {v.stable_uuid("circuit_configurations/recovered", "x.user_id")}, x.user_id, '{RECOVERED}',
         'Recovered from ' || x.n || ' tagged models (median parameters), first model '
           || x.first_model || '; needs review',
         false, {KEYS_WITH_RANGE}, x."Rsh", x."Ra", x."Ca", x."Rb", x."Cb",
         {LEGACY_FREQ[0]}::float8, {LEGACY_FREQ[1]}::float8, {LEGACY_GRID[0]},
         {LEGACY_FREQ[0]}::float8, {LEGACY_FREQ[1]}::float8, {LEGACY_GRID[1]}, false,
         null::float8, null::int, null::int, null::text, null::text,
         {v.micros(f"coalesce(x.first_at, {v.EPOCH})")},
         {v.micros(f"coalesce(x.last_at, x.first_at, {v.EPOCH})")}
    from recovered x
),
user_profiles_rows as (
  select coalesce(md.id::text, {v.stable_uuid("user_profiles", "a.uid")}) as id, a.uid as user_id,
         coalesce(md.username, u.raw_user_meta_data->>'username',
                  u.raw_user_meta_data->>'user_name',
                  u.raw_user_meta_data->>'preferred_username') as username,
         coalesce(md.full_name, u.raw_user_meta_data->>'full_name',
                  u.raw_user_meta_data->>'name') as full_name,
         coalesce(md.avatar_url, u.raw_user_meta_data->>'avatar_url',
                  u.raw_user_meta_data->>'picture') as avatar_url,
         coalesce(l.grid, {d_grid}) as default_grid_size,
         case when {v.valid_range("l.lo", "l.hi")} then l.lo else {d_lo} end as default_min_freq,
         case when {v.valid_range("l.lo", "l.hi")} then l.hi else {d_hi} end as default_max_freq,
         coalesce(l.points, {d_points}) as default_num_points,
         {v.micros(created)} as created_at, {v.micros(f"greatest({created}, a.last_at)")}
           as updated_at
    from acts a join auth.users u on u.id::text = a.uid left join latest l on l.user_id = a.uid
    left join good_meta md on md.user_key = a.uid
),
quarantine_rows as (
  select 'user_sessions:' || id as id, user_key as user_id, reason from sess
   where reason is not null
  union all
  select 'tagged_models:' || id, user_key, reason from mod_values where reason is not null
  union all
  select source_table || ':' || id, user_key, reason from prof_values where reason is not null
  union all
  select 'user_profiles:' || id, user_key,
         case when not known then 'unknown_user' else 'invalid_value' end
    from meta where not known or bad_value
  union all
  select 'saved_profiles:' || source_id, user_key, reason from el_values where reason is not null
  union all
  select 'saved_profiles:' || s.id || '#*', s.user_key, 'malformed_saved_profiles' from sess s
   where s.saved_profiles is not null and jsonb_typeof(s.saved_profiles) <> 'array'
)
"""
    return in_relations(text, {t: source.relation(t) for t in SOURCES})
