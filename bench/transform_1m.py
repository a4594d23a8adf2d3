"""Benchmark of the transform stage (normalise, merge, infer links, validate) on about 1,000,000
generated tagged models with 5 candidate configurations per user.

Run: ``python bench/transform_1m.py [--users 40000] [--seed 7]``. Generates the legacy frames
with ``synthetic.legacy_data.generate`` (not timed) into Parquet files in a temporary
directory, then, in a fresh process (so the generator's memory does not count), reads them
and times ``transforms.pipeline.transform`` and ``transforms.accounting.accounting``. Reports
wall and CPU time and the process's peak resident memory (Linux VmHWM, so it includes the
input frames, about 0.5 GiB).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from synthetic.legacy_data import generate
from transforms.accounting import accounting
from transforms.pipeline import transform


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


FRAMES = ("auth_users", "user_sessions", "tagged_models", "user_profiles")


def measure(directory: Path) -> dict[str, object]:
    """Read the frames from ``directory`` and time the transform stage."""
    frames = {name: pl.read_parquet(directory / f"{name}.parquet") for name in FRAMES}
    gc.collect()
    base = _status("VmRSS")
    _reset_peak()
    wall, cpu = time.perf_counter(), time.process_time()
    result = transform(
        frames["auth_users"],
        frames["user_sessions"],
        frames["tagged_models"],
        frames["user_profiles"],
    )
    transform_s = time.perf_counter() - wall
    transform_cpu = time.process_time() - cpu
    peak = _status("VmHWM")
    t2 = time.perf_counter()
    acc = accounting(
        frames["user_sessions"], frames["tagged_models"], frames["user_profiles"], result
    )
    accounting_s = time.perf_counter() - t2
    per_user = result.circuit_configurations.group_by("user_id").len()["len"].mean()
    return {
        "polars_threads": pl.thread_pool_size(),
        "legacy_rows": {name: frames[name].height for name in FRAMES},
        "configurations": result.circuit_configurations.height,
        "mean_configurations_per_user": round(float(per_user or 0.0), 2),  # type: ignore[arg-type]
        "links": result.links.height,
        "needs_review": int(result.links["needs_review"].sum()),
        "transform_s": round(transform_s, 2),
        "transform_cpu_s": round(transform_cpu, 2),
        "accounting_s": round(accounting_s, 2),
        "rss_before_transform_mib": round(base / 2**20),
        "peak_rss_mib": round(peak / 2**20),
        "accounting_ok": acc.ok,
    }


def main() -> None:
    """Generate into a temporary directory, measure in a fresh process, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--models-per-circuit", type=int, nargs=2, default=(4, 6))
    parser.add_argument("--from-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.from_dir is not None:
        print(json.dumps(measure(args.from_dir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = generate(
            args.users,
            seed=args.seed,
            circuits_per_user=(5, 5),
            models_per_circuit=tuple(args.models_per_circuit),
        )
        for name in FRAMES:
            getattr(data, name).write_parquet(Path(tmp) / f"{name}.parquet")
        gen_s = time.perf_counter() - t0
        del data
        run = subprocess.run(
            [sys.executable, __file__, "--from-dir", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
    report = {"users": args.users, "seed": args.seed, "generate_s": round(gen_s, 2)}
    report.update(json.loads(run.stdout.strip().splitlines()[-1]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
