"""Benchmarks: `estella bench` (and `make bench`) times training and generation against the
original recipe and the hardware limit, and writes BENCHMARKS.md, bench.json and bench.png."""
