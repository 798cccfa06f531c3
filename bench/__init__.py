"""Benchmarks of compliance-orchestrator against its sandbox: `python bench/run.py`."""
