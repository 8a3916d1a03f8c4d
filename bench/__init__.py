"""Benchmark scripts: run each as `python bench/<name>.py` from the repo root."""
