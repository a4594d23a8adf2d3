"""SQLAlchemy Core tables of the legacy input, the new target and the ledger, on one MetaData.

Each group sits in a canonical schema name that the flows translate at run time:

- ``auth``: the Supabase ``auth.users`` table (only the columns the migration reads);
- ``legacy``: the legacy input tables, exactly as DESIGN.md section 3 (live in the source's
  ``public`` schema, or in ``legacy`` after ``stage-legacy``);
- ``public``: the new target tables, DESIGN.md section 4;
- ``migration``: the ledger, DESIGN.md section 8.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

AUTH = "auth"
LEGACY = "legacy"
TARGET = "public"
LEDGER = "migration"

metadata = sa.MetaData()

_NOW = sa.text("now()")
_UUID = sa.text("gen_random_uuid()")


def _uuid_pk() -> sa.Column[str]:
    return sa.Column("id", UUID(as_uuid=False), primary_key=True, server_default=_UUID)


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=_NOW)


auth_users = sa.Table(
    "users",
    metadata,
    _uuid_pk(),
    sa.Column("email", sa.Text),
    sa.Column("raw_user_meta_data", JSONB, server_default=sa.text("'{}'::jsonb")),
    _ts("created_at"),
    _ts("updated_at"),
    schema=AUTH,
)

# --- legacy input (DESIGN.md section 3) -------------------------------------------------------

legacy_user_sessions = sa.Table(
    "user_sessions",
    metadata,
    _uuid_pk(),
    sa.Column("user_id", UUID(as_uuid=False), sa.ForeignKey("auth.users.id", ondelete="CASCADE")),
    sa.Column("session_name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("environment_variables", JSONB, server_default=sa.text("'{}'::jsonb")),
    sa.Column("visualization_settings", JSONB, server_default=sa.text("'{}'::jsonb")),
    sa.Column("performance_settings", JSONB, server_default=sa.text("'{}'::jsonb")),
    sa.Column("saved_profiles", JSONB, server_default=sa.text("'[]'::jsonb")),
    sa.Column("is_active", sa.Boolean, server_default=sa.true()),
    _ts("last_accessed"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("user_id", "session_name"),
    schema=LEGACY,
)

legacy_tagged_models = sa.Table(
    "tagged_models",
    metadata,
    _uuid_pk(),
    sa.Column("user_id", UUID(as_uuid=False), sa.ForeignKey("auth.users.id", ondelete="CASCADE")),
    sa.Column(
        "session_id",
        UUID(as_uuid=False),
        sa.ForeignKey("legacy.user_sessions.id", ondelete="CASCADE"),
    ),
    sa.Column("model_id", sa.String(255), nullable=False),
    sa.Column("tag_name", sa.String(100), nullable=False),
    sa.Column("tag_category", sa.String(50), server_default="user"),
    sa.Column("circuit_parameters", JSONB, nullable=False),
    sa.Column("resnorm_value", sa.Double),
    _ts("tagged_at"),
    sa.Column("notes", sa.Text),
    sa.Column("is_interesting", sa.Boolean, server_default=sa.false()),
    schema=LEGACY,
)

legacy_user_profiles = sa.Table(
    "user_profiles",
    metadata,
    _uuid_pk(),
    sa.Column(
        "user_id",
        UUID(as_uuid=False),
        sa.ForeignKey("auth.users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("parameters", JSONB, nullable=False),
    sa.Column("grid_size", sa.Integer, server_default=sa.text("10")),
    sa.Column("min_freq", sa.Numeric, server_default=sa.text("0.1")),
    sa.Column("max_freq", sa.Numeric, server_default=sa.text("100000")),
    sa.Column("num_points", sa.Integer, server_default=sa.text("100")),
    sa.Column("is_computed", sa.Boolean, server_default=sa.false()),
    sa.Column("computation_time", sa.Numeric),
    sa.Column("total_points", sa.Integer),
    sa.Column("valid_points", sa.Integer),
    sa.Column("computation_results", JSONB),
    _ts("created_at"),
    _ts("updated_at"),
    schema=LEGACY,
)

LEGACY_TABLES = (legacy_user_sessions, legacy_tagged_models, legacy_user_profiles)

# --- new target (DESIGN.md section 4) ---------------------------------------------------------

user_profiles = sa.Table(
    "user_profiles",
    metadata,
    _uuid_pk(),
    sa.Column(
        "user_id",
        UUID(as_uuid=False),
        sa.ForeignKey("auth.users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("username", sa.Text),
    sa.Column("full_name", sa.Text),
    sa.Column("avatar_url", sa.Text),
    sa.Column("default_grid_size", sa.Integer, nullable=False, server_default=sa.text("5")),
    sa.Column("default_min_freq", sa.Numeric, nullable=False, server_default=sa.text("0.1")),
    sa.Column("default_max_freq", sa.Numeric, nullable=False, server_default=sa.text("100000")),
    sa.Column("default_num_points", sa.Integer, nullable=False, server_default=sa.text("100")),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    sa.UniqueConstraint("user_id", name="user_profiles_user_id_key"),
    sa.CheckConstraint(
        "default_grid_size between 2 and 25", name="user_profiles_default_grid_size_check"
    ),
    sa.CheckConstraint("default_min_freq > 0", name="user_profiles_default_min_freq_check"),
    sa.CheckConstraint(
        "default_max_freq > default_min_freq", name="user_profiles_default_max_freq_check"
    ),
    sa.CheckConstraint(
        "default_num_points between 10 and 1000", name="user_profiles_default_num_points_check"
    ),
    schema=TARGET,
)

CIRCUIT_PARAMETER_KEYS = ("Rsh", "Ra", "Ca", "Rb", "Cb", "frequency_range")

circuit_configurations = sa.Table(
    "circuit_configurations",
    metadata,
    _uuid_pk(),
    sa.Column(
        "user_id",
        UUID(as_uuid=False),
        sa.ForeignKey("auth.users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("is_public", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("circuit_parameters", JSONB, nullable=False),
    sa.Column("grid_size", sa.Integer, nullable=False),
    sa.Column("min_freq", sa.Numeric, nullable=False),
    sa.Column("max_freq", sa.Numeric, nullable=False),
    sa.Column("num_points", sa.Integer, nullable=False),
    sa.Column("is_computed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("computation_time", sa.Numeric),
    sa.Column("total_points", sa.Integer),
    sa.Column("valid_points", sa.Integer),
    sa.Column("computation_results", JSONB),
    sa.Column("ui_settings", JSONB),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    # Lets tagged_models and user_sessions reference (id, user_id): a row can only point at a
    # configuration of its own user, whoever writes it.
    sa.UniqueConstraint("id", "user_id", name="circuit_configurations_id_user_id_key"),
    sa.CheckConstraint(
        "circuit_parameters ?& array['Rsh','Ra','Ca','Rb','Cb','frequency_range']",
        name="circuit_configurations_circuit_parameters_check",
    ),
    sa.CheckConstraint("grid_size between 2 and 25", name="circuit_configurations_grid_size_check"),
    sa.CheckConstraint("min_freq > 0", name="circuit_configurations_min_freq_check"),
    sa.CheckConstraint("max_freq > min_freq", name="circuit_configurations_max_freq_check"),
    sa.CheckConstraint(
        "num_points between 10 and 1000", name="circuit_configurations_num_points_check"
    ),
    schema=TARGET,
)
sa.Index(
    "circuit_configurations_user_id_created_at_idx",
    circuit_configurations.c.user_id,
    circuit_configurations.c.created_at.desc(),
)

user_sessions = sa.Table(
    "user_sessions",
    metadata,
    _uuid_pk(),
    sa.Column(
        "user_id",
        UUID(as_uuid=False),
        sa.ForeignKey("auth.users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("session_name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("environment_variables", JSONB, server_default=sa.text("'{}'::jsonb")),
    sa.Column("visualization_settings", JSONB, server_default=sa.text("'{}'::jsonb")),
    sa.Column("performance_settings", JSONB, server_default=sa.text("'{}'::jsonb")),
    sa.Column("is_active", sa.Boolean, server_default=sa.true()),
    _ts("last_accessed"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Column("current_circuit_config_id", UUID(as_uuid=False)),
    sa.UniqueConstraint("user_id", "session_name", name="user_sessions_user_id_session_name_key"),
    # Lets tagged_models reference (id, user_id): a model's session is its own user's.
    sa.UniqueConstraint("id", "user_id", name="user_sessions_id_user_id_key"),
    sa.ForeignKeyConstraint(
        ["current_circuit_config_id", "user_id"],
        ["public.circuit_configurations.id", "public.circuit_configurations.user_id"],
        # PostgreSQL 15: null only the pointer, never the owner.
        ondelete="SET NULL (current_circuit_config_id)",
        name="user_sessions_current_circuit_config_fkey",
    ),
    schema=TARGET,
)
sa.Index("user_sessions_user_id_idx", user_sessions.c.user_id)

tagged_models = sa.Table(
    "tagged_models",
    metadata,
    _uuid_pk(),
    sa.Column(
        "user_id",
        UUID(as_uuid=False),
        sa.ForeignKey("auth.users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("session_id", UUID(as_uuid=False)),
    sa.Column("model_id", sa.String(255), nullable=False),
    sa.Column("tag_name", sa.String(100), nullable=False),
    sa.Column("tag_category", sa.String(50), server_default="user"),
    sa.Column("circuit_parameters", JSONB, nullable=False),
    sa.Column("resnorm_value", sa.Double),
    _ts("tagged_at"),
    sa.Column("notes", sa.Text),
    sa.Column("is_interesting", sa.Boolean, server_default=sa.false()),
    sa.Column("circuit_config_id", UUID(as_uuid=False), nullable=False),
    sa.ForeignKeyConstraint(
        ["session_id", "user_id"],
        ["public.user_sessions.id", "public.user_sessions.user_id"],
        # A deleted session nulls only the pointer and never takes the model with it.
        ondelete="SET NULL (session_id)",
        name="tagged_models_session_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["circuit_config_id", "user_id"],
        ["public.circuit_configurations.id", "public.circuit_configurations.user_id"],
        ondelete="CASCADE",
        name="tagged_models_circuit_config_fkey",
    ),
    sa.UniqueConstraint(
        "circuit_config_id",
        "model_id",
        "tag_name",
        name="tagged_models_circuit_config_id_model_id_tag_name_key",
    ),
    schema=TARGET,
)
sa.Index(
    "tagged_models_circuit_config_id_tagged_at_idx",
    tagged_models.c.circuit_config_id,
    tagged_models.c.tagged_at.desc(),
)
sa.Index("tagged_models_user_id_idx", tagged_models.c.user_id)

# Creation order: referenced tables first.
TARGET_TABLES = (user_profiles, circuit_configurations, user_sessions, tagged_models)

# Constraints added to target tables after their first release: ``create table if not exists``
# leaves an existing table as it is, so target_ddl adds these where missing (in this order) and
# drops the constraints they replace.
TARGET_ADDED_CONSTRAINTS = (
    (user_sessions, "user_sessions_id_user_id_key"),
    (tagged_models, "tagged_models_session_fkey"),
)
TARGET_DROPPED_CONSTRAINTS = ((tagged_models, "tagged_models_session_id_fkey"),)

# --- ledger (DESIGN.md section 8; columns may be added, never renamed) ------------------------

BATCH_STATUSES = ("pending", "running", "succeeded", "failed")

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", UUID(as_uuid=False), primary_key=True),
    _ts("started_at", nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("options", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    schema=LEDGER,
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column(
        "run_id",
        UUID(as_uuid=False),
        sa.ForeignKey("migration.runs.run_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("batch_no", sa.Integer, primary_key=True),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("error", sa.Text),
    sa.Column("counts", JSONB),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # Extensions: the batch's user range (inclusive bounds, as text uuids).
    sa.Column("user_id_from", UUID(as_uuid=False)),
    sa.Column("user_id_to", UUID(as_uuid=False)),
    # Extension: an incremental run's batch is an explicit list of user keys (a JSON array of
    # text uuids); null for a contiguous range.
    sa.Column("user_keys", JSONB),
    sa.CheckConstraint(
        "status in ('pending','running','succeeded','failed')", name="batches_status_check"
    ),
    schema=LEDGER,
)

id_map = sa.Table(
    "id_map",
    metadata,
    sa.Column("run_id", UUID(as_uuid=False), nullable=False),
    sa.Column("source_table", sa.Text, nullable=False),
    sa.Column("source_id", sa.Text, nullable=False),
    sa.Column("target_table", sa.Text, nullable=False),
    sa.Column("target_id", UUID(as_uuid=False), nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("batch_no", sa.Integer),
    sa.Column("user_key", sa.Text),  # extension: the user the source row belongs to
    sa.PrimaryKeyConstraint("run_id", "source_table", "source_id", "target_table"),
    sa.CheckConstraint("outcome in ('migrated','merged')", name="id_map_outcome_check"),
    schema=LEDGER,
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("run_id", UUID(as_uuid=False), nullable=False),
    sa.Column("source_table", sa.Text, nullable=False),
    sa.Column("source_id", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("payload", JSONB),
    sa.Column("batch_no", sa.Integer),
    sa.Column("user_key", sa.Text),  # extension: the user the source row belongs to
    sa.PrimaryKeyConstraint("run_id", "source_table", "source_id"),
    schema=LEDGER,
)

links = sa.Table(
    "links",
    metadata,
    sa.Column("tagged_model_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("circuit_config_id", UUID(as_uuid=False)),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("confidence", sa.REAL, nullable=False),
    sa.Column("needs_review", sa.Boolean, nullable=False),
    sa.Column("evidence", JSONB),
    sa.Column("run_id", UUID(as_uuid=False), nullable=False),
    sa.CheckConstraint("confidence between 0 and 1", name="links_confidence_check"),
    schema=LEDGER,
)

# Extension: every repair (renamed key, clamped grid, filled range, ...) with its original value.
repairs = sa.Table(
    "repairs",
    metadata,
    sa.Column("run_id", UUID(as_uuid=False), nullable=False),
    sa.Column("batch_no", sa.Integer),
    sa.Column("source_table", sa.Text, nullable=False),
    sa.Column("source_id", sa.Text, nullable=False),
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("original", sa.Text),
    sa.Column("repaired", sa.Text),
    sa.Column("user_key", sa.Text),  # the user the source row belongs to
    schema=LEDGER,
)
sa.Index("repairs_run_id_batch_no_idx", repairs.c.run_id, repairs.c.batch_no)

# Extension: the digest of each user's legacy rows as last loaded (incremental re-sync).
user_digests = sa.Table(
    "user_digests",
    metadata,
    sa.Column("user_key", UUID(as_uuid=False), primary_key=True),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("run_id", UUID(as_uuid=False), nullable=False),
    _ts("updated_at", nullable=False),
    schema=LEDGER,
)

# Extension: per user key (``''``: the rows of no user), the run and batch whose ledger rows
# (quarantine, id_map, repairs) describe the user now: the last batch that loaded it, full or
# incremental. A dry run writes none. ``verify`` and the reports read the current state here.
user_runs = sa.Table(
    "user_runs",
    metadata,
    sa.Column("user_key", sa.Text, primary_key=True),
    sa.Column("run_id", UUID(as_uuid=False), nullable=False),
    sa.Column("batch_no", sa.Integer, nullable=False),
    schema=LEDGER,
)

# Extension: the reviewer's decision per tagged model (``circuit-migrate review import``), applied
# by every later run as a link override until the reviewer changes it. ``accept`` confirms the
# tool's suggestion as of the import: ``circuit_config_id`` always holds the resolved id.
review_decisions = sa.Table(
    "review_decisions",
    metadata,
    sa.Column("tagged_model_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("circuit_config_id", UUID(as_uuid=False), nullable=False),
    sa.Column("decision", sa.Text, nullable=False),
    _ts("decided_at", nullable=False),
    sa.Column("source_file", sa.Text),
    sa.Column("suggested_config_id", UUID(as_uuid=False)),  # the tool's suggestion then
    sa.Column("suggestion_run_id", UUID(as_uuid=False)),  # the run whose review list it answers
    sa.Column("user_key", sa.Text),  # the tagged model's user
    sa.CheckConstraint("decision in ('choose','accept')", name="review_decisions_decision_check"),
    schema=LEDGER,
)

# Extension: each run's review list, dry runs included (``migration.links`` holds one link per
# model and only real runs write it): the links that need review, and the models whose recorded
# decision the run could not apply (``decision_note`` says why), with every configuration of
# the model's user as ``candidates`` (``[{"id", "name"}]``). review.csv is read from here.
review_list = sa.Table(
    "review_list",
    metadata,
    sa.Column("run_id", UUID(as_uuid=False), nullable=False),
    sa.Column("batch_no", sa.Integer, nullable=False),
    sa.Column("tagged_model_id", UUID(as_uuid=False), nullable=False),
    sa.Column("user_key", sa.Text),
    sa.Column("model_id", sa.Text),
    sa.Column("tag_name", sa.Text),
    sa.Column("circuit_config_id", UUID(as_uuid=False)),  # the run's link (its suggestion)
    sa.Column("method", sa.Text),
    sa.Column("confidence", sa.REAL),
    sa.Column("needs_review", sa.Boolean, nullable=False),
    sa.Column("evidence", JSONB),
    sa.Column("candidates", JSONB),
    sa.Column("decided_config_id", UUID(as_uuid=False)),  # a recorded decision it did not apply
    sa.Column("decision_note", sa.Text),
    sa.PrimaryKeyConstraint("run_id", "tagged_model_id"),
    schema=LEDGER,
)
sa.Index("review_list_tagged_model_id_idx", review_list.c.tagged_model_id)

LEDGER_TABLES = (
    runs,
    batches,
    id_map,
    quarantine,
    links,
    repairs,
    user_digests,
    user_runs,
    review_decisions,
    review_list,
)

# Columns added to ledger tables after their first release: ``create table if not exists``
# leaves an existing table as it is, so ledger_ddl also adds these (``add column if not exists``).
LEDGER_ADDED_COLUMNS = (
    (batches, "user_keys", "jsonb"),
    (id_map, "user_key", "text"),
    (quarantine, "user_key", "text"),
    (repairs, "user_key", "text"),
)

SOURCE_TABLES = (
    "user_profiles",
    "saved_profiles",
    "tagged_models",
    "user_sessions",
    "saved_configurations",
    "circuit_configurations",
)
