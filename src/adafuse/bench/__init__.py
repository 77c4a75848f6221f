"""Benchmark harnesses behind ``adafuse bench`` (they build models, data and executors: the top layer)."""
