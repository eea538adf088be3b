"""Benchmarks: ``make bench`` (``python -m bench.run``) runs the scenarios in `bench.scenarios`
against a real server and simulator in subprocesses, prints one table and writes
``bench/results.json``."""
