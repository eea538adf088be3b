"""Prometheus metrics: ``GET /metrics``, with one registry per app.

Two kinds of numbers:

- **Requests**, counted by the edge (``web/api/edge.py``) when each request ends, whichever
  path answered it: a counter by method, route and status and a latency histogram by method
  and route. The route is the URL rule (``/chat/<trace_id>/response``), never the raw path,
  so neither a trace ID nor a typo'd URL becomes a label; a request that matched no rule is
  counted as route ``unmatched``, one whose client left before an answer as status 499.
  Counting does one dictionary look-up and two increments; the labelled children are cached.
- **The chat service**, read at scrape time by :class:`ServiceCollector` from one
  ``ChatService.stats()`` snapshot: nothing is counted twice and requests pay nothing for it.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (several apps run in one
test process; the global registry would mix them up). ``/metrics`` needs no token: it shows
counts only, never a key, a secret, a session or trace ID, or prompt text. The upstream label
is shown with any ``user:password@`` part of its URL removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response, current_app

from .openapi import document_media
from .state import AppState

METRICS_KEY = "actorchat.metrics"
# Any other method is counted as "OTHER": a client must not be able to mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method as a metric label: one of the standard methods, or ``OTHER``."""
    return method if method in _METHODS else "OTHER"

# Chat turns go from a millisecond (simulator) to a minute (a slow model with retries).
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

blueprint = Blueprint("metrics", __name__)


class ServiceCollector(Collector):
    """Reads one ``ChatService.stats()`` snapshot at scrape time.

    Yields nothing for the service while it is not running (before serving starts). Never
    awaits; the snapshot walks the live actors once (about 1 ms per 10,000).
    """

    def __init__(self, state: AppState) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        # Nothing to check for name clashes in a registry of our own; don't collect to describe.
        return ()

    def collect(self) -> Iterable[Metric]:
        service = self._state.service
        if service is None:
            return
        stats = service.stats()
        actors, upstream, gate, jobs = stats.actors, stats.upstream, stats.upstream.gate, stats.jobs

        info = GaugeMetricFamily(
            "actorchat_upstream_info", "The upstream this server talks to.", labels=["upstream"]
        )
        info.add_metric([upstream.label], 1)
        yield info

        live = GaugeMetricFamily("actorchat_actors_live", "Live actors.", labels=["kind"])
        for kind, count in actors.live.items():
            live.add_metric([kind], count)
        yield live
        for name, documentation, counts in (
            ("actorchat_actors_started", "Actors started since boot.", actors.started),
            ("actorchat_actors_stopped", "Actors stopped since boot.", actors.stopped),
            ("actorchat_actors_crashed", "Unexpected errors in actors (restarted or stopped).",
             actors.crashed),
            ("actorchat_actors_abandoned",
             "Asks dropped (queued) or cancelled (running) because their caller went away.",
             actors.abandoned),
        ):
            yield _labelled_counter(name, documentation, "kind", counts)
        yield GaugeMetricFamily(
            "actorchat_mailbox_depth",
            "Messages waiting in all mailboxes, not counting those being handled.",
            value=actors.mailbox_depth,
        )
        yield GaugeMetricFamily(
            "actorchat_mailbox_bytes",
            "Bytes held by the turns waiting in all mailboxes (at most actors.max_queued_bytes).",
            value=actors.mailbox_bytes,
        )

        yield GaugeMetricFamily(
            "actorchat_upstream_in_flight", "Upstream calls in flight.", value=upstream.in_flight,
        )
        yield _labelled_counter("actorchat_upstream_calls", "Upstream call attempts by outcome.",
                                "outcome", upstream.calls)
        yield CounterMetricFamily(
            "actorchat_upstream_retries", "Upstream attempts retried.", value=upstream.retries
        )
        yield CounterMetricFamily(
            "actorchat_rate_gate_closures", "Times a 429 closed the shared rate gate.",
            value=gate.closures,
        )
        yield GaugeMetricFamily(
            "actorchat_rate_gate_open", "1 when the shared rate gate is open, 0 when closed.",
            value=1 if gate.open else 0,
        )
        yield GaugeMetricFamily(
            "actorchat_rate_gate_waiting", "Calls waiting for the rate gate to open.",
            value=gate.waiting,
        )
        yield GaugeMetricFamily(
            "actorchat_rate_gate_pacing",
            "1 once the upstream has reported a request budget and calls are paced to it.",
            value=1 if gate.pacing else 0,
        )

        yield _labelled_counter("actorchat_jobs_finished", "Trace jobs finished, by final status.",
                                "status", jobs.by_status)
        yield GaugeMetricFamily(
            "actorchat_jobs_running", "Trace jobs holding a running slot.", value=jobs.running,
        )
        yield GaugeMetricFamily(
            "actorchat_jobs_queued", "Trace jobs waiting for a running slot.", value=jobs.queued,
        )
        yield _labelled_counter(
            "actorchat_session_leases",
            "Session leases (store redis): waits (found held by another turn), refused (not "
            "free within sessions.lease_wait_s: 429), renewals.", "event", stats.leases)
        if stats.redis is not None:
            yield from _redis_metrics(stats.redis)


def _redis_metrics(redis: Mapping[str, Mapping[str, int]]) -> Iterable[Metric]:
    """With the Redis store: the job stream's claims here, and Redis errors by part."""
    yield CounterMetricFamily(
        "actorchat_jobs_claims", "Trace jobs this instance took from the Redis job stream.",
        value=redis["jobs"]["claims"],
    )
    yield CounterMetricFamily(
        "actorchat_jobs_reclaims",
        "Trace jobs this instance claimed again after another left them idle (at-least-once).",
        value=redis["jobs"]["reclaims"],
    )
    yield _labelled_counter("actorchat_redis_errors", "Redis commands that failed, by part.",
                            "part", redis["redis_errors"])


def _labelled_counter(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class AppMetrics:
    """One app's registry and its request metrics."""

    def __init__(self, state: AppState) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "actorchat_http_requests", "HTTP requests by method, route and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "actorchat_http_request_duration_seconds",
            "Time from the start of handling to the response, by method and route.",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(ServiceCollector(state))
        # Labelled children cached by their labels: labels() takes a lock and validates.
        self._counted: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[tuple[str, str], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        counted = self._counted.get((method, route, status))
        if counted is None:
            counted = self._counted[(method, route, status)] = self.requests.labels(
                method, route, str(status)
            )
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[(method, route)] = self.latency.labels(method, route)
        counted.inc()
        timed.observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def install_metrics(app: Quart) -> AppMetrics:
    """Give ``app`` its own registry and serve ``GET /metrics``; the edge
    (``web/api/edge.py``) counts every request into it.

    Call after the app's :class:`~web.state.AppState` is in ``app.extensions["actorchat"]``.
    """
    metrics = AppMetrics(app.extensions["actorchat"])
    app.extensions[METRICS_KEY] = metrics
    app.register_blueprint(blueprint)
    return metrics


@blueprint.get("/metrics")
@document_media(200, "text/plain", "the metrics in Prometheus' text format (version 0.0.4)")
async def metrics_text() -> Response:
    """The app's metrics in Prometheus' text format. Open: it holds no secret and no ID."""
    metrics: AppMetrics = current_app.extensions[METRICS_KEY]
    return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)
