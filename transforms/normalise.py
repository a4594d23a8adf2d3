"""Circuit JSON (legacy ``parameters`` / ``circuit_parameters`` / saved_profiles elements) to
typed columns, with a per-row problem description and a repairs frame.

The legacy JSON arrives as text. Parameter values are read as the exact text of each number
(``json_decode`` into strings; rows it cannot take through ``transforms.jsontext``; invalid JSON
and missing keys read as null, never raise), cast to Float64 non-strictly, and flagged. Repairs:

- ``renamed_key``: the older key ``Rs`` used for ``Rsh``;
- ``string_number``: a number stored as a JSON string (``"100"``).
"""

from __future__ import annotations

import polars as pl

from schemas.frames import REPAIRS, conform
from transforms import jsontext
from transforms.impedance import PARAMETERS

# Legacy spellings of a parameter key, in order of preference.
KEY_ALIASES: dict[str, tuple[str, ...]] = {"Rsh": ("Rsh", "Rs")}


def _aliases(key: str) -> tuple[str, ...]:
    return KEY_ALIASES.get(key, (key,))


def with_invalid_values(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (resolved legacy rows with ``reason``/``detail``) with the rows that hold a
    value no target column can hold (``invalid_values``, named by extract: an infinite or
    out-of-range timestamp, a number beyond float8) quarantined ``invalid_value``, unless a
    user problem came first."""
    if "invalid_values" not in frame.columns:
        return frame
    bad = pl.col("reason").is_null() & pl.col("invalid_values").is_not_null()
    return frame.with_columns(
        pl.when(bad).then(pl.lit("invalid_value")).otherwise(pl.col("reason")).alias("reason"),
        pl.when(bad)
        .then(pl.format("a value no target column can hold: {}", pl.col("invalid_values")))
        .otherwise(pl.col("detail"))
        .alias("detail"),
    )


def decoded_json(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """``frame`` with ``column`` (JSON text) decoded where it holds a JSON *string* whose text is
    a JSON object or array (the real app wrote ``JSON.stringify(...)`` into jsonb columns): the
    column then holds that text; ``_was_<column>`` keeps the original (null where nothing was
    decoded) and ``_bad_<column>`` is true for a JSON string that holds no JSON object or array
    (judged later: a quarantine)."""
    text = pl.col(column)
    is_string = text.str.starts_with('"').fill_null(False)
    inner = pl.when(is_string).then(text.str.json_decode(pl.String))
    container = (
        inner.str.strip_chars().str.head(1).is_in(["{", "["])
        & inner.str.json_path_match("$").is_not_null()
    )
    ok = is_string & container.fill_null(False)
    return frame.with_columns(
        pl.when(ok).then(inner).otherwise(text).alias(column),
        pl.when(ok).then(text).alias(f"_was_{column}"),
        (is_string & ~ok).alias(f"_bad_{column}"),
    )


def decoded_repairs(
    frame: pl.DataFrame, column: str, source_table: str, id_col: str, field: str | None = None
) -> pl.DataFrame:
    """Repairs ``decoded_json_string`` (original: the JSON string as it was) of the rows
    :func:`decoded_json` decoded."""
    return frame.filter(pl.col(f"_was_{column}").is_not_null()).select(
        pl.lit(source_table).alias("source_table"),
        pl.col(id_col).alias("source_id"),
        pl.lit(field or column).alias("field"),
        pl.lit("decoded_json_string").alias("kind"),
        pl.col(f"_was_{column}").alias("original"),
        pl.lit(None, dtype=pl.String).alias("repaired"),
    )


def undecodable_detail(column: str) -> pl.Expr:
    """The quarantine detail of a JSON string that holds no JSON object or array."""
    return pl.format(
        "{} is a JSON string that holds no JSON object or array: {}",
        pl.lit(column),
        pl.col(column).str.head(80),
    )


def json_value(text: pl.Expr, path: str) -> pl.Expr:
    """The JSON value at ``path`` (``$.Ra``) as text; null if absent or the text is not JSON."""
    return text.str.json_path_match(path)


def raw_parameter(text: pl.Expr, key: str) -> pl.Expr:
    """The raw text of parameter ``key`` in a JSON object, trying its legacy aliases in order."""
    return pl.coalesce([json_value(text, f"$.{alias}") for alias in _aliases(key)])


def is_string_valued(text: pl.Expr, key: str) -> pl.Expr:
    """True where the JSON object holds ``key`` as a JSON string (``"Ra": "100"``)."""
    return text.str.contains(f'"{key}"\\s*:\\s*"')


def as_float(raw: pl.Expr) -> pl.Expr:
    """Non-strict Float64 cast of a text value (null where it is not a number)."""
    return raw.str.strip_chars().cast(pl.Float64, strict=False)


def is_usable(value: pl.Expr) -> pl.Expr:
    """A parameter value is usable when it is a number within 1e-300..1e300 (finite, greater
    than zero, and not so extreme that no circuit could have it)."""
    return (value.is_not_null() & (value >= 1e-300) & (value <= 1e300)).fill_null(False)


_DECODE_KEYS = ("Rsh", "Rs", "Ra", "Ca", "Rb", "Cb")
_DECODE_CHUNK = 200_000  # rows decoded at once: bounds the decoder's temporaries
_DECODE_SPLIT = 50_000  # from this many rows, decode two halves in parallel
_DECODE_DTYPE = pl.Struct(
    {**{k: pl.String for k in _DECODE_KEYS}, "frequency_range": pl.List(pl.String)}
)


def _decoded_fields(text: pl.Series) -> pl.DataFrame:
    """Raw text of each parameter key (``Rsh``, ``Rs``...) and of ``frequency_range[0/1]``.

    Fast path: one ``json_decode`` of the flat JSON objects; a batch it cannot decode (a nested
    or otherwise unexpected value somewhere) takes the slow path, :mod:`transforms.jsontext` per
    row, which reads anything exactly and never raises.
    """
    if text.len() > _DECODE_CHUNK:
        return pl.concat(
            [
                _decoded_fields(text.slice(start, _DECODE_CHUNK))
                for start in range(0, text.len(), _DECODE_CHUNK)
            ]
        )
    if text.len() >= _DECODE_SPLIT:
        # two halves as two expressions of one select: Polars decodes them on two threads
        half = (text.len() + 1) // 2
        first = text.slice(0, half).rename("t")
        second = text.slice(half).rename("u").extend_constant(None, half - (text.len() - half))
        both = pl.DataFrame([first, second])
        try:
            decoded = both.select(
                pl.col("t").str.json_decode(_DECODE_DTYPE),
                pl.col("u").str.json_decode(_DECODE_DTYPE),
            )
        except pl.exceptions.PolarsError:
            decoded = None
        if decoded is not None:
            return pl.concat(
                [
                    _fields_of(decoded["t"].struct.unnest()),
                    _fields_of(decoded["u"].struct.unnest().head(text.len() - half)),
                ]
            )
    frame = text.rename("t").to_frame()
    flat = (
        pl.col("t").str.strip_chars().str.starts_with("{")
        & (pl.col("t").str.count_matches("{", literal=True) == 1)
    ).fill_null(False)
    try:
        decoded = frame.select(
            pl.when(flat).then(pl.col("t")).str.json_decode(_DECODE_DTYPE).alias("d")
        ).unnest("d")
        out = decoded.select(
            *[pl.col(k).alias(f"_k_{k}") for k in _DECODE_KEYS],
            pl.col("frequency_range").list.get(0, null_on_oob=True).alias("_k_fr0"),
            pl.col("frequency_range").list.get(1, null_on_oob=True).alias("_k_fr1"),
        )
        if bool(frame.select((~flat & pl.col("t").is_not_null()).any()).item()):
            slow = _path_fields(frame.select(pl.when(~flat).then(pl.col("t")).alias("t")))
            out = out.select([pl.coalesce(pl.col(c), slow[c]).alias(c) for c in out.columns])
        return out
    except pl.exceptions.PolarsError:
        return _path_fields(frame)


def _fields_of(decoded: pl.DataFrame) -> pl.DataFrame:
    return decoded.select(
        *[pl.col(k).alias(f"_k_{k}") for k in _DECODE_KEYS],
        pl.col("frequency_range").list.get(0, null_on_oob=True).alias("_k_fr0"),
        pl.col("frequency_range").list.get(1, null_on_oob=True).alias("_k_fr1"),
    )


def _path_fields(frame: pl.DataFrame) -> pl.DataFrame:
    """The slow path of :func:`_decoded_fields` (few rows): exact text, row by row."""
    found = [jsontext.members(t) if t is not None else None for t in frame["t"]]
    columns = {
        f"_k_{k}": [jsontext.as_match(m.get(k)) if m else None for m in found] for k in _DECODE_KEYS
    }
    pairs = [m.get("frequency_range") if m else None for m in found]
    columns["_k_fr0"] = [jsontext.path(p, 0) for p in pairs]
    columns["_k_fr1"] = [jsontext.path(p, 1) for p in pairs]
    return pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.String))


def parameters(frame: pl.DataFrame, text_col: str) -> pl.DataFrame:
    """``frame`` plus ``Rsh..Cb`` (Float64) read from the JSON object text in ``text_col``,
    ``param_problem`` (text naming each unusable parameter, null when all five are usable),
    ``_fr_lo``/``_fr_hi`` (its ``frequency_range``, Float64, null when absent) and the helper
    columns ``_raw_<key>``, ``_str_<key>``, ``_renamed_Rsh`` used by :func:`parameter_repairs`.
    """
    text = pl.col(text_col)
    fields = _decoded_fields(frame[text_col])
    out = pl.concat([frame, fields], how="horizontal")
    raw = [pl.coalesce("_k_Rsh", "_k_Rs").alias("_raw_Rsh")]
    raw += [pl.col(f"_k_{k}").alias(f"_raw_{k}") for k in PARAMETERS[1:]]
    renamed = pl.col("_k_Rsh").is_null() & pl.col("_k_Rs").is_not_null()
    out = out.with_columns(
        *raw,
        renamed.alias("_renamed_Rsh"),
        as_float(pl.col("_k_fr0")).alias("_fr_lo"),
        as_float(pl.col("_k_fr1")).alias("_fr_hi"),
    ).drop(fields.columns)
    out = out.with_columns([as_float(pl.col(f"_raw_{k}")).alias(k) for k in PARAMETERS])
    string_flags = [
        pl.when(pl.col("_renamed_Rsh"))
        .then(is_string_valued(text, "Rs"))
        .otherwise(is_string_valued(text, "Rsh"))
        .fill_null(False)
        .alias("_str_Rsh")
    ] + [is_string_valued(text, k).fill_null(False).alias(f"_str_{k}") for k in PARAMETERS[1:]]
    problems = [
        pl.when(~is_usable(pl.col(k))).then(
            pl.lit(f"{k}=")
            + pl.col(f"_raw_{k}").fill_null(
                pl.when(_names_key(text, k)).then(pl.lit("unreadable")).otherwise(pl.lit("missing"))
            )
        )
        for k in PARAMETERS
    ]
    problem = pl.concat_str(problems, separator=", ", ignore_nulls=True)
    # a document the JSON reader refuses (nested 128 levels or more, a number beyond float8):
    # say so, and show what each key holds as written
    suspect = pl.when(problem != "").then(text)  # parse again only where a problem was found
    unread = suspect.is_not_null() & suspect.str.json_path_match("$").is_null()
    shown = [
        pl.lit(f"{k}=")
        + pl.coalesce(
            *[
                text.str.extract(f'"{alias}"\\s*:\\s*("[^"]*"|[^,}}\\]\\s]+)', 1)
                for alias in _aliases(k)
            ],
            pl.lit("missing"),
        ).str.head(40)
        for k in PARAMETERS
    ]
    unread_problem = pl.format(
        "unreadable JSON (nested 128 levels or more, or a number beyond float8): {}",
        pl.concat_str(shown, separator=", "),
    )
    return out.with_columns(string_flags).with_columns(
        pl.when(unread)
        .then(unread_problem)
        .when(problem == "")
        .then(None)
        .otherwise(problem)
        .alias("param_problem")
    )


def _names_key(text: pl.Expr, key: str) -> pl.Expr:
    """Whether the JSON text names ``key`` (or one of its aliases) as an object key."""
    pattern = "|".join(f'"{alias}"' for alias in _aliases(key))
    return text.str.contains(f"({pattern})\\s*:").fill_null(False)


def parameter_repairs(frame: pl.DataFrame, source_table: str, id_col: str) -> pl.DataFrame:
    """Repairs frame (``schemas.frames.REPAIRS``) of the rows of a :func:`parameters` frame:
    renamed keys and string numbers of usable parameters."""
    parts: list[pl.DataFrame] = []
    renamed = frame.filter(pl.col("_renamed_Rsh")).select(
        pl.lit(source_table).alias("source_table"),
        pl.col(id_col).alias("source_id"),
        pl.lit("circuit_parameters.Rsh").alias("field"),
        pl.lit("renamed_key").alias("kind"),
        pl.lit("Rs").alias("original"),
        pl.lit("Rsh").alias("repaired"),
    )
    parts.append(renamed)
    for k in PARAMETERS:
        parts.append(
            frame.filter(pl.col(f"_str_{k}") & is_usable(pl.col(k))).select(
                pl.lit(source_table).alias("source_table"),
                pl.col(id_col).alias("source_id"),
                pl.lit(f"circuit_parameters.{k}").alias("field"),
                pl.lit("string_number").alias("kind"),
                pl.format('"{}"', pl.col(f"_raw_{k}")).alias("original"),
                pl.col(k).cast(pl.String).alias("repaired"),
            )
        )
    return pl.concat([conform(p, REPAIRS) for p in parts])


def drop_helpers(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` without the helper columns of :func:`parameters`."""
    return frame.drop(
        [c for c in frame.columns if c.startswith("_raw_") or c.startswith("_str_")]
        + [c for c in ("_renamed_Rsh", "_fr_lo", "_fr_hi") if c in frame.columns]
    )


# RFC 3339 as the app writes it (``Date.toISOString()``): years 1000..9999, at most microseconds.
TIMESTAMP = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9]([.][0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def timestamp(text: pl.Expr) -> pl.Expr:
    """An RFC 3339 timestamp text as a UTC datetime; null for anything else (a day that does
    not exist included)."""
    parsed = text.str.to_datetime(
        format="%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
    )
    return pl.when(text.str.contains(TIMESTAMP)).then(parsed)


def frequency_problem(min_freq: pl.Expr, max_freq: pl.Expr) -> pl.Expr:
    """Text describing an unusable frequency range (null when ``0 < min < max``, both finite)."""
    ok = (
        min_freq.is_finite() & max_freq.is_finite() & (min_freq > 0) & (max_freq > min_freq)
    ).fill_null(False)
    return (
        pl.when(ok)
        .then(None)
        .otherwise(
            pl.format(
                "min_freq={}, max_freq={}",
                min_freq.cast(pl.String).fill_null("null"),
                max_freq.cast(pl.String).fill_null("null"),
            )
        )
    )


def circuit_json(with_range: bool) -> pl.Expr:
    """JSON object text of the typed parameters (and ``frequency_range`` from ``min_freq`` /
    ``max_freq`` when ``with_range``)."""
    fields: list[pl.Expr] = [pl.col(k) for k in PARAMETERS]
    if with_range:
        fields.append(pl.concat_list(["min_freq", "max_freq"]).alias("frequency_range"))
    return pl.struct(fields).struct.json_encode()
