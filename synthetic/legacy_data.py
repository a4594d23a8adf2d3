"""Synthetic legacy data (DESIGN.md sections 2 and 3) with a known ground truth.

``generate`` builds the legacy frames of one schema state (``synthetic.app_states``: S1, the
DESIGN.md section 3 schema, by default) for N users, deterministically from a seed, plus the
truth the migration must reproduce: each circuit's canonical source, each tagged model's true
circuit, the rows that must be quarantined and why, and the sources that must merge.
Everything is vectorised (NumPy draws, Polars string expressions for the JSON text); there is
no Python loop per row.

The world behind the data: every user has sessions and circuits. In S1 a circuit lives either
in a legacy ``user_profiles`` row or, for ``SAVED_ONLY_SHARE`` of them, only as an element of
one session's ``saved_profiles`` (its *canonical source*). Valid circuits may be copied into
other sessions, identically (a duplicate that must merge) or with diverged parameters (a circuit
of its own, same name and element id). Tagged models are parameter sets near a valid circuit of
their user, tagged within its lifetime (``created_at``..``updated_at``); their ``resnorm_value``
is the section 2 resnorm against that circuit over its own grid (a ``saved_profiles``-only
circuit has the legacy default grid: 100 points).

The other states place the same kind of world in the app's other tables:

- **S2**: every circuit is a ``saved_configurations`` row (no ``saved_profiles``: copies and
  diverged copies are rows of their own); ``user_profiles`` holds one metadata row per user
  (``id`` = the user's id, as the app's ``handle_new_user`` trigger wrote it); ``explicit_link``
  of the tagged models carry ``configuration_id`` = their true circuit. No ``duplicate_tag``
  (the table is ``unique (user_id, session_id, model_id, tag_name)``).
- **S3**: every circuit (and copy) is a ``user_profiles`` row; sessions and tagged models are
  S2-shaped without ``configuration_id``.
- **S4**: S1, but ``S4_CONFIG_SHARE`` of the circuits live in the app's
  ``circuit_configurations`` (never copied into ``saved_profiles``); ``explicit_link`` of their
  models carry ``circuit_config_id`` and some sessions a ``current_circuit_config_id``.

The app's CHECK constraints keep ``saved_configurations`` and ``circuit_configurations`` rows
valid (grid 2..25, points 10..1000, ``0 < min < max``, a ``circuit_parameters`` object with the
six keys ``Rsh`` ... ``frequency_range``), so there only string numbers and bad values
(``invalid_parameters``) occur, and (S4, ``stale_frequency_range``) a ``frequency_range`` the
app reset to ``[0.1, 100000]`` while the columns kept the circuit's range: the columns are the
truth. Their REAL frequency columns hold float4 values (0.1 reads back as 0.10000000149011612
in float8, as 0.1 in text); ``resnorm_value`` and ``truth_circuits`` use the decimal values.

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
- ``saved_not_array``: per session of a known user: ``saved_profiles`` is an object, a string
  holding an object, or a number; quarantined as a whole: ``<session id>#*``,
  ``malformed_saved_profiles``.
- ``malformed_element``: per element of a session with a known user and an array.
- ``json_string_models``, ``json_string_profiles``, ``json_string_saved``,
  ``json_string_elements``: per tagged model's ``circuit_parameters``, ``user_profiles`` row's
  ``parameters``, session's ``saved_profiles`` array, element's ``parameters``: written as a
  jsonb *string* whose text is the JSON (as ``JSON.stringify`` into a jsonb column gives).
  Decoded by the migration (repair ``decoded_json_string``), never a quarantine.
- ``undecodable_json``: per tagged model, ``user_profiles`` row, element and session of a known
  user: a jsonb string whose text is truncated JSON and does not parse; quarantined
  (``invalid_parameters``; ``malformed_element`` for an element's ``parameters``;
  ``<session id>#*`` ``malformed_saved_profiles`` for a whole ``saved_profiles``).
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
- ``explicit_link``: per tagged model whose true circuit is in the state's configuration table
  (S2 ``saved_configurations``, S4 ``circuit_configurations``): the app's link column names it.
- ``stale_frequency_range``: per S4 ``circuit_configurations`` row whose range is not the
  default: its ``circuit_parameters.frequency_range`` is ``[0.1, 100000]``.

The quarantine causes of one row exclude each other (one reason per row): the rates of a group
(the four causes of a ``user_profiles`` row, the five of an element, the four of a session,
the five of a tagged model) are carved out of one uniform draw, so each keeps its exact rate.
Quarantined circuits get no tagged models and no copies, so every tagged model's true circuit
is valid. ``TWIN_SHARE`` of the users with two circuits or more have two valid circuits (in one
table) with different names and descriptions but identical parameters and grid: their tagged
models are ``indistinguishable``. ``truth_links`` covers every tagged model, quarantined or not.

The app's shapes: elements are ``{"name", "description", "parameters", "frequencyRange", "id":
"profile_<ms>_<base36>", "createdAt": Date.toISOString()}`` (``frequencyRange`` left out of
``1 - ELEMENT_RANGE_SHARE`` of the elements whose range is the default 0.1..100000); tagged
models' ``model_id`` is ``mesh-<index>``, ``model_<GG_ii_ii_ii_ii_ii>`` or
``dynamic-reference``, ``tag_category`` mostly ``'user'``, and ``MODEL_RANGE_SHARE`` of their
``circuit_parameters`` hold the circuit's ``frequency_range``.

Draws that came with a feature after the first release use streams of their own
(``_stream``), so a seed keeps the values the older draws gave.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import polars as pl

from schemas.frames import LEGACY_FRAMES, Schema, conform, empty
from synthetic.app_states import DEFAULT_UI_SETTINGS, STATE_FRAMES, SchemaState
from synthetic.app_states import schema_state as parse_state
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
S4_CONFIG_SHARE = 0.35
"""S4: share of circuits whose canonical source is the app's ``circuit_configurations``."""
MODEL_RANGE_SHARE = 0.8
"""Share of tagged models whose ``circuit_parameters`` hold ``frequency_range``."""
ELEMENT_RANGE_SHARE = 0.85
"""Share of elements of a circuit with the default range 0.1..100000 with ``frequencyRange``
(the others leave it out; elements of other circuits always have it)."""
DEFAULT_RANGE = (0.1, 100_000.0)

