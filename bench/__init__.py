"""Benchmarks that print their figures; run from the repository root: `python -m bench.<name>`."""
