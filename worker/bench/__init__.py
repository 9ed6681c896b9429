"""Benchmarks (not tests): ``python -m worker.bench {emulator,worker}`` print a table of measured figures."""
