"""One entry point: legacy frames of a batch of users in, target and ledger frames out.

Order: validate the legacy frames (rows failing the Pandera legacy models are quarantined
``validation_failed``), resolve users, explode saved_profiles, build and validate
configurations, build and validate sessions, normalise and link tagged models (recovering a
configuration for users with models but none), validate and de-duplicate them, build user
profiles. Nothing raises for bad data: every legacy row and saved_profiles element ends up
migrated, merged (id_map) or quarantined, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from schemas import frames as F
from schemas import models as M
from transforms import configurations as cfg
from transforms import links as lk
from transforms import normalise, users
from transforms import profiles as profiles_mod
from transforms import sessions as sessions_mod
from transforms.elements import json_payload, saved_profile_elements
from transforms.ids import stable_uuid_expr
from transforms.impedance import PARAMETERS

RECOVERED_NAME = "Recovered configuration"
# Tagged models are normalised, linked and validated in slices of whole users of about this many
# rows: it bounds the temporaries (the outputs are the same as in one piece).
MODEL_SLICE_ROWS = 150_000


@dataclass(frozen=True)
class TransformResult:
    """Target frames (``schemas.frames.TARGET_FRAMES``) and ledger frames (``LEDGER_FRAMES``)."""

    user_profiles: pl.DataFrame
    circuit_configurations: pl.DataFrame
    user_sessions: pl.DataFrame
    tagged_models: pl.DataFrame
    id_map: pl.DataFrame
    quarantine: pl.DataFrame
    links: pl.DataFrame
    repairs: pl.DataFrame


def _quarantine(frame: pl.DataFrame, source_table: str, id_col: str = "id") -> pl.DataFrame:
    """Quarantine rows (payload filled in later) from a frame with reason/detail columns."""
    return frame.filter(pl.col("reason").is_not_null()).select(
        pl.lit(source_table).alias("source_table"),
        pl.col(id_col).alias("source_id"),
        "reason",
        "detail",
        (pl.col("payload") if "payload" in frame.columns else pl.lit(None, dtype=pl.String)).alias(
            "payload"
        ),
    )


def _optional_frame(frame: pl.DataFrame | None, schema: F.Schema) -> pl.DataFrame:
    """``frame`` in the shape of ``schema``, or an empty one (a source this state lacks)."""
    return F.empty(schema) if frame is None else F.conform(F.with_optional(frame, schema), schema)


def _legacy_split(frame: pl.DataFrame, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows passing the legacy Pandera model, their failures as reason/detail rows)."""
    bad = M.failing_rows(M.LEGACY_MODELS[name], frame)
    if bad.height == 0:
        return frame, frame.head(0).with_columns(
            pl.lit(None, dtype=pl.String).alias("reason"),
            pl.lit(None, dtype=pl.String).alias("detail"),
        )
    indexed = frame.with_row_index("_row").join(bad, left_on="_row", right_on="row", how="left")
    good = indexed.filter(pl.col("detail").is_null()).drop("_row", "detail")
    failed = (
        indexed.filter(pl.col("detail").is_not_null())
        .drop("_row")
        .with_columns(pl.lit("validation_failed").alias("reason"))
    )
    return good, failed


