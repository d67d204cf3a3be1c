"""Helpers of benchmark.py: the preset registry (`presets`) and the tables, files and plots (`tables`)."""
