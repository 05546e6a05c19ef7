"""Benchmarks: `python -m bench <command>` (see bench/__main__.py); shared helpers in bench/common.py."""
