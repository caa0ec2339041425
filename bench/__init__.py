"""Benchmarks. Run one with ``python bench/bench_X.py --help``, or all with ``make bench``."""
