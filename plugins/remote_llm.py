"""An OpenAI-compatible chat endpoint (e.g. vLLM serving the trained agents on a GPU box) as a backend."""

from __future__ import annotations

import os

import httpx

from gate.errors import WaltzGateError


class RemoteError(WaltzGateError, RuntimeError):
    """The endpoint could not answer; the message says why."""


class RemoteChat:
    """A `plugins.chat.Chat` answered by the endpoint at `url` (built by `plugins.chat.make_chat`)."""

    def __init__(self, url: str, model: str, api_key_env: str | None = None, timeout_s: float = 10.0):
        key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.model = model
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers)

    def chat(self, system: str, user: str, max_new_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "max_tokens": max_new_tokens,
            "temperature": 0,
        }
        try:
            r = self._http.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise RemoteError(f"{type(exc).__name__}: {exc}") from None
        if r.status_code != 200:
            raise RemoteError(f"HTTP {r.status_code}: {r.text[:200]}")
        try:
            return r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise RemoteError("the endpoint's answer is not an OpenAI chat completion") from None
