"""The user-key rule, in one home: which user a legacy row belongs to (its batch).

A row belongs to the user its own ``user_id`` names; a tagged model with none belongs to the
user of its session; a session with none belongs to no user (DESIGN.md section 5 quarantines
it ``no_user``, whatever its tagged models say). Rows with no user key form the orphan batch.
Extract, the one-pass spill, the plan and the user digests use these expressions; ``verify``
restates the rule in its own SQL on purpose (one rule, two implementations, tested to agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from flows.inspect import Inspection, relation


@dataclass(frozen=True)
class KeyedTable:
    """How to read a legacy table's user key: ``select ... from {relation} x {join}`` gives
    rows whose user key is ``key``."""

    relation: sql.Composable
    join: sql.Composable
    key: sql.Composable


def keyed(source: str | Inspection, table: str) -> KeyedTable:
    """The user key of legacy source ``table`` (``flows.inspect.SOURCES``) of ``source`` (an
    inspected schema, or a schema name), for rows aliased ``x``."""
    rel = relation(source, table)
    if table == "tagged_models":
        return KeyedTable(
            rel,
            sql.SQL("left join {} s on x.user_id is null and s.id = x.session_id").format(
                relation(source, "user_sessions")
            ),
            sql.SQL("coalesce(x.user_id, s.user_id)"),
        )
    if table == "profile_metadata":  # S2's user_profiles: keyed on the user's id
        return KeyedTable(rel, sql.SQL(""), sql.SQL("x.id"))
    return KeyedTable(rel, sql.SQL(""), sql.SQL("x.user_id"))