def _split_valid(frame: pl.DataFrame, model: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows, failing rows with ``detail``) of a target frame."""
    bad = M.failing_rows(M.TARGET_MODELS[model], frame)
    if bad.height == 0:
        return frame, frame.head(0).with_columns(pl.lit(None, dtype=pl.String).alias("detail"))
    indexed = frame.with_row_index("_row").join(bad, left_on="_row", right_on="row", how="left")
    return (
        indexed.filter(pl.col("detail").is_null()).drop("_row", "detail"),
        indexed.filter(pl.col("detail").is_not_null()).drop("_row"),
    )


def _payloads(frame: pl.DataFrame, source_table: str, quarantine: pl.DataFrame) -> pl.DataFrame:
    ids = quarantine.filter(
        (pl.col("source_table") == source_table) & pl.col("payload").is_null()
    ).select("source_id")
    if ids.height == 0:
        return pl.DataFrame(schema={"source_id": pl.String, "_payload": pl.String})
    rows = frame.join(ids, left_on="id", right_on="source_id", how="semi")
    return rows.select(
        pl.col("id").alias("source_id"), pl.struct(pl.all()).struct.json_encode().alias("_payload")
    ).unique("source_id")


def transform(
    auth_users: pl.DataFrame,
    user_sessions: pl.DataFrame,
    tagged_models: pl.DataFrame,
    user_profiles: pl.DataFrame,
    *,
    overrides: pl.DataFrame | None = None,
    app_configurations: pl.DataFrame | None = None,
    profile_metadata: pl.DataFrame | None = None,
) -> TransformResult:
    """Transform one batch of legacy frames (``schemas.frames.LEGACY_FRAMES``) into the target
    and ledger frames. ``overrides`` (tagged_model_id, circuit_config_id) pins links;
    ``app_configurations`` (the configuration tables the app wrote) and ``profile_metadata``
    (S2's user_profiles) are optional. Inputs are never mutated; the same input gives
    identical output frames."""
    auth = F.conform(auth_users, F.AUTH_USERS)
    sessions_in = F.conform(
        F.with_optional(user_sessions, F.LEGACY_USER_SESSIONS), F.LEGACY_USER_SESSIONS
    )
    models_in = F.conform(
        F.with_optional(tagged_models, F.LEGACY_TAGGED_MODELS), F.LEGACY_TAGGED_MODELS
    )
    profiles_in = F.conform(
        F.with_optional(user_profiles, F.LEGACY_USER_PROFILES), F.LEGACY_USER_PROFILES
    )
    apps_in = _optional_frame(app_configurations, F.LEGACY_APP_CONFIGURATIONS)
    metadata_in = _optional_frame(profile_metadata, F.LEGACY_PROFILE_METADATA)
    auth, _ = _legacy_split(auth, "auth_users")
    sessions_ok, sessions_bad = _legacy_split(sessions_in, "user_sessions")
    models_ok, models_bad = _legacy_split(models_in, "tagged_models")
    profiles_ok, profiles_bad = _legacy_split(profiles_in, "user_profiles")
    apps_ok, apps_bad = _legacy_split(apps_in, "app_configurations")
    metadata_ok, metadata_bad = _legacy_split(metadata_in, "profile_metadata")

    # --- users -----------------------------------------------------------------------------
    sessions = normalise.decoded_json(
        normalise.with_invalid_values(users.resolve_sessions(sessions_ok, auth)), "saved_profiles"
    )
    profiles = normalise.with_invalid_values(users.resolve_profiles(profiles_ok, auth))
    repairs: list[pl.DataFrame] = [users.user_repairs(sessions, "user_sessions")]
    quarantine: list[pl.DataFrame] = [
        _quarantine(sessions_bad, "user_sessions"),
        _quarantine(models_bad, "tagged_models"),
        _quarantine(profiles_bad, "user_profiles"),
        _quarantine(metadata_bad, "user_profiles"),
        *[
            _quarantine(apps_bad.filter(pl.col("source_table") == t), t)
            for t in sessions_mod.APP_TABLES
        ],
    ]
    apps = normalise.with_invalid_values(users.resolve_profiles(apps_ok, auth))
    metadata = normalise.with_invalid_values(
        users.resolve_profiles(metadata_ok.with_columns(pl.col("id").alias("user_id")), auth)
    )
    quarantine.append(_quarantine(metadata, "user_profiles"))

    # --- saved_profiles elements -------------------------------------------------------------
    # Elements of every session that passed the legacy model (a quarantined session's elements
    # are quarantined with the session's reason).
    elements = saved_profile_elements(sessions)
    malformed = elements.filter(pl.col("malformed_array")).join(
        sessions.select(pl.col("id").alias("session_id"), "_bad_saved_profiles"),
        on="session_id",
        how="left",
    )
    quarantine.append(
        malformed.select(
            pl.lit("saved_profiles").alias("source_table"),
            "source_id",
            pl.lit("malformed_saved_profiles").alias("reason"),
            pl.when(pl.col("_bad_saved_profiles"))
            .then(
                pl.format(
                    "saved_profiles is a JSON string that holds no JSON array: {}",
                    pl.col("element").str.head(80),
                )
            )
            .otherwise(pl.lit("saved_profiles is not a JSON array"))
            .alias("detail"),
            json_payload(pl.col("element")).alias("payload"),
        )
    )
    repairs.append(
        normalise.decoded_repairs(
            sessions.filter(pl.col("reason").is_null()), "saved_profiles", "user_sessions", "id"
        )
    )
    # elements of sessions that failed the legacy model
    bad_elements = saved_profile_elements(sessions_bad)
    quarantine.append(
        bad_elements.select(
            pl.lit("saved_profiles").alias("source_table"),
            "source_id",
            pl.when(pl.col("malformed_array"))
            .then(pl.lit("malformed_saved_profiles"))
            .otherwise(pl.lit("validation_failed"))
            .alias("reason"),
            pl.lit("its session failed validation").alias("detail"),
            json_payload(pl.col("element")).alias("payload"),
        )
    )

    # --- configurations ------------------------------------------------------------------------
    prof_sources, prof_repairs = cfg.profile_sources(
        profiles.with_columns(pl.lit(None, dtype=pl.String).alias("payload")).drop(
            "_original_user_id", "_user_repair"
        )
    )
    el_sources, el_repairs = cfg.element_sources(
        elements.filter(~pl.col("malformed_array")), sessions
    )
    app_parts = [
        cfg.profile_sources(
            apps.filter(pl.col("source_table") == t)
            .drop("source_table", "_original_user_id", "_user_repair")
            .rename({"circuit_parameters": "parameters"})
            .with_columns(pl.lit(None, dtype=pl.String).alias("payload")),
            t,
        )
        for t in sessions_mod.APP_TABLES
    ]
    repairs += [r for _, r in app_parts]
    sources = pl.concat(
        [prof_sources, *[p for p, _ in app_parts], el_sources], how="vertical_relaxed"
    )
    quarantine.append(
        sources.filter(pl.col("reason").is_not_null()).select(
            "source_table", "source_id", "reason", "detail", "payload"
        )
    )
    configs, members, name_repairs = cfg.circuit_configurations(sources)
    repairs += [prof_repairs, el_repairs]
    configs, bad_configs = _split_valid(configs, "circuit_configurations")
    if bad_configs.height:
        dropped = members.join(
            bad_configs.select(pl.col("id").alias("config_id"), "detail"), on="config_id"
        )
        quarantine.append(
            dropped.select(
                "source_table",
                "source_id",
                pl.lit("validation_failed").alias("reason"),
                "detail",
                pl.lit(None, dtype=pl.String).alias("payload"),
            )
        )
        members = members.join(
            bad_configs.select(pl.col("id").alias("config_id")), on="config_id", how="anti"
        )
        name_repairs = name_repairs.join(dropped.select("source_id"), on="source_id", how="anti")
    repairs.append(name_repairs)

    # --- sessions --------------------------------------------------------------------------------
    good_sessions = sessions.filter(pl.col("reason").is_null())
    quarantine.append(_quarantine(sessions, "user_sessions"))
    good_sessions = good_sessions.sort(
        [pl.col("_user_repair").is_not_null(), "created_at", "id"], nulls_last=True
    )
    unique = cfg.unique_names(pl.col("session_name"), pl.col("user_id"), good_sessions)
    repairs.append(
        good_sessions.with_columns(unique.alias("_n"))
        .filter(pl.col("_n") != pl.col("session_name"))
        .select(
            pl.lit("user_sessions").alias("source_table"),
            pl.col("id").alias("source_id"),
            pl.lit("session_name").alias("field"),
            pl.lit("renamed_duplicate").alias("kind"),
            pl.col("session_name").alias("original"),
            pl.col("_n").alias("repaired"),
        )
    )
    good_sessions = good_sessions.with_columns(unique.alias("session_name"))
    target_sessions = sessions_mod.user_sessions(good_sessions, members)
    target_sessions, bad_sessions = _split_valid(target_sessions, "user_sessions")
    quarantine.append(
        bad_sessions.select(
            pl.lit("user_sessions").alias("source_table"),
            pl.col("id").alias("source_id"),
            pl.lit("validation_failed").alias("reason"),
            "detail",
            pl.lit(None, dtype=pl.String).alias("payload"),
        )
    )

    # --- tagged models ---------------------------------------------------------------------------
    # "<session id>|<user id>" of every session that migrates
    kept_sessions = target_sessions.select(
        pl.concat_str("id", pl.lit("|"), "user_id").alias("key")
    )["key"]
    # users are resolved slice by slice: every temporary stays at the scale of a slice
    stages = [
        _models_stage(
            users.resolve_models(part, sessions, auth),
            kept_sessions,
            configs,
            members,
            overrides,
        )
        for part in _user_slices(models_ok, sessions, MODEL_SLICE_ROWS)
    ]
    stage = _ModelStage(
        models=pl.concat([st.models for st in stages], rechunk=False),
        links=pl.concat([st.links for st in stages], rechunk=False),
        merges=pl.concat([st.merges for st in stages]),
        recovered=pl.concat([st.recovered for st in stages]),
        activity=pl.concat([st.activity for st in stages]),
        quarantine=[q for st in stages for q in st.quarantine],
        repairs=[r for st in stages for r in st.repairs],
    )
    del stages
    quarantine += stage.quarantine
    repairs += stage.repairs
    target_models, all_links, model_merges = stage.models, stage.links, stage.merges
    all_configs = pl.concat([configs, stage.recovered]).sort("id")

    # --- user profiles ----------------------------------------------------------------------------
    activity = pl.concat(
        [
            sessions.select("user_id", "created_at", "updated_at"),
            stage.activity,
            profiles.select("user_id", "created_at", "updated_at"),
        ]
    ).filter(pl.col("user_id").is_not_null())
    known_metadata = metadata.filter(pl.col("reason").is_null())
    activity = pl.concat(
        [
            activity,
            apps.select("user_id", "created_at", "updated_at"),
            known_metadata.select("user_id", "created_at", "updated_at"),
        ]
    ).filter(pl.col("user_id").is_not_null())
    target_profiles = profiles_mod.user_profiles(
        auth, activity.select("user_id"), configs, activity, known_metadata
    )
    target_profiles, bad_profiles = _split_valid(target_profiles, "user_profiles")
    quarantine.append(
        bad_profiles.select(
            pl.lit("auth_users").alias("source_table"),
            pl.col("user_id").alias("source_id"),
            pl.lit("validation_failed").alias("reason"),
            "detail",
            pl.lit(None, dtype=pl.String).alias("payload"),
        )
    )

    # --- ledger ----------------------------------------------------------------------------------
    q = pl.concat([F.conform(x, F.QUARANTINE) for x in quarantine])
    for table, frame in (
        ("user_sessions", sessions_in),
        ("tagged_models", models_in),
        ("user_profiles", profiles_in),
        ("user_profiles", metadata_in),
        *[(t, apps_in.filter(pl.col("source_table") == t)) for t in sessions_mod.APP_TABLES],
    ):
        pay = _payloads(frame, table, q)
        q = (
            q.join(
                pay.with_columns(pl.lit(table).alias("source_table")),
                on=["source_table", "source_id"],
                how="left",
            )
            .with_columns(pl.coalesce("payload", "_payload").alias("payload"))
            .drop("_payload")
        )
    id_map = pl.concat(
        [
            members.filter(
                ~(pl.col("is_rep") & (pl.col("source_id") == pl.col("config_id")))
            ).select(
                "source_table",
                "source_id",
                pl.lit("circuit_configurations").alias("target_table"),
                pl.col("config_id").alias("target_id"),
                pl.when(pl.col("is_rep"))
                .then(pl.lit("migrated"))
                .otherwise(pl.lit("merged"))
                .alias("outcome"),
            ),
            model_merges,
        ]
    )
    all_repairs = pl.concat([F.conform(r, F.REPAIRS) for r in repairs])
    return TransformResult(
        user_profiles=F.conform(target_profiles, F.USER_PROFILES),
        circuit_configurations=F.conform(all_configs, F.CIRCUIT_CONFIGURATIONS),
        user_sessions=F.conform(target_sessions, F.USER_SESSIONS),
        tagged_models=F.conform(target_models, F.TAGGED_MODELS),
        id_map=F.conform(id_map, F.ID_MAP).sort(["source_table", "source_id"]),
        quarantine=F.conform(q, F.QUARANTINE).sort(["source_table", "source_id"]),
        links=F.conform(all_links, F.LINKS),
        repairs=F.conform(all_repairs, F.REPAIRS).sort(
            ["source_table", "source_id", "field", "kind"]
        ),
    )


def _user_slices(models: pl.DataFrame, sessions: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    """``models`` cut into slices of whole users of about ``rows`` rows, by the user a model
    will resolve to (its own, else its session's); models with neither form a slice of their
    own. One slice (no copy) when the frame is small."""
    if models.height <= rows:
        return [models]
    owners = sessions.filter(pl.col("user_id").is_not_null()).unique("id")
    key = models.select(
        pl.coalesce(
            "user_id",
            pl.col("session_id").replace_strict(
                owners["id"], owners["user_id"], default=None, return_dtype=pl.String
            ),
        ).alias("k")
    )
    per_user = (
        key.group_by("k")
        .len()
        .filter(pl.col("k").is_not_null())
        .sort("k")
        .select("k", (pl.col("len").cum_sum() // rows).cast(pl.Int64).alias("slice"))
    )
    slice_of = key.join(per_user, on="k", how="left", maintain_order="left")["slice"]
    slice_no = slice_of.fill_null(-1).to_numpy()
    del key, slice_of
    out = []
    for number in np.unique(slice_no).tolist():
        out.append(models.filter(pl.Series(slice_no == number)))
    return out


@dataclass(frozen=True)
class _ModelStage:
    models: pl.DataFrame  # TAGGED_MODELS, linked, validated, de-duplicated
    links: pl.DataFrame  # LINKS of those models
    merges: pl.DataFrame  # ID_MAP rows of merged duplicates
    recovered: pl.DataFrame  # recovered configurations in use
    activity: pl.DataFrame  # user_id, created_at, updated_at (tagging times)
    quarantine: list[pl.DataFrame]
    repairs: list[pl.DataFrame]


_MODEL_COLUMNS = [c for c in F.LEGACY_TAGGED_MODELS if c != "circuit_parameters"]


def _models_stage(
    resolved: pl.DataFrame,
    kept_sessions: pl.Series,
    configs: pl.DataFrame,
    members: pl.DataFrame,
    overrides: pl.DataFrame | None,
) -> _ModelStage:
    """Normalise, link, validate and de-duplicate the tagged models (users resolved).

    Frames are narrowed as early as possible: at a million models every copy counts. Output
    rows keep the input order (links: by slice of users, then input order).
    """
    quarantine: list[pl.DataFrame] = []
    repairs: list[pl.DataFrame] = []
    m = normalise.parameters(
        normalise.decoded_json(normalise.with_invalid_values(resolved), "circuit_parameters"),
        "circuit_parameters",
    )
    undecodable = pl.col("_bad_circuit_parameters")
    bad_params = pl.col("reason").is_null() & (pl.col("param_problem").is_not_null() | undecodable)
    m = m.with_columns(
        pl.when(bad_params)
        .then(pl.lit("invalid_parameters"))
        .otherwise(pl.col("reason"))
        .alias("reason"),
        pl.when(bad_params & undecodable)
        .then(normalise.undecodable_detail("circuit_parameters"))
        .when(bad_params)
        .then(pl.col("param_problem"))
        .otherwise(pl.col("detail"))
        .alias("detail"),
    )
    quarantine.append(_quarantine(m, "tagged_models"))
    activity = m.select(
        "user_id", pl.col("tagged_at").alias("created_at"), pl.col("tagged_at").alias("updated_at")
    ).filter(pl.col("user_id").is_not_null())
    ok = pl.col("reason").is_null()
    # select before filter: an eager filter copies every column of the million-row frame
    helpers = [c for c in m.columns if c.startswith(("_raw_", "_str_"))]
    repairs.append(
        normalise.parameter_repairs(
            m.select("id", "reason", "_renamed_Rsh", *helpers, *PARAMETERS).filter(ok),
            "tagged_models",
            "id",
        )
    )
    repairs.append(
        normalise.decoded_repairs(
            m.select("id", "reason", "_was_circuit_parameters").filter(ok),
            "circuit_parameters",
            "tagged_models",
            "id",
        )
    )
    repairs.append(
        users.user_repairs(m.select("id", "user_id", "reason", "_user_repair"), "tagged_models")
    )
    good = (
        m.select(
            "reason",
            *_MODEL_COLUMNS,
            *PARAMETERS,
            pl.col("_fr_lo").alias("min_freq"),
            pl.col("_fr_hi").alias("max_freq"),
        )
        .filter(ok)
        .drop("reason")
    )
    del m
    # A model keeps its session only when that session migrates under the model's own user;
    # otherwise (quarantined here, or another user's) it loses the reference, as the target's
    # FK (on delete set null) would have it, and the repair is recorded.
    session_key = pl.concat_str("session_id", pl.lit("|"), "user_id")
    foreign = pl.col("session_id").is_not_null() & ~session_key.is_in(kept_sessions.implode())
    lost = good.filter(foreign)
    if lost.height:
        repairs.append(
            lost.select(
                pl.lit("tagged_models").alias("source_table"),
                pl.col("id").alias("source_id"),
                pl.lit("session_id").alias("field"),
                pl.lit("dropped_session").alias("kind"),
                pl.col("session_id").alias("original"),
                pl.lit(None, dtype=pl.String).alias("repaired"),
            )
        )
        good = good.with_columns(
            pl.when(foreign).then(None).otherwise(pl.col("session_id")).alias("session_id")
        )
    config_params = _config_numbers(configs, members)
    has_config = pl.col("user_id").is_in(configs["user_id"].unique().implode())
    orphans = good.filter(~has_config)
    recovered = recovered_configurations(orphans)
    recovered, _ = _split_valid(recovered, "circuit_configurations")
    session_configs = members.filter(pl.col("session_id").is_not_null()).select(
        "session_id", "config_id"
    )

    # the app's own links (S2 configuration_id, S4 circuit_config_id) name a configuration
    # table row; it stands for the configuration that row became
    app_rows = members.filter(pl.col("source_table").is_in(sessions_mod.APP_TABLES)).select(
        pl.col("source_id").alias("explicit_config_id"), pl.col("config_id")
    )
    explicit = (
        good.select("id", "explicit_config_id")
        .filter(pl.col("explicit_config_id").is_not_null())
        .join(app_rows, on="explicit_config_id", how="inner")
        .select(
            pl.col("id").alias("tagged_model_id"), pl.col("config_id").alias("circuit_config_id")
        )
    )

    def link(subset: pl.DataFrame, exclude: pl.Series | None = None) -> pl.DataFrame:
        linked = lk.link_models(
            subset,
            config_params,
            session_configs,
            overrides,
            exclude=exclude,
            explicit=explicit,
        )
        lost = subset.filter(~has_config)
        if exclude is not None and exclude.len():
            lost = lost.filter(~pl.col("id").is_in(exclude.implode()))
        if lost.height == 0:
            return linked
        return pl.concat([linked, _recovered_links(lost, recovered)], rechunk=False)

    # Duplicates (same configuration, model_id, tag_name) can only occur among models of one
    # user with the same model_id and tag_name: link those first, merge, then drop the merged
    # rows before the big linking pass (so no million-row frame is copied twice).
    key = ["user_id", "model_id", "tag_name"]
    maybe_dup = good.filter(pl.struct(key).is_duplicated())
    dup_links = link(maybe_dup)
    dup_target = maybe_dup.join(
        dup_links.select(pl.col("tagged_model_id").alias("id"), "circuit_config_id"),
        on="id",
        how="inner",
        maintain_order="left",
    )
    _, merges = deduplicate_models(dup_target)
    merged_ids = merges["source_id"]
    if merged_ids.len():
        good = good.filter(~pl.col("id").is_in(merged_ids.implode()))
        dup_links = dup_links.filter(~pl.col("tagged_model_id").is_in(merged_ids.implode()))
    links = pl.concat([link(good, exclude=maybe_dup["id"]), dup_links], rechunk=False)
    del maybe_dup, dup_target
    if orphans.height:
        # one repair per recovered configuration, on the first (smallest id) of its models
        first_models = orphans.group_by("user_id").agg(pl.col("id").min().alias("source_id"))
        repairs.append(
            recovered.join(first_models, on="user_id", how="inner").select(
                pl.lit("tagged_models").alias("source_table"),
                "source_id",
                pl.lit("circuit_config_id").alias("field"),
                pl.lit("recovered_configuration").alias("kind"),
                pl.lit(None, dtype=pl.String).alias("original"),
                pl.col("id").alias("repaired"),
            )
        )
        unlinked = orphans.join(recovered.select("user_id"), on="user_id", how="anti")
        quarantine.append(
            unlinked.select(
                pl.lit("tagged_models").alias("source_table"),
                pl.col("id").alias("source_id"),
                pl.lit("validation_failed").alias("reason"),
                pl.lit("no configuration could be recovered").alias("detail"),
                pl.lit(None, dtype=pl.String).alias("payload"),
            )
        )
    del orphans
    has_range = pl.col("min_freq").is_not_null() & pl.col("max_freq").is_not_null()
    # map ids to configurations (adds a column; a join would copy the million-row frame)
    target = good.with_columns(
        pl.col("id")
        .replace_strict(
            links["tagged_model_id"],
            links["circuit_config_id"],
            default=None,
            return_dtype=pl.String,
        )
        .alias("circuit_config_id")
    )
    del good
    if target["circuit_config_id"].null_count():
        target = target.filter(pl.col("circuit_config_id").is_not_null())
    target = target.with_columns(
        pl.when(has_range)
        .then(normalise.circuit_json(with_range=True))
        .otherwise(normalise.circuit_json(with_range=False))
        .alias("circuit_parameters")
    ).select([pl.col(c).cast(t) for c, t in F.TAGGED_MODELS.items()])
    target, bad_models = _split_valid(target, "tagged_models")
    quarantine.append(
        bad_models.select(
            pl.lit("tagged_models").alias("source_table"),
            pl.col("id").alias("source_id"),
            pl.lit("validation_failed").alias("reason"),
            "detail",
            pl.lit(None, dtype=pl.String).alias("payload"),
        )
    )
    if bad_models.height:
        links = links.filter(~pl.col("tagged_model_id").is_in(bad_models["id"].implode()))
    used_recovered = recovered.filter(
        pl.col("id").is_in(links["circuit_config_id"].unique().implode())
    )
    return _ModelStage(target, links, merges, used_recovered, activity, quarantine, repairs)


def _recovered_links(models: pl.DataFrame, recovered: pl.DataFrame) -> pl.DataFrame:
    """Links of models whose user has no configuration to the user's recovered one."""
    out = models.join(
        recovered.select(pl.col("id").alias("circuit_config_id"), "user_id"),
        on="user_id",
        maintain_order="left",
    ).select(
        pl.col("id").alias("tagged_model_id"),
        "circuit_config_id",
        pl.lit("recovered").alias("method"),
        pl.lit(lk.CONFIDENCE["recovered"]).alias("confidence"),
        pl.lit(True).alias("needs_review"),
        pl.concat_str(
            pl.lit('{"recovered_from_models":'),
            pl.len().over("user_id").cast(pl.String),
            pl.lit("}"),
        ).alias("evidence"),
    )
    return F.conform(out, F.LINKS)


def _config_numbers(configs: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Configurations with their parameters as Float64 columns and, as ``num_points``, the
    legacy (unclamped) grid the stored resnorms were computed on (the representative's)."""
    reps = members.filter(pl.col("is_rep")).select(
        pl.col("config_id").alias("id"), "legacy_num_points", *PARAMETERS
    )
    return (
        configs.select(
            "id", "user_id", "min_freq", "max_freq", "num_points", "created_at", "updated_at"
        )
        .join(reps, on="id", how="left", maintain_order="left")
        .select(
            "id",
            "user_id",
            *PARAMETERS,
            "min_freq",
            "max_freq",
            pl.coalesce("legacy_num_points", "num_points").alias("num_points"),
            "created_at",
            "updated_at",
        )
    )


def recovered_configurations(models: pl.DataFrame) -> pl.DataFrame:
    """One configuration per user of ``models`` (users with tagged models but no configuration):
    median parameters of the user's models, legacy default grid; id uuid5 of the user id."""
    if models.height == 0:
        return F.empty(F.CIRCUIT_CONFIGURATIONS)
    per_user = models.group_by("user_id").agg(
        *[pl.col(k).median() for k in PARAMETERS],
        pl.col("tagged_at").min().alias("_first"),
        pl.col("tagged_at").max().alias("_last"),
        pl.col("id").min().alias("_model"),
        pl.len().alias("_n"),
    )
    out = per_user.with_columns(
        pl.lit(cfg.LEGACY_MIN_FREQ).alias("min_freq"), pl.lit(cfg.LEGACY_MAX_FREQ).alias("max_freq")
    ).select(
        stable_uuid_expr("circuit_configurations/recovered", pl.col("user_id")).alias("id"),
        "user_id",
        pl.lit(RECOVERED_NAME).alias("name"),
        pl.format(
            "Recovered from {} tagged models (median parameters), first model {}; needs review",
            "_n",
            "_model",
        ).alias("description"),
        pl.lit(False).alias("is_public"),
        normalise.circuit_json(with_range=True).alias("circuit_parameters"),
        pl.lit(cfg.LEGACY_GRID_SIZE).alias("grid_size"),
        "min_freq",
        "max_freq",
        pl.lit(cfg.LEGACY_NUM_POINTS).alias("num_points"),
        pl.lit(False).alias("is_computed"),
        pl.lit(None, dtype=pl.Float64).alias("computation_time"),
        pl.lit(None, dtype=pl.Int32).alias("total_points"),
        pl.lit(None, dtype=pl.Int32).alias("valid_points"),
        pl.lit(None, dtype=pl.String).alias("computation_results"),
        pl.lit(None, dtype=pl.String).alias("ui_settings"),
        pl.coalesce("_first", cfg.EPOCH).alias("created_at"),
        pl.coalesce("_last", "_first", cfg.EPOCH).alias("updated_at"),
    )
    return out.select([pl.col(c).cast(t) for c, t in F.CIRCUIT_CONFIGURATIONS.items()]).sort("id")


def deduplicate_models(models: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(models unique on (circuit_config_id, model_id, tag_name), id_map rows of the merged).

    The most recently tagged model of a group is kept (ties: smallest id)."""
    key = ["circuit_config_id", "model_id", "tag_name"]
    narrow = models.select("id", "tagged_at", *key)
    narrow = narrow.filter(pl.struct(key).is_duplicated())
    ranked = narrow.sort(["tagged_at", "id"], descending=[True, False], nulls_last=True)
    ranked = ranked.with_columns(pl.col("id").first().over(key).alias("_keep"))
    merged = ranked.filter(pl.col("id") != pl.col("_keep")).select(
        pl.lit("tagged_models").alias("source_table"),
        pl.col("id").alias("source_id"),
        pl.lit("tagged_models").alias("target_table"),
        pl.col("_keep").alias("target_id"),
        pl.lit("merged").alias("outcome"),
    )
    if merged.height == 0:
        return models, merged
    kept = models.filter(~pl.col("id").is_in(merged["source_id"].implode()))
    return kept, merged
