"""Benchmarks and the chaos run (``make bench``, ``make chaos``); not part of ``make test``.

harness   the recording local board, worker processes, memory and CPU readings
layouts   one process with N slots vs N one-slot processes (the seed's layout)
budget    idle requests per minute, 64 busy slots under the board's 100 a minute
dispatch  1,000 zero-work tasks: worker CPU per task beside the board's own time
latency   pickup latency, idle and busy, default and small poll
scale     256 slots: event-loop lag and memory (lag_worker runs the pool with a probe)
report    the tables, docs/benchmarks.md and docs/benchmarks.png
chaos     faults between and inside the workers; checks and docs/reliability.md
"""
