"""Synthetic legacy data (DESIGN.md sections 2 and 3) with a known ground truth.

``generate`` builds the four legacy frames of ``schemas.frames.LEGACY_FRAMES`` for N users,
deterministically from a seed, plus the truth the migration must reproduce: each tagged model's
true circuit, the rows that must be quarantined and why, and the sources that must merge.
Everything is vectorised (NumPy draws, Polars string expressions for the JSON text); there is
no Python loop per row.

The world behind the data: every user has sessions and circuits. A circuit lives either in a
legacy ``user_profiles`` row or, for ``SAVED_ONLY_SHARE`` of them, only as an element of one
session's ``saved_profiles`` (its *canonical source*). Valid circuits may be copied into other
sessions, identically (a duplicate that must merge) or with diverged parameters (a circuit of
its own, same name and element id). Tagged models are parameter sets near a valid circuit of
their user, tagged within its lifetime (``created_at``..``updated_at``); their ``resnorm_value``
is the section 2 resnorm against that circuit over its own stored grid (a ``saved_profiles``-only
circuit has the legacy default grid: 100 points).

What each rate of ``Rates`` is the probability of, per row it can apply to:

- ``missing_key``, ``bad_value``: per parameters object (``user_profiles`` row, ``saved_profiles``
  element of a session with a known user and an array, tagged model); ``invalid_parameters``.
- ``string_number``, ``legacy_rs_key``: per parameters object (every one); repaired.
- ``inverted_freq``: per ``user_profiles`` row and per such element; ``invalid_frequency_range``.
- ``grid_out_of_range``: per ``user_profiles`` row; repaired (clamped).
- ``null_user``, ``dangling_user``: per session and per tagged model. Such a session is
  quarantined (``no_user`` / ``unknown_user``) and so is every element of its ``saved_profiles``.
  Tagged models only ever name sessions of a known user, so no row names a user for a session
  without one. A tagged model with a null user takes its session's user, and is quarantined
  (``no_user``) only when it has no session; one with a dangling user has no session and is
  ``unknown_user``.
- ``saved_not_array``: per session of a known user: ``saved_profiles`` is an object, a string or
  a number; quarantined as a whole: ``<session id>#*``, ``malformed_saved_profiles``.
- ``malformed_element``: per element of a session with a known user and an array.
- ``copied_profile``: per valid original circuit whose user has a session with a known user:
  1 to 3 identical copies into such sessions; the clean ones are in ``truth_duplicates``.
- ``diverged_copy``: per such circuit: one copy with the same name and element id but one
  parameter scaled by 1.25..2 (and half the time another description), a circuit of its own.
- ``foreign_session``: per tagged model of a known user with a session: its session is another
  user's instead (drawn from a stream of its own, so the other draws of a seed do not move); the
  migration drops that session (repair ``dropped_session``), the model itself is fine.
- ``duplicate_tag``: per tagged model not quarantined and not of a twin circuit (below): a second
  row with the same user, session, ``model_id``, ``tag_name`` and parameters, tagged later
  (in ``truth_duplicates``).

The quarantine causes of one row exclude each other (one reason per row): the rates of a group
(the three causes of a ``user_profiles`` row, the four of an element, the three of a session,
the four of a tagged model) are carved out of one uniform draw, so each keeps its exact rate.
Quarantined circuits get no tagged models and no copies, so every tagged model's true circuit
is valid. ``TWIN_SHARE`` of the users with two circuits or more have two valid circuits with
different names and descriptions but identical parameters and grid: their tagged models are
``indistinguishable``. ``truth_links`` covers every tagged model, quarantined or not.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import polars as pl

from schemas.frames import LEGACY_FRAMES, Schema, conform
from transforms.impedance import PARAMETERS, resnorm

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SAVED_ONLY_SHARE = 0.25
"""Share of circuits that live only in a session's ``saved_profiles`` (not a messy case)."""
TWIN_SHARE = 0.03
"""Share of users with two circuits or more whose first two circuits are indistinguishable."""
NOISE_SIGMA = 0.04
"""Log-normal sigma of a tagged model's parameters around its circuit's."""

TRUTH_LINKS: Schema = {
    "tagged_model_id": pl.String,
    "true_source_table": pl.String,
    "true_source_id": pl.String,
    "indistinguishable": pl.Boolean,
}
TRUTH_QUARANTINE: Schema = {"source_table": pl.String, "source_id": pl.String, "reason": pl.String}
TRUTH_DUPLICATES: Schema = {
    "source_table": pl.String,
    "source_id": pl.String,
    "duplicate_of_table": pl.String,
    "duplicate_of_id": pl.String,
}

# Quarantine codes; index into REASONS minus one (0: not quarantined).
REASONS = (
    "no_user",
    "unknown_user",
    "invalid_parameters",
    "invalid_frequency_range",
    "malformed_saved_profiles",
    "malformed_element",
)
_OK, _NO_USER, _UNKNOWN_USER, _INVALID_PARAMS, _INVALID_FREQ, _NOT_ARRAY, _MALFORMED = range(7)
# Quarantine case of a parameters object / element (exclusive draw): index -> code.
_MISSING, _BAD, _INVERTED, _MALFORMED_CASE = 1, 2, 3, 4
_CASE_CODE = np.array([_OK, _INVALID_PARAMS, _INVALID_PARAMS, _INVALID_FREQ, _MALFORMED])
# Session states: 0 ok, 1 null user, 2 dangling user, 3 saved_profiles not an array.
_S_OK, _S_NULL, _S_DANGLING, _S_NOT_ARRAY = range(4)
_SESSION_CODE = np.array([_OK, _NO_USER, _UNKNOWN_USER, _NOT_ARRAY])

_DAY = 86_400_000_000  # microseconds
_T0 = 1_654_041_600_000_000  # 2022-06-01T00:00:00Z

