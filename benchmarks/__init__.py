"""Benchmarks of the touchpoint pipeline: ``python -m benchmarks`` (see README.md)."""
