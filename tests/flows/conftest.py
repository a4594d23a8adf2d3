"""Flow-test helpers: one Prefect test harness for the session, seeded legacy databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows import schema_ops
from flows.seed import load_synthetic
from schemas import frames
from synthetic.legacy_data import generate


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A throwaway Prefect API for every flow run of the session."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def seeded_db(make_db: Callable[[str], str]) -> Callable[[int, int], str]:
    """Factory: a database with legacy data in schema ``legacy`` and the target schema applied."""

    def make(users: int, seed: int) -> str:
        url = make_db(f"seeded{users}s{seed}")
        schema_ops.apply_legacy(url, "legacy")
        load_synthetic(url, generate(users, seed=seed), source_schema="legacy")
        schema_ops.apply_target(url)
        return url

    return make


def target_digest(url: str) -> dict[str, str]:
    """An ordered digest of every target table: equal digests mean byte-identical contents."""
    with psycopg.connect(url) as conn:
        return {
            table: str(
                conn.execute(
                    f"select count(*) || ':' || coalesce(md5(string_agg(t::text, '|' order by"
                    f" t.id)), '') from public.{table} t"
                ).fetchone()[0]  # type: ignore[index]
            )
            for table in frames.TARGET_FRAMES
        }
