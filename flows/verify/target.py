"""What the target holds, shaped like the source side's rows, and the ledger's current decisions.

The ledger carries each user's state forward: ``migration.user_runs`` names, per user key, the
run and batch whose ledger rows describe the user now (the last batch that loaded it, whichever
run wrote it, full or incremental), so the decisions checked are the current ones after any
sequence of runs.
"""

from __future__ import annotations

from psycopg import sql

from flows.verify import values as v
from flows.verify.common import Hashing, Scope, in_schema

PARAMETERS = ("Rsh", "Ra", "Ca", "Rb", "Cb")


def _number(json: str, key: str) -> str:
    """A target JSON member as float8: only a JSON number counts (a string does not)."""
    value = f"({json}->'{key}')"
    return f"(case when jsonb_typeof({value}) = 'number' then ({value})::text::float8 end)"


def _item(json: str, index: int) -> str:
    value = f"({json}->{index})"
    return f"(case when jsonb_typeof({value}) = 'number' then ({value})::text::float8 end)"


def _circuit(json: str) -> str:
    keys = (
        f"(case when jsonb_typeof({json}) = 'object' then (select string_agg(k, ','"
        f' order by k collate "C") from jsonb_object_keys({json}) k) end) as parameter_keys'
    )
    params = ", ".join(f'{_number(json, k)} as "{k}"' for k in PARAMETERS)
    fr = f"{json}->'frequency_range'"
    return f"{keys}, {params}, {_item(fr, 0)} as fr_lo, {_item(fr, 1)} as fr_hi"


# The ledger rows that describe each user now: written by the batch migration.user_runs names.
CURRENT = """
current_q as (
  select q.* from migration.quarantine q
    join migration.user_runs c
      on c.user_key = coalesce(q.user_key, '') and c.run_id = q.run_id and c.batch_no = q.batch_no
),
current_merged as (
  select i.* from migration.id_map i
    join migration.user_runs c
      on c.user_key = coalesce(i.user_key, '') and c.run_id = i.run_id and c.batch_no = i.batch_no
   where i.source_table = 'tagged_models' and i.outcome = 'merged'
)"""


def target_ctes(schema: str, scope: Scope) -> sql.Composed:
    """``with ...`` defining the same ``<part>_rows`` as :func:`flows.verify.source.source_ctes`
    from the target tables, and ``quarantine_rows`` from the ledger's current decisions."""
    text = f"""
with
{CURRENT},
tagged_models_rows as (
  select t.id::text as id, t.user_id::text as user_id, t.session_id::text as session_id,
         t.model_id::text as model_id, t.tag_name::text as tag_name,
         t.tag_category::text as tag_category, t.resnorm_value::float8 as resnorm_value,
         {v.micros("t.tagged_at")} as tagged_at, t.notes, t.is_interesting,
         {_circuit("t.circuit_parameters")},
         case l.method when 'explicit' then t.circuit_config_id::text
                       when 'override' then 'override' end as explicit_link
    from @schema@.tagged_models t left join migration.links l on l.tagged_model_id = t.id
   where {scope.users("t.user_id::text")}
),
user_sessions_rows as (
  select s.id::text as id, s.user_id::text as user_id, s.session_name::text as session_name,
         s.description, s.environment_variables::text as environment_variables,
         s.visualization_settings::text as visualization_settings,
         s.performance_settings::text as performance_settings, s.is_active,
         {v.micros("s.last_accessed")} as last_accessed, {v.micros("s.created_at")} as created_at,
         {v.micros("s.updated_at")} as updated_at,
         s.current_circuit_config_id::text as current_circuit_config_id
    from @schema@.user_sessions s where {scope.users("s.user_id::text")}
),
circuit_configurations_rows as (
  select c.id::text as id, c.user_id::text as user_id, c.name, c.description, c.is_public,
         {_circuit("c.circuit_parameters")}, c.grid_size,
         {v.numeric("c.min_freq")} as min_freq, {v.numeric("c.max_freq")} as max_freq,
         c.num_points, c.is_computed, {v.numeric("c.computation_time")} as computation_time,
         c.total_points, c.valid_points, c.computation_results::text as computation_results,
         c.ui_settings::text as ui_settings, {v.micros("c.created_at")} as created_at,
         {v.micros("c.updated_at")} as updated_at
    from @schema@.circuit_configurations c where {scope.users("c.user_id::text")}
),
user_profiles_rows as (
  select p.id::text as id, p.user_id::text as user_id, p.username, p.full_name, p.avatar_url,
         p.default_grid_size, {v.numeric("p.default_min_freq")} as default_min_freq,
         {v.numeric("p.default_max_freq")} as default_max_freq, p.default_num_points,
         {v.micros("p.created_at")} as created_at, {v.micros("p.updated_at")} as updated_at
    from @schema@.user_profiles p where {scope.users("p.user_id::text")}
),
quarantine_rows as (
  select q.source_table || ':' || q.source_id as id, coalesce(q.user_key, '') as user_id, q.reason
    from current_q q where {scope.users("coalesce(q.user_key, '')")}
)
"""
    return in_schema(text, schema)