_FREQ_RANGES = np.array([[0.1, 1e5], [1.0, 1e4], [0.5, 5e4], [10.0, 1e5], [0.1, 1e4]])
_FREQ_P = np.array([0.75, 0.1, 0.05, 0.05, 0.05])
_NUM_POINTS = np.array([100, 50, 200])
_NUM_POINTS_P = np.array([0.8, 0.1, 0.1])
_BAD_GRID_SIZES = np.array([0, 1, 26, 30, 40, 50])
_BAD_NUM_POINTS = np.array([2, 5, 8, 1200, 1500, 2000])
SAVED_NUM_POINTS = 100
"""The grid of a circuit known only from ``saved_profiles``: the legacy column default."""
_BAD_VALUES = ('"NaN"', "0", "-5", "-0.001")

_CIRCUIT_NAMES = (
    "RPE baseline",
    "Control",
    "Treatment A",
    "Treatment B",
    "Healthy donor",
    "AMD sample",
    "High TER",
    "Low TER",
    "Day 7 culture",
    "Day 14 culture",
    'Tight junction "leaky"',
    "Apical/basal fit",
    "Référence µF",
    "Patient's eye",
)
_DESCRIPTIONS = (
    "Reference fit from the lab protocol",
    "Fitted to the latest measurement",
    "Rsh ≈ 1.2 kΩ, check the basal branch",
    'Imported from the "old" spreadsheet',
    "Baseline before treatment",
    "Second pass with a wider grid",
    "Line 1\nLine 2, with a backslash \\ too",
)
_SESSION_NAMES = ("Session", "Morning run", "Analysis", "Exploration", "Grid sweep", "Review")
_SESSION_DESCRIPTIONS = ("Daily analysis", "Trying wider ranges", "Shared with the lab")
_TAGS = ("best_fit", "good_fit", "candidate", "outlier", "reference", "review", "baseline", "odd")
_NOTES = ("looks right", "check Ca", "compare with donor 2", "résumé: ok", 'flagged as "odd"')
_FULL_NAMES = tuple(
    f"{first} {last}"
    for first in ("Ana", "Ben", "Chen", "Dana", "Emil", "Fatima", "José", "Kai", "Lena", "Noor")
    for last in ("Smith", "García", "O'Brien", "Müller", "Nakamura", "Okafor", "Rossi")
)
_VISUALIZATION = (
    '{"chartType": "spider", "opacity": 0.7}',
    '{"chartType": "nyquist", "showGrid": true}',
    '{"chartType": "bode", "logScale": true, "opacity": 0.5}',
)
_PERFORMANCE = (
    '{"chunkSize": 5000, "useWebWorkers": true}',
    '{"chunkSize": 10000, "useWebWorkers": false}',
    "{}",
)
_ENVIRONMENT = ("{}", '{"NODE_ENV": "production"}', '{"NODE_ENV": "development", "DEBUG": "1"}')


@dataclass(frozen=True)
class Rates:
    """Probability of each messy case of DESIGN.md section 3 (see the module docstring)."""

    missing_key: float = 0.02
    string_number: float = 0.05
    legacy_rs_key: float = 0.05
    bad_value: float = 0.02
    inverted_freq: float = 0.02
    grid_out_of_range: float = 0.03
    null_user: float = 0.02
    dangling_user: float = 0.02
    saved_not_array: float = 0.03
    malformed_element: float = 0.03
    copied_profile: float = 0.05
    diverged_copy: float = 0.03
    duplicate_tag: float = 0.02
    foreign_session: float = 0.02

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Rates.{f.name} must be a probability in [0, 1], got {value}")
        if sum(self.element_cases) > 1.0 or sum(self.model_cases) > 1.0:
            raise ValueError("the exclusive quarantine rates of one row sum to more than 1")
        if sum(self.session_cases) > 1.0:
            raise ValueError("null_user + dangling_user + saved_not_array exceeds 1")

    @property
    def row_cases(self) -> tuple[float, float, float]:
        """Exclusive quarantine causes of a ``user_profiles`` row."""
        return (self.missing_key, self.bad_value, self.inverted_freq)

    @property
    def element_cases(self) -> tuple[float, float, float, float]:
        """Exclusive quarantine causes of a ``saved_profiles`` element."""
        return (*self.row_cases, self.malformed_element)

    @property
    def session_cases(self) -> tuple[float, float, float]:
        """Exclusive states of a session: null user, dangling user, not an array."""
        return (self.null_user, self.dangling_user, self.saved_not_array)

    @property
    def model_cases(self) -> tuple[float, float, float, float]:
        """Exclusive cases of a tagged model: null user, dangling user, missing key, bad value."""
        return (self.null_user, self.dangling_user, self.missing_key, self.bad_value)

    @classmethod
    def zero(cls) -> Rates:
        """Every rate 0: perfectly clean data."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


@dataclass(frozen=True)
class SyntheticLegacy:
    """The legacy frames (``schemas.frames.LEGACY_FRAMES``) and their ground truth."""

    auth_users: pl.DataFrame
    user_sessions: pl.DataFrame
    tagged_models: pl.DataFrame
    user_profiles: pl.DataFrame
    truth_links: pl.DataFrame
    truth_quarantine: pl.DataFrame
    truth_duplicates: pl.DataFrame


# --- small vectorised helpers -----------------------------------------------------------------

_Part = str | pl.Expr | pl.Series


def _concat(*parts: _Part) -> pl.Expr:
    """Concatenate text: ``str`` parts are literals, Series and expressions are values."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str | pl.Series) else p for p in parts])


def _frame_of(expr: pl.Expr) -> pl.Series:
    return pl.select(expr.alias("x")).to_series()


