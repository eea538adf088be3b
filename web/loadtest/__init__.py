"""``actorchat loadtest``: many conversations against a running server, then every one checked.

The command is in `command.py`, the conversations in `run.py`, the HTTP clients in `http.py`,
what is measured in `report.py`.
"""

from .checks import SIMULATED_PREFIX, history_problem
from .command import register_cli, run_loadtest_command
from .http import HttpxTransport, RawConnection, Reply, Transport, TransportFailure
from .report import LoadReport, parse_server_timing
from .run import LoadOptions, run_loadtest

__all__ = [
    "SIMULATED_PREFIX",
    "HttpxTransport",
    "LoadOptions",
    "LoadReport",
    "RawConnection",
    "Reply",
    "Transport",
    "TransportFailure",
    "history_problem",
    "parse_server_timing",
    "register_cli",
    "run_loadtest",
    "run_loadtest_command",
]
