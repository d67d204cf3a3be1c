"""The programs behind the entry scripts (main_*.py), importable: the benchmark runs them in-process."""
