"""Benchmarks of hubcensus at whole-Hub scale: `make bench`, `make bench-quick` (docs/PERFORMANCE.md)."""
