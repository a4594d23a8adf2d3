"""Deterministic identifiers: uuid5 of stable source keys, so a re-run gives the same ids."""

from __future__ import annotations

import uuid

import polars as pl

# Fixed namespace of circuit-migrate: never change it, every derived id depends on it.
NAMESPACE = uuid.UUID("6f1c1c8e-3d1a-5b7e-9a55-2f0c6f8f2a10")


def stable_uuid(*parts: str) -> str:
    """uuid5 (as lower-case text) of ``parts`` joined with '/' in the project namespace."""
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def stable_uuid_expr(kind: str, key: pl.Expr) -> pl.Expr:
    """Per row, ``stable_uuid(kind, key)``; null keys give null ids."""
    prefix = kind + "/"

    def _ids(series: pl.Series) -> pl.Series:
        return pl.Series(
            [None if k is None else str(uuid.uuid5(NAMESPACE, prefix + k)) for k in series],
            dtype=pl.String,
        )

    return key.cast(pl.String).map_batches(_ids, return_dtype=pl.String)
