"""``user_sessions.saved_profiles`` (a JSON array per session) exploded into one row per element.

A session whose ``saved_profiles`` is SQL NULL has zero elements. One whose value is not a JSON
array (an object, a scalar, invalid JSON) yields a single malformed row with source id
``<session id>#*``. Every element of an array yields a row with source id
``<session id>#<index>``, whatever its content (the caller quarantines unreadable ones).
"""

from __future__ import annotations

import json

import polars as pl

ELEMENTS_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "session_id": pl.String,
    "element_index": pl.Int32,  # -1 for the malformed '#*' row
    "source_id": pl.String,
    "element": pl.String,  # the element as JSON text (the raw text for a malformed array)
    "is_object": pl.Boolean,
    "malformed_array": pl.Boolean,
}


_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


def _element_texts(text: str) -> list[str] | None:
    """The elements of the JSON array ``text`` as the exact slices of ``text`` they are (so a
    payload keeps every digit and spelling), or None when ``text`` is not a JSON array."""
    i = len(text) - len(text.lstrip(_WS))
    if not text.startswith("[", i):
        return None
    out: list[str] = []
    i += 1
    while True:
        while i < len(text) and text[i] in _WS:
            i += 1
        if i < len(text) and text[i] == "]" and not out:
            return out
        try:
            _, end = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError):
            return None
        out.append(text[i:end])
        i = end
        while i < len(text) and text[i] in _WS:
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        return out if i < len(text) and text[i] == "]" else None


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
    for sid, text, ok in rows.iter_rows():
        elements = _element_texts(text) if ok else None
        if elements is None:
            session_ids.append(sid)
            indexes.append(-1)
            texts.append(text)
            objects.append(False)
            malformed.append(True)
            continue
        for i, element in enumerate(elements):
            session_ids.append(sid)
            indexes.append(i)
            texts.append(element)
            objects.append(element.startswith("{"))
            malformed.append(False)
    frame = pl.DataFrame(
        {
            "session_id": session_ids,
            "element_index": indexes,
            "element": texts,
            "is_object": objects,
            "malformed_array": malformed,
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