def _uuids(rng: np.random.Generator, n: int) -> pl.Series:
    """``n`` uuid-v4-shaped ids from ``rng``, as lower-case canonical text."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.frombuffer(binascii.hexlify(raw.tobytes()), dtype=np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src in ((0, 0), (9, 8), (14, 12), (19, 16), (24, 20)):
        width = 12 if dst == 24 else 8 if dst == 0 else 4
        out[:, dst : dst + width] = hexed[:, src : src + width]
    return pl.Series(out.view("S36").ravel(), dtype=pl.Binary).cast(pl.String)


def _exclusive(rng: np.random.Generator, n: int, rates: tuple[float, ...]) -> IntArray:
    """Per row 0 (none) or case i + 1; the cases exclude each other, each at its own rate."""
    below = np.searchsorted(np.cumsum(rates), rng.random(n), side="right")
    return np.asarray((below + 1) % (len(rates) + 1), dtype=np.int64)


def _groups(keys: IntArray, n_groups: int) -> tuple[IntArray, IntArray]:
    """Start and count of each group of ``keys`` (sorted ascending)."""
    count = np.bincount(keys, minlength=n_groups).astype(np.int64)
    return np.cumsum(count) - count, count


def _local_index(keys: IntArray, n_groups: int) -> IntArray:
    """Position of each row inside its group (``keys`` sorted ascending)."""
    start, _ = _groups(keys, n_groups)
    return np.arange(len(keys), dtype=np.int64) - start[keys]


def _pick(
    rng: np.random.Generator, group: IntArray, start: IntArray, count: IntArray, members: IntArray
) -> IntArray:
    """Per draw, a uniform member of ``members[start[g]:start[g] + count[g]]`` (count > 0)."""
    offset = (rng.random(len(group)) * count[group]).astype(np.int64)
    return np.asarray(members[start[group] + offset], dtype=np.int64)


def _ts(micros: IntArray) -> pl.Series:
    return pl.Series(np.asarray(micros, dtype=np.int64)).cast(pl.Datetime("us", "UTC"))


def _take(series: pl.Series, idx: IntArray) -> pl.Series:
    """``series[idx]``, null where ``idx`` is -1."""
    index = pl.Series(idx, dtype=pl.Int64)
    return series.gather(_frame_of(pl.when(pl.lit(index) >= 0).then(pl.lit(index))))


def _at(values: IntArray, idx: IntArray, default: int) -> IntArray:
    """``values[idx]``, ``default`` where ``idx`` is -1."""
    out = np.full(len(idx), default, dtype=np.int64)
    found = idx >= 0
    out[found] = values[idx[found]]
    return out


def _vocab(words: tuple[str, ...], idx: IntArray) -> pl.Series:
    """``words[idx]``, null where ``idx`` is -1."""
    return _take(pl.Series(words, dtype=pl.String), idx)


def _json_words(words: tuple[str, ...]) -> tuple[str, ...]:
    """The JSON string literal of each word, without its closing quote."""
    return tuple(json.dumps(w, ensure_ascii=False)[:-1] for w in words)


def _num(values: FloatArray | IntArray) -> pl.Series:
    """Numbers as JSON number text (floats in their shortest round-trip form)."""
    return pl.Series(values).cast(pl.String)


def _chance(rng: np.random.Generator, n: int, p: float) -> BoolArray:
    return np.asarray(rng.random(n) < p)


def _invert(
    rng: np.random.Generator, lo: FloatArray, hi: FloatArray, mask: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Frequency ranges with ``min >= max`` where ``mask``: swapped, or one in ten equal."""
    equal = rng.random(len(lo)) < 0.1
    return np.where(mask, hi, lo), np.where(mask & ~equal, lo, hi)


def _circuit_name(idx: IntArray, number: IntArray, *, as_json: bool) -> pl.Series:
    words = _json_words(_CIRCUIT_NAMES) if as_json else _CIRCUIT_NAMES
    return _frame_of(_concat(_vocab(words, idx), " #", _num(number), '"' if as_json else ""))


def _description(idx: IntArray, *, as_json: bool) -> pl.Series:
    """Descriptions by index; -1 gives null (JSON ``null`` when ``as_json``)."""
    words = tuple(w + '"' for w in _json_words(_DESCRIPTIONS)) if as_json else _DESCRIPTIONS
    text = _vocab(words, idx)
    return text.fill_null("null") if as_json else text


@dataclass(frozen=True)
class _ParamMess:
    """Per parameters object: the missing or bad key (-1: none) and the repairable cases."""

    missing: IntArray
    bad: IntArray
    bad_text: IntArray
    stringify: BoolArray  # (n, 5): numbers written as JSON strings
    legacy_rs: BoolArray

    @classmethod
    def draw(cls, rng: np.random.Generator, rates: Rates, case: IntArray) -> _ParamMess:
        """Messes of ``len(case)`` objects whose exclusive case (missing/bad key) is given."""
        n = len(case)
        key = rng.integers(0, 5, n)
        stringify = rng.random((n, 5)) < 0.5
        stringify[np.arange(n), rng.integers(0, 5, n)] = True  # at least one
        stringify &= _chance(rng, n, rates.string_number)[:, None]
        return cls(
            missing=np.where(case == _MISSING, key, -1),
            bad=np.where(case == _BAD, key, -1),
            bad_text=rng.integers(0, len(_BAD_VALUES), n),
            stringify=stringify,
            legacy_rs=_chance(rng, n, rates.legacy_rs_key),
        )


def _params_json(
    values: FloatArray,
    mess: _ParamMess,
    frequency_range: tuple[FloatArray, FloatArray, BoolArray] | None = None,
) -> pl.Series:
    """``{"Rsh": .., "Ra": .., "Ca": .., "Rb": .., "Cb": ..[, "frequency_range": [lo, hi]]}``."""
    columns: dict[str, pl.Series] = {
        "missing": pl.Series(mess.missing),
        "bad": pl.Series(mess.bad),
        "bad_text": _vocab(_BAD_VALUES, mess.bad_text),
        "rs": pl.Series(mess.legacy_rs),
    }
    pieces: list[pl.Expr] = []
    for k, key in enumerate(PARAMETERS):
        columns[f"v{k}"] = _num(values[:, k])
        columns[f"s{k}"] = pl.Series(mess.stringify[:, k])
        name = pl.lit(f'"{key}": ')
        if key == "Rsh":
            name = pl.when(pl.col("rs")).then(pl.lit('"Rs": ')).otherwise(name)
        value = (
            pl.when(pl.col("bad") == k)
            .then(pl.col("bad_text"))
            .when(pl.col(f"s{k}"))
            .then(_concat('"', pl.col(f"v{k}"), '"'))
            .otherwise(pl.col(f"v{k}"))
        )
        pieces.append(pl.when(pl.col("missing") != k).then(_concat(name, value)))
    if frequency_range is not None:
        lo, hi, present = frequency_range
        columns["lo"], columns["hi"], columns["fr"] = _num(lo), _num(hi), pl.Series(present)
        pieces.append(
            pl.when(pl.col("fr")).then(
                _concat('"frequency_range": [', pl.col("lo"), ", ", pl.col("hi"), "]")
            )
        )
    body = pl.concat_str(pieces, separator=", ", ignore_nulls=True)
    return pl.DataFrame(columns).select(_concat("{", body, "}").alias("json")).to_series()


