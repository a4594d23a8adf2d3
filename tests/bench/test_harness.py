"""A smoke run of the end-to-end benchmark at scale 10k, so the harness cannot rot. It checks
what the run did, never how fast (timings belong to bench/, not to tests)."""

from __future__ import annotations

import psycopg
import pytest

from bench import harness


@pytest.mark.slow
def test_benchmark_runs_end_to_end_at_10k(pg_server: str) -> None:
    lines: list[str] = []
    result = harness.run_benchmark(
        pg_server, "10k", batch_size=100, concurrency=2, progress=lines.append
    )
    assert result.users == 500
    assert result.source_rows["tagged_models"] > 8_000
    assert result.batches > 1 and result.batches_failed == 0
    assert result.verify_passed
    assert result.floor_seconds > 0 and result.migration_seconds > 0
    assert result.prefect_server_seconds > 0
    assert set(harness.STAGES) <= set(result.stage_seconds)
    assert all(result.stage_seconds[s] > 0 for s in harness.STAGES)
    assert result.peak_rss_mib > 0 and result.verify_peak_rss_mib > 0
    table = harness.render(result)
    assert "migration, end to end" in table and "migration / floor" in table
    with psycopg.connect(pg_server, autocommit=True) as conn:
        left = conn.execute(
            "select count(*) from pg_database where datname like 'cm_bench_10k_%'"
        ).fetchone()
    assert left == (0,)  # the benchmark database is dropped


def test_unknown_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scale"):
        harness.run_benchmark("postgresql://unused", "2k")
