"""Benchmarks (not part of the package): `python benchmarks/<name>.py`, or import `benchmarks.<name>`."""