# --- the world: users, sessions, circuits, elements, models -----------------------------------


@dataclass(frozen=True)
class _Sessions:
    user: IntArray
    state: IntArray
    ids: pl.Series
    start: IntArray  # per user: first session
    count: IntArray  # per user: number of sessions
    known: IntArray  # sessions that name a valid user, grouped by user
    known_start: IntArray
    known_count: IntArray


def _sessions(
    rng: np.random.Generator, n_users: int, rates: Rates, per_user: tuple[int, int]
) -> _Sessions:
    count = rng.integers(per_user[0], per_user[1] + 1, n_users)
    user = np.repeat(np.arange(n_users), count)
    state = _exclusive(rng, len(user), rates.session_cases)
    known = np.flatnonzero((state == _S_OK) | (state == _S_NOT_ARRAY))
    start, _ = _groups(user, n_users)
    known_start, known_count = _groups(user[known], n_users)
    return _Sessions(
        user, state, _uuids(rng, len(user)), start, count, known, known_start, known_count
    )


@dataclass
class _Circuits:
    """Every circuit: the originals (``n_orig`` first), then the diverged copies."""

    n_orig: int
    user: IntArray
    saved: BoolArray  # lives only in saved_profiles (canonical source: an element)
    session: IntArray  # the canonical element's session (saved circuits), else -1
    case: IntArray  # exclusive quarantine case of the canonical source
    code: IntArray  # quarantine code of the canonical source
    params: FloatArray
    lo: FloatArray
    hi: FloatArray
    grid_size: IntArray
    num_points: IntArray  # the stored grid (saved circuits: the legacy default)
    name_idx: IntArray
    name_num: IntArray
    desc_idx: IntArray
    created: IntArray
    updated: IntArray  # created..updated is the circuit's lifetime; its models are tagged in it
    twin: BoolArray
    elem_id: pl.Series  # a user_profiles circuit's row id; the "id" of its elements

    @property
    def valid(self) -> BoolArray:
        return np.asarray(self.code == _OK)


def _original_circuits(
    rng: np.random.Generator,
    rates: Rates,
    sessions: _Sessions,
    user_created: IntArray,
    per_user: tuple[int, int],
) -> _Circuits:
    n_users = len(user_created)
    count = rng.integers(per_user[0], per_user[1] + 1, n_users)
    user = np.repeat(np.arange(n_users), count)
    n = len(user)
    saved = _chance(rng, n, SAVED_ONLY_SHARE) & (sessions.count[user] > 0)
    session = np.full(n, -1, dtype=np.int64)
    in_saved = np.flatnonzero(saved)
    all_sessions = np.arange(len(sessions.user), dtype=np.int64)
    session[in_saved] = _pick(rng, user[in_saved], sessions.start, sessions.count, all_sessions)

    row_case = _exclusive(rng, n, rates.row_cases)
    elem_case = _exclusive(rng, n, rates.element_cases)
    session_code = _SESSION_CODE[_at(sessions.state, session, _S_OK)]
    case = np.where(saved, np.where(session_code == _OK, elem_case, 0), row_case)
    code = np.where(session_code != _OK, session_code, _CASE_CODE[case])

    params = np.empty((n, 5))
    params[:, [0, 1, 3]] = np.exp(rng.uniform(np.log(10.0), np.log(1e4), (n, 3)))
    params[:, [2, 4]] = np.exp(rng.uniform(np.log(1e-7), np.log(5e-5), (n, 2)))
    freq = _FREQ_RANGES[rng.choice(len(_FREQ_P), n, p=_FREQ_P)]
    lo, hi = _invert(rng, freq[:, 0], freq[:, 1], case == _INVERTED)
    grid_size = np.where(_chance(rng, n, 0.95), rng.integers(5, 21, n), rng.integers(2, 26, n))
    num_points = _NUM_POINTS[rng.choice(3, n, p=_NUM_POINTS_P)]
    bad_grid = _chance(rng, n, rates.grid_out_of_range) & ~saved
    bad_size = _chance(rng, n, 0.5)
    grid_size = np.where(bad_grid & bad_size, rng.choice(_BAD_GRID_SIZES, n), grid_size)
    num_points = np.where(bad_grid & ~bad_size, rng.choice(_BAD_NUM_POINTS, n), num_points)
    num_points = np.where(saved, SAVED_NUM_POINTS, num_points)
    name_idx = rng.integers(0, len(_CIRCUIT_NAMES), n)
    name_num = rng.integers(1, 1000, n)
    desc_idx = np.where(_chance(rng, n, 0.8), rng.integers(0, len(_DESCRIPTIONS), n), -1)
    created = user_created[user] + rng.integers(0, 300 * _DAY, n)
    updated = created + rng.integers(_DAY, 120 * _DAY, n)

    # Twins: a user's first two circuits share parameters and grid under other names.
    start, _ = _groups(user, n_users)
    twin_users = np.flatnonzero((count >= 2) & _chance(rng, n_users, TWIN_SHARE))
    a, b = start[twin_users], start[twin_users] + 1
    keep = (code[a] == _OK) & (code[b] == _OK) & (saved[a] == saved[b])
    a, b = a[keep], b[keep]
    params[b], lo[b], hi[b] = params[a], lo[a], hi[a]
    grid_size[b], num_points[b] = grid_size[a], num_points[a]
    name_idx[b], name_num[b] = name_idx[a], name_num[a] % 999 + 1
    desc_idx[b] = (np.maximum(desc_idx[a], 0) + 1) % len(_DESCRIPTIONS)
    twin = np.zeros(n, dtype=bool)
    twin[a] = twin[b] = True

    return _Circuits(
        n_orig=n,
        user=user,
        saved=saved,
        session=session,
        case=case,
        code=code,
        params=params,
        lo=lo,
        hi=hi,
        grid_size=grid_size,
        num_points=num_points,
        name_idx=name_idx,
        name_num=name_num,
        desc_idx=desc_idx,
        created=created,
        updated=updated,
        twin=twin,
        elem_id=_uuids(rng, n),
    )


