"""Client for the router: sync and async, with timeouts, bounded retries and a circuit breaker.

When the sidecar cannot answer (unreachable, 5xx, timeout, breaker open) the client does not invent a
clean pass: it returns a verdict marked ``bypassed=True, degraded=True`` whose decision is the
configured fail-open (``allow``, the response unchanged) or fail-closed (``block``, a refusal) choice.
A 4xx answer means the caller sent something wrong and raises `GateClientError`.

A 503 with ``Retry-After`` (seconds) is the sidecar shedding load, not an outage: the client waits
Retry-After and tries once more when that fits in what is left of ``timeout_s`` (the retry gets the rest as
its timeout), and otherwise returns the degraded verdict above at once. An overload is not a failure for
the circuit breaker; a 503 without Retry-After is. An HTTP-date Retry-After is never waited for.

The breaker counts consecutive failures (unreachable, timeout, 5xx). A 4xx shows the sidecar is up and
closes it; a call that ends with no word on the sidecar's health (overloaded, or cancelled) leaves the
count as it was and, if it was the half-open trial, gives the trial back.

    async with AsyncGateClient("http://127.0.0.1:8080") as gate:
        verdict = await gate.check(prompt, response, session_id=session)
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from gate.errors import WaltzGateError
from gate.types import Decision, Stage2Info, Stage2Mode, Verdict

# Failures where the request cannot have reached the gate, so trying again is safe.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class GateClientError(WaltzGateError):
    """The sidecar rejected the request (4xx): a bug in the caller, not an outage."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"gate sidecar answered {status}: {detail}")
        self.status, self.detail = status, detail


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `reset_after_s` lets one trial call through."""

    def __init__(self, threshold: int = 5, reset_after_s: float = 10.0):
        self.threshold, self.reset_after_s = threshold, reset_after_s
        self._failures, self._opened_at, self._trial = 0, None, False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self._opened_at >= self.reset_after_s else "open"

    def allow(self) -> str | None:
        """None: answer locally; "closed": call the sidecar; "trial": call it as the one half-open trial."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if time.monotonic() - self._opened_at >= self.reset_after_s and not self._trial:
                self._trial = True  # one trial call at a time while half-open
                return "trial"
            return None

    def success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial = False
            if self._failures >= self.threshold or self._opened_at is not None:
                self._opened_at = time.monotonic()

    def release(self, admission: str) -> None:
        """A call admitted by `allow` is over: a trial that ended with no outcome lets the next one in."""
        if admission == "trial":
            with self._lock:
                self._trial = False


@dataclass
class _Call:
    """Where one check stands: its deadline, the next post's timeout, the retries it has used."""

    deadline: float
    timeout: float
    attempt: int = 0
    overload_retried: bool = False


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds an overloaded sidecar (503 with Retry-After) asks to wait; None for any other answer."""
    value = response.headers.get("Retry-After")
    if response.status_code != 503 or value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return math.inf


def _run_blocking(coroutine: Coroutine[Any, Any, Verdict]) -> Verdict:
    """The blocking client runs the shared `_Base._check` coroutine with awaitables that block instead of
    suspending, so it finishes on its first step, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the blocking client's check suspended")


async def _blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)