def merged_ids(schema: str) -> sql.Composed:
    """The tagged models the ledger currently records as merged duplicates."""
    return in_schema(f"with {CURRENT} select source_id from current_merged", schema)


def merge_problems(schema: str) -> sql.Composed:
    """``MERGE_ROWS``: merged duplicates whose survivor is not in the target, is another user's,
    or is linked to another configuration than the duplicate's link (when it has one)."""
    text = f"""
with {CURRENT}
select coalesce(i.user_key, '') as user_id, i.source_id as tagged_model_id,
       i.target_id::text as target_id,
       case when t.id is null then 'its survivor is not in the target'
            when t.user_id::text is distinct from i.user_key then 'its survivor is another user''s'
            else 'linked to ' || coalesce(l.circuit_config_id::text, 'nothing')
                 || ', its survivor to ' || t.circuit_config_id end as problem
  from current_merged i
  left join @schema@.tagged_models t on t.id = i.target_id
  left join migration.links l on l.tagged_model_id::text = i.source_id
 where t.id is null or t.user_id::text is distinct from i.user_key
    or (l.tagged_model_id is not null and l.circuit_config_id is distinct from t.circuit_config_id)
"""
    return in_schema(text, schema)


def links(schema: str) -> sql.Composed:
    """``LINK_ROWS``: target models whose configuration is missing, another user's, or not the
    one their ledger link names."""
    text = """
select t.user_id::text, t.id::text, t.circuit_config_id::text, c.user_id::text,
       l.circuit_config_id::text
  from @schema@.tagged_models t
  left join @schema@.circuit_configurations c on c.id = t.circuit_config_id
  left join migration.links l on l.tagged_model_id = t.id
 where c.id is null or c.user_id <> t.user_id
    or l.circuit_config_id is distinct from t.circuit_config_id
"""
    return in_schema(text, schema)


def links_hold(schema: str, hashing: Hashing) -> sql.Composed:
    """Whether :func:`links` can find nothing, cheaply: every model's configuration is its
    user's, and the models' (id, configuration) pairs are the links' (equal counts and
    digests), each model then having its ledger link."""
    pair = "{}::text || ',' || {}::text"
    models = hashing.text(pair.format("t.id", "t.circuit_config_id"))
    linked = hashing.text(pair.format("l.tagged_model_id", "l.circuit_config_id"))
    text = f"""
select not exists (
         select from @schema@.tagged_models t
          where not exists (select from @schema@.circuit_configurations c
                             where c.id = t.circuit_config_id and c.user_id = t.user_id))
   and (select count(*) || ':' || coalesce(sum({models}), 0) from @schema@.tagged_models t)
     = (select count(*) || ':' || coalesce(sum({linked}), 0) from migration.links l
         where exists (select from @schema@.tagged_models t where t.id = l.tagged_model_id))
"""
    return in_schema(text, schema)
