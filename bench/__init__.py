"""Benchmarks: each prints ratios against a baseline measured in the same run.

Machines here are noisy, so no benchmark asserts a time; each reports how the
thing measured compares with its baseline, side by side, in one process tree.
"""
