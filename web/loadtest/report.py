"""What a load test measured: the samples taken during a run, the report, its table and JSON.

`Recorder` collects raw samples while `web/loadtest/run.py` drives the server (appending to lists
is all it does on the hot path: even ``Server-Timing`` headers are parsed after the run);
`Recorder.report` turns the samples into a `LoadReport`, which `LoadReport.to_dict` gives to
``--json``. How it is shown (the progress bar, the table) is in `display.py`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_SAMPLES = 10
"""How many error and check-failure messages a report keeps, as examples."""


@dataclass(frozen=True)
class Percentiles:
    """A distribution in milliseconds: nearest-rank percentiles, the maximum and the mean."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, samples: list[float]) -> Percentiles | None:
        """The distribution of ``samples``; None when there are none."""
        if not samples:
            return None
        ordered = sorted(samples)

        def rank(fraction: float) -> float:
            return round(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)], 2)

        mean = round(sum(ordered) / len(ordered), 2)
        return cls(len(ordered), rank(0.5), rank(0.9), rank(0.99), round(ordered[-1], 2), mean)


@dataclass
class LoadReport:
    """The outcome of one load test run; every field is plain data, ready for JSON.

    ``conversations_run`` is how many conversations started (fewer than ``conversations`` when
    ``max_duration_s`` ran out first; see `stopped_early`). ``requests`` counts the turns sent
    (``POST /api/chat`` in session mode, ``POST /chat`` in trace mode); ``ok_turns`` those
    answered in full (a trace job: collected as ``completed``), ``failed_turns`` the others.
    ``other_requests`` counts the history reads and result polls.
    ``latency_ms`` is per turn as the client saw it (a trace job: from its POST to its result),
    ``overhead_ms`` that latency minus the ``upstream`` duration of the reply's
    ``Server-Timing``, and ``server_timing_ms`` each ``Server-Timing`` duration by name.
    ``errors`` counts failed requests of every kind by HTTP status (``"HTTP 500"``) or by
    exception kind (``"Timeout"``, ``"ConnectError"``...). A check is one conversation's
    history (session mode) or one job's result (trace mode); ``checks_skipped`` counts those
    that could not be checked because a turn's outcome was unknown (timeout, lost connection)
    or the conversation never got a cookie.
    """

    mode: str
    url: str
    client: str
    conversations: int
    turns: int
    concurrency: int
    conversations_run: int = 0
    requests: int = 0
    ok_turns: int = 0
    failed_turns: int = 0
    other_requests: int = 0
    duration_s: float = 0.0
    check_duration_s: float = 0.0
    throughput_tps: float = 0.0
    latency_ms: Percentiles | None = None
    overhead_ms: Percentiles | None = None
    server_timing_ms: dict[str, Percentiles] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: int = 0
    checks_skipped: int = 0
    check_failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every turn started succeeded, nothing else failed and no check failed."""
        return (
            not self.errors
            and self.failed_turns == 0
            and self.checks_failed == 0
            and self.ok_turns == self.conversations_run * self.turns
        )

    @property
    def stopped_early(self) -> bool:
        """True when ``max_duration_s`` ran out before every conversation had started."""
        return self.conversations_run < self.conversations

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, with ``passed`` and ``stopped_early`` added."""
        return {**asdict(self), "passed": self.passed, "stopped_early": self.stopped_early}

    def write_json(self, path: str | Path) -> None:
        """Write `to_dict` to ``path`` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


class Recorder:
    """Samples of one run, appended by the request tasks; never awaits."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.server_timings: list[tuple[float, str]] = []  # parsed after the run, not during
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.requests = 0
        self.ok_turns = 0
        self.failed_turns = 0
        self.other_requests = 0
        self.checks_passed = 0
        self.checks_failed = 0
        self.checks_skipped = 0
        self.check_failures: list[str] = []

    def turn_ok(self, latency_ms: float, server_timing: str | None) -> None:
        """One turn answered in full, with its reply's ``Server-Timing`` header if any."""
        self.ok_turns += 1
        self.latencies_ms.append(latency_ms)
        if server_timing:
            self.server_timings.append((latency_ms, server_timing))

    def error(self, kind: str, detail: str) -> None:
        """One request failed: ``kind`` is ``"HTTP <status>"`` or an exception kind."""
        self.errors[kind] += 1
        if len(self.error_samples) < MAX_SAMPLES:
            self.error_samples.append(f"{kind}: {detail[:300]}")

    @property
    def turns_done(self) -> int:
        return self.ok_turns + self.failed_turns

    @property
    def checks_done(self) -> int:
        return self.checks_passed + self.checks_failed + self.checks_skipped

    def check(self, problem: str | None) -> None:
        """One check done: ``problem`` is None when it passed, else what was wrong."""
        if problem is None:
            self.checks_passed += 1
            return
        self.checks_failed += 1
        if len(self.check_failures) < MAX_SAMPLES:
            self.check_failures.append(problem[:500])

    def report(
        self, report: LoadReport, duration_s: float, check_duration_s: float
    ) -> LoadReport:
        """Fill ``report`` (which names the run) with what was recorded, and return it."""
        report.requests = self.requests
        report.ok_turns = self.ok_turns
        report.failed_turns = self.failed_turns
        report.other_requests = self.other_requests
        report.duration_s = round(duration_s, 3)
        report.check_duration_s = round(check_duration_s, 3)
        report.throughput_tps = round(self.ok_turns / duration_s, 1) if duration_s > 0 else 0.0
        report.latency_ms = Percentiles.of(self.latencies_ms)
        overheads_ms: list[float] = []
        timings_ms: dict[str, list[float]] = {}
        for latency_ms, header in self.server_timings:
            durations = parse_server_timing(header)
            for name, duration in durations.items():
                timings_ms.setdefault(name, []).append(duration)
            if "upstream" in durations:
                overheads_ms.append(latency_ms - durations["upstream"])
        report.overhead_ms = Percentiles.of(overheads_ms)
        report.server_timing_ms = {
            name: stats
            for name, samples in timings_ms.items()
            if (stats := Percentiles.of(samples)) is not None
        }
        report.errors = dict(self.errors.most_common())
        report.error_samples = list(self.error_samples)
        report.checks_passed = self.checks_passed
        report.checks_failed = self.checks_failed
        report.checks_skipped = self.checks_skipped
        report.check_failures = list(self.check_failures)
        return report


def parse_server_timing(header: str) -> dict[str, float]:
    """``"upstream;dur=12.5, app;desc=x;dur=1"`` -> ``{"upstream": 12.5, "app": 1.0}``.

    Entries without a readable ``dur`` are left out.
    """
    durations: dict[str, float] = {}
    for entry in header.split(","):
        name, *params = entry.split(";")
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur":
                try:
                    durations[name.strip()] = float(value.strip().strip('"'))
                except ValueError:
                    pass
                break
    return durations
