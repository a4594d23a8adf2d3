"""A batch of users: the unit a run extracts, transforms and loads together."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class BatchRange:
    """A batch: user keys from ``user_from`` to ``user_to`` (inclusive); both None = orphans.

    With ``user_keys`` (an incremental run) the batch is exactly those keys, and the bounds
    are only their smallest and largest. ``digests`` carries the legacy digest of each user
    of the batch (:func:`user_digests`), written with its load."""

    batch_no: int
    user_from: str | None
    user_to: str | None
    users: int
    user_keys: tuple[str, ...] | None = None
    digests: tuple[tuple[str, str], ...] = ()
    # Rows per source table (PLANNED_TABLES) the batch's users own in the run's snapshot: what
    # its read must hold, else it fails.
    planned: tuple[tuple[str, int], ...] = ()

    @property
    def orphans(self) -> bool:
        """Whether this is the batch of rows that name no user at all."""
        return self.user_from is None and self.user_keys is None

    def key_filter(self) -> sql.Composable:
        """SQL condition on a user-key expression: what this batch owns."""
        if self.user_keys is not None:
            return sql.SQL("= any({}::uuid[])").format(sql.Literal(uuid_array(self.user_keys)))
        if self.orphans:
            return sql.SQL("is null")
        return sql.SQL("between {}::uuid and {}::uuid").format(
            sql.Literal(self.user_from), sql.Literal(self.user_to)
        )


def uuid_array(keys: Iterable[str]) -> str:
    """A PostgreSQL array literal of uuids (``{a,b}``) for ``= any(%s::uuid[])``."""
    return "{" + ",".join(str(uuid.UUID(k)) for k in keys) + "}"