TRUTH_LINKS: Schema = {
    "tagged_model_id": pl.String,
    "true_source_table": pl.String,
    "true_source_id": pl.String,
    "indistinguishable": pl.Boolean,
    "explicit_link": pl.Boolean,  # the model's own link column names its true circuit
}
TRUTH_QUARANTINE: Schema = {"source_table": pl.String, "source_id": pl.String, "reason": pl.String}
TRUTH_DUPLICATES: Schema = {
    "source_table": pl.String,
    "source_id": pl.String,
    "duplicate_of_table": pl.String,
    "duplicate_of_id": pl.String,
}
TRUTH_CIRCUITS: Schema = {
    "source_table": pl.String,  # the canonical source of a valid circuit
    "source_id": pl.String,
    "user_id": pl.String,
    "min_freq": pl.Float64,  # its grid, as decimals (not float4-rounded)
    "max_freq": pl.Float64,
    "num_points": pl.Int32,
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

# Where a circuit source lives: index into SOURCE_TABLES.
SOURCE_TABLES = (
    "user_profiles",
    "saved_profiles",
    "saved_configurations",
    "circuit_configurations",
)
_PROFILES, _SAVED, _SAVED_CONFIGS, _APP_CONFIGS = range(4)
_CONFIG_TABLES = (_SAVED_CONFIGS, _APP_CONFIGS)
_COPY_TABLE: dict[SchemaState, int] = {
    "S1": _SAVED,
    "S2": _SAVED_CONFIGS,
    "S3": _PROFILES,
    "S4": _SAVED,
}
"""Where copies and diverged copies of a circuit go in each state."""

# Quarantine case of a parameters object / element (exclusive draw).
_MISSING, _BAD, _INVERTED, _MALFORMED_CASE, _UNDECODABLE = 1, 2, 3, 4, 5
_ROW_CASE = np.array([0, _MISSING, _BAD, _INVERTED, _UNDECODABLE])  # draw of row_cases -> case
# Per source table (rows) and case (columns): the quarantine code, and whether the case can
# occur there at all (the configuration tables' CHECKs allow only bad values).
_CASE_CODE = np.array(
    [
        [_OK, _INVALID_PARAMS, _INVALID_PARAMS, _INVALID_FREQ, _OK, _INVALID_PARAMS],
        [_OK, _INVALID_PARAMS, _INVALID_PARAMS, _INVALID_FREQ, _MALFORMED, _MALFORMED],
        [_OK, _OK, _INVALID_PARAMS, _OK, _OK, _OK],
        [_OK, _OK, _INVALID_PARAMS, _OK, _OK, _OK],
    ]
)
_CASE_ALLOWED = np.array(
    [
        [True, True, True, True, False, True],
        [True, True, True, True, True, True],
        [True, False, True, False, False, False],
        [True, False, True, False, False, False],
    ]
)
# Session states: ok, null user, dangling user, saved_profiles not an array / undecodable.
_S_OK, _S_NULL, _S_DANGLING, _S_NOT_ARRAY, _S_UNDECODABLE = range(5)
_SESSION_CODE = np.array([_OK, _NO_USER, _UNKNOWN_USER, _NOT_ARRAY, _NOT_ARRAY])

# Keys of the streams of later features (see ``_stream``).
_K_PLACEMENT, _K_APP_IDS, _K_DIVERGED, _K_COPY_ROWS, _K_ELEMENTS, _K_SAVED = range(101, 107)
_K_ROWS, _K_MODELS, _K_ML, _K_SESSIONS, _K_PROFILES = range(107, 112)
_K_CONFIG_COLUMNS = 120  # plus the table

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
_OTHER_CATEGORIES = ("research", "reference", "optimal", "interesting", "ml_generated")
_NOTES = ("looks right", "check Ca", "compare with donor 2", "résumé: ok", 'flagged as "odd"')
_FULL_NAMES = tuple(
    f"{first} {last}"
    for first in ("Ana", "Ben", "Chen", "Dana", "Emil", "Fatima", "José", "Kai", "Lena", "Noor")
    for last in ("Smith", "García", "O'Brien", "Müller", "Nakamura", "Okafor", "Rossi")
)
# The app's session settings (its demo data and its session services).
_VISUALIZATION = (
    '{"groupPortion": 0.2, "selectedOpacityGroups": [0], "visualizationType": "spider3d", '
    '"chromaEnabled": true, "resnormSpread": 1.0, "useResnormCenter": false, "showLabels": true}',
    '{"gridSize": 9, "defaultGridSize": 9, "visualizationType": "spider3d", '
    '"activeTab": "visualizer"}',
    "{}",
)
_PERFORMANCE = (
    '{"maxWorkers": 4, "chunkSize": 1000, "memoryThreshold": 7000, "enableCaching": true, '
    '"adaptiveLimits": true}',
    '{"useSymmetricGrid": true, "maxComputationResults": 5000, "gpuAcceleration": {"enabled": '
    'false, "preferWebGPU": true, "fallbackToCPU": true, "maxBatchSize": 65536, "deviceType": '
    '"discrete", "enableProfiling": false, "memoryThreshold": 1024}, "cpuSettings": '
    '{"maxWorkers": 4, "chunkSize": 5000}}',
    "{}",
)
_ENVIRONMENT = (
    "{}",
    '{"nodeOptions": "--max-old-space-size=8192", "computeWorkers": 4, "debugMode": false}',
    '{"nodeOptions": "--max-old-space-size=8192", "computeWorkers": 2, "memoryLimit": "8GB", '
    '"cacheSize": "1GB", "debugMode": false}',
)
_UI_SETTINGS = (
    DEFAULT_UI_SETTINGS,
    DEFAULT_UI_SETTINGS.replace('"visualizer"', '"math"').replace("35", "50"),
    DEFAULT_UI_SETTINGS.replace('"color"', '"opacity"').replace('"white"', '"black"'),
)
_IMPEDANCE_POINTS = 5  # points of the impedance_spectrum some S2/S3 models carry


@dataclass(frozen=True)
class Rates:
    """Probability of each messy or app-shaped case (see the module docstring)."""

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
    json_string_models: float = 0.6
    json_string_profiles: float = 0.05
    json_string_saved: float = 0.05
    json_string_elements: float = 0.05
    undecodable_json: float = 0.005
    explicit_link: float = 0.5
    stale_frequency_range: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Rates.{f.name} must be a probability in [0, 1], got {value}")
        if sum(self.element_cases) > 1.0 or sum(self.model_cases) > 1.0:
            raise ValueError("the exclusive quarantine rates of one row sum to more than 1")
        if sum(self.session_cases) > 1.0:
            raise ValueError(
                "null_user + dangling_user + saved_not_array + undecodable_json exceeds 1"
            )

    @property
    def row_cases(self) -> tuple[float, float, float, float]:
        """Exclusive quarantine causes of a ``user_profiles`` row."""
        return (self.missing_key, self.bad_value, self.inverted_freq, self.undecodable_json)

    @property
    def element_cases(self) -> tuple[float, float, float, float, float]:
        """Exclusive quarantine causes of a ``saved_profiles`` element."""
        return (
            self.missing_key,
            self.bad_value,
            self.inverted_freq,
            self.malformed_element,
            self.undecodable_json,
        )

    @property
    def session_cases(self) -> tuple[float, float, float, float]:
        """Exclusive states of a session: null user, dangling user, not an array, undecodable."""
        return (self.null_user, self.dangling_user, self.saved_not_array, self.undecodable_json)

    @property
    def model_cases(self) -> tuple[float, float, float, float, float]:
        """Exclusive cases of a tagged model: null user, dangling user, missing key, bad value,
        undecodable string."""
        return (
            self.null_user,
            self.dangling_user,
            self.missing_key,
            self.bad_value,
            self.undecodable_json,
        )

    @classmethod
    def zero(cls) -> Rates:
        """Every rate 0: perfectly clean data."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


@dataclass(frozen=True)
class SyntheticLegacy:
    """The legacy frames of one schema state and their ground truth.

    The frames hold each legacy table as the database holds it in the state (columns of
    ``synthetic.app_states.STATE_FRAMES``: what ``flows.seed`` loads); ``saved_configurations``
    (S2) and ``circuit_configurations`` (S4) are None in the states without them.
    ``extracted()`` gives them in the shape extract reads them.
    """

    auth_users: pl.DataFrame
    user_sessions: pl.DataFrame
    tagged_models: pl.DataFrame
    user_profiles: pl.DataFrame
    truth_links: pl.DataFrame
    truth_quarantine: pl.DataFrame
    truth_duplicates: pl.DataFrame
    truth_circuits: pl.DataFrame | None = None
    saved_configurations: pl.DataFrame | None = None
    circuit_configurations: pl.DataFrame | None = None
    schema_state: SchemaState = "S1"

    def legacy_tables(self) -> dict[str, pl.DataFrame]:
        """The frames of the state's tables, ``auth_users`` first, in load order."""
        out: dict[str, pl.DataFrame] = {}
        for name in STATE_FRAMES[self.schema_state]:
            frame = getattr(self, name)
            if frame is None:
                raise ValueError(f"{self.schema_state} data lacks its {name} frame")
            out[name] = frame
        return out

    def extracted(self) -> dict[str, pl.DataFrame]:
        """The frames as extract gives them, in any state (``schemas.frames.LEGACY_FRAMES``):
        absent columns null (``is_interesting`` false), the app's link (S2 ``configuration_id``,
        S4 ``circuit_config_id``) as ``explicit_config_id``, S2's ``user_profiles`` as
        ``profile_metadata``, the configuration tables as ``app_configurations`` with their REAL
        values as the shortest decimal of the float4 (0.1)."""
        models = self.tagged_models
        links = [c for c in ("configuration_id", "circuit_config_id") if c in models.columns]
        if links:
            models = models.with_columns(pl.coalesce(links).alias("explicit_config_id"))
        metadata = self.schema_state == "S2"
        configs = [
            frame.rename(
                {"min_frequency": "min_freq", "max_frequency": "max_freq"}, strict=False
            ).with_columns(
                pl.lit(table).alias("source_table"),
                pl.col("min_freq", "max_freq", "computation_time")
                .cast(pl.Float32)
                .cast(pl.String)
                .cast(pl.Float64),
            )
            for table in ("saved_configurations", "circuit_configurations")
            if (frame := getattr(self, table)) is not None
        ]
        sources: dict[str, pl.DataFrame | None] = {
            "auth_users": self.auth_users,
            "user_sessions": self.user_sessions,
            "tagged_models": models,
            "user_profiles": None if metadata else self.user_profiles,
            "profile_metadata": self.user_profiles if metadata else None,
            "app_configurations": pl.concat(configs, how="diagonal") if configs else None,
        }
        out: dict[str, pl.DataFrame] = {}
        for name, schema in LEGACY_FRAMES.items():
            frame = sources.get(name)
            if frame is None:
                out[name] = empty(schema)
                continue
            absent = [
                (pl.lit(False) if column == "is_interesting" else pl.lit(None)).alias(column)
                for column in schema
                if column not in frame.columns
            ]
            out[name] = conform(frame.with_columns(absent), schema)
        return out

    def truth(self) -> dict[str, pl.DataFrame]:
        """The truth frames by name (``links``, ``quarantine``, ``duplicates``, ``circuits``)."""
        circuits = self.truth_circuits if self.truth_circuits is not None else empty(TRUTH_CIRCUITS)
        return {
            "links": self.truth_links,
            "quarantine": self.truth_quarantine,
            "duplicates": self.truth_duplicates,
            "circuits": circuits,
        }


# --- small vectorised helpers -----------------------------------------------------------------

_Part = str | pl.Expr | pl.Series


def _concat(*parts: _Part) -> pl.Expr:
    """Concatenate text: ``str`` parts are literals, Series and expressions are values."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str | pl.Series) else p for p in parts])


def _frame_of(expr: pl.Expr) -> pl.Series:
    return pl.select(expr.alias("x")).to_series()


def _stream(rng: np.random.Generator, key: int) -> np.random.Generator:
    """A generator of its own for the draws of a later feature: a child of ``rng``'s seed with a
    fixed key, so neither ``rng``'s draws nor the order of the features moves it."""
    seq = rng.bit_generator.seed_seq  # type: ignore[attr-defined]
    assert isinstance(seq, np.random.SeedSequence)
    child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, key))
    return np.random.default_rng(child)


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


