"""Benchmark sections behind ``scripts/benchmark.py`` (sampling, training, data pipeline, 3D scale)."""
