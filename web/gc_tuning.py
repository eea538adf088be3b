"""Garbage-collector settings for the long-running processes: the server, the simulator and the
load tester (whose pauses would show as server latency in its report).

CPython's defaults (collect the youngest generation every 700 net allocations, everything
else every 10 and 100 of those) suit short scripts. A server turn allocates thousands of
objects, so under load the collector ran about 2,000 times in 10,000 turns, and each full
collection walked every object the imports made (the openai SDK's and Quart's classes,
schemas and modules): 30 to 110 ms of CPU each, a stall for every request in flight. Measured
with ``gc.callbacks`` over 10,000 turns (64 at once, server pinned to one core): 2.7 s of the
server's CPU in the collector and full collections every few seconds with the defaults;
0.12 to 0.17 s and no full collection in the run with the settings below.

So: what start-up built is frozen (``gc.freeze``: never examined again; it lives as long as
the process anyway), and the youngest generation is collected every 20,000 allocations. Short
reference cycles are still collected, only in bigger batches; memory stays bounded (the soak
benchmark watches RSS). ``tests/test_gc_tuning.py`` pins the settings.

The simulator measured the same (``gc.callbacks``, 20,000 completions, 64 at once): 1.49 s of
its 23.3 s of CPU in the collector at CPython's threshold, 0.05 s at 10,000; a completion went
from 643-654 to 494-538 us of simulator CPU, at about the same resident size (72, 74 MB).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 20_000
"""Net allocations between two collections of the youngest generation (CPython: 700)."""
OLDER_THRESHOLDS = (50, 100)
"""Collections of one generation between two of the next (CPython: 10, 10)."""


def tune_gc() -> None:
    """Freeze every object alive now, then collect less often; call once, after the imports
    and before the event loop starts."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


@contextmanager
def gc_tuned() -> Iterator[None]:
    """:func:`tune_gc` for the block, then the collector as it was: for a command that may
    run inside another process (the tests call ``run_simulate`` and the load tester's command).
    Objects frozen before the block stay frozen; only what the block froze is let go."""
    before = gc.get_threshold()
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.collect()
        gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if freezing:
            gc.unfreeze()
