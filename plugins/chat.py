"""Something that answers a chat: the `Chat` protocol, its settings, and the one factory for every backend.

Kinds: ``onnx`` (an exported ONNX causal LM: `onnx_models.CausalLM`), ``remote`` (an OpenAI-compatible
endpoint such as vLLM: `remote_llm.RemoteChat`), ``scripted`` (recorded answers from a JSONL file:
`scripted_chat.ScriptedChat`). None of them needs torch. The feedback plugin, the trainer's remote judge,
`waltz-gate eval` and `waltz-gate distill` all build their chats with `make_chat`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from gate.config import ConfigError
from plugins.onnx_models import CausalLM
from plugins.remote_llm import RemoteChat
from plugins.scripted_chat import ScriptedChat


class Chat(Protocol):
    def chat(self, system: str, user: str, max_new_tokens: int) -> str:
        """The answer to one turn: a system prompt and the user's message."""


# The setting each kind cannot do without, and what it holds.
REQUIRED = {
    "onnx": ("model_dir", "an exported ONNX causal LM's folder"),
    "remote": ("url", "the OpenAI-compatible base URL"),
    "scripted": ("path", "a JSONL file of {prompt, response[, revision]}"),
}
SPECS = "onnx:DIR, remote:URL or scripted:FILE"


class ChatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    kind: Literal["onnx", "remote", "scripted"]
    model_dir: Path | None = None  # onnx
    model_file: str | None = None  # onnx: default, the one named in the model's waltz_gate.json
    threads: int = Field(default=1, ge=1)  # onnx: intra-op threads
    url: str | None = None  # remote
    model: str = "waltzrl"  # remote: the served model's name
    api_key_env: str | None = None  # remote: the environment variable holding the API key
    timeout_s: float = Field(default=10.0, gt=0)  # remote: per request
    path: Path | None = None  # scripted

    @classmethod
    def from_spec(cls, spec: str, **settings) -> ChatSettings:
        """Settings from the command line's KIND:WHERE form (onnx:DIR, remote:URL, scripted:FILE)."""
        kind, _, where = spec.partition(":")
        if kind not in REQUIRED or not where:
            raise ConfigError(f"{spec!r} names no chat: use {SPECS}")
        return cls(kind=kind, **{REQUIRED[kind][0]: where}, **settings)


def make_chat(settings: ChatSettings) -> Chat:
    field, what = REQUIRED[settings.kind]
    if not getattr(settings, field):
        raise ConfigError(f"the {settings.kind} chat needs {field} ({what})")
    if settings.kind == "onnx":
        return CausalLM(settings.model_dir, settings.threads, settings.model_file)
    if settings.kind == "remote":
        return RemoteChat(settings.url, settings.model, settings.api_key_env, settings.timeout_s)
    return ScriptedChat(settings.path)
