"""``user_sessions.saved_profiles`` (a JSON array per session) exploded into one row per element.

A session whose ``saved_profiles`` is SQL NULL has zero elements. One whose value is not a JSON
array (an object, a scalar, invalid JSON) yields a single malformed row with source id
``<session id>#*``. Every element of an array yields a row with source id
``<session id>#<index>``, whatever its content (the caller quarantines unreadable ones).
"""

from __future__ import annotations

import polars as pl

from transforms import jsontext

ELEMENTS_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "session_id": pl.String,
    "element_index": pl.Int32,  # -1 for the malformed '#*' row
    "source_id": pl.String,
    "element": pl.String,  # the element as JSON text (the raw text for a malformed array)
    "is_object": pl.Boolean,
    "malformed_array": pl.Boolean,
    # the element's parameters and frequencyRange items, each exactly as written (jsontext.path)
    "parameters": pl.String,
    "frequency_lo": pl.String,
    "frequency_hi": pl.String,
}


def saved_profile_elements(sessions: pl.DataFrame) -> pl.DataFrame:
    """One row per saved_profiles element (or malformed array) of ``sessions`` (id,
    saved_profiles), in the shape ``ELEMENTS_SCHEMA``. JSON that nests 128 levels or more is
    unreadable (a malformed array), the same limit everywhere the migration reads JSON."""
    readable = pl.col("saved_profiles").str.json_path_match("$").is_not_null()
    rows = sessions.select("id", "saved_profiles", readable.alias("_ok")).filter(
        pl.col("saved_profiles").is_not_null()
        & (pl.col("saved_profiles").str.strip_chars() != "[]")
    )
    session_ids: list[str] = []
    indexes: list[int] = []
    texts: list[str] = []
    objects: list[bool] = []
    malformed: list[bool] = []
    parameters: list[str | None] = []
    lows: list[str | None] = []
    highs: list[str | None] = []
    for sid, text, ok in rows.iter_rows():
        elements = jsontext.items(text) if ok else None
        if elements is None:
            session_ids.append(sid)
            indexes.append(-1)
            texts.append(text)
            objects.append(False)
            malformed.append(True)
            parameters.append(None)
            lows.append(None)
            highs.append(None)
            continue
        for i, element in enumerate(elements):
            session_ids.append(sid)
            indexes.append(i)
            texts.append(element)
            objects.append(element.startswith("{"))
            malformed.append(False)
            fields = jsontext.members(element) or {}
            parameters.append(jsontext.as_match(fields.get("parameters")))
            pair = fields.get("frequencyRange")
            lows.append(jsontext.path(pair, 0))
            highs.append(jsontext.path(pair, 1))
    frame = pl.DataFrame(
        {
            "session_id": session_ids,
            "element_index": indexes,
            "element": texts,
            "is_object": objects,
            "malformed_array": malformed,
            "parameters": parameters,
            "frequency_lo": lows,
            "frequency_hi": highs,
        },
        schema={k: v for k, v in ELEMENTS_SCHEMA.items() if k != "source_id"},
    )
    source_id = (
        pl.when(pl.col("malformed_array"))
        .then(pl.col("session_id") + "#*")
        .otherwise(pl.format("{}#{}", pl.col("session_id"), pl.col("element_index")))
    )
    return frame.with_columns(source_id.alias("source_id")).select(list(ELEMENTS_SCHEMA))


def json_payload(text: pl.Expr) -> pl.Expr:
    """``text`` when it is valid JSON, else ``text`` encoded as a JSON string (jsonb-safe)."""
    # JSON null reads as a null match: it is valid JSON all the same
    valid = text.str.json_path_match("$").is_not_null() | (text.str.strip_chars() == "null")
    encoded = pl.struct(text.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
    return pl.when(valid).then(text).otherwise(encoded)
