"""An OpenAI-compatible HTTP server for development, tests and benchmarks.

`Simulator` is the ASGI app (`app.py`); `serve_simulator` serves it and `register_cli` adds
``actorchat simulate`` (`serve.py`). Bodies are checked as OpenAI checks them (`request.py`);
replies are deterministic and show what the simulator received (`completions.py`), whole or
streamed as ``chat.completion.chunk`` events (`streaming.py`); faults are injected at seeded
rates (`faults.py`, `fault_answers.py`), some of them mid-stream, and the rpm limit is a token
bucket quantized per second as OpenAI's is (`rate_limit.py`).
"""

from .app import Simulator
from .auth import mask_key
from .faults import Fault, FaultPicker
from .rate_limit import BucketState, TokenBucket, format_duration
from .serve import register_cli, run_simulate, serve_simulator

__all__ = [
    "BucketState",
    "Fault",
    "FaultPicker",
    "Simulator",
    "TokenBucket",
    "format_duration",
    "mask_key",
    "register_cli",
    "run_simulate",
    "serve_simulator",
]
