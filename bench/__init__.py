"""Benchmarks of circuit-migrate: ``python -m bench --scale 1m`` (see bench/README.md)."""
