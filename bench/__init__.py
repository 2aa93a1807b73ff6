"""Benchmarks: bench/run (runner.py), the corpus generator and the timing harness."""
