"""SQL expressions that read legacy values the way DESIGN.md says, written for ``verify`` alone.

The transforms read the same values in Polars (``transforms.normalise``, ``transforms.ids``);
these are the second, independent home of those rules, kept apart on purpose and tested to
agree on the generator's worlds. Every expression is text of SQL over column expressions given
as text, and never raises on bad data: what cannot be read is null.
"""

from __future__ import annotations

from schemas.tolerances import FLOAT_SIG_DIGITS

WS = r"E' \t\n\r\f\v'"
NUMBER = r"'^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]{1,4})?$'"
# A JSON number's text (numeric_out: a plain decimal) of at most this many characters is zero or
# of magnitude within 1e-300..1e300, so it casts to float8 without the pattern or range checks.
SHORT_NUMBER = 300
EPOCH = "'1970-01-01 00:00:00+00'::timestamptz"
# 10^0 .. 10^22, each exact in float8.
POWERS_OF_TEN = "'{" + ",".join(f"1e{k}" for k in range(23)) + "}'::float8[]"
# RFC 3339 as the app writes it (``Date.toISOString()``): years 1000..9999, at most microseconds.
TIMESTAMP = (
    r"'^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9]([.][0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$'"
)


def num(text: str) -> str:
    """Text ``text`` as float8, null unless it reads as a finite number within 1e-300..1e300 or
    zero (``text`` is referenced several times)."""
    return (
        f"(case when {text} ~ {NUMBER} then (case when {text}::numeric = 0"
        f" or abs({text}::numeric) between 1e-300 and 1e300 then {text}::float8 end) end)"
    )


def number(value: str, text: str) -> str:
    """The JSON value ``value`` (``text``: the same as text, as ``->>`` gives it) as float8: a
    JSON number, or a string that reads as one once trimmed; null otherwise (see :func:`num`)."""
    trimmed = f"btrim({text}, {WS})"
    return (
        f"(case jsonb_typeof({value}) when 'number' then (case when length({text})"
        f" <= {SHORT_NUMBER} then {text}::float8 else {num(text)} end)"
        f" when 'string' then {num(trimmed)} end)"
    )


def member(json: str, key: str) -> str:
    """Member ``key`` of the JSON object ``json`` as float8 (:func:`number`)."""
    return number(f"({json}->'{key}')", f"({json}->>'{key}')")


def item(json: str, index: int) -> str:
    """Item ``index`` of the JSON array ``json`` as float8 (:func:`number`)."""
    return number(f"({json}->{index})", f"({json}->>{index})")


def parameter(json: str, key: str) -> str:
    """Circuit parameter ``key`` of the legacy JSON object ``json`` (``Rsh``, else ``Rs``)."""
    if key == "Rsh":
        return (
            f"(case when {json}->>'Rsh' is not null then {member(json, 'Rsh')}"
            f" else {member(json, 'Rs')} end)"
        )
    return member(json, key)


def usable(expr: str) -> str:
    """Whether a parameter value is usable: a finite number greater than zero."""
    return f"coalesce({expr} > 0 and {expr} < 'Infinity'::float8, false)"


def numeric(expr: str) -> str:
    """A numeric column as float8: NaN stays NaN, magnitudes beyond float8 become +-Infinity
    (a plain cast would raise), so no value fails the query."""
    return (
        f"(case when {expr} is null then null::float8 when {expr} = 'NaN'::numeric"
        f" then 'NaN'::float8 when abs({expr}) < 1e300 then {expr}::float8"
        f" when {expr} > 0 then 'Infinity'::float8 else '-Infinity'::float8 end)"
    )


def valid_range(lo: str, hi: str) -> str:
    """Whether ``lo``..``hi`` (float8) is a usable frequency range: finite, 0 < lo < hi."""
    return (
        f"coalesce({lo} > 0 and {hi} > {lo} and {lo} < 'Infinity'::float8"
        f" and {hi} < 'Infinity'::float8, false)"
    )


