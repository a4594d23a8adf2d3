"""Which configuration each tagged model belongs to, by evidence.

Candidates are the configurations of the model's own user. Per (model, candidate) pair:

1. ``override``: the reviewer's override file names the candidate;
1b. ``explicit``: the app's own link (S2 ``configuration_id``, S4 ``circuit_config_id``) names
   the candidate (flagged for review when the stored resnorm contradicts it);
2. ``resnorm``: the model's resnorm recomputed on the candidate (DESIGN.md section 2, on the
   candidate's legacy grid) equals the stored ``resnorm_value`` within ``RESNORM_RTOL``
   (relative; ``RESNORM_TINY`` guards zero);
3. ``session``: the candidate holds a circuit saved in the model's session;
4. ``time``: the model was tagged within the candidate's lifetime (created_at..updated_at);
5. ``proximity``: Euclidean distance of the natural-log parameters.

Candidates are ranked by these in order (ties: the configuration id); the first level that
separates the best candidate from the runner-up names the method. ``needs_review`` when:
nothing separates the two best; two or more candidates match the resnorm (identical twins);
the stored resnorm matches no candidate (the evidence contradicts every one); the decision
rests on weak evidence (session, time, proximity) that proximity does not corroborate (the
chosen one is not clearly the nearest, see ``PROXIMITY_MAX``/``PROXIMITY_MARGIN``); or the
model lies on a recovered configuration. The pick is always deterministic.

Resnorms are vectorised (``transforms.impedance.pair_resnorm``, float32): a coarse pass on
``COARSE_POINTS`` frequencies rules out candidates further than ``PRUNE_FACTOR`` from the
stored value, the rest are computed on the full grid, and pairs near the tolerance are
recomputed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from schemas.frames import LINKS
from transforms.impedance import PARAMETERS, pair_resnorm, resnorm

RESNORM_RTOL = 1e-4
RESNORM_TINY = 1e-9
# Candidate pruning: a coarse resnorm (COARSE_POINTS frequencies over the same range) further
# than PRUNE_FACTOR from the stored value rules a candidate out without the full grid.
COARSE_POINTS = 16
PRUNE_FACTOR = 3.0
# Pairs whose float32 resnorm lies within this factor of the tolerance are recomputed in float64.
_REFINE_FACTOR = 20.0
# Two candidates closer than this in log-parameter distance are indistinguishable by proximity.
DISTANCE_TIE = 1e-6
CONFIDENCE = {
    "override": 1.0,
    "explicit": 1.0,
    "resnorm": 0.99,
    "session": 0.8,
    "time": 0.6,
    "proximity": 0.5,
    "recovered": 0.2,
}
REVIEW_BELOW = 0.5
# Proximity corroboration of weak evidence (natural-log parameter distance, 5 parameters): the
# chosen candidate must be the nearest, within PROXIMITY_MAX, and nearer than the next one by
# at least PROXIMITY_MARGIN.
PROXIMITY_MAX = 0.5
PROXIMITY_MARGIN = 0.3
_TS_MIN = -(2**62)
_TS_MAX = 2**62


def _log_params(frame: pl.DataFrame) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(frame.select(PARAMETERS).to_numpy().astype(np.float64))


def _micros(series: pl.Series, fill: int) -> np.ndarray:
    return series.cast(pl.Int64).fill_null(fill).to_numpy().astype(np.int64)


def _codes(values: pl.Series, vocabulary: pl.Series) -> np.ndarray:
    """Position of each value in ``vocabulary`` (-1 when absent or null)."""
    vocab = pl.DataFrame({"v": vocabulary}).with_row_index("code").unique("v", keep="first")
    joined = pl.DataFrame({"v": values}).join(vocab, on="v", how="left", maintain_order="left")
    return joined["code"].cast(pl.Int64).fill_null(-1).to_numpy()


@dataclass(frozen=True)
class Pairs:
    """(model, candidate) pairs as arrays, in model order; per-pair evidence."""

    pm: np.ndarray  # model row
    pc: np.ndarray  # configuration row
    resnorm: np.ndarray
    match: np.ndarray
    in_session: np.ndarray
    in_lifetime: np.ndarray
    override: np.ndarray
    distance: np.ndarray
    stored: np.ndarray  # the model's stored resnorm_value
    explicit: np.ndarray  # the app's own link names this candidate


def _named(
    pinned: pl.DataFrame | None,
    models: pl.DataFrame,
    configs: pl.DataFrame,
    pm: np.ndarray,
    pc: np.ndarray,
) -> np.ndarray:
    """Per pair: whether ``pinned`` (tagged_model_id, circuit_config_id) names it."""
    if pinned is None or pinned.height == 0:
        return np.zeros(len(pm), dtype=bool)
    n_configs = max(configs.height, 1)
    ov_m = _codes(pinned["tagged_model_id"].cast(pl.String).str.to_lowercase(), models["id"])
    ov_c = _codes(pinned["circuit_config_id"].cast(pl.String).str.to_lowercase(), configs["id"])
    ok = (ov_m >= 0) & (ov_c >= 0)
    return np.isin(pm * n_configs + pc, ov_m[ok] * n_configs + ov_c[ok])


def candidate_pairs(
    models: pl.DataFrame,
    configs: pl.DataFrame,
    session_configs: pl.DataFrame,
    overrides: pl.DataFrame | None,
    explicit: pl.DataFrame | None = None,
) -> Pairs:
    """Every (model, configuration of the model's user) pair with its evidence.

    ``models``: id, user_id, session_id, tagged_at, resnorm_value, Rsh..Cb.
    ``configs``: id, user_id, Rsh..Cb, min_freq, max_freq, num_points (the grid the stored
    resnorms were computed on), created_at, updated_at; sorted by (user_id, id).
    ``session_configs``: session_id, config_id (the circuits each session saved).
    """
    m = models.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("pm"), "user_id")
    c = configs.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("pc"), "user_id")
    joined = m.join(c, on="user_id", how="inner", maintain_order="left_right")
    pm = joined["pm"].to_numpy()
    pc = joined["pc"].to_numpy()
    n_configs = max(configs.height, 1)
    stored_m = models["resnorm_value"].to_numpy().astype(np.float64)
    stored = stored_m[pm]
    model_params = models.select(PARAMETERS).to_numpy().astype(np.float64)
    config_params = configs.select(PARAMETERS).to_numpy().astype(np.float64)
    cmin = configs["min_freq"].to_numpy().astype(np.float64)
    cmax = configs["max_freq"].to_numpy().astype(np.float64)
    cn = configs["num_points"].to_numpy().astype(np.int64)
    computed = np.full(len(pm), np.nan)
    idx = np.flatnonzero(np.isfinite(stored) & (stored >= 0))
    if len(idx):
        # coarse screen: the resnorm on a COARSE_POINTS grid of the same range is within a
        # factor PRUNE_FACTOR of the full one; only pairs that could match get the full grid
        coarse = pair_resnorm(
            model_params, config_params, cmin, cmax, np.minimum(cn, COARSE_POINTS), pm[idx], pc[idx]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = coarse / np.maximum(stored[idx], RESNORM_TINY)
        keep = ~((ratio > PRUNE_FACTOR) | (ratio < 1.0 / PRUNE_FACTOR))
        keep |= stored[idx] <= RESNORM_TINY
        idx = idx[keep]
        computed[idx] = pair_resnorm(model_params, config_params, cmin, cmax, cn, pm[idx], pc[idx])
        scale = RESNORM_RTOL * np.maximum(stored, RESNORM_TINY)
        gap = np.abs(computed - stored)
        ref = np.flatnonzero((gap <= _REFINE_FACTOR * scale) & (gap > scale / _REFINE_FACTOR))
        if len(ref):
            computed[ref] = resnorm(
                model_params[pm[ref]],
                config_params[pc[ref]],
                cmin[pc[ref]],
                cmax[pc[ref]],
                cn[pc[ref]],
            )
    with np.errstate(invalid="ignore"):
        match = np.abs(computed - stored) <= RESNORM_RTOL * np.maximum(stored, RESNORM_TINY)
    match &= np.isfinite(computed)
    diff = _log_params(models)[pm] - _log_params(configs)[pc]
    distance = np.sqrt((diff * diff).sum(axis=1))
    # session evidence: (model's session, configuration) among the circuits it saved
    sessions = session_configs["session_id"].unique().sort()
    s_model = _codes(models["session_id"], sessions)
    sc_keys = np.unique(
        _codes(session_configs["session_id"], sessions) * n_configs
        + _codes(session_configs["config_id"], configs["id"])
    )
    in_session = (s_model[pm] >= 0) & np.isin(s_model[pm] * n_configs + pc, sc_keys)
    override = _named(overrides, models, configs, pm, pc)
    tagged = _micros(models["tagged_at"], _TS_MIN)[pm]
    created = _micros(configs["created_at"], _TS_MIN)[pc]
    updated = _micros(configs["updated_at"], _TS_MAX)[pc]
    in_lifetime = (tagged != _TS_MIN) & (created <= tagged) & (tagged <= updated)
    named = _named(explicit, models, configs, pm, pc)
    return Pairs(
        pm, pc, computed, match, in_session, in_lifetime, override, distance, stored, named
    )


_METHODS = ("override", "explicit", "resnorm", "session", "time", "proximity")
# Candidates listed in a link's evidence: the chosen one and the runner-up it beat.
EVIDENCE_CANDIDATES = 2


def _segment_top(key: np.ndarray, starts: np.ndarray, k: int) -> list[np.ndarray]:
    """Per segment (``starts`` of contiguous groups), the positions of the ``k`` smallest keys
    (ties: the earlier position), -1 where a segment has fewer rows. O(k * n), no sort."""
    n = len(key)
    work = key.astype(np.float64).copy()
    positions = np.arange(n)
    seg_len = np.diff(np.append(starts, n))
    out: list[np.ndarray] = []
    for _ in range(k):
        low = np.minimum.reduceat(work, starts)
        at_low = work == np.repeat(low, seg_len)
        first = np.minimum.reduceat(np.where(at_low, positions, n), starts)
        found = np.isfinite(low) & (first < n)
        pick = np.where(found, first, -1)
        out.append(pick)
        work[pick[found]] = np.inf
    return out


def decide(pairs: Pairs, config_ids: pl.Series) -> pl.DataFrame:
    """Per model row (``m_idx``; models without candidates are absent): ``c_idx`` of the chosen
    configuration, method, confidence, needs_review and the evidence JSON.

    ``pairs`` must be grouped by model (contiguous ``pm``) with candidates in configuration
    order inside a group (the tie-break of last resort).
    """
    p = pairs
    if len(p.pm) == 0:
        return pl.DataFrame(
            schema={
                "m_idx": pl.Int64,
                "c_idx": pl.Int64,
                "method": pl.String,
                "confidence": pl.Float64,
                "needs_review": pl.Boolean,
                "evidence": pl.String,
            }
        )
    score = (
        p.override.astype(np.int64) * 16
        + p.explicit.astype(np.int64) * 8
        + p.match.astype(np.int64) * 4
        + p.in_session.astype(np.int64) * 2
        + p.in_lifetime.astype(np.int64)
    )
    # rank key: higher score first, then smaller distance (log-parameter distances are < 1e4)
    key = (31 - score) * 1e5 + np.minimum(np.nan_to_num(p.distance, nan=9e4), 9e4)
    first = np.ones(len(p.pm), dtype=bool)
    first[1:] = p.pm[1:] != p.pm[:-1]
    starts = np.flatnonzero(first)
    top = _segment_top(key, starts, max(EVIDENCE_CANDIDATES, 2))
    best = top[0]
    has_runner = top[1] >= 0
    runner = np.where(has_runner, top[1], best)
    n_match = np.add.reduceat(p.match.astype(np.int64), starts)
    flags = (p.override, p.explicit, p.match, p.in_session, p.in_lifetime)
    method = np.full(len(best), len(flags), dtype=np.int64)  # proximity
    any_sep = np.zeros(len(best), dtype=bool)
    for level in reversed(range(len(flags))):
        sep = flags[level][best] & ~(flags[level][runner] & has_runner)
        method = np.where(sep, level, method)
        any_sep |= sep
    dist_sep = ~has_runner | ((p.distance[runner] - p.distance[best]) > DISTANCE_TIE)
    tie = ~any_sep & ~dist_sep
    for level in reversed(range(len(flags))):  # a shared positive level still names it
        method = np.where(tie & flags[level][best], level, method)
    # weak evidence (session, time, proximity) stands only when proximity corroborates it: the
    # chosen candidate is the nearest, near enough, and clearly nearer than the next one
    near = _segment_top(np.nan_to_num(p.distance, nan=np.inf), starts, 2)
    d1 = np.where(near[0] >= 0, p.distance[np.maximum(near[0], 0)], np.inf)
    d2 = np.where(near[1] >= 0, p.distance[np.maximum(near[1], 0)], np.inf)
    corroborated = (
        (p.distance[best] <= d1) & (d1 <= PROXIMITY_MAX) & ((d2 - d1) >= PROXIMITY_MARGIN)
    )
    weak = method >= 3
    stored = p.stored[best]
    pinned = p.override[best] | p.explicit[best]
    # the app's own link stands, but a stored resnorm that does not fit it is a contradiction
    unfitting = (n_match == 0) | (p.explicit[best] & ~p.match[best])
    contradicted = np.isfinite(stored) & (stored >= 0) & unfitting & ~p.override[best]
    conf_table = np.array([CONFIDENCE[name] for name in _METHODS])
    confidence = conf_table[method] * np.where(tie | (weak & ~corroborated), 0.5, 1.0)
    double_match = (n_match >= 2) & ~pinned
    needs_review = (
        tie | double_match | contradicted | (weak & ~corroborated) | (confidence < REVIEW_BELOW)
    )
    return pl.DataFrame(
        {
            "m_idx": p.pm[best],
            "c_idx": p.pc[best],
            "method": pl.Series(_METHODS).gather(method),
            "confidence": confidence,
            "needs_review": needs_review,
            "evidence": evidence_json(p, top[:EVIDENCE_CANDIDATES], starts, config_ids),
        }
    )


def evidence_json(
    pairs: Pairs, top: list[np.ndarray], starts: np.ndarray, config_ids: pl.Series
) -> pl.Series:
    """Per model (one per segment ``starts``): JSON text
    ``{"stored_resnorm": x, "candidates": n, "top": [{"id", "resnorm", "distance", "evidence":
    [...]}, ...]}`` for the best ranked candidates (``top``: positions per rank, -1 for none);
    ``evidence`` lists the positive signals among override, resnorm, session, time."""
    n = len(pairs.pm)
    counts = np.diff(np.append(starts, n))
    signals = (
        ("override", pairs.override),
        ("explicit", pairs.explicit),
        ("resnorm", pairs.match),
        ("session", pairs.in_session),
        ("time", pairs.in_lifetime),
    )
    parts: list[pl.Series] = []
    for rank, pos in enumerate(top):
        ok = pos >= 0
        rows = np.where(ok, pos, 0)
        frame = pl.DataFrame(
            {
                "ok": ok,
                "id": config_ids.gather(pairs.pc[rows]),
                "resnorm": pl.Series(pairs.resnorm[rows]).round_sig_figs(8),
                "distance": pl.Series(pairs.distance[rows]).round_sig_figs(5),
                **{f"s_{name}": values[rows] for name, values in signals},
            }
        )
        listed = pl.concat_str(
            [pl.when(pl.col(f"s_{name}")).then(pl.lit(f'"{name}"')) for name, _ in signals],
            separator=",",
            ignore_nulls=True,
        )
        text = frame.select(
            pl.when(pl.col("ok")).then(
                pl.concat_str(
                    pl.lit('{"id":"'),
                    pl.col("id"),
                    pl.lit('","resnorm":'),
                    pl.when(pl.col("resnorm").is_finite())
                    .then(pl.col("resnorm").cast(pl.String))
                    .otherwise(pl.lit("null")),
                    pl.lit(',"distance":'),
                    pl.col("distance").cast(pl.String),
                    pl.lit(',"evidence":['),
                    listed,
                    pl.lit("]}"),
                )
            )
        ).to_series()
        parts.append(text.alias(f"e{rank}"))
    stored = pl.Series(pairs.stored[starts])
    frame = pl.DataFrame([*parts, stored.alias("stored"), pl.Series("n", counts)])
    return frame.select(
        pl.concat_str(
            pl.lit('{"stored_resnorm":'),
            pl.when(pl.col("stored").is_finite())
            .then(pl.col("stored").cast(pl.String))
            .otherwise(pl.lit("null")),
            pl.lit(',"candidates":'),
            pl.col("n").cast(pl.String),
            pl.lit(',"top":['),
            pl.concat_str([p.name for p in parts], separator=",", ignore_nulls=True),
            pl.lit("]}"),
        ).alias("evidence")
    ).to_series()


# Models linked per slice of users: bounds the memory of the (model, candidate) pairs.
LINK_CHUNK_MODELS = 200_000


def link_models(
    models: pl.DataFrame,
    configs: pl.DataFrame,
    session_configs: pl.DataFrame,
    overrides: pl.DataFrame | None = None,
    *,
    exclude: pl.Series | None = None,
    explicit: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The links frame (``schemas.frames.LINKS``) for ``models`` whose user has at least one
    configuration in ``configs`` (see :func:`candidate_pairs` for the columns), leaving out the
    model ids in ``exclude``; models of users without configurations get no link. Users are
    processed in slices of about ``LINK_CHUNK_MODELS`` models (no copy of ``models``)."""
    configs = configs.sort(["user_id", "id"])
    skip = None if exclude is None or exclude.len() == 0 else exclude.implode()
    if models.height <= LINK_CHUNK_MODELS:
        if skip is not None:
            models = models.filter(~pl.col("id").is_in(skip))
        mine = configs.filter(pl.col("user_id").is_in(models["user_id"].unique().implode()))
        return _link_slice(models, mine, session_configs, overrides, explicit)
    per_user = (
        models.group_by("user_id")
        .len()
        .sort("user_id")
        .with_columns((pl.col("len").cum_sum() // LINK_CHUNK_MODELS).alias("slice"))
    )
    out: list[pl.DataFrame] = []
    for (_,), users in per_user.group_by("slice", maintain_order=True):
        keys = users.select("user_id")
        part = models.join(keys, on="user_id", how="semi", maintain_order="left")
        if skip is not None:
            part = part.filter(~pl.col("id").is_in(skip))
        out.append(
            _link_slice(
                part,
                configs.join(keys, on="user_id", how="semi", maintain_order="left"),
                session_configs,
                overrides,
                explicit,
            )
        )
    return pl.concat(out, rechunk=False)


def _link_slice(
    models: pl.DataFrame,
    configs: pl.DataFrame,
    session_configs: pl.DataFrame,
    overrides: pl.DataFrame | None,
    explicit: pl.DataFrame | None = None,
) -> pl.DataFrame:
    pairs = candidate_pairs(models, configs, session_configs, overrides, explicit)
    config_ids = configs["id"]
    d = decide(pairs, config_ids)
    out = d.select(
        models["id"].gather(d["m_idx"]).alias("tagged_model_id"),
        config_ids.gather(d["c_idx"]).alias("circuit_config_id"),
        "method",
        "confidence",
        "needs_review",
        "evidence",
    )
    return out.select([pl.col(c).cast(t) for c, t in LINKS.items()])
