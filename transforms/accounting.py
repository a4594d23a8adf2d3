"""Accounting: every legacy row and saved_profiles element is migrated, merged or quarantined,
exactly once, and ``source = migrated + merged + quarantined`` per source table.

Outcomes are read from a ``TransformResult``: quarantine rows, id_map rows (``migrated`` with
a new id, or ``merged``), and rows that kept their id in a target table (a legacy
user_profiles row as a circuit configuration, a session, a tagged model). ``accounting``
returns an :class:`Accounting`; it never raises on its own, call
:meth:`Accounting.raise_for_mismatch` to turn a failed check into
``schemas.errors.ReconciliationMismatch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from schemas.errors import ReconciliationMismatch
from schemas.tables import SOURCE_TABLES
from transforms.elements import saved_profile_elements
from transforms.normalise import decoded_json
from transforms.pipeline import TransformResult


@dataclass(frozen=True)
class TableCounts:
    """Counts of one source table."""

    source: int
    migrated: int
    merged: int
    quarantined: int

    @property
    def balanced(self) -> bool:
        """source = migrated + merged + quarantined."""
        return self.source == self.migrated + self.merged + self.quarantined

    def as_dict(self) -> dict[str, int]:
        """The report.json shape: source, migrated, merged, quarantined."""
        return {
            "source": self.source,
            "migrated": self.migrated,
            "merged": self.merged,
            "quarantined": self.quarantined,
        }


@dataclass(frozen=True)
class Accounting:
    """Per source table counts and the problems found (empty when everything balances)."""

    tables: dict[str, TableCounts]
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when every table balances and every source id appears exactly once."""
        return not self.problems and all(t.balanced for t in self.tables.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        """``{source_table: {source, migrated, merged, quarantined}}`` for report.json."""
        return {name: counts.as_dict() for name, counts in self.tables.items()}

    def raise_for_mismatch(self) -> None:
        """Raise ``ReconciliationMismatch`` unless :attr:`ok`."""
        if not self.ok:
            raise ReconciliationMismatch(
                "accounting mismatch: " + "; ".join(self.problems[:10] or ("unbalanced",)),
                tables=self.as_dict(),
                problems=list(self.problems),
            )


def source_ids(
    user_sessions: pl.DataFrame,
    tagged_models: pl.DataFrame,
    user_profiles: pl.DataFrame,
    app_configurations: pl.DataFrame | None = None,
    profile_metadata: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every accountable source item: (source_table, source_id); an app configuration row under
    its own table, S2's metadata rows under ``user_profiles``."""
    extra = []
    if app_configurations is not None:
        extra.append(app_configurations.select("source_table", pl.col("id").alias("source_id")))
    if profile_metadata is not None:
        extra.append(
            profile_metadata.select(
                pl.lit("user_profiles").alias("source_table"), pl.col("id").alias("source_id")
            )
        )
    elements = saved_profile_elements(
        decoded_json(user_sessions.select("id", "saved_profiles"), "saved_profiles")
    )
    return pl.concat(
        [
            user_profiles.select(
                pl.lit("user_profiles").alias("source_table"), pl.col("id").alias("source_id")
            ),
            elements.select(pl.lit("saved_profiles").alias("source_table"), "source_id"),
            tagged_models.select(
                pl.lit("tagged_models").alias("source_table"), pl.col("id").alias("source_id")
            ),
            user_sessions.select(
                pl.lit("user_sessions").alias("source_table"), pl.col("id").alias("source_id")
            ),
            *extra,
        ]
    )


def outcomes(result: TransformResult, sources: pl.DataFrame) -> pl.DataFrame:
    """Every outcome recorded for a source item: (source_table, source_id, outcome)."""
    kept = pl.concat(
        [
            *[
                result.circuit_configurations.select(
                    pl.lit(t).alias("source_table"), pl.col("id").alias("source_id")
                )
                for t in ("user_profiles", "saved_configurations", "circuit_configurations")
            ],
            result.user_profiles.select(
                pl.lit("user_profiles").alias("source_table"), pl.col("id").alias("source_id")
            ),
            result.user_sessions.select(
                pl.lit("user_sessions").alias("source_table"), pl.col("id").alias("source_id")
            ),
            result.tagged_models.select(
                pl.lit("tagged_models").alias("source_table"), pl.col("id").alias("source_id")
            ),
        ]
    )
    # a target row keeps a source id only if that id is a source of that table
    kept = kept.join(sources, on=["source_table", "source_id"], how="semi").with_columns(
        pl.lit("migrated").alias("outcome")
    )
    return pl.concat(
        [
            kept,
            result.id_map.select("source_table", "source_id", "outcome"),
            result.quarantine.select(
                "source_table", "source_id", pl.lit("quarantined").alias("outcome")
            ),
        ]
    )


def accounting(
    user_sessions: pl.DataFrame,
    tagged_models: pl.DataFrame,
    user_profiles: pl.DataFrame,
    result: TransformResult,
    app_configurations: pl.DataFrame | None = None,
    profile_metadata: pl.DataFrame | None = None,
) -> Accounting:
    """Count source, migrated, merged and quarantined per source table (``SOURCE_TABLES``) and
    check that every source item has exactly one outcome and every outcome a source item."""
    sources = source_ids(
        user_sessions, tagged_models, user_profiles, app_configurations, profile_metadata
    )
    outs = outcomes(result, sources).filter(pl.col("source_table").is_in(list(SOURCE_TABLES)))
    problems: list[str] = []
    per_id = outs.group_by("source_table", "source_id").agg(pl.len().alias("n"))
    dup = per_id.filter(pl.col("n") > 1)
    for row in dup.head(20).iter_rows(named=True):
        problems.append(f"{row['source_table']} {row['source_id']} has {row['n']} outcomes")
    missing = sources.join(per_id, on=["source_table", "source_id"], how="anti")
    for row in missing.head(20).iter_rows(named=True):
        problems.append(f"{row['source_table']} {row['source_id']} has no outcome")
    extra = per_id.join(sources, on=["source_table", "source_id"], how="anti")
    for row in extra.head(20).iter_rows(named=True):
        problems.append(f"{row['source_table']} {row['source_id']} is not a source item")
    dup_sources = sources.group_by("source_table", "source_id").len().filter(pl.col("len") > 1)
    for row in dup_sources.head(20).iter_rows(named=True):
        problems.append(f"{row['source_table']} {row['source_id']} appears twice in the source")
    tables: dict[str, TableCounts] = {}
    for table in SOURCE_TABLES:
        o = outs.filter(pl.col("source_table") == table)["outcome"]
        tables[table] = TableCounts(
            source=int((sources["source_table"] == table).sum()),
            migrated=int((o == "migrated").sum()),
            merged=int((o == "merged").sum()),
            quarantined=int((o == "quarantined").sum()),
        )
    return Accounting(tables=tables, problems=tuple(problems))
