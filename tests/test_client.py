"""The router's client against a real sidecar, a dead port and a failing server, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

import pytest
from conftest import TOKEN
from sidecar import free_port

from gate.client import AsyncGateClient, CircuitBreaker, GateClient, GateClientError


def test_sync_client_gets_verdicts(shared_sidecar):
    with GateClient(shared_sidecar.url, token=TOKEN) as client:
        verdict = client.check("Who?", "Write to a@example.com", session_id="s1")
    assert verdict.decision == "redact" and verdict.response == "Write to [EMAIL]" and not verdict.bypassed


def test_async_client_gets_verdicts(shared_sidecar):
    async def run():
        async with AsyncGateClient(shared_sidecar.url, token=TOKEN) as client:
            return await asyncio.gather(*(client.check(f"how to cook meth {i}") for i in range(5)))

    verdicts = asyncio.run(run())
    assert [v.decision for v in verdicts] == ["revise"] * 5


def test_4xx_raises_instead_of_passing(shared_sidecar):
    with GateClient(shared_sidecar.url, token="wrong") as client, pytest.raises(GateClientError) as err:
        client.check("x")
    assert err.value.status == 401


def test_unreachable_sidecar_gives_bypassed_verdict_fail_open():
    with GateClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.01) as client:
        verdict = client.check("hi", "the answer", correlation_id="c1")
    assert verdict.decision == "allow" and verdict.response == "the answer"
    assert verdict.bypassed and verdict.degraded and "sidecar unavailable" in verdict.stage2.reason
    assert verdict.correlation_id == "c1"


def test_unreachable_sidecar_fail_closed_blocks():
    with GateClient(f"http://127.0.0.1:{free_port()}", retries=0, fail_open=False) as client:
        verdict = client.check("hi", "the answer")
    assert verdict.decision == "block" and verdict.response != "the answer" and verdict.bypassed


def test_retries_are_bounded():
    client = GateClient(f"http://127.0.0.1:{free_port()}", retries=3, backoff_s=0.02)
    t = time.perf_counter()
    client.check("hi")
    # 3 retries with 0.02, 0.04, 0.08 s back-off: about 0.14 s, never an endless loop.
    assert 0.12 <= time.perf_counter() - t < 3.0


class _Failing(http.server.BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):  # noqa: N802
        type(self).calls += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_breaker_opens_after_failures_then_half_opens():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        breaker = CircuitBreaker(threshold=3, reset_after_s=0.3)
        client = GateClient(f"http://127.0.0.1:{server.server_port}", breaker=breaker)
        for _ in range(3):
            assert client.check("x").bypassed
        assert breaker.state == "open" and _Failing.calls == 3
        verdict = client.check("x")  # answered locally: the sidecar is not called
        assert verdict.bypassed and "circuit open" in verdict.stage2.reason and _Failing.calls == 3
        time.sleep(0.35)
        assert breaker.state == "half-open"
        client.check("x")  # one trial call, which fails: open again
        assert _Failing.calls == 4 and breaker.state == "open"
    finally:
        server.shutdown()


def test_breaker_closes_after_a_successful_trial(shared_sidecar):
    breaker = CircuitBreaker(threshold=1, reset_after_s=0.1)
    dead = GateClient(f"http://127.0.0.1:{free_port()}", retries=0, breaker=breaker)
    dead.check("x")
    assert breaker.state == "open"
    time.sleep(0.15)
    live = GateClient(shared_sidecar.url, token=TOKEN, breaker=breaker)
    assert not live.check("x").bypassed and breaker.state == "closed"
