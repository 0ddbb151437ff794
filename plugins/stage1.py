"""Stage 1: the built-in pattern plugins. Each scans the prompt and the response with one pack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from gate.hookspecs import hookimpl
from gate.types import CheckRequest, Detection, Source
from plugins.pattern_pack import PatternPack

PACKS = Path(__file__).parent / "packs"


class PatternPlugin:
    stage = 1
    timeout_ms = 50.0
    name: str
    description: str

    class Settings(BaseModel):
        pack: Path | None = None  # a pack file to use instead of the built-in one
        # Spans per category that keep masked evidence in the finding (every match is redacted whatever it is).
        max_spans: int = Field(default=16, ge=0)

    @hookimpl
    def gate_setup(self, settings: dict[str, Any]) -> None:
        self.pack = PatternPack.load(settings["pack"] or PACKS / f"{self.name}.yaml")
        self.max_spans = settings["max_spans"]

    @hookimpl
    def gate_check(self, request: CheckRequest) -> list[Detection]:
        found = self.pack.scan(request.prompt, Source.PROMPT, self.max_spans)
        if request.response:
            found += self.pack.scan(request.response, Source.RESPONSE, self.max_spans)
        return found


class HarmfulPatterns(PatternPlugin):
    name = "harmful"
    description = "Requests for, and instructions giving, serious harm: weapons, drugs, self-harm, CSAM, crime."


class MaliciousPatterns(PatternPlugin):
    name = "malicious"
    description = "Prompt injection, jailbreak phrasing, system-prompt exfiltration, code injection, credential theft."


class PrivacyPatterns(PatternPlugin):
    name = "privacy"
    description = "Personal data and secrets: e-mail, phone, SSN, payment cards (Luhn), IBAN, API keys, IPs."
