"""The collector settings of the long-running processes (``web/gc_tuning.py``)."""

from __future__ import annotations

import subprocess
import sys

from web.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD


def test_tune_gc_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    # In a child process: freezing is for the life of a process, not a test run's.
    code = (
        "import gc, web.api.server\n"
        "from web.gc_tuning import tune_gc\n"
        "tune_gc()\n"
        "print(gc.get_freeze_count(), *gc.get_threshold())\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    frozen, *thresholds = map(int, output)
    assert frozen > 50_000  # the imports alone: Quart, Hypercorn, the openai SDK, pydantic
    assert tuple(thresholds) == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
