"""``actorchat loadtest``: many conversations against a running server, then every one checked.

Session mode: each conversation sends its turns to ``POST /api/chat`` in order, with its own
``sessionId`` cookie and a think time between turns; afterwards ``GET /api/chat/history`` of
every conversation must hold exactly its prompts, in order, each followed by an answer.
Trace mode: each conversation posts its turns as jobs to ``POST /chat``, one after another,
and collects each with ``GET /chat/{id}/response?wait=S``; a job must end ``completed``, and
a simulated answer must quote its message. Stream mode (``web/loadtest/streaming.py``): each
conversation streams its turns on a connection of its own, all at once; it reports the time to
the first byte and the chunks delivered, and checks every history.

At most ``concurrency`` conversations are in flight, each worker on one keep-alive connection
of a minimal HTTP/1.1 client; ``--client httpx`` uses one shared ``httpx.AsyncClient`` instead,
as a cross-check.

This module holds the command: `register_cli` adds it, `run_loadtest_command` runs it. The
pieces: `run.py` (`LoadOptions`, `run_loadtest`, the conversations and their checks),
`http.py` (the HTTP clients) and `report.py` (what is measured and how it is shown).
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from ..gc_tuning import gc_tuned
from .display import print_report
from .run import LoadOptions, run_loadtest
from .streaming import StreamOptions, run_stream_load


def _think_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B in milliseconds, got {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= A <= B, got {text!r}")
    return bounds


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``loadtest`` to ``subparsers``; its ``func`` runs `run_loadtest` under ``trio.run``."""
    parser = subparsers.add_parser(
        "loadtest",
        help="drive a running server with many conversations and check them all",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add = parser.add_argument
    add("--url", default=LoadOptions.url, help="the server's base URL (%(default)s)")
    add("--conversations", type=_positive, default=10, help="conversations in all (%(default)s)")
    add("--turns", type=_positive, default=3, help="turns per conversation (%(default)s)")
    add("--concurrency", type=_positive, default=10, help="conversations in flight (%(default)s)")
    add("--think-ms", type=_think_range, default=(0.0, 0.0), metavar="A-B",
        help="pause between turns, uniform in A..B ms (default 0)")
    add("--ramp-s", type=float, default=0.0, dest="ramp_s", metavar="S",
        help="start the conversations evenly over S seconds (default: all at once)")
    add("--mode", choices=("session", "trace", "stream"), default="session", help="%(default)s")
    add("--probe-url", default=None, metavar="URL",
        help="stream mode: the upstream's /v1 base, to time its own first byte during the run")
    add("--wait", type=float, default=30.0, dest="wait_s",
        help="trace mode: ?wait= of each result poll, in seconds (%(default)s)")
    add("--timeout", type=float, default=60.0, dest="timeout_s",
        help="seconds per request (%(default)s)")
    add("--client", choices=("raw", "httpx"), default="raw",
        help="HTTP client: the built-in keep-alive client or httpx (%(default)s)")
    add("--max-duration", type=float, default=None, dest="max_duration_s", metavar="S",
        help="start no conversation after S seconds (default: run them all)")
    add("--no-check", action="store_false", dest="check", help="skip the history/result checks")
    add("--no-progress", action="store_false", dest="progress", help="no progress bar")
    add("--seed", type=int, default=None, help="seed for the think times")
    add("--json", default=None, dest="json_path", metavar="FILE", help="write the report here")
    parser.set_defaults(func=run_loadtest_command)


def run_loadtest_command(args: argparse.Namespace) -> int:
    """The ``loadtest`` command: 0 if every turn and check passed, 1 if not, 130 on Ctrl-C."""
    with gc_tuned():  # a collector pause would show as server latency in the report
        return _run_loadtest(args)


def _run_loadtest(args: argparse.Namespace) -> int:
    if args.mode == "stream":
        return _run_stream_command(args)
    options = LoadOptions(
        url=args.url, conversations=args.conversations, turns=args.turns,
        concurrency=args.concurrency, think_ms=args.think_ms, ramp_s=args.ramp_s, mode=args.mode,
        wait_s=args.wait_s, timeout_s=args.timeout_s, max_duration_s=args.max_duration_s,
        check=args.check, client=args.client, progress=args.progress, seed=args.seed,
    )
    try:
        report = trio.run(run_loadtest, options)
    except KeyboardInterrupt:
        print("actorchat loadtest: interrupted", file=sys.stderr)
        return 130
    print_report(report)
    if args.json_path:
        report.write_json(args.json_path)
    return 0 if report.passed else 1


def _run_stream_command(args: argparse.Namespace) -> int:
    options = StreamOptions(url=args.url, conversations=args.conversations, turns=args.turns,
                            ramp_s=args.ramp_s, think_ms=args.think_ms, seed=args.seed,
                            timeout_s=args.timeout_s, check=args.check, probe_url=args.probe_url)
    try:
        report = trio.run(run_stream_load, options)
    except KeyboardInterrupt:
        print("actorchat loadtest: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report.to_dict(), indent=2))
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(report.to_dict(), out, indent=2)
    return 0 if report.passed else 1
