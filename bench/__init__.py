"""Benchmarks for PrivacyCam; `python -m bench.quality` scores the mask pipeline."""