def sig(expr: str) -> str:
    """Float8 ``expr`` (finite or null) rounded to FLOAT_SIG_DIGITS significant digits, a content
    key: ``round(expr::numeric, d)`` (its 15-digit decimal rounded half away from zero,
    d = FLOAT_SIG_DIGITS - 1 - floor(log10|expr|)) as float8, which is one-to-one on such
    decimals. Computed in float8 at a fraction of the cost, as round(|expr| * 10^d) / 10^d (the
    divisor exact, the quotient correctly rounded), where 0 <= d <= 22 and the product lies more
    than 1e-4 from a half (its error is under 1e-5, so the rounding is the same); in numeric
    otherwise."""
    d = f"({FLOAT_SIG_DIGITS} - 1 - floor(log(abs({expr}))))"
    scaled = f"(abs({expr}) * 10::float8 ^ {d})"
    fast = f"sign({expr}) * round({scaled}) / ({POWERS_OF_TEN})[{d}::int + 1]"
    return (
        f"(case when {expr} is null or {expr} = 0 then {expr}"
        f" when {d} between 0 and 22 and abs({scaled} - floor({scaled}) - 0.5) > 1e-4"
        f" then {fast} else round({expr}::numeric, {d}::int)::float8 end)"
    )


def trimmed(expr: str) -> str:
    """Text ``expr`` without leading and trailing white space."""
    return f"regexp_replace({expr}, '^\\s+|\\s+$', '', 'g')"


TS_RANGE = "'0001-01-01 00:00:00+00' and '9999-12-31 23:59:59.999999+00'"
FLOAT_LIMIT = "1e308"


def ts(expr: str) -> str:
    """A timestamptz the target can hold (finite, years 1 to 9999), else null."""
    return f"(case when {expr} between {TS_RANGE} then {expr} end)"


def bad_ts(expr: str) -> str:
    """Whether a timestamptz is set but not one the target can hold."""
    return f"({expr} is not null and not ({expr} between {TS_RANGE}))"


def bad_number(expr: str) -> str:
    """Whether a numeric is beyond what float8 (and the frames) can hold (NaN is fine)."""
    return f"({expr} is not null and {expr} <> 'NaN' and abs({expr}) >= {FLOAT_LIMIT})"


def micros(expr: str) -> str:
    """A timestamptz as microseconds since the epoch (bigint)."""
    return f"(extract(epoch from {expr}) * 1000000)::bigint"


def timestamp(text: str) -> str:
    """Text ``text`` as timestamptz when it is an RFC 3339 timestamp of a real day, else null."""
    y, m, d = (f"substr({text}, {a}, {n})::int" for a, n in ((1, 4), (6, 2), (9, 2)))
    last_day = f"extract(day from make_date({y}, {m}, 1) + interval '1 month - 1 day')"
    return (
        f"(case when {text} ~ {TIMESTAMP} then (case when {d} <= {last_day}"
        f" then {text}::timestamptz end) end)"
    )


def decoded(json: str, key: str) -> str:
    """The jsonb value ``json`` decoded once when it is a JSON *string* whose text is a JSON
    object or array (the app wrote ``JSON.stringify(...)`` into jsonb columns); as it is
    otherwise. ``key`` (SQL text naming the value, ``<table>:<id>``) is tested against the
    parameter ``undecodable`` (text[]): strings known not to parse, which are left as they are
    (PostgreSQL 15 cannot test a text for JSON without failing the query: the runner finds
    them when the fast path fails)."""
    text = f"({json} #>> '{{}}')"
    return (
        f"(case when jsonb_typeof({json}) = 'string' and btrim({text}, {WS}) ~ '^[[{{]'"
        f" and not ({key} = any(%(undecodable)s::text[])) then {text}::jsonb else {json} end)"
    )


DEPTH = 128
"""JSON nested this many levels or more is unreadable (the limit of the transforms' reader)."""


def too_deep(json: str) -> str:
    """Whether the jsonb value ``json`` nests :data:`DEPTH` levels or more."""
    return f"coalesce(jsonb_path_exists({json}, 'strict $.**{{{DEPTH} to last}}'), false)"


def readable(json: str) -> str:
    """``json``, or, when it nests too deep to read, a JSON string standing for it (read as
    malformed, not an array)."""
    return f"(case when {too_deep(json)} then '\"unreadable\"'::jsonb else {json} end)"


def stable_uuid(kind: str, key: str) -> str:
    """The derived id of ``transforms.ids.stable_uuid(kind, key)``: a version-8 uuid of the md5
    of ``circuit-migrate/<kind>/<key>`` (``key`` is SQL text)."""
    h = f"md5('circuit-migrate/{kind}/' || {key})"
    return (
        f"(substr({h}, 1, 12) || '8' || substr({h}, 14, 3)"
        f" || substr('89ab89ab89ab89ab', strpos('0123456789abcdef', substr({h}, 17, 1)), 1)"
        f" || substr({h}, 18, 15))::uuid::text"
    )
