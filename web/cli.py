"""The ``actorchat`` command: serve, simulate, loadtest."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import trio
from dotenv import load_dotenv

from actors.config import ConfigError, load_settings

from . import loadtest, simulator
from .api.logs import configure_logging
from .gc_tuning import tune_gc
from .workers import listening_socket, refuse_reason, serve_workers

log = logging.getLogger("actorchat")

_WATCHED = ("actors", "web")


def _serve(args: argparse.Namespace) -> int:
    if args.reload:
        return _reload_loop(args)
    from .api.server import serve_app

    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    reason = refuse_reason(settings, args.workers)
    if reason is not None:
        log.error("%s", reason)
        return 2
    bind = args.bind or settings.server.bind
    if not args.worker_of:  # a worker's --bind is its parent's socket, fd://N
        try:
            listener = listening_socket(bind)
        except OSError as error:
            log.error("cannot listen on %s: %s", bind, error.strerror or error)
            return 2
        if args.workers > 1:
            return serve_workers(args, settings, listener)
        bind = f"fd://{listener.detach()}"  # Hypercorn's to close now
    tune_gc()
    try:
        trio.run(partial(serve_app, settings, bind))
    except KeyboardInterrupt:
        pass
    return 0


def _snapshot(root: Path, config: str) -> dict[Path, float]:
    files = [path for folder in _WATCHED for path in (root / folder).rglob("*.py")]
    files += [Path(config), root / ".env"]
    return {path: path.stat().st_mtime for path in files if path.exists()}


def _reload_loop(args: argparse.Namespace) -> int:
    """Development mode: restart the server whenever a source file or the config changes."""
    root = Path(__file__).resolve().parent.parent
    # SIGTERM stops the child too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = [sys.executable, "-m", "web.cli", "serve", "--config", args.config]
    if args.bind:
        command += ["--bind", args.bind]
    while True:
        before = _snapshot(root, args.config)
        child = subprocess.Popen(command, env=os.environ.copy())
        try:
            while child.poll() is None and _snapshot(root, args.config) == before:
                time.sleep(0.5)
        except KeyboardInterrupt:
            child.terminate()
            child.wait()
            return 0
        if child.poll() is None:
            log.info("source changed: restarting the server")
            child.terminate()
            child.wait()
        else:
            log.info("server exited (%s); waiting for a change", child.returncode)
            while _snapshot(root, args.config) == before:
                time.sleep(0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actorchat", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the chat API (default port 3000)")
    serve.add_argument("--config", default="config.toml", help="settings file")
    serve.add_argument("--bind", default=None, help="HOST:PORT, overrides server.bind")
    serve.add_argument("--reload", action="store_true", help="restart on source changes")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (N > 1 needs the redis store)")
    serve.add_argument("--worker-of", type=int, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)
    simulator.register_cli(commands)
    loadtest.register_cli(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    load_dotenv(".env", override=False)
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level.upper())
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