def _copy_case(
    rng: np.random.Generator, rates: Rates, sessions: _Sessions, session: IntArray
) -> tuple[IntArray, IntArray]:
    """Exclusive case and quarantine code of elements copied into sessions of a known user."""
    not_array = sessions.state[session] == _S_NOT_ARRAY
    case = np.where(not_array, 0, _exclusive(rng, len(session), rates.element_cases))
    return case, np.where(not_array, _NOT_ARRAY, _CASE_CODE[case])


def _with_diverged(
    rng: np.random.Generator, rates: Rates, sessions: _Sessions, c: _Circuits, copyable: BoolArray
) -> _Circuits:
    """``c`` plus one diverged copy (a circuit of its own) of some copyable circuits."""
    of = np.flatnonzero(copyable & _chance(rng, c.n_orig, rates.diverged_copy))
    n = len(of)
    session = _pick(rng, c.user[of], sessions.known_start, sessions.known_count, sessions.known)
    case, code = _copy_case(rng, rates, sessions, session)
    params = c.params[of].copy()
    factor = np.exp(rng.uniform(np.log(1.25), np.log(2.0), n) * rng.choice([-1.0, 1.0], n))
    params[np.arange(n), rng.integers(0, 5, n)] *= factor
    lo, hi = _invert(rng, c.lo[of], c.hi[of], case == _INVERTED)
    desc = np.where(_chance(rng, n, 0.5), c.desc_idx[of], rng.integers(0, len(_DESCRIPTIONS), n))
    created = c.created[of] + rng.integers(_DAY, 60 * _DAY, n)
    updated = created + rng.integers(_DAY, 120 * _DAY, n)
    return _Circuits(
        n_orig=c.n_orig,
        user=np.concatenate([c.user, c.user[of]]),
        saved=np.concatenate([c.saved, np.ones(n, dtype=bool)]),
        session=np.concatenate([c.session, session]),
        case=np.concatenate([c.case, case]),
        code=np.concatenate([c.code, code]),
        params=np.concatenate([c.params, params]),
        lo=np.concatenate([c.lo, lo]),
        hi=np.concatenate([c.hi, hi]),
        grid_size=np.concatenate([c.grid_size, np.full(n, 10)]),
        num_points=np.concatenate([c.num_points, np.full(n, SAVED_NUM_POINTS)]),
        name_idx=np.concatenate([c.name_idx, c.name_idx[of]]),
        name_num=np.concatenate([c.name_num, c.name_num[of]]),
        desc_idx=np.concatenate([c.desc_idx, desc]),
        created=np.concatenate([c.created, created]),
        updated=np.concatenate([c.updated, updated]),
        twin=np.concatenate([c.twin, np.zeros(n, dtype=bool)]),
        elem_id=pl.concat([c.elem_id, c.elem_id.gather(of)]),
    )


@dataclass(frozen=True)
class _Elements:
    """``saved_profiles`` elements, sorted by session and position in the array."""

    circuit: IntArray
    session: IntArray
    case: IntArray
    code: IntArray
    is_copy: BoolArray
    source_id: pl.Series  # "<session id>#<position>"
    text: pl.Series


_ID, _NAME = pl.col("id"), pl.col("name")
_ELEMENT: tuple[_Part, ...] = (
    '{"id": "', _ID, '", "name": ', _NAME, ', "description": ', pl.col("description"),
    ', "parameters": ', pl.col("parameters"), ', "frequencyRange": [', pl.col("lo"), ", ",
    pl.col("hi"), '], "createdAt": "', pl.col("created"), '"}',
)  # fmt: skip
_MALFORMED_ELEMENTS: tuple[tuple[_Part, ...], ...] = (
    ('"corrupted profile"',),
    ("null",),
    ("42",),
    ("[1, 2, 3]",),
    ('{"id": "', _ID, '", "name": ', _NAME, "}"),
    ('{"id": "', _ID, '", "name": ', _NAME, ', "parameters": null}'),
    ('{"id": "', _ID, '", "name": ', _NAME, ', "parameters": "see notes"}'),
)


def _elements(
    rng: np.random.Generator,
    rates: Rates,
    sessions: _Sessions,
    c: _Circuits,
    copy_of: IntArray,
    copy_session: IntArray,
) -> _Elements:
    canon = np.flatnonzero(c.saved)
    copy_case, copy_code = _copy_case(rng, rates, sessions, copy_session)
    circuit = np.concatenate([canon, copy_of])
    session = np.concatenate([c.session[canon], copy_session])
    case = np.concatenate([c.case[canon], copy_case])
    code = np.concatenate([c.code[canon], copy_code])
    is_copy = np.concatenate([np.zeros(len(canon), dtype=bool), np.ones(len(copy_of), bool)])
    n = len(circuit)
    order = np.lexsort((rng.random(n), session))  # shuffled within each session
    circuit, session, case, code, is_copy = (
        x[order] for x in (circuit, session, case, code, is_copy)
    )
    position = _local_index(session, len(sessions.user))
    source_id = _frame_of(_concat(sessions.ids.gather(session), "#", _num(position)))

    lo, hi = _invert(rng, c.lo[circuit], c.hi[circuit], is_copy & (case == _INVERTED))
    mess = _ParamMess.draw(rng, rates, case)
    frame = pl.DataFrame(
        {
            "id": c.elem_id.gather(circuit),
            "name": _circuit_name(c.name_idx[circuit], c.name_num[circuit], as_json=True),
            "description": _description(c.desc_idx[circuit], as_json=True),
            "parameters": _params_json(c.params[circuit], mess),
            "lo": _num(lo),
            "hi": _num(hi),
            "created": _ts(c.created[circuit]).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"),
            "malformed": rng.integers(0, len(_MALFORMED_ELEMENTS), n),
        }
    )
    text = _concat(*_ELEMENT)
    for k, template in enumerate(_MALFORMED_ELEMENTS):
        broken = pl.lit(case == _MALFORMED_CASE) & (pl.col("malformed") == k)
        text = pl.when(broken).then(_concat(*template)).otherwise(text)
    return _Elements(
        circuit, session, case, code, is_copy, source_id, frame.select(text).to_series()
    )


