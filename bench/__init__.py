"""Benchmarks; each has one command and prints ratios against a baseline from the same run."""
