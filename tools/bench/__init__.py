"""Benchmarks (`make bench-firmware`): measured, never asserted; results go to docs/performance.md."""