def _saved_profiles(rng: np.random.Generator, sessions: _Sessions, e: _Elements) -> pl.Series:
    """Each session's ``saved_profiles`` JSON text; not-array sessions get an object, a string
    (the array, JSON-encoded once more) or a number."""
    n = len(sessions.user)
    joined = (
        pl.DataFrame({"session": e.session, "text": e.text})
        .group_by("session", maintain_order=True)
        .agg(pl.col("text").str.join(", "))
    )
    array = (
        pl.DataFrame({"session": np.arange(n, dtype=np.int64)})
        .join(joined, on="session", how="left")
        .select(_concat("[", pl.col("text").fill_null(""), "]"))
        .to_series()
    )
    form = rng.integers(0, 3, n)
    not_array = sessions.state == _S_NOT_ARRAY
    as_string = array.str.replace_all("\\", "\\\\", literal=True).str.replace_all(
        '"', '\\"', literal=True
    )
    return _frame_of(
        pl.when(pl.lit(not_array & (form == 0)))
        .then(_concat('{"profiles": ', array, "}"))
        .when(pl.lit(not_array & (form == 1)))
        .then(_concat('"', as_string, '"'))
        .when(pl.lit(not_array & (form == 2)))
        .then(pl.lit("0"))
        .otherwise(array)
    )


@dataclass(frozen=True)
class _Models:
    frame: pl.DataFrame
    circuit: IntArray
    quarantine: pl.DataFrame
    duplicates: pl.DataFrame


def _models(
    rng: np.random.Generator,
    rates: Rates,
    per_circuit: tuple[int, int],
    user_ids: pl.Series,
    sessions: _Sessions,
    c: _Circuits,
    home: IntArray,
) -> _Models:
    count = rng.integers(per_circuit[0], per_circuit[1] + 1, len(c.user)) * c.valid
    circuit = np.repeat(np.arange(len(c.user)), count)
    n = len(circuit)
    user = c.user[circuit]
    reference = c.params[circuit]
    params = reference * np.exp(rng.normal(0.0, NOISE_SIGMA, (n, 5)))
    score = resnorm(params, reference, c.lo[circuit], c.hi[circuit], c.num_points[circuit])
    span = c.updated[circuit] - c.created[circuit]
    tagged = c.created[circuit] + (rng.uniform(0.0, 0.9, n) * span).astype(np.int64)

    # Session: mostly the one holding the circuit, sometimes another of the user, or none;
    # always one that names the user (see the module docstring).
    where = rng.random(n)
    session = np.where(where < 0.8, home[circuit], -1)
    other = np.flatnonzero((where >= 0.8) & (where < 0.9) & (sessions.known_count[user] > 0))
    session[other] = _pick(
        rng, user[other], sessions.known_start, sessions.known_count, sessions.known
    )

    state = _exclusive(rng, n, rates.model_cases)  # null, dangling, missing key, bad value
    session = np.where(state == 2, -1, session)
    code = np.choose(state, [_OK, _NO_USER, _UNKNOWN_USER, _INVALID_PARAMS, _INVALID_PARAMS])
    code = np.where((state == 1) & (session >= 0), _OK, code)  # takes the session's user
    session = _foreign_sessions(rng, rates, session, state, user, sessions)
    mess = _ParamMess.draw(rng, rates, np.choose(state, [0, 0, 0, _MISSING, _BAD]))

    ids = _uuids(rng, n)
    dangling = _uuids(rng, n)
    model_base = rng.integers(1, 900_000, len(c.user))
    frame = pl.DataFrame(
        {
            "id": ids,
            "user_id": _frame_of(
                pl.when(pl.lit(state == 1))
                .then(pl.lit(None, pl.String))
                .when(pl.lit(state == 2))
                .then(dangling)
                .otherwise(user_ids.gather(user))
            ),
            "session_id": _take(sessions.ids, session),
            "model_id": _frame_of(
                _concat("model_", _num(model_base[circuit] + _local_index(circuit, len(c.user))))
            ),
            "tag_name": _vocab(_TAGS, rng.integers(0, len(_TAGS), n)),
            "tag_category": np.where(_chance(rng, n, 0.9), "user", "auto"),
            "circuit_parameters": _params_json(
                params, mess, (c.lo[circuit], c.hi[circuit], _chance(rng, n, 0.05))
            ),
            "resnorm_value": score,
            "tagged_at": _ts(tagged),
            "notes": _notes(rng, n),
            "is_interesting": _chance(rng, n, 0.15),
        }
    )

    # Duplicate tags: tagged again later in the circuit's lifetime. Not on twin circuits, where
    # the link itself is ambiguous (flagged for review), so "must merge" would be ill-defined.
    eligible = (code == _OK) & (state == 0) & ~c.twin[circuit]
    dup_of = np.flatnonzero(eligible & _chance(rng, n, rates.duplicate_tag))
    n_dup = len(dup_of)
    later = rng.uniform(0.05, 1.0, n_dup) * (c.updated[circuit[dup_of]] - tagged[dup_of])
    dup = frame[dup_of].with_columns(
        id=_uuids(rng, n_dup),
        tagged_at=_ts(tagged[dup_of] + later.astype(np.int64)),
        notes=_notes(rng, n_dup),
        is_interesting=_chance(rng, n_dup, 0.15),
    )
    quarantined = np.flatnonzero(code != _OK)
    return _Models(
        frame=pl.concat([frame, dup]),
        circuit=np.concatenate([circuit, circuit[dup_of]]),
        quarantine=_truth_quarantine("tagged_models", ids.gather(quarantined), code[quarantined]),
        duplicates=_truth_duplicates(
            "tagged_models", dup["id"], pl.Series(["tagged_models"] * n_dup), ids.gather(dup_of)
        ),
    )


