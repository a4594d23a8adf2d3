"""Exact pieces of JSON text: the members of an object and the items of an array as the slices
of the text they are, so a number keeps every digit.

Polars' ``str.json_path_match`` re-serialises what it matches, and its number parser is not
correctly rounded: ``194.24099393827458`` comes back as ``...456``, one unit in the last place
off. These helpers read the text with Python's ``json`` scanner (correctly rounded) and return
slices of the original instead. Plain Python over one row at a time: use them only where a row
is parsed in Python anyway (saved_profiles elements) or on the few rows a fast path left.
"""

from __future__ import annotations

import json

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _value_end(text: str, i: int) -> int | None:
    try:
        return int(_DECODER.raw_decode(text, i)[1])
    except (ValueError, RecursionError):
        return None


def items(text: str) -> list[str] | None:
    """The items of the JSON array ``text`` as exact slices, or None when it is not one."""
    i = _skip(text, 0)
    if not text.startswith("[", i):
        return None
    out: list[str] = []
    i = _skip(text, i + 1)
    if text.startswith("]", i):
        return out if _skip(text, i + 1) == len(text) else None
    while True:
        end = _value_end(text, i)
        if end is None:
            return None
        out.append(text[i:end])
        i = _skip(text, end)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
            continue
        return out if text.startswith("]", i) and _skip(text, i + 1) == len(text) else None


def members(text: str) -> dict[str, str] | None:
    """The members of the JSON object ``text`` as exact slices of their values (a repeated key:
    the last one, as jsonb keeps), or None when ``text`` is not a JSON object."""
    i = _skip(text, 0)
    if not text.startswith("{", i):
        return None
    out: dict[str, str] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        return out if _skip(text, i + 1) == len(text) else None
    while True:
        if not text.startswith('"', i):
            return None
        try:
            key, end = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError):
            return None
        i = _skip(text, end)
        if not text.startswith(":", i):
            return None
        i = _skip(text, i + 1)
        value_end = _value_end(text, i)
        if value_end is None:
            return None
        out[key] = text[i:value_end]
        i = _skip(text, value_end)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
            continue
        return out if text.startswith("}", i) and _skip(text, i + 1) == len(text) else None


def as_match(value: str | None) -> str | None:
    """A member's slice as ``str.json_path_match`` gives it: a JSON string's content, None for
    JSON null or an absent member, any other value's exact text."""
    if value is None or value == "null":
        return None
    if value.startswith('"'):
        decoded = json.loads(value)
        return decoded if isinstance(decoded, str) else None
    return value


def path(text: str | None, *keys: str | int) -> str | None:
    """The value at ``keys`` (member names and array indexes) in the JSON text, as
    :func:`as_match` gives it; None when any step is absent or the text is not JSON."""
    current: str | None = text
    for key in keys:
        if current is None:
            return None
        if isinstance(key, int):
            found = items(current)
            current = found[key] if found is not None and -len(found) <= key < len(found) else None
        else:
            found_members = members(current)
            current = None if found_members is None else found_members.get(key)
    return as_match(current)
