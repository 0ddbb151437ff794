"""Client for the router: sync and async, with timeouts, bounded retries and a circuit breaker.

When the sidecar cannot answer (unreachable, 5xx, timeout, breaker open) the client does not invent a
clean pass: it returns a verdict marked ``bypassed=True, degraded=True`` whose decision is the
configured fail-open (``allow``, the response unchanged) or fail-closed (``block``, a refusal) choice.
A 4xx answer means the caller sent something wrong and raises `GateClientError`.

    async with AsyncGateClient("http://127.0.0.1:8080") as gate:
        verdict = await gate.check(prompt, response, session_id=session)
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx

from gate.types import Decision, Stage2Info, Stage2Mode, Verdict

# Failures where the request cannot have reached the gate, so trying again is safe.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class GateClientError(Exception):
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

    def allow(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return True
            if time.monotonic() - self._opened_at >= self.reset_after_s and not self._trial:
                self._trial = True  # one trial call at a time while half-open
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial = False
            if self._failures >= self.threshold or self._opened_at is not None:
                self._opened_at = time.monotonic()


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

    def _backoff(self, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when the retries are spent."""
        return self.backoff_s * 2**attempt if attempt < self.retries else None

    def _result(self, payload: dict, response: httpx.Response) -> Verdict:
        if response.status_code < 400:
            self.breaker.success()
            return Verdict.model_validate_json(response.content)
        if response.status_code < 500:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise GateClientError(response.status_code, str(detail))
        return self._failed(payload, f"HTTP {response.status_code}")

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
        payload = self._payload(prompt, response, context)
        if not self.breaker.allow():
            return self._bypass(payload, "circuit open")
        attempt = 0
        while True:
            try:
                return self._result(payload, self._http.post("/v1/check", json=payload))
            except _RETRYABLE as exc:
                wait = self._backoff(attempt)
                if wait is None:
                    return self._failed(payload, f"{type(exc).__name__}: {exc}")
                time.sleep(wait)
                attempt += 1
            except httpx.HTTPError as exc:
                return self._failed(payload, f"{type(exc).__name__}: {exc}")

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
        payload = self._payload(prompt, response, context)
        if not self.breaker.allow():
            return self._bypass(payload, "circuit open")
        attempt = 0
        while True:
            try:
                return self._result(payload, await self._http.post("/v1/check", json=payload))
            except _RETRYABLE as exc:
                wait = self._backoff(attempt)
                if wait is None:
                    return self._failed(payload, f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(wait)
                attempt += 1
            except httpx.HTTPError as exc:
                return self._failed(payload, f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGateClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
