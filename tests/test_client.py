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
from gate.types import Stage2Info, Verdict


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


_ALLOW = Verdict(
    decision="allow", response="ok", stage2=Stage2Info(mode="off", reason="t"), latency_ms=1.0, correlation_id="c"
)


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next (status, headers) of `answers`; 200 is a clean allow."""

    answers: list[tuple[int, dict[str, str]]] = []
    calls = 0
    delay_s = 0.0

    def do_POST(self):  # noqa: N802
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay_s)
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        body = _ALLOW.model_dump_json().encode() if status == 200 else b"{}"
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    """A loopback server that answers as `_Scripted.answers` says, counting calls."""
    _Scripted.answers, _Scripted.calls, _Scripted.delay_s = [], 0, 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_breaker_opens_after_failures_then_half_opens(scripted):
    _Scripted.answers = [(503, {})] * 4
    breaker = CircuitBreaker(threshold=3, reset_after_s=0.3)
    client = GateClient(scripted, breaker=breaker)
    for _ in range(3):
        assert client.check("x").bypassed
    assert breaker.state == "open" and _Scripted.calls == 3
    verdict = client.check("x")  # answered locally: the sidecar is not called
    assert verdict.bypassed and "circuit open" in verdict.stage2.reason and _Scripted.calls == 3
    time.sleep(0.35)
    assert breaker.state == "half-open"
    client.check("x")  # one trial call, which fails: open again
    assert _Scripted.calls == 4 and breaker.state == "open"


def test_breaker_closes_after_a_successful_trial(shared_sidecar):
    breaker = CircuitBreaker(threshold=1, reset_after_s=0.1)
    dead = GateClient(f"http://127.0.0.1:{free_port()}", retries=0, breaker=breaker)
    dead.check("x")
    assert breaker.state == "open"
    time.sleep(0.15)
    live = GateClient(shared_sidecar.url, token=TOKEN, breaker=breaker)
    assert not live.check("x").bypassed and breaker.state == "closed"


def _check(kind: str, url: str, **kw) -> Verdict:
    """One check with the blocking or the asyncio client."""
    if kind == "sync":
        with GateClient(url, **kw) as client:
            return client.check("x", "the answer")

    async def run():
        async with AsyncGateClient(url, **kw) as client:
            return await client.check("x", "the answer")

    return asyncio.run(run())


def _open_breaker() -> CircuitBreaker:
    breaker = CircuitBreaker(threshold=1, reset_after_s=0.05)
    breaker.failure()
    time.sleep(0.06)
    assert breaker.state == "half-open"
    return breaker


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_half_open_trial_that_gets_a_4xx_does_not_leave_the_breaker_stuck(scripted, kind):
    breaker = _open_breaker()
    _Scripted.answers = [(422, {})]
    with pytest.raises(GateClientError):
        _check(kind, scripted, breaker=breaker)
    verdict = _check(kind, scripted, breaker=breaker)  # the sidecar answered: checked, not "circuit open"
    assert not verdict.bypassed and _Scripted.calls == 2 and breaker.state == "closed"


def test_cancelled_half_open_trial_gives_the_trial_back(scripted):
    breaker = _open_breaker()
    _Scripted.delay_s = 2.0  # far past the wait below, which leaves a loaded machine time to deliver the request

    async def run():
        async with AsyncGateClient(scripted, breaker=breaker) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.check("x"), 0.5)
            _Scripted.delay_s = 0.0
            return await client.check("x")

    verdict = asyncio.run(run())
    assert not verdict.bypassed and _Scripted.calls == 2 and breaker.state == "closed"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_overload_503_is_retried_once_after_retry_after(scripted, kind):
    _Scripted.answers = [(503, {"Retry-After": "0.2"})]
    t = time.perf_counter()
    verdict = _check(kind, scripted, timeout_s=2.0)
    assert not verdict.bypassed and verdict.response == "ok" and _Scripted.calls == 2
    assert time.perf_counter() - t >= 0.2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_overload_503_past_the_timeout_degrades_at_once_without_opening_the_breaker(scripted, kind):
    breaker = CircuitBreaker(threshold=1)
    _Scripted.answers = [(503, {"Retry-After": "5"})] * 3
    t = time.perf_counter()
    for _ in range(3):
        verdict = _check(kind, scripted, timeout_s=1.0, breaker=breaker)
        assert verdict.decision == "allow" and verdict.response == "the answer"
        assert verdict.bypassed and verdict.degraded and "overloaded" in verdict.stage2.reason
    assert time.perf_counter() - t < 3.0 and _Scripted.calls == 3 and breaker.state == "closed"


def test_overload_503_is_retried_only_once_and_fails_closed_as_configured(scripted):
    _Scripted.answers = [(503, {"Retry-After": "0"})] * 3
    verdict = _check("sync", scripted, fail_open=False)
    assert verdict.decision == "block" and verdict.bypassed and verdict.degraded and _Scripted.calls == 2


def test_503_without_retry_after_still_counts_as_a_failure(scripted):
    breaker = CircuitBreaker(threshold=1)
    _Scripted.answers = [(503, {})]
    assert _check("sync", scripted, breaker=breaker).bypassed and breaker.state == "open"
