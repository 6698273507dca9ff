"""`make bench`: figures for the pull-request sync against the bundled GitHub emulator.

Run with ``python -m bench`` (``BENCH_QUICK=1`` shrinks every size 10x for a smoke run,
``BENCH_LATENCY_MS`` sets the emulator's per-request latency, default 20).
"""
