"""Benchmarks of the engine: cutout quality against ground truth, and speed against rembg.

Run `python -m benchmarks quality --data DIR` or `python -m benchmarks speed` from the checkout;
BENCHMARKS.md at the repository root contains the latest results and how they were made.
"""
