"""Benchmarks (not tests): ``python -m tests.bench {emulator,worker}`` print a table of measured figures."""