_BASE36 = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def _app_ids(rng: np.random.Generator, created: IntArray) -> pl.Series:
    """The app's element ids: ``profile_${Date.now()}_${Math.random().toString(36).substr(2,
    9)}`` (9 base-36 digits, a few 8), with ``Date.now()`` the creation time."""
    n = len(created)
    digits = np.ascontiguousarray(_BASE36[rng.integers(0, 36, (n, 9))])
    text = pl.Series(digits.view("S9").ravel(), dtype=pl.Binary).cast(pl.String)
    short = pl.Series(rng.random(n) < 0.03)
    millis = pl.Series(np.asarray(created, dtype=np.int64) // 1000)
    rand = _frame_of(pl.when(pl.lit(short)).then(text.str.slice(0, 8)).otherwise(pl.lit(text)))
    return _frame_of(_concat("profile_", millis.cast(pl.String), "_", rand))


def _exclusive(rng: np.random.Generator, n: int, rates: tuple[float, ...]) -> IntArray:
    """Per row 0 (none) or case i + 1; the cases exclude each other, each at its own rate.

    A rate appended to ``rates`` leaves the cases drawn before it where they were."""
    below = np.searchsorted(np.cumsum(rates), rng.random(n), side="right")
    return np.asarray((below + 1) % (len(rates) + 1), dtype=np.int64)


def _judge(table: IntArray, case: IntArray, session_code: IntArray) -> tuple[IntArray, IntArray]:
    """The case each source keeps in its table (what its constraints allow, none in a lost
    session) and its quarantine code (a ``saved_profiles`` element's lost session's first)."""
    lost = (table == _SAVED) & (session_code != _OK)
    case = np.where(_CASE_ALLOWED[table, case] & ~lost, case, 0)
    code = np.where(lost, session_code, _CASE_CODE[table, case])
    return np.asarray(case, dtype=np.int64), np.asarray(code, dtype=np.int64)


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


def _float4(values: FloatArray) -> FloatArray:
    """``values`` stored in a REAL column, as float8 reads them back."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def _json_string(text: pl.Expr | pl.Series) -> pl.Expr:
    """The JSON string literal holding ``text`` (what ``JSON.stringify`` into jsonb gives).
    The JSON texts built here hold no raw control characters, only their escapes."""
    inner = text if isinstance(text, pl.Expr) else pl.lit(text)
    escaped = inner.str.replace_all("\\", "\\\\", literal=True).str.replace_all(
        '"', '\\"', literal=True
    )
    return _concat('"', escaped, '"')


def _truncated(text: pl.Expr | pl.Series, share: FloatArray) -> pl.Expr:
    """``text`` cut to ``share`` (< 1) of its characters, at least one: JSON that no longer
    parses (a JSON object or array needs its last character)."""
    inner = text if isinstance(text, pl.Expr) else pl.lit(text)
    keep = (inner.str.len_chars().cast(pl.Float64) * pl.lit(pl.Series(share))).floor()
    return inner.str.slice(0, pl.max_horizontal(keep.cast(pl.Int64), pl.lit(1)))


def _encoded(
    text: pl.Series, as_string: BoolArray, undecodable: BoolArray, share: FloatArray
) -> pl.Series:
    """``text`` as a jsonb string where ``as_string``, as a string of truncated JSON where
    ``undecodable``, unchanged elsewhere (each form built only for its own rows)."""
    out = text.clone()
    cut = np.flatnonzero(undecodable)
    if len(cut):
        out.scatter(cut, _frame_of(_json_string(_truncated(text.gather(cut), share[cut]))))
    wrap = np.flatnonzero(as_string & ~undecodable)
    if len(wrap):
        out.scatter(wrap, _frame_of(_json_string(text.gather(wrap))))
    return out


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


# --- the world: users, sessions, circuits, elements, rows, models -----------------------------


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
    known = np.flatnonzero((state == _S_OK) | (state >= _S_NOT_ARRAY))
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
    table: IntArray  # where its canonical source lives (index into SOURCE_TABLES)
    session: IntArray  # the canonical element's session (saved_profiles circuits), else -1
    case: IntArray  # exclusive quarantine case of the canonical source
    code: IntArray  # quarantine code of the canonical source
    params: FloatArray
    lo: FloatArray
    hi: FloatArray
    grid_size: IntArray
    num_points: IntArray  # the stored grid (saved_profiles circuits: the legacy default)
    name_idx: IntArray
    name_num: IntArray
    desc_idx: IntArray
    created: IntArray
    updated: IntArray  # created..updated is the circuit's lifetime; its models are tagged in it
    twin: BoolArray
    row_id: pl.Series  # the id of its canonical row (circuits with one)
    app_id: pl.Series  # the "id" of its saved_profiles elements

    @property
    def valid(self) -> BoolArray:
        return np.asarray(self.code == _OK)


def _placement(rng: np.random.Generator, state: SchemaState, saved: BoolArray) -> IntArray:
    """Where each original circuit's canonical source lives in ``state``."""
    s1 = np.where(saved, _SAVED, _PROFILES)
    if state == "S2":
        return np.full(len(saved), _SAVED_CONFIGS, dtype=np.int64)
    if state == "S3":
        return np.full(len(saved), _PROFILES, dtype=np.int64)
    if state == "S4":
        in_app = _stream(rng, _K_PLACEMENT).random(len(saved)) < S4_CONFIG_SHARE
        return np.asarray(np.where(in_app, _APP_CONFIGS, s1), dtype=np.int64)
    return np.asarray(s1, dtype=np.int64)


def _original_circuits(
    rng: np.random.Generator,
    rates: Rates,
    sessions: _Sessions,
    user_created: IntArray,
    per_user: tuple[int, int],
    state: SchemaState,
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
    table = _placement(rng, state, saved)
    session = np.where(table == _SAVED, session, -1)

    row_case = _ROW_CASE[_exclusive(rng, n, rates.row_cases)]
    elem_case = _exclusive(rng, n, rates.element_cases)
    session_code = _SESSION_CODE[_at(sessions.state, session, _S_OK)]
    case, code = _judge(table, np.where(saved, elem_case, row_case), session_code)

    params = np.empty((n, 5))
    params[:, [0, 1, 3]] = np.exp(rng.uniform(np.log(10.0), np.log(1e4), (n, 3)))
    params[:, [2, 4]] = np.exp(rng.uniform(np.log(1e-7), np.log(5e-5), (n, 2)))
    freq = _FREQ_RANGES[rng.choice(len(_FREQ_P), n, p=_FREQ_P)]
    lo, hi = _invert(rng, freq[:, 0], freq[:, 1], case == _INVERTED)
    grid_size = np.where(_chance(rng, n, 0.95), rng.integers(5, 21, n), rng.integers(2, 26, n))
    num_points = _NUM_POINTS[rng.choice(3, n, p=_NUM_POINTS_P)]
    bad_grid = _chance(rng, n, rates.grid_out_of_range) & (table == _PROFILES)
    bad_size = _chance(rng, n, 0.5)
    grid_size = np.where(bad_grid & bad_size, rng.choice(_BAD_GRID_SIZES, n), grid_size)
    num_points = np.where(bad_grid & ~bad_size, rng.choice(_BAD_NUM_POINTS, n), num_points)
    num_points = np.where(table == _SAVED, SAVED_NUM_POINTS, num_points)
    name_idx = rng.integers(0, len(_CIRCUIT_NAMES), n)
    name_num = rng.integers(1, 1000, n)
    desc_idx = np.where(_chance(rng, n, 0.8), rng.integers(0, len(_DESCRIPTIONS), n), -1)
    created = user_created[user] + rng.integers(0, 300 * _DAY, n)
    updated = created + rng.integers(_DAY, 120 * _DAY, n)

    # Twins: a user's first two circuits share parameters and grid under other names.
    start, _ = _groups(user, n_users)
    twin_users = np.flatnonzero((count >= 2) & _chance(rng, n_users, TWIN_SHARE))
    a, b = start[twin_users], start[twin_users] + 1
    keep = (code[a] == _OK) & (code[b] == _OK) & (table[a] == table[b])
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
        table=table,
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
        row_id=_uuids(rng, n),
        app_id=_app_ids(_stream(rng, _K_APP_IDS), created),
    )


def _copy_case(rng: np.random.Generator, rates: Rates, n: int) -> IntArray:
    """The drawn exclusive case of ``n`` copies (``_judge`` says what each keeps)."""
    return _exclusive(rng, n, rates.element_cases)


def _with_diverged(
    rng: np.random.Generator,
    rates: Rates,
    sessions: _Sessions,
    c: _Circuits,
    copyable: BoolArray,
    copy_table: int,
) -> _Circuits:
    """``c`` plus one diverged copy (a circuit of its own) of some copyable circuits."""
    of = np.flatnonzero(copyable & _chance(rng, c.n_orig, rates.diverged_copy))
    n = len(of)
    session = _pick(rng, c.user[of], sessions.known_start, sessions.known_count, sessions.known)
    table = np.full(n, copy_table, dtype=np.int64)
    case, code = _judge(table, _copy_case(rng, rates, n), _SESSION_CODE[sessions.state[session]])
    session = np.where(table == _SAVED, session, -1)
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
        table=np.concatenate([c.table, table]),
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
        row_id=pl.concat([c.row_id, _uuids(_stream(rng, _K_DIVERGED), n)]),
        app_id=pl.concat([c.app_id, c.app_id.gather(of)]),
    )