def _foreign_sessions(
    rng: np.random.Generator,
    rates: Rates,
    session: IntArray,
    state: IntArray,
    user: IntArray,
    sessions: _Sessions,
) -> IntArray:
    """``session`` with ``rates.foreign_session`` of the models of a known user that have one
    pointing at another user's session, drawn from a child stream of ``rng`` (``rng``'s own
    draws are untouched)."""
    if rates.foreign_session == 0 or len(sessions.known) == 0:
        return session
    child = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])  # type: ignore[attr-defined]
    n = len(session)
    pick = sessions.known[child.integers(0, len(sessions.known), n)]
    chosen = (state == 0) & (session >= 0) & (child.random(n) < rates.foreign_session)
    chosen &= sessions.user[pick] != user
    return np.where(chosen, pick, session)


def _notes(rng: np.random.Generator, n: int) -> pl.Series:
    idx = np.where(_chance(rng, n, 0.2), rng.integers(0, len(_NOTES), n), -1)
    return _vocab(_NOTES, idx)


def _truth_quarantine(table: str, source_id: pl.Series, code: IntArray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_table": pl.Series([table] * len(source_id), dtype=pl.String),
            "source_id": source_id,
            "reason": _vocab(REASONS, np.asarray(code, dtype=np.int64) - 1),
        }
    )


def _truth_duplicates(
    table: str, source_id: pl.Series, of_table: pl.Series, of_id: pl.Series
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_table": pl.Series([table] * len(source_id), dtype=pl.String),
            "source_id": source_id,
            "duplicate_of_table": of_table,
            "duplicate_of_id": of_id,
        }
    )


# --- the generator ----------------------------------------------------------------------------


def generate(
    users: int,
    *,
    seed: int = 0,
    rates: Rates = Rates(),  # frozen: a shared default is safe
    circuits_per_user: tuple[int, int] = (1, 5),
    models_per_circuit: tuple[int, int] = (0, 8),
    sessions_per_user: tuple[int, int] = (1, 3),
) -> SyntheticLegacy:
    """Synthetic legacy data for ``users`` users, deterministic for ``seed``.

    The ``(low, high)`` ranges are inclusive; counts are drawn uniformly per user (circuits,
    sessions) or per valid circuit (tagged models). ``Rates.zero()`` gives perfectly clean data.
    """
    for label, (low, high) in {
        "circuits_per_user": circuits_per_user,
        "models_per_circuit": models_per_circuit,
        "sessions_per_user": sessions_per_user,
    }.items():
        if not 0 <= low <= high:
            raise ValueError(f"{label} must be (low, high) with 0 <= low <= high")
    if users < 0:
        raise ValueError("users must be >= 0")
    rng = np.random.default_rng(seed)

    user_ids = _uuids(rng, users)
    user_created = _T0 + rng.integers(0, 540 * _DAY, users)
    sessions = _sessions(rng, users, rates, sessions_per_user)
    circuits = _original_circuits(rng, rates, sessions, user_created, circuits_per_user)
    copyable = circuits.valid & (sessions.known_count[circuits.user] > 0)
    circuits = _with_diverged(rng, rates, sessions, circuits, copyable)

    copied = np.flatnonzero(copyable & _chance(rng, circuits.n_orig, rates.copied_profile))
    copy_of = np.repeat(copied, rng.integers(1, 4, len(copied)))
    copy_session = _pick(
        rng, circuits.user[copy_of], sessions.known_start, sessions.known_count, sessions.known
    )
    elements = _elements(rng, rates, sessions, circuits, copy_of, copy_session)

    # Canonical source of each circuit: its user_profiles row, or its canonical element.
    n_circuits = len(circuits.user)
    canonical = np.flatnonzero(~elements.is_copy)
    source_elem = np.zeros(n_circuits, dtype=np.int64)
    source_elem[elements.circuit[canonical]] = canonical
    source_table = pl.Series(np.where(circuits.saved, "saved_profiles", "user_profiles"))
    source_id = _frame_of(
        pl.when(pl.lit(circuits.saved))
        .then(elements.source_id.gather(source_elem) if len(canonical) else None)
        .otherwise(circuits.elem_id)
    )

    # The session "holding" a circuit: its canonical element's, else its first copy's, else
    # any session of the user that names them (-1 if none). Only valid circuits matter here,
    # and their canonical sessions name their user.
    home = np.where(circuits.valid, circuits.session, -1)
    first_copy = np.unique(copy_of, return_index=True)[1]
    home[copy_of[first_copy]] = copy_session[first_copy]
    free = np.flatnonzero((home < 0) & (sessions.known_count[circuits.user] > 0))
    home[free] = _pick(
        rng, circuits.user[free], sessions.known_start, sessions.known_count, sessions.known
    )

    models = _models(rng, rates, models_per_circuit, user_ids, sessions, circuits, home)

    auth_users = _auth_users(rng, user_ids, user_created)
    user_sessions = _user_sessions(rng, user_ids, user_created, sessions, elements)
    user_profiles = _user_profiles(rng, rates, user_ids, circuits)

    truth_links = pl.DataFrame(
        {
            "tagged_model_id": models.frame["id"],
            "true_source_table": source_table.gather(models.circuit),
            "true_source_id": source_id.gather(models.circuit),
            "indistinguishable": circuits.twin[models.circuit],
        }
    )
    rows = np.flatnonzero(
        ~circuits.saved[: circuits.n_orig] & (circuits.code[: circuits.n_orig] != _OK)
    )
    lost_sessions = np.flatnonzero((sessions.state == _S_NULL) | (sessions.state == _S_DANGLING))
    not_array = np.flatnonzero(sessions.state == _S_NOT_ARRAY)
    bad_elements = np.flatnonzero((elements.code != _OK) & (elements.code != _NOT_ARRAY))
    truth_quarantine = pl.concat(
        [
            _truth_quarantine("user_profiles", circuits.elem_id.gather(rows), circuits.code[rows]),
            _truth_quarantine(
                "user_sessions",
                sessions.ids.gather(lost_sessions),
                _SESSION_CODE[sessions.state[lost_sessions]],
            ),
            _truth_quarantine(
                "saved_profiles",
                _frame_of(_concat(sessions.ids.gather(not_array), "#*")),
                np.full(len(not_array), _NOT_ARRAY),
            ),
            _truth_quarantine(
                "saved_profiles",
                elements.source_id.gather(bad_elements),
                elements.code[bad_elements],
            ),
            models.quarantine,
        ]
    )
    clean_copies = np.flatnonzero(elements.is_copy & (elements.code == _OK))
    truth_duplicates = pl.concat(
        [
            _truth_duplicates(
                "saved_profiles",
                elements.source_id.gather(clean_copies),
                source_table.gather(elements.circuit[clean_copies]),
                source_id.gather(elements.circuit[clean_copies]),
            ),
            models.duplicates,
        ]
    )
    return SyntheticLegacy(
        auth_users=conform(auth_users, LEGACY_FRAMES["auth_users"]),
        user_sessions=conform(user_sessions, LEGACY_FRAMES["user_sessions"]),
        tagged_models=conform(models.frame, LEGACY_FRAMES["tagged_models"]),
        user_profiles=conform(user_profiles, LEGACY_FRAMES["user_profiles"]),
        truth_links=conform(truth_links, TRUTH_LINKS),
        truth_quarantine=conform(truth_quarantine, TRUTH_QUARANTINE),
        truth_duplicates=conform(truth_duplicates, TRUTH_DUPLICATES),
    )


