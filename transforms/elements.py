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


def saved_profile_elements(sessions: pl.DataFrame) -> pl.DataFrame:
    """One row per saved_profiles element (or malformed array) of ``sessions`` (id,
    saved_profiles), in the shape ``ELEMENTS_SCHEMA``."""
    rows = sessions.select("id", "saved_profiles").filter(
        pl.col("saved_profiles").is_not_null()
        & (pl.col("saved_profiles").str.strip_chars() != "[]")
    )
    session_ids: list[str] = []
    indexes: list[int] = []
    texts: list[str] = []
    objects: list[bool] = []
    malformed: list[bool] = []
    for sid, text in rows.iter_rows():
        try:
            value = json.loads(text)
        except (ValueError, TypeError, RecursionError):  # nested too deep counts as unreadable
            value = None
            ok = False
        else:
            ok = isinstance(value, list)
        if not ok:
            session_ids.append(sid)
            indexes.append(-1)
            texts.append(text)
            objects.append(False)
            malformed.append(True)
            continue
        for i, element in enumerate(value):
            session_ids.append(sid)
            indexes.append(i)
            try:
                texts.append(json.dumps(element, allow_nan=True))
            except RecursionError:
                texts.append('"(nested too deep to show)"')
            objects.append(isinstance(element, dict))
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
    valid = text.str.json_path_match("$").is_not_null()
    encoded = pl.struct(text.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
    return pl.when(valid).then(text).otherwise(encoded)