@dataclass(frozen=True)
class _Copies:
    """Identical copies of valid circuits: elements (S1, S4) or rows (S2, S3)."""

    circuit: IntArray
    session: IntArray  # the session an element copy is in
    case: IntArray
    code: IntArray

    def subset(self, mask: BoolArray) -> _Copies:
        return _Copies(self.circuit[mask], self.session[mask], self.case[mask], self.code[mask])


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
_MALFORMED_ELEMENTS: tuple[tuple[_Part, ...], ...] = (
    ('"corrupted profile"',),
    ("null",),
    ("42",),
    ("[1, 2, 3]",),
    ('{"name": ', _NAME, ', "id": "', _ID, '"}'),
    ('{"name": ', _NAME, ', "parameters": null, "id": "', _ID, '"}'),
    ('{"name": ', _NAME, ', "parameters": "see notes", "id": "', _ID, '"}'),
)


def _elements(
    rng: np.random.Generator, rates: Rates, sessions: _Sessions, c: _Circuits, copies: _Copies
) -> _Elements:
    canon = np.flatnonzero(c.table == _SAVED)
    circuit = np.concatenate([canon, copies.circuit])
    session = np.concatenate([c.session[canon], copies.session])
    case = np.concatenate([c.case[canon], copies.case])
    code = np.concatenate([c.code[canon], copies.code])
    is_copy = np.concatenate([np.zeros(len(canon), dtype=bool), np.ones(len(copies.circuit), bool)])
    n = len(circuit)
    order = np.lexsort((rng.random(n), session))  # shuffled within each session
    circuit, session, case, code, is_copy = (
        x[order] for x in (circuit, session, case, code, is_copy)
    )
    position = _local_index(session, len(sessions.user))
    source_id = _frame_of(_concat(sessions.ids.gather(session), "#", _num(position)))

    lo, hi = _invert(rng, c.lo[circuit], c.hi[circuit], is_copy & (case == _INVERTED))
    mess = _ParamMess.draw(rng, rates, case)
    malformed = rng.integers(0, len(_MALFORMED_ELEMENTS), n)
    own = _stream(rng, _K_ELEMENTS)
    as_string = own.random(n) < rates.json_string_elements
    share = own.uniform(0.2, 0.9, n)
    default = (lo == DEFAULT_RANGE[0]) & (hi == DEFAULT_RANGE[1])
    no_range = default & (own.random(n) >= ELEMENT_RANGE_SHARE)
    frame = pl.DataFrame(
        {
            "id": c.app_id.gather(circuit),
            "name": _circuit_name(c.name_idx[circuit], c.name_num[circuit], as_json=True),
            "description": _description(c.desc_idx[circuit], as_json=True),
            "parameters": _encoded(
                _params_json(c.params[circuit], mess), as_string, case == _UNDECODABLE, share
            ),
            "range": _frame_of(
                pl.when(pl.lit(pl.Series(no_range)))
                .then(pl.lit(""))
                .otherwise(_concat(', "frequencyRange": [', _num(lo), ", ", _num(hi), "]"))
            ),
            "created": _ts(c.created[circuit]).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"),
            "malformed": malformed,
        }
    )
    # The app's key order: the caller's keys, then "id" and "createdAt".
    text = _concat(
        '{"name": ', _NAME, ', "description": ', pl.col("description"), ', "parameters": ',
        pl.col("parameters"), pl.col("range"), ', "id": "', _ID, '", "createdAt": "',
        pl.col("created"), '"}',
    )  # fmt: skip
    for k, template in enumerate(_MALFORMED_ELEMENTS):
        broken = pl.lit(case == _MALFORMED_CASE) & (pl.col("malformed") == k)
        text = pl.when(broken).then(_concat(*template)).otherwise(text)
    return _Elements(
        circuit, session, case, code, is_copy, source_id, frame.select(text).to_series()
    )


