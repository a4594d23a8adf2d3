"""Deterministic identifiers, so that a re-run gives the same ids.

A derived id is a version-8 (custom) UUID made of the md5 of ``circuit-migrate/<kind>/<key>``:
the version nibble set to 8 and the variant bits to 10. md5 because PostgreSQL computes it
without an extension, so ``verify`` derives the same ids with its own SQL
(``flows.verify.values.stable_uuid``); a test checks the two agree.
"""

from __future__ import annotations

import hashlib

import polars as pl

PREFIX = "circuit-migrate/"
_VARIANT = "89ab89ab89ab89ab"  # hex digit d -> variant nibble 8 + d % 4


def _uuid_of(text: str) -> str:
    h = hashlib.md5(text.encode()).hexdigest()
    variant = _VARIANT[int(h[16], 16)]
    return f"{h[0:8]}-{h[8:12]}-8{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def stable_uuid(*parts: str) -> str:
    """The derived id (lower-case text) of ``parts`` joined with '/'."""
    return _uuid_of(PREFIX + "/".join(parts))


def stable_uuid_expr(kind: str, key: pl.Expr) -> pl.Expr:
    """Per row, ``stable_uuid(kind, key)``; null keys give null ids."""
    prefix = PREFIX + kind + "/"

    def _ids(series: pl.Series) -> pl.Series:
        return pl.Series(
            [None if k is None else _uuid_of(prefix + k) for k in series], dtype=pl.String
        )

    return key.cast(pl.String).map_batches(_ids, return_dtype=pl.String)
