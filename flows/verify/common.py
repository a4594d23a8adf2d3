"""What both sides of ``verify`` share: schema placeholders, the users a query covers, and the
64-bit hashes that digests sum."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import sql

BUCKET_DIGITS = 3
"""Users are bucketed by this many leading characters of their key (4,096 buckets; the rows of
no user, key ``''``, form a bucket of their own)."""

# One value per hash function the digests use: equal on both servers, or the portable hashes.
PROBE = """
select hashtextextended('circuit-migrate', 0), jsonb_hash_extended('[1.5, "a"]', 1),
       uuid_hash_extended('00000000-0000-4000-8000-000000000001', 1), hashfloat8extended(1.5, 1)
"""


def in_schema(text: str, schema: str) -> sql.Composed:
    """``text`` with every ``@schema@`` replaced by the quoted identifier ``schema``."""
    first, *rest = text.split("@schema@")
    out = sql.Composed([sql.SQL(first)])
    for part in rest:
        out += sql.Identifier(schema) + sql.SQL(part)
    return out


def in_relations(text: str, relations: Mapping[str, sql.Composable]) -> sql.Composed:
    """``text`` with every ``@name@`` of ``relations`` replaced by that relation (SQL)."""
    parts: list[sql.Composable] = []
    rest = text
    while True:
        at = [(rest.find(f"@{n}@"), n) for n in relations if f"@{n}@" in rest]
        if not at:
            parts.append(sql.SQL(rest))
            return sql.Composed(parts)
        index, name = min(at)
        parts += [sql.SQL(rest[:index]), relations[name]]
        rest = rest[index + len(name) + 2 :]


def listed(expr: str, param: str, type_: str) -> str:
    """Whether ``expr`` is in the array parameter ``param`` (a hashed subplan; a function scan,
    unlike ``unnest`` in a select list, keeps the query parallel-safe)."""
    return f"{expr} in (select u.id from unnest(%({param})s::{type_}[]) u(id))"


@dataclass(frozen=True)
class Scope:
    """The users a query covers: every user, or those of the buckets or the user keys listed in
    parameter ``scope`` (text[]). A user key is text; the rows of no user have key ``''``."""

    kind: str  # "all", "buckets" or "users"

    def users(self, key: str) -> str:
        """SQL: whether the user key ``key`` (text, never null) is in scope."""
        if self.kind == "all":
            return "true"
        if self.kind == "buckets":
            return listed(f"left({key}, {BUCKET_DIGITS})", "scope", "text")
        return listed(key, "scope", "text")

    def rows(self, column: str) -> str:
        """SQL: whether a row whose own user column is ``column`` may belong to a user in scope
        (a row with none may: its key may come from its session, or be ``''``)."""
        if self.kind == "all":
            return "true"
        return f"({column} is null or {self.users(f'{column}::text')})"


ALL = Scope("all")


@dataclass(frozen=True)
class Hashing:
    """The 64-bit hash of a row's canonical text: PostgreSQL's ``hashtextextended``, or, when
    the two servers disagree on it (another byte order), a prefix of ``md5``."""

    portable: bool

    def text(self, expr: str) -> str:
        """SQL: the hash of text ``expr``."""
        if self.portable:
            return f"('x' || left(md5({expr}), 16))::bit(64)::bigint"
        return f"hashtextextended({expr}, 0)"

    def row(self, columns: Mapping[str, object]) -> str:
        """SQL: the hash of a row of ``columns`` (names of a CTE's columns, in order): every
        value as text, quoted null-safely, so no two rows share a text."""
        line = ", ".join(f'quote_nullable("{c}"::text)' for c in columns)
        return self.text(f"concat_ws(',', {line})")
