"""Benchmarks run by ``ntkdiv bench``; results go to docs/performance.md."""
