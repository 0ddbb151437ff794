"""Recorded answers as a chat backend: `waltz-gate eval --agent scripted:FILE`, and tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from gate.config import ConfigError
from gate.jsonl import read_jsonl


class ScriptedTurn(BaseModel):
    prompt: str
    response: str
    revision: str | None = None  # default: the response again


class ScriptedChat:
    """Answers from a JSONL file of {prompt, response[, revision]}: `response` to the prompt, `revision` when
    asked again with feedback (the revision request starts with the prompt and the previous answer)."""

    def __init__(self, path: Path):
        self.answers = {t.prompt: (t.response, t.response if t.revision is None else t.revision)
                        for t in read_jsonl(path, ScriptedTurn, "scripted agent file")}

    def chat(self, system: str, user: str, max_new_tokens: int) -> str:
        for prompt, (first, revised) in self.answers.items():
            if user == prompt:
                return first
            if user.startswith(prompt + "\n\n[Your previous answer]"):
                return revised
        raise ConfigError(f"the scripted agent has no answer for {user[:60]!r}.")