class _Base:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 1.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        fail_open: bool = True,
        refusal: str = "I can't help with that request.",
        breaker: CircuitBreaker | None = None,
    ):
        self.base_url, self.timeout_s, self.retries, self.backoff_s = base_url, timeout_s, retries, backoff_s
        self.fail_open, self.refusal = fail_open, refusal
        self.breaker = breaker or CircuitBreaker()
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @staticmethod
    def _payload(prompt: str, response: str | None, context: dict[str, Any]) -> dict:
        context.setdefault("correlation_id", uuid.uuid4().hex)
        return {"prompt": prompt, "response": response, "context": context}

    def _call(self) -> _Call:
        return _Call(deadline=time.monotonic() + self.timeout_s, timeout=self.timeout_s)

    async def _check(self, payload: dict, post: Callable[[dict, float], Awaitable[httpx.Response]],
                     sleep: Callable[[float], Awaitable[None]]) -> Verdict:
        """One check, for both clients: the breaker's admission, the posts and waits between them, the verdict."""
        admission = self.breaker.allow()
        if admission is None:
            return self._bypass(payload, "circuit open")
        call = self._call()
        try:
            while True:
                try:
                    outcome = await post(payload, call.timeout)
                except httpx.HTTPError as exc:
                    outcome = exc
                step = self._next(payload, outcome, call)
                if isinstance(step, Verdict):
                    return step
                await sleep(step)
        finally:
            self.breaker.release(admission)

    def _next(self, payload: dict, outcome: httpx.Response | httpx.HTTPError, call: _Call) -> Verdict | float:
        """The verdict for what one post got, or the seconds to wait before posting again."""
        if isinstance(outcome, httpx.HTTPError):
            if isinstance(outcome, _RETRYABLE) and call.attempt < self.retries:
                call.attempt += 1
                return self.backoff_s * 2 ** (call.attempt - 1)
            return self._failed(payload, f"{type(outcome).__name__}: {outcome}")
        if outcome.status_code < 400:
            self.breaker.success()
            return Verdict.model_validate_json(outcome.content)
        if outcome.status_code < 500:
            self.breaker.success()  # the sidecar is up and answering: the request is what is wrong
            try:
                detail = outcome.json().get("detail", outcome.text)
            except ValueError:
                detail = outcome.text
            raise GateClientError(outcome.status_code, str(detail))
        wait = _retry_after(outcome)
        if wait is None:
            return self._failed(payload, f"HTTP {outcome.status_code}")
        left = call.deadline - time.monotonic()
        if not call.overload_retried and wait < left:
            call.overload_retried, call.timeout = True, left - wait
            return wait
        return self._bypass(payload, f"overloaded (HTTP 503, Retry-After {outcome.headers['Retry-After']})")

    def _failed(self, payload: dict, reason: str) -> Verdict:
        self.breaker.failure()
        return self._bypass(payload, reason)

    def _bypass(self, payload: dict, reason: str) -> Verdict:
        decision = Decision.ALLOW if self.fail_open else Decision.BLOCK
        return Verdict(
            decision=decision,
            response=payload["response"] if self.fail_open else self.refusal,
            stage2=Stage2Info(mode=Stage2Mode.OFF, reason=f"sidecar unavailable: {reason}"),
            bypassed=True,
            degraded=True,
            latency_ms=0.0,
            correlation_id=payload["context"]["correlation_id"],
        )


class GateClient(_Base):
    """Blocking client (httpx.Client)."""

    def __init__(self, base_url: str, **kw: Any):
        super().__init__(base_url, **kw)
        self._http = httpx.Client(base_url=base_url, timeout=self.timeout_s, headers=self._headers)

    def check(self, prompt: str, response: str | None = None, **context: Any) -> Verdict:
        return _run_blocking(self._check(self._payload(prompt, response, context), self._post, _blocking_sleep))

    async def _post(self, payload: dict, timeout: float) -> httpx.Response:
        return self._http.post("/v1/check", json=payload, timeout=timeout)  # blocks: see _run_blocking

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGateClient(_Base):
    """Asyncio client (httpx.AsyncClient)."""

    def __init__(self, base_url: str, **kw: Any):
        super().__init__(base_url, **kw)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=self.timeout_s, headers=self._headers)

    async def check(self, prompt: str, response: str | None = None, **context: Any) -> Verdict:
        return await self._check(self._payload(prompt, response, context), self._post, asyncio.sleep)

    async def _post(self, payload: dict, timeout: float) -> httpx.Response:
        return await self._http.post("/v1/check", json=payload, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGateClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
