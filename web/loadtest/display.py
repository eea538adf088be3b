"""How a load test is shown: the live progress bar and the report's table (rich)."""

from __future__ import annotations

import time

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .report import LoadReport, Percentiles, Recorder


async def show_progress(recorder: Recorder, planned_turns: int, enabled: bool = True) -> None:
    """Draw turns (then checks) done on stderr until cancelled; at once if stderr is no terminal.

    Redrawn by this task four times a second rather than by rich's refresh thread, so nothing
    else competes for the CPU core the load tester runs on.
    """
    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console, auto_refresh=False) as progress:
        turns = progress.add_task("turns", total=planned_turns, detail="")
        checks = None
        while True:
            done = recorder.turns_done
            rate = done / max(1e-9, time.perf_counter() - started)
            errors = sum(recorder.errors.values())
            progress.update(turns, completed=done, detail=f"{rate:.0f}/s, {errors} errors")
            if recorder.checks_done:
                if checks is None:
                    checks = progress.add_task("checks", total=None, detail="")
                failed = recorder.checks_failed
                progress.update(checks, completed=recorder.checks_done, detail=f"{failed} failed")
            progress.refresh()
            await trio.sleep(0.25)


def _ms(stats: Percentiles | None, *names: str) -> str:
    if stats is None:
        return "-"
    return " / ".join(f"{getattr(stats, name):.1f}" for name in names)


def render_report(report: LoadReport) -> Table:
    """The report as a two-column rich table."""
    verdict = "[green]PASS[/]" if report.passed else "[red]FAIL[/]"
    table = Table(title=f"actorchat loadtest ({report.mode} mode): {verdict}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    planned = report.conversations * report.turns
    rows = [
        ("target", f"{report.url} ({report.client} client)"),
        ("load", f"{report.conversations} conversations x {report.turns} turns,"
                 f" concurrency {report.concurrency}"
                 + (f" (time ran out after {report.conversations_run})"
                    if report.stopped_early else "")),
        ("turns", f"{report.requests} sent, {report.ok_turns} ok, {report.failed_turns} failed"
                  f" (of {planned})"),
        ("other requests", str(report.other_requests)),
        ("duration", f"{report.duration_s:.2f} s (+ {report.check_duration_s:.2f} s checks)"),
        ("throughput", f"{report.throughput_tps:.1f} turns/s"),
        ("latency p50/p90/p99/max", _ms(report.latency_ms, "p50", "p90", "p99", "max") + " ms"),
        ("overhead p50/p99", _ms(report.overhead_ms, "p50", "p99") + " ms (latency - upstream)"),
    ]
    for name, stats in report.server_timing_ms.items():
        rows.append((f"server {name} p50/p99", _ms(stats, "p50", "p99") + " ms"))
    errors = ", ".join(f"{kind}: {count}" for kind, count in report.errors.items())
    rows.append(("errors", errors or "none"))
    checks = f"{report.checks_passed} passed, {report.checks_failed} failed"
    if report.checks_skipped:
        checks += f", {report.checks_skipped} skipped"
    rows.append(("checks", checks))
    for sample in report.error_samples[:3]:
        rows.append(("error example", sample))
    for problem in report.check_failures[:3]:
        rows.append(("check failure", problem))
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_report(report: LoadReport, console: Console | None = None) -> None:
    """Print `render_report` (to stdout unless ``console`` says otherwise)."""
    (console or Console()).print(render_report(report))