def _auth_users(rng: np.random.Generator, ids: pl.Series, created: IntArray) -> pl.DataFrame:
    n = len(ids)
    name = _vocab(_json_words(_FULL_NAMES), rng.integers(0, len(_FULL_NAMES), n))
    handle = ids.str.slice(0, 8)
    shape = rng.random(n)  # metadata: 15% empty, 15% without avatar, else full
    meta = (
        pl.when(pl.lit(shape < 0.15))
        .then(pl.lit("{}"))
        .when(pl.lit(shape < 0.3))
        .then(_concat('{"username": "user_', handle, '", "full_name": ', name, '"}'))
        .otherwise(
            _concat(
                '{"username": "user_',
                handle,
                '", "full_name": ',
                name,
                '", "avatar_url": "https://avatars.example.org/',
                handle,
                '.png"}',
            )
        )
    )
    return pl.DataFrame(
        {
            "id": ids,
            "email": _frame_of(_concat("user", _num(np.arange(1, n + 1)), "@example.org")),
            "raw_user_meta_data": _frame_of(meta),
            "created_at": _ts(created),
        }
    )


def _user_sessions(
    rng: np.random.Generator,
    user_ids: pl.Series,
    user_created: IntArray,
    sessions: _Sessions,
    elements: _Elements,
) -> pl.DataFrame:
    n = len(sessions.user)
    local = _local_index(sessions.user, len(user_ids))
    created = user_created[sessions.user] + rng.integers(0, 300 * _DAY, n)
    updated = created + rng.integers(0, 60 * _DAY, n)
    desc = np.where(_chance(rng, n, 0.5), rng.integers(0, len(_SESSION_DESCRIPTIONS), n), -1)
    return pl.DataFrame(
        {
            "id": sessions.ids,
            "user_id": _frame_of(
                pl.when(pl.lit(sessions.state == _S_NULL))
                .then(pl.lit(None, pl.String))
                .when(pl.lit(sessions.state == _S_DANGLING))
                .then(_uuids(rng, n))
                .otherwise(user_ids.gather(sessions.user))
            ),
            "session_name": _frame_of(
                _concat(
                    _vocab(_SESSION_NAMES, rng.integers(0, len(_SESSION_NAMES), n)),
                    " ",
                    _num(local + 1),
                )
            ),
            "description": _vocab(_SESSION_DESCRIPTIONS, desc),
            "environment_variables": _vocab(_ENVIRONMENT, rng.integers(0, len(_ENVIRONMENT), n)),
            "visualization_settings": _vocab(
                _VISUALIZATION, rng.integers(0, len(_VISUALIZATION), n)
            ),
            "performance_settings": _vocab(_PERFORMANCE, rng.integers(0, len(_PERFORMANCE), n)),
            "saved_profiles": _saved_profiles(rng, sessions, elements),
            "is_active": _chance(rng, n, 0.7),
            "last_accessed": _ts(updated + rng.integers(0, 30 * _DAY, n)),
            "created_at": _ts(created),
            "updated_at": _ts(updated),
        }
    )


def _user_profiles(
    rng: np.random.Generator, rates: Rates, user_ids: pl.Series, c: _Circuits
) -> pl.DataFrame:
    rows = np.flatnonzero(~c.saved[: c.n_orig])
    n = len(rows)
    mess = _ParamMess.draw(rng, rates, c.case[rows])
    lo, hi = c.lo[rows], c.hi[rows]
    grid_size = c.grid_size[rows]
    computed = _chance(rng, n, 0.5)
    total = grid_size.astype(np.int64) ** 5
    valid = (total * rng.uniform(0.5, 1.0, n)).astype(np.int64)
    best = np.exp(rng.uniform(np.log(0.1), np.log(100.0), n))
    created, updated = c.created[rows], c.updated[rows]
    return pl.DataFrame(
        {
            "id": c.elem_id.gather(rows),
            "user_id": user_ids.gather(c.user[rows]),
            "name": _circuit_name(c.name_idx[rows], c.name_num[rows], as_json=False),
            "description": _description(c.desc_idx[rows], as_json=False),
            "parameters": _params_json(c.params[rows], mess, (lo, hi, _chance(rng, n, 0.6))),
            "grid_size": grid_size,
            "min_freq": lo,
            "max_freq": hi,
            "num_points": c.num_points[rows],
            "is_computed": computed,
            "computation_time": np.where(computed, rng.uniform(0.5, 120.0, n).round(3), np.nan),
            "total_points": np.where(computed, total, 0),
            "valid_points": np.where(computed, valid, 0),
            "computation_results": _frame_of(
                pl.when(pl.lit(computed)).then(
                    _concat('{"bestResnorm": ', _num(best), ', "validPoints": ', _num(valid), "}")
                )
            ),
            "created_at": _ts(created),
            "updated_at": _ts(updated),
        }
    ).with_columns(
        pl.col("computation_time").fill_nan(None),
        pl.when(pl.col("is_computed")).then(pl.col("total_points", "valid_points")),
    )
