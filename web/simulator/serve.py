"""Serving the simulator: `serve_simulator` under Hypercorn's Trio worker, and the
``actorchat simulate`` command (`register_cli`, `run_simulate`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial

import hypercorn.config
import hypercorn.trio
import pydantic
import trio

from actors.config import ConfigError, SimulatorConfig, load_settings

from ..gc_tuning import gc_tuned
from .app import Simulator

logger = logging.getLogger("actorchat.simulator")

GRACEFUL_TIMEOUT_S = 1.0
"""How long `serve_simulator` lets requests in flight finish when it is told to shut down."""

_OVERRIDES = {
    "latency_ms": float,
    "api_key": str,
    "rate_429": float,
    "retry_after_s": float,
    "rate_5xx": float,
    "rate_hang": float,
    "rate_drop": float,
    "rate_stream_error": float,
    "rpm_limit": int,
    "rpm_burst": int,
    "seed": int,
    "stream_chunks": int,
    "chunk_delay_ms": float,
    "keep_received": int,
}
"""The settings ``actorchat simulate`` takes as flags (``--rate-429``), with their types."""


def _describe(config: SimulatorConfig) -> str:
    fields = config.model_dump(exclude={"api_key"})
    text = " ".join(f"{name}={value}" for name, value in fields.items())
    return f"{text} api_key={'required' if config.api_key else 'any'}"


async def serve_simulator(
    config: SimulatorConfig,
    bind: str = "127.0.0.1:0",
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a `Simulator` for ``config`` on ``bind`` (``host:port``; port 0 picks a free one).

    Calls ``task_status.started(base_url)`` with the bound base URL, e.g.
    ``"http://127.0.0.1:43127/v1"``, once the socket listens. Returns when ``shutdown_trigger``
    returns (requests in flight get `GRACEFUL_TIMEOUT_S` to finish); on cancel, stops at once.
    Either way the final counters are logged. Raises ``OSError`` if the address cannot be bound.
    """
    simulator = Simulator(config)
    server_config = hypercorn.config.Config()
    server_config.bind = [bind]
    server_config.accesslog = None
    server_config.errorlog = logging.getLogger("actorchat.simulator.server")
    server_config.graceful_timeout = GRACEFUL_TIMEOUT_S
    server_config.include_server_header = False  # OpenAI does not say "hypercorn" either
    serve = partial(
        hypercorn.trio.serve,
        simulator,
        server_config,
        shutdown_trigger=shutdown_trigger,
        mode="asgi",
    )
    listening = False
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve)
            listening = True
            base_url = f"{binds[0]}/v1"
            logger.info("OpenAI simulator on %s (%s)", base_url, _describe(config))
            task_status.started(base_url)
    finally:
        if listening:
            simulator.log_summary("at shutdown")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``simulate`` to ``subparsers``; its ``func`` default is `run_simulate`."""
    parser = subparsers.add_parser(
        "simulate",
        help="run the OpenAI simulator",
        description="Serve an OpenAI-compatible API with simulated replies and injected faults."
        " Settings come from the [simulator] section of --config; flags override them.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8001, help="port to bind (default %(default)s)")
    parser.add_argument("--config", default="config.toml", help="settings file (%(default)s)")
    for name, kind in _OVERRIDES.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=None, help=f"override simulator.{name}")
    parser.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """The ``simulate`` command: serve until Ctrl-C or SIGTERM, then return 0.

    Returns 2 for a bad setting and 1 if the address cannot be bound, with the reason on stderr.
    """
    try:
        base = load_settings(args.config).simulator
        overrides = {
            name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None
        }
        config = SimulatorConfig.model_validate({**base.model_dump(), **overrides})
    except ConfigError as error:
        print(f"actorchat simulate: {error}", file=sys.stderr)
        return 2
    except pydantic.ValidationError as error:
        for issue in error.errors():
            name = ".".join(str(part) for part in issue["loc"])
            print(f"actorchat simulate: simulator.{name}: {issue['msg']}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    serve = partial(
        serve_simulator, config, f"{args.host}:{args.port}", shutdown_trigger=_sigterm_received
    )
    status = 0
    try:
        with gc_tuned():  # web/gc_tuning.py: the collector's work per completion, measured
            trio.run(serve)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        print(f"actorchat simulate: {_first_leaf(group)}", file=sys.stderr)
        status = 1
    return status


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _sigterm_received() -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            return
