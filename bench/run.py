"""``python -m bench.run``: run the benchmark scenarios, print one table, write the results.

Where ``taskset`` exists and CPUs 0 and 1 are ours, the server runs alone on CPU 1 and the
simulator and this process (the load tester) share CPU 0. Every number goes to
``bench/results.json``; the table shows each target and whether it was met. A missed target
does not fail the command; a scenario that crashed does (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from web.gc_tuning import tune_gc

from .procs import CLIENT_CPU, SERVER_CPU, background_busy, can_pin, steal_ticks
from .scenarios import SCENARIOS, Bench, Outcome, run_scenario

RESULTS = Path(__file__).resolve().parent / "results.json"
STOLEN_NOTE = 0.02
"""A scenario during which the hypervisor took more than this share of the CPU time gets a note."""


def _verdict(passed: bool | None) -> str:
    return {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[dim]-[/]"}[passed]


def render(outcomes: list[Outcome]) -> Table:
    """All scenarios in one table: a row per target."""
    table = Table(title="actorchat bench")
    for column in ("scenario", "metric", "value", "target", ""):
        table.add_column(column)
    for outcome in outcomes:
        if outcome.error is not None:
            table.add_row(outcome.name, "[red]crashed[/]", outcome.error[:200], "", "")
        for index, target in enumerate(outcome.targets):
            name = outcome.name if index == 0 else ""
            table.add_row(name, target.metric, target.shown, target.goal, _verdict(target.passed))
        table.add_section()
    return table


async def run_all(names: list[str], bench: Bench, console: Console) -> list[Outcome]:
    outcomes = []
    for name in names:
        started = time.perf_counter()
        stolen_before, total_before = steal_ticks()
        with console.status(f"bench: {name}..."):
            outcome = await run_scenario(name, bench)
        outcome.metrics["scenario_s"] = round(time.perf_counter() - started, 1)
        stolen, total = (now - before for now, before in
                         zip(steal_ticks(), (stolen_before, total_before), strict=True))
        outcome.metrics["cpu_stolen"] = share = round(stolen / total, 3) if total else 0.0
        if share > STOLEN_NOTE:
            # Measured on this VM: 1.6% stolen -> 306 turns/s, 14% -> 200 turns/s (64x10,
            # built-in simulator, one process), the server's CPU a turn 3.3 -> 4.1 ms.
            outcome.notes.append(
                f"the hypervisor gave {share:.0%} of the CPU time to other guests (steal) "
                "during this scenario: a busy neighbour slows every process here, so these "
                "numbers are pessimistic")
        console.print(f"bench: {name} done in {outcome.metrics['scenario_s']} s")
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", action="append", choices=list(SCENARIOS),
                        help="run only this scenario (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for development")
    parser.add_argument("--soak-s", type=float, default=None, metavar="SECONDS",
                        help="how long the soak scenario is judged after its warm-up"
                             " (default 300, or 30 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (%(default)s)")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a log file or a pipe: no need to wrap at 80 columns
    pinned = can_pin()
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    else:
        console.print("[yellow]bench: not pinning to CPUs (no taskset, or CPUs 0-1 not ours)[/]")
    names = args.only or list(SCENARIOS)
    background = background_busy()
    busy_cpus = {name: share for name, share in background.items() if share > 0.1}
    if busy_cpus:
        console.print(f"[yellow]bench: CPUs already busy before the start: {busy_cpus};"
                      " expect slower, noisier numbers[/]")
    with tempfile.TemporaryDirectory(prefix="actorchat-bench-") as scratch:
        bench = Bench(Path(scratch), quick=args.quick, pinned=pinned, soak_s=args.soak_s)
        started = time.perf_counter()
        tune_gc()  # the load tester runs here: a collector pause would count as latency
        outcomes = trio.run(run_all, names, bench, console)
        elapsed = time.perf_counter() - started
    console.print(render(outcomes))
    missed = [
        f"{outcome.name}: {target.metric} = {target.shown} (target {target.goal})"
        for outcome in outcomes
        for target in outcome.targets
        if target.passed is False
    ]
    for outcome in outcomes:
        for note in outcome.notes:
            console.print(f"[dim]{outcome.name}: {note}[/]")
    if missed:
        console.print("[red]targets missed:[/]\n  " + "\n  ".join(missed))
    crashed = [outcome.name for outcome in outcomes if outcome.error is not None]
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "elapsed_s": round(elapsed, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "pinned": pinned,
            "busy_before_start": background,
            "server_cpu": SERVER_CPU if pinned else None,
            "client_cpu": CLIENT_CPU if pinned else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "scenarios": {outcome.name: outcome.to_dict() for outcome in outcomes},
        "missed": missed,
        "crashed": crashed,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"bench: {len(outcomes)} scenarios in {elapsed:.0f} s; results in {args.out}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