def _saved_profiles(
    rng: np.random.Generator, rates: Rates, sessions: _Sessions, e: _Elements
) -> pl.Series:
    """Each session's ``saved_profiles`` JSON text; not-array sessions get an object, a string
    holding an object, or a number; undecodable ones a string of truncated JSON; some arrays
    are jsonb strings holding the array."""
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
    own = _stream(rng, _K_SAVED)
    as_string = own.random(n) < rates.json_string_saved
    share = own.uniform(0.2, 0.9, n)
    not_array = sessions.state == _S_NOT_ARRAY
    wrapped = _concat('{"profiles": ', array, "}")
    return _frame_of(
        pl.when(pl.lit(not_array & (form == 0)))
        .then(wrapped)
        .when(pl.lit(not_array & (form == 1)))
        .then(_json_string(wrapped))
        .when(pl.lit(not_array & (form == 2)))
        .then(pl.lit("0"))
        .when(pl.lit(sessions.state == _S_UNDECODABLE))
        .then(_json_string(_truncated(array, share)))
        .when(pl.lit(as_string))
        .then(_json_string(array))
        .otherwise(pl.lit(array))
    )


@dataclass(frozen=True)
class _Rows:
    """Circuit sources that are table rows: canonical rows, then copy rows (S2, S3)."""

    circuit: IntArray
    table: IntArray
    case: IntArray
    code: IntArray
    is_copy: BoolArray
    ids: pl.Series
    created: IntArray
    updated: IntArray

    def subset(self, mask: BoolArray) -> _Rows:
        idx = np.flatnonzero(mask)
        return _Rows(
            self.circuit[idx],
            self.table[idx],
            self.case[idx],
            self.code[idx],
            self.is_copy[idx],
            self.ids.gather(idx),
            self.created[idx],
            self.updated[idx],
        )


def _rows(rng: np.random.Generator, c: _Circuits, copies: _Copies, copy_table: int) -> _Rows:
    """The canonical rows of ``c`` and, when copies are rows, one row per copy (saved again
    later in the circuit's lifetime: same content, an id of its own)."""
    canon = np.flatnonzero(c.table != _SAVED)
    n = len(copies.circuit)
    own = _stream(rng, _K_COPY_ROWS)
    of = copies.circuit
    created = c.created[of] + (own.uniform(0.0, 1.0, n) * (c.updated[of] - c.created[of])).astype(
        np.int64
    )
    updated = created + own.integers(_DAY, 60 * _DAY, n)
    return _Rows(
        circuit=np.concatenate([canon, of]),
        table=np.concatenate([c.table[canon], np.full(n, copy_table, dtype=np.int64)]),
        case=np.concatenate([c.case[canon], copies.case]),
        code=np.concatenate([c.code[canon], copies.code]),
        is_copy=np.concatenate([np.zeros(len(canon), dtype=bool), np.ones(n, dtype=bool)]),
        ids=pl.concat([c.row_id.gather(canon), _uuids(own, n)]),
        created=np.concatenate([c.created[canon], created]),
        updated=np.concatenate([c.updated[canon], updated]),
    )


@dataclass(frozen=True)
class _Models:
    frame: pl.DataFrame  # every column of every state
    circuit: IntArray
    explicit: BoolArray  # the state's link column names the true circuit
    quarantine: pl.DataFrame
    duplicates: pl.DataFrame


