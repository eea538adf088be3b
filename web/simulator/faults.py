"""Which fault the OpenAI simulator injects into a request.

Nothing here speaks HTTP: `FaultPicker` decides and `fault_answers.py` turns the decision into a
response. The picker reads only its seed, so a seeded run with the same request order repeats.
"""

from __future__ import annotations

import enum
import random


class Fault(enum.Enum):
    """What the simulator does with one request that passed auth, validation and the rpm limit."""

    NONE = "none"
    RATE_LIMITED = "rate_limited_injected"
    SERVER_ERROR_500 = "server_error_500"
    SERVER_ERROR_503 = "server_error_503"
    HANG = "hang"
    DROP = "drop"
    STREAM_ERROR = "stream_error"  # streams only: an unstreamed answer is sent in full


class FaultPicker:
    """Chooses a fault per request with exactly one draw from ``random.Random(seed)``.

    The unit interval is cut into bands in a fixed order (429, 5xx, hang, drop, stream error,
    then none), each as wide as its rate; rates adding up to more than 1 crowd out the later
    bands. Within the 5xx band the lower half is a 500 and the upper half a 503, so the same
    draw decides both. Two pickers with the same seed and rates make the same choices in the
    same order; a zero rate leaves the other bands where they were.
    """

    def __init__(
        self,
        *,
        rate_429: float = 0.0,
        rate_5xx: float = 0.0,
        rate_hang: float = 0.0,
        rate_drop: float = 0.0,
        rate_stream_error: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self._random = random.Random(seed)
        self._rate_5xx = rate_5xx
        self._end_429 = rate_429
        self._end_5xx = self._end_429 + rate_5xx
        self._end_hang = self._end_5xx + rate_hang
        self._end_drop = self._end_hang + rate_drop
        self._end_stream_error = self._end_drop + rate_stream_error
        self._enabled = self._end_stream_error > 0

    def pick(self) -> Fault:
        """Draw once and return the fault for this request (`Fault.NONE` for a normal answer)."""
        if not self._enabled:
            return Fault.NONE
        draw = self._random.random()
        if draw < self._end_429:
            return Fault.RATE_LIMITED
        if draw < self._end_5xx:
            in_band = (draw - self._end_429) / self._rate_5xx
            return Fault.SERVER_ERROR_500 if in_band < 0.5 else Fault.SERVER_ERROR_503
        if draw < self._end_hang:
            return Fault.HANG
        if draw < self._end_drop:
            return Fault.DROP
        if draw < self._end_stream_error:
            return Fault.STREAM_ERROR
        return Fault.NONE
