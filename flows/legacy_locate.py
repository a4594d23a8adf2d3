"""Where the legacy tables are, when they are not where ``--source-schema`` says."""

from __future__ import annotations

import psycopg

LEGACY_TABLES = ("user_sessions", "tagged_models", "user_profiles")
LEGACY_MARKERS = (
    ("user_profiles", "parameters"),  # S1, S3, S4: circuits stored per profile row
    ("user_sessions", "saved_profiles"),  # S1, S4
    ("user_sessions", "total_computations"),  # S2, S3
    ("tagged_models", "configuration_id"),  # S2
)
"""Columns only the app's legacy tables have (DESIGN.md section 3, states S1 to S4): the new
tables share the three names, not these columns."""


def legacy_schemas_found(conn: psycopg.Connection) -> list[str]:
    """Every schema, by name, that holds ``user_sessions``, ``tagged_models`` and
    ``user_profiles`` with at least one column only the legacy tables have (one catalog query;
    only tables the role may see)."""
    rows = conn.execute(
        "select table_schema from information_schema.tables"
        " where table_name = any(%(tables)s)"
        "  and table_schema not in ('pg_catalog', 'information_schema')"
        " group by table_schema having count(distinct table_name) = %(n)s"
        " intersect"
        " select c.table_schema from information_schema.columns c"
        " join unnest(%(marked)s::text[], %(markers)s::text[]) as m(table_name, column_name)"
        "  on m.table_name = c.table_name and m.column_name = c.column_name"
        " order by 1",
        {
            "tables": list(LEGACY_TABLES),
            "n": len(LEGACY_TABLES),
            "marked": [table for table, _ in LEGACY_MARKERS],
            "markers": [column for _, column in LEGACY_MARKERS],
        },
    ).fetchall()
    return [str(schema) for (schema,) in rows]


def legacy_hint(conn: psycopg.Connection, schema: str) -> str:
    """What to add to "``schema`` does not hold the legacy tables": the schema that holds them
    and the option to pass; empty when ``schema`` holds legacy-shaped tables itself (whatever
    else is wrong with them) or no other schema does. Call it on any check_source failure."""
    from flows.cleanup import ARCHIVE_SCHEMA  # flows.cleanup imports flows.extract

    found = legacy_schemas_found(conn)
    if schema in found:  # the legacy tables are there (whatever else is wrong with them)
        return ""
    live = [s for s in found if s != ARCHIVE_SCHEMA]
    if len(live) == 1:
        return (
            f"; the legacy tables are in schema {live[0]}: pass --source-schema {live[0]}"
            f" (or set SOURCE_SCHEMA={live[0]})"
        )
    if live:
        listed = ", ".join(live)
        return f"; legacy tables are in schemas {listed}: pass --source-schema with one of them"
    if found:
        return (
            f"; schema {ARCHIVE_SCHEMA} holds legacy tables `cleanup --confirm` archived"
            " (`circuit-migrate restore-legacy` moves them back)"
        )
    return ""