def _model_ids(
    rng: np.random.Generator, circuit: IntArray, c: _Circuits, base: IntArray
) -> pl.Series:
    """The app's model ids, unique per circuit: ``mesh-<index in the result list>``,
    ``model_<GG_ii_ii_ii_ii_ii>`` (grid size, then the five parameter indices) and, for a
    circuit's first model sometimes, ``dynamic-reference``."""
    n = len(circuit)
    k = _local_index(circuit, len(c.user))
    kind = rng.random(n)
    gap = rng.integers(1, 30, len(c.user))
    grid = np.clip(c.grid_size[circuit], 2, 25)
    combos = grid.astype(np.int64) ** 5
    value = (base[circuit] + k) % combos
    digits = [pl.Series((value // grid**j) % grid).cast(pl.String).str.zfill(2) for j in range(5)]
    config_id = _concat(
        "model_", pl.Series(grid).cast(pl.String).str.zfill(2), "_", digits[0], "_", digits[1],
        "_", digits[2], "_", digits[3], "_", digits[4],
    )  # fmt: skip
    mesh = _concat("mesh-", _num(base[circuit] % 2000 + k * gap[circuit]))
    return _frame_of(
        pl.when(pl.lit((k == 0) & (kind < 0.04)))
        .then(pl.lit("dynamic-reference"))
        .when(pl.lit((kind >= 0.55) & (k < combos)))
        .then(config_id)
        .otherwise(mesh)
    )


def _ml_columns(
    rng: np.random.Generator,
    state: SchemaState,
    params: FloatArray,
    c: _Circuits,
    circuit: IntArray,
    tagged: IntArray,
) -> dict[str, pl.Series]:
    """S2/S3 columns of a tagged model: a short ``impedance_spectrum`` (``ImpedancePoint[]``)
    and a ``tagging_context`` for some, ``ml_relevance_score`` (S3: default 0), and
    ``is_ml_training_data``; nothing in the other states."""
    if state not in ("S2", "S3"):
        return {}
    n = len(circuit)
    freq = np.exp(
        np.linspace(np.log(c.lo[circuit]), np.log(c.hi[circuit]), _IMPEDANCE_POINTS, axis=1)
    )
    omega = 2j * np.pi * freq
    rsh, ra, ca, rb, cb = (params[:, [i]] for i in range(5))
    za, zb = ra / (1 + omega * ra * ca), rb / (1 + omega * rb * cb)
    z = rsh * (za + zb) / (rsh + za + zb)
    points = [
        _concat(
            '{"frequency": ',
            _num(freq[:, i]),
            ', "real": ',
            _num(z.real[:, i]),
            ', "imaginary": ',
            _num(z.imag[:, i]),
            ', "magnitude": ',
            _num(np.abs(z[:, i])),
            ', "phase": ',
            _num(np.degrees(np.angle(z[:, i]))),
            "}",
        )
        for i in range(_IMPEDANCE_POINTS)
    ]
    spectrum = pl.when(pl.lit(_chance(rng, n, 0.2))).then(
        _concat("[", pl.concat_str(points, separator=", "), "]")
    )
    stamp = _ts(tagged).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ")
    zoom = _num(np.round(rng.uniform(0.5, 3.0, n), 2))
    context = pl.when(pl.lit(_chance(rng, n, 0.3))).then(
        _concat('{"timestamp": "', stamp, '", "currentZoom": ', zoom, "}")
    )
    scored = _chance(rng, n, 0.25)
    score = np.where(scored, rng.uniform(0.0, 1.0, n).round(3), 0.0 if state == "S3" else np.nan)
    return {
        "impedance_spectrum": _frame_of(spectrum),
        "tagging_context": _frame_of(context),
        "ml_relevance_score": pl.Series(score).fill_nan(None),
        "is_ml_training_data": pl.Series(_chance(rng, n, 0.1)),
    }


def _models(
    rng: np.random.Generator,
    rates: Rates,
    per_circuit: tuple[int, int],
    user_ids: pl.Series,
    sessions: _Sessions,
    c: _Circuits,
    home: IntArray,
    state: SchemaState,
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

    # null user, dangling user, missing key, bad value, undecodable string
    case = _exclusive(rng, n, rates.model_cases)
    session = np.where(case == 2, -1, session)
    code = np.choose(
        case, [_OK, _NO_USER, _UNKNOWN_USER, _INVALID_PARAMS, _INVALID_PARAMS, _INVALID_PARAMS]
    )
    code = np.where((case == 1) & (session >= 0), _OK, code)  # takes the session's user
    session = _foreign_sessions(rng, rates, session, case, user, sessions)
    mess = _ParamMess.draw(rng, rates, np.choose(case, [0, 0, 0, _MISSING, _BAD, 0]))

    ids = _uuids(rng, n)
    dangling = _uuids(rng, n)
    model_base = rng.integers(1, 900_000, len(c.user))
    tag_name = _vocab(_TAGS, rng.integers(0, len(_TAGS), n))
    by_user = _chance(rng, n, 0.9)
    with_range = _chance(rng, n, MODEL_RANGE_SHARE)
    notes = _notes(rng, n)
    interesting = _chance(rng, n, 0.15)

    own = _stream(rng, _K_MODELS)
    model_id = _model_ids(own, circuit, c, model_base)
    other_category = _vocab(_OTHER_CATEGORIES, own.integers(0, len(_OTHER_CATEGORIES), n))
    as_string = own.random(n) < rates.json_string_models
    share = own.uniform(0.2, 0.9, n)
    link_table = _SAVED_CONFIGS if state == "S2" else _APP_CONFIGS
    explicit = (c.table[circuit] == link_table) & (own.random(n) < rates.explicit_link)
    app = _stream(rng, _K_ML)
    frame = pl.DataFrame(
        {
            "id": ids,
            "user_id": _frame_of(
                pl.when(pl.lit(case == 1))
                .then(pl.lit(None, pl.String))
                .when(pl.lit(case == 2))
                .then(dangling)
                .otherwise(user_ids.gather(user))
            ),
            "session_id": _take(sessions.ids, session),
            "model_id": model_id,
            "tag_name": tag_name,
            "tag_category": _frame_of(
                pl.when(pl.lit(by_user)).then(pl.lit("user")).otherwise(other_category)
            ),
            "circuit_parameters": _encoded(
                _params_json(params, mess, (c.lo[circuit], c.hi[circuit], with_range)),
                as_string,
                case == 5,
                share,
            ),
            "resnorm_value": score,
            "tagged_at": _ts(tagged),
            "notes": notes,
            "is_interesting": interesting,
            "link": _take(c.row_id, np.where(explicit, circuit, -1)),
            **_ml_columns(app, state, params, c, circuit, tagged),
        }
    )

    # Duplicate tags: tagged again later in the circuit's lifetime. Not on twin circuits, where
    # the link itself is ambiguous (flagged for review), so "must merge" would be ill-defined;
    # not in S2, whose tagged_models are unique (user_id, session_id, model_id, tag_name).
    eligible = (code == _OK) & (case == 0) & ~c.twin[circuit] & (state != "S2")
    dup_of = np.flatnonzero(eligible & _chance(rng, n, rates.duplicate_tag))
    n_dup = len(dup_of)
    later = rng.uniform(0.05, 1.0, n_dup) * (c.updated[circuit[dup_of]] - tagged[dup_of])
    dup = frame[dup_of].with_columns(
        id=_uuids(rng, n_dup),
        tagged_at=_ts(tagged[dup_of] + later.astype(np.int64)),
        notes=_notes(rng, n_dup),
        is_interesting=_chance(rng, n_dup, 0.15),
    )
    keep = np.ones(n, dtype=bool)
    if state == "S2":  # the app's unique key: keep the first of rows that would collide
        key = ["user_id", "session_id", "model_id", "tag_name"]
        first = frame.select(
            pl.struct(key).is_first_distinct() | pl.any_horizontal(pl.col(key).is_null())
        ).to_series()
        keep = first.to_numpy().astype(bool)
    frame = frame.filter(pl.Series(keep))
    quarantined = np.flatnonzero(keep & (code != _OK))
    return _Models(
        frame=pl.concat([frame, dup]),
        circuit=np.concatenate([circuit[keep], circuit[dup_of]]),
        explicit=np.concatenate([explicit[keep], explicit[dup_of]]),
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


def _truth_quarantine(table: str | pl.Series, source_id: pl.Series, code: IntArray) -> pl.DataFrame:
    tables = table if isinstance(table, pl.Series) else pl.Series([table] * len(source_id))
    return pl.DataFrame(
        {
            "source_table": tables.cast(pl.String),
            "source_id": source_id,
            "reason": _vocab(REASONS, np.asarray(code, dtype=np.int64) - 1),
        }
    )


def _truth_duplicates(
    table: str | pl.Series, source_id: pl.Series, of_table: pl.Series, of_id: pl.Series
) -> pl.DataFrame:
    tables = table if isinstance(table, pl.Series) else pl.Series([table] * len(source_id))
    return pl.DataFrame(
        {
            "source_table": tables.cast(pl.String),
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
    schema_state: str = "S1",
    circuits_per_user: tuple[int, int] = (1, 5),
    models_per_circuit: tuple[int, int] = (0, 8),
    sessions_per_user: tuple[int, int] = (1, 3),
) -> SyntheticLegacy:
    """Synthetic legacy data for ``users`` users in ``schema_state``, deterministic for ``seed``.

    The ``(low, high)`` ranges are inclusive; counts are drawn uniformly per user (circuits,
    sessions) or per valid circuit (tagged models). ``Rates.zero()`` gives perfectly clean data.
    """
    state = parse_state(schema_state)
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
    circuits = _original_circuits(rng, rates, sessions, user_created, circuits_per_user, state)
    copyable = (
        circuits.valid
        & (sessions.known_count[circuits.user] > 0)
        & (circuits.table != _APP_CONFIGS)  # the app's own configurations are never copied
    )
    copy_table = _COPY_TABLE[state]
    circuits = _with_diverged(rng, rates, sessions, circuits, copyable, copy_table)

    copied = np.flatnonzero(copyable & _chance(rng, circuits.n_orig, rates.copied_profile))
    copy_of = np.repeat(copied, rng.integers(1, 4, len(copied)))
    copy_session = _pick(
        rng, circuits.user[copy_of], sessions.known_start, sessions.known_count, sessions.known
    )
    case, code = _judge(
        np.full(len(copy_of), copy_table, dtype=np.int64),
        _copy_case(rng, rates, len(copy_of)),
        _SESSION_CODE[sessions.state[copy_session]],
    )
    copies = _Copies(copy_of, copy_session, case, code)
    as_elements = np.full(len(copy_of), copy_table == _SAVED)
    elements = _elements(rng, rates, sessions, circuits, copies.subset(as_elements))
    rows = _rows(rng, circuits, copies.subset(~as_elements), copy_table)

    # Canonical source of each circuit: its row, or its canonical element.
    n_circuits = len(circuits.user)
    canonical = np.flatnonzero(~elements.is_copy)
    source_elem = np.zeros(n_circuits, dtype=np.int64)
    source_elem[elements.circuit[canonical]] = canonical
    saved = circuits.table == _SAVED
    source_table = _vocab(SOURCE_TABLES, circuits.table)
    source_id = _frame_of(
        pl.when(pl.lit(saved))
        .then(elements.source_id.gather(source_elem) if len(canonical) else None)
        .otherwise(circuits.row_id)
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

    models = _models(rng, rates, models_per_circuit, user_ids, sessions, circuits, home, state)

    auth_users = _auth_users(rng, user_ids, user_created)
    user_sessions = _user_sessions(rng, rates, user_ids, user_created, sessions, elements)
    profile_rows = rows.subset(rows.table == _PROFILES)
    user_profiles = _circuit_rows(rng, rates, user_ids, circuits, profile_rows)
    frames = _state_frames(
        rng, rates, state, user_ids, circuits, rows, user_sessions, user_profiles, auth_users
    )

    truth_links = pl.DataFrame(
        {
            "tagged_model_id": models.frame["id"],
            "true_source_table": source_table.gather(models.circuit),
            "true_source_id": source_id.gather(models.circuit),
            "indistinguishable": circuits.twin[models.circuit],
            "explicit_link": models.explicit,
        }
    )
    has_saved = state in ("S1", "S4")
    bad_rows = np.flatnonzero(rows.code != _OK)
    lost_sessions = np.flatnonzero((sessions.state == _S_NULL) | (sessions.state == _S_DANGLING))
    not_array = np.flatnonzero((sessions.state >= _S_NOT_ARRAY) & has_saved)
    bad_elements = np.flatnonzero((elements.code != _OK) & (elements.code != _NOT_ARRAY))
    truth_quarantine = pl.concat(
        [
            _truth_quarantine(
                _vocab(SOURCE_TABLES, rows.table[bad_rows]),
                rows.ids.gather(bad_rows),
                rows.code[bad_rows],
            ),
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
    clean_rows = np.flatnonzero(rows.is_copy & (rows.code == _OK))
    truth_duplicates = pl.concat(
        [
            _truth_duplicates(
                "saved_profiles",
                elements.source_id.gather(clean_copies),
                source_table.gather(elements.circuit[clean_copies]),
                source_id.gather(elements.circuit[clean_copies]),
            ),
            _truth_duplicates(
                _vocab(SOURCE_TABLES, rows.table[clean_rows]),
                rows.ids.gather(clean_rows),
                source_table.gather(rows.circuit[clean_rows]),
                source_id.gather(rows.circuit[clean_rows]),
            ),
            models.duplicates,
        ]
    )
    valid = np.flatnonzero(circuits.valid)
    truth_circuits = pl.DataFrame(
        {
            "source_table": source_table.gather(valid),
            "source_id": source_id.gather(valid),
            "user_id": user_ids.gather(circuits.user[valid]),
            "min_freq": circuits.lo[valid],
            "max_freq": circuits.hi[valid],
            "num_points": circuits.num_points[valid],
        }
    )
    schemas = STATE_FRAMES[state]
    models_frame = models.frame.with_columns(
        pl.col("link").alias("configuration_id"), pl.col("link").alias("circuit_config_id")
    )
    return SyntheticLegacy(
        auth_users=conform(auth_users, schemas["auth_users"]),
        user_sessions=conform(frames["user_sessions"], schemas["user_sessions"]),
        tagged_models=conform(models_frame, schemas["tagged_models"]),
        user_profiles=conform(frames["user_profiles"], schemas["user_profiles"]),
        truth_links=conform(truth_links, TRUTH_LINKS),
        truth_quarantine=conform(truth_quarantine, TRUTH_QUARANTINE),
        truth_duplicates=conform(truth_duplicates, TRUTH_DUPLICATES),
        truth_circuits=conform(truth_circuits, TRUTH_CIRCUITS),
        saved_configurations=(
            conform(frames["saved_configurations"], schemas["saved_configurations"])
            if "saved_configurations" in schemas
            else None
        ),
        circuit_configurations=(
            conform(frames["circuit_configurations"], schemas["circuit_configurations"])
            if "circuit_configurations" in schemas
            else None
        ),
        schema_state=state,
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
    rates: Rates,
    user_ids: pl.Series,
    user_created: IntArray,
    sessions: _Sessions,
    elements: _Elements,
) -> pl.DataFrame:
    """The sessions with every column of S1 (the states' own columns come later)."""
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
            "saved_profiles": _saved_profiles(rng, rates, sessions, elements),
            "is_active": _chance(rng, n, 0.7),
            "last_accessed": _ts(updated + rng.integers(0, 30 * _DAY, n)),
            "created_at": _ts(created),
            "updated_at": _ts(updated),
        }
    )


def _circuit_rows(
    rng: np.random.Generator, rates: Rates, user_ids: pl.Series, c: _Circuits, rows: _Rows
) -> pl.DataFrame:
    """Rows of circuits with every column of S1's ``user_profiles``. In the configuration
    tables (``rows.table``) ``parameters`` always holds the six keys the CHECK asks for and
    ``Rsh`` by that name; elsewhere some are jsonb strings, or undecodable ones."""
    n = len(rows.circuit)
    of = rows.circuit
    config = np.isin(rows.table, _CONFIG_TABLES)
    mess = _ParamMess.draw(rng, rates, rows.case)
    lo, hi = c.lo[of], c.hi[of]
    grid_size = c.grid_size[of]
    computed = _chance(rng, n, 0.5)
    total = grid_size.astype(np.int64) ** 5
    valid = (total * rng.uniform(0.5, 1.0, n)).astype(np.int64)
    best = np.exp(rng.uniform(np.log(0.1), np.log(100.0), n))
    with_range = _chance(rng, n, 0.6) | config
    seconds = rng.uniform(0.5, 120.0, n).round(3)

    own = _stream(rng, _K_ROWS)
    as_string = (own.random(n) < rates.json_string_profiles) & ~config
    share = own.uniform(0.2, 0.9, n)
    lo, hi = _invert(own, lo, hi, rows.is_copy & (rows.case == _INVERTED))  # a copy's own
    stale = (
        (own.random(n) < rates.stale_frequency_range)
        & (rows.table == _APP_CONFIGS)
        & ~((lo == DEFAULT_RANGE[0]) & (hi == DEFAULT_RANGE[1]))
    )
    json_lo = np.where(stale, DEFAULT_RANGE[0], lo)
    json_hi = np.where(stale, DEFAULT_RANGE[1], hi)
    mess = _ParamMess(
        mess.missing, mess.bad, mess.bad_text, mess.stringify, mess.legacy_rs & ~config
    )
    parameters = _encoded(
        _params_json(c.params[of], mess, (json_lo, json_hi, with_range)),
        as_string,
        rows.case == _UNDECODABLE,
        share,
    )
    return pl.DataFrame(
        {
            "id": rows.ids,
            "user_id": user_ids.gather(c.user[of]),
            "name": _circuit_name(c.name_idx[of], c.name_num[of], as_json=False),
            "description": _description(c.desc_idx[of], as_json=False),
            "parameters": parameters,
            "grid_size": grid_size,
            "min_freq": lo,
            "max_freq": hi,
            "num_points": c.num_points[of],
            "is_computed": computed,
            "computation_time": np.where(computed, seconds, np.nan),
            "total_points": np.where(computed, total, 0),
            "valid_points": np.where(computed, valid, 0),
            "computation_results": _frame_of(
                pl.when(pl.lit(computed)).then(
                    _concat('{"bestResnorm": ', _num(best), ', "validPoints": ', _num(valid), "}")
                )
            ),
            "created_at": _ts(rows.created),
            "updated_at": _ts(rows.updated),
        }
    ).with_columns(
        pl.col("computation_time").fill_nan(None),
        pl.when(pl.col("is_computed")).then(pl.col("total_points", "valid_points")),
    )


def _config_frame(
    rng: np.random.Generator,
    rates: Rates,
    user_ids: pl.Series,
    c: _Circuits,
    rows: _Rows,
    table: int,
) -> pl.DataFrame:
    """``saved_configurations`` (S2) or the app's ``circuit_configurations`` (S4): REAL
    frequencies and computation time, ``is_public``, and (S4) ``ui_settings``."""
    wide = _circuit_rows(rng, rates, user_ids, c, rows.subset(rows.table == table))
    n = wide.height
    own = _stream(rng, _K_CONFIG_COLUMNS + table)
    ui = np.where(own.random(n) < 0.8, own.integers(0, len(_UI_SETTINGS), n), -1)
    real = ["min_freq", "max_freq", "computation_time"]
    frame = wide.with_columns(
        pl.col(real).cast(pl.Float32).cast(pl.Float64),
        pl.col("parameters").alias("circuit_parameters"),
        pl.Series("is_public", own.random(n) < 0.05),
        _vocab(_UI_SETTINGS, ui).alias("ui_settings"),
    )
    if table == _SAVED_CONFIGS:
        frame = frame.rename({"min_freq": "min_frequency", "max_freq": "max_frequency"})
    return frame


def _state_frames(
    rng: np.random.Generator,
    rates: Rates,
    state: SchemaState,
    user_ids: pl.Series,
    c: _Circuits,
    rows: _Rows,
    user_sessions: pl.DataFrame,
    user_profiles: pl.DataFrame,
    auth_users: pl.DataFrame,
) -> dict[str, pl.DataFrame]:
    """The frames ``state`` has besides ``auth_users`` and ``tagged_models``."""
    if state == "S1":
        return {"user_sessions": user_sessions, "user_profiles": user_profiles}
    if state == "S4":
        configs = _config_frame(rng, rates, user_ids, c, rows, _APP_CONFIGS)
        return {
            "user_sessions": _current_configs(rng, user_sessions, c, user_ids),
            "user_profiles": user_profiles,
            "circuit_configurations": configs,
        }
    sessions = _with_statistics(rng, user_sessions)
    if state == "S3":
        return {"user_sessions": sessions, "user_profiles": user_profiles}
    return {
        "user_sessions": sessions,
        "user_profiles": _metadata_profiles(rng, auth_users),
        "saved_configurations": _config_frame(rng, rates, user_ids, c, rows, _SAVED_CONFIGS),
    }


def _with_statistics(rng: np.random.Generator, sessions: pl.DataFrame) -> pl.DataFrame:
    """S2/S3 sessions: the app's statistics columns (absolute values it set)."""
    n = sessions.height
    own = _stream(rng, _K_SESSIONS)
    runs = np.where(own.random(n) < 0.3, 0, own.integers(1, 40, n))
    models = runs * own.integers(1_000, 200_000, n)
    seconds = np.round(runs * own.uniform(0.5, 120.0, n))
    return sessions.with_columns(
        pl.Series("total_computations", runs),
        pl.Series("total_models_generated", models),
        pl.Series("total_computation_time", (seconds * 1e6).astype(np.int64)).cast(
            pl.Duration("us")
        ),
    )


def _current_configs(
    rng: np.random.Generator, sessions: pl.DataFrame, c: _Circuits, user_ids: pl.Series
) -> pl.DataFrame:
    """S4 sessions: ``current_circuit_config_id`` names one of the valid app configurations of
    the session's user for some of the sessions that name a known user."""
    own = _stream(rng, _K_SESSIONS)
    configs = np.flatnonzero((c.table == _APP_CONFIGS) & c.valid)  # originals: by user
    start, count = _groups(c.user[configs], len(user_ids))
    index = pl.DataFrame({"user_id": user_ids, "user": np.arange(len(user_ids))})
    user = sessions.select("user_id").join(index, on="user_id", how="left")["user"]
    user_of = user.fill_null(-1).to_numpy().astype(np.int64)
    has = (user_of >= 0) & (_at(count, user_of, 0) > 0)
    chosen = np.flatnonzero(has & (own.random(len(user_of)) < 0.6))
    pick = np.full(len(user_of), -1, dtype=np.int64)
    pick[chosen] = _pick(own, user_of[chosen], start, count, configs)
    return sessions.with_columns(_take(c.row_id, pick).alias("current_circuit_config_id"))


def _metadata_profiles(rng: np.random.Generator, auth_users: pl.DataFrame) -> pl.DataFrame:
    """S2 ``user_profiles``: one row per user as ``handle_new_user`` wrote it (full name and
    avatar from the auth metadata), some with the username from it (unique)."""
    n = auth_users.height
    own = _stream(rng, _K_PROFILES)
    meta = pl.col("raw_user_meta_data")
    return auth_users.select(
        "id",
        pl.when(pl.lit(pl.Series(own.random(n) < 0.5)))
        .then(meta.str.json_path_match("$.username"))
        .alias("username"),
        meta.str.json_path_match("$.full_name").alias("full_name"),
        meta.str.json_path_match("$.avatar_url").alias("avatar_url"),
        pl.col("created_at"),
        (
            pl.col("created_at")
            + pl.lit(pl.Series(own.integers(0, 90 * _DAY, n))).cast(pl.Duration("us"))
        ).alias("updated_at"),
    ).with_columns(
        pl.when(pl.col("username").is_first_distinct()).then(pl.col("username")).alias("username")
    )
