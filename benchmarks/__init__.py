"""PhotoScore benchmarks: figures printed by scripts, collected into docs/BENCHMARKS.md.

Run everything with ``.venv/bin/python -m benchmarks.run`` (``--quick`` for a smoke run).
"""
