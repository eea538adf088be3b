"""``actorchat loadtest --mode stream`` over real HTTP: against the server, with the
simulator's own first byte probed during the run, and against a server that breaks streams."""

from __future__ import annotations

from web.loadtest.streaming import StreamOptions, run_stream_load

from .conftest import StartServer, StartSimulator, make_settings


async def test_stream_mode_times_the_first_byte_counts_chunks_and_checks_every_history(
    start_server: StartServer, start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(stream_chunks=5, chunk_delay_ms=5)
    server = await start_server(make_settings(simulator))
    report = await run_stream_load(StreamOptions(
        url=server.url, conversations=4, turns=2, probe_url=simulator, probe_every_s=0.01,
    ))
    assert report.errors == {}
    assert report.turns_ok == 8
    assert report.chunks == 8 * 5
    assert report.checks_passed == 4
    assert report.ttfb_ms is not None
    assert report.ttfb_ms.count == 8
    assert report.probe_ttfb_ms is not None
    assert report.passed


async def test_stream_mode_counts_broken_streams_as_errors(
    start_server: StartServer, start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(rate_stream_error=1.0, stream_chunks=4)
    server = await start_server(make_settings(simulator))
    report = await run_stream_load(StreamOptions(url=server.url, conversations=2))
    assert report.errors == {"stream error": 2}
    assert report.turns_ok == 0
    assert report.checks_failed == 0  # a conversation that failed is not checked
    assert not report.passed
