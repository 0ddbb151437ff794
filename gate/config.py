"""Gate configuration: a typed model loaded from YAML, with environment overrides.

Environment variables win over the file: ``WALTZ_GATE_BUDGET_MS=300``, and nested fields with ``__``,
e.g. ``WALTZ_GATE_POLICY__ON_FAILURE__STAGE2=closed``. Bad config fails with a sentence naming the field.
"""

from __future__ import annotations

import os
from enum import StrEnum
from importlib.metadata import distribution
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gate.audit import AuditSettings
from gate.errors import WaltzGateError
from gate.hookspecs import PROJECT
from gate.types import Decision, Severity, Source, Stage2Mode


class ConfigError(WaltzGateError, ValueError):
    """Configuration that cannot be used. The message is one sentence naming the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FailureMode(StrEnum):
    OPEN = "open"  # a failing plugin is ignored; the verdict is marked bypassed
    CLOSED = "closed"  # a failing plugin blocks the request


class Rule(_Strict):
    """Maps findings to an action. Rules are tried in order; the first that matches decides."""

    category: str = "*"  # fnmatch glob over "<plugin>.<kind>"
    source: Source | None = None  # only findings in the prompt, or in the response
    min_severity: Severity = Severity.LOW
    action: Decision
    # A plain refusal that Stage 2 judged safe settles a revise of this rule's findings on the prompt, and on
    # the response inside its declining sentence (the request restated). False where declining is not enough
    # (self-harm: the answer should point to help).
    refusal_suffices: bool = True


DEFAULT_RULES = [
    # Critical categories are blocked: sexual content involving minors, mass-casualty weapons, terror.
    Rule(category="harmful.csam", action=Decision.BLOCK),
    Rule(category="harmful.cbrn", action=Decision.BLOCK),
    Rule(category="harmful.terrorism", action=Decision.BLOCK),
    # Personal data: masked in responses; a user sharing their own in a prompt is noted, not acted on.
    Rule(category="privacy.*", source=Source.PROMPT, action=Decision.ALLOW),
    Rule(category="privacy.*", min_severity=Severity.MEDIUM, action=Decision.REDACT),
    Rule(category="privacy.*", action=Decision.ALLOW),
    # Self-harm is revised even when the agent refused: the feedback asks for support and crisis resources.
    Rule(category="harmful.self_harm", min_severity=Severity.MEDIUM, action=Decision.REVISE, refusal_suffices=False),
    # Everything else of medium severity or above is revised with feedback, as WaltzRL does.
    Rule(category="*", min_severity=Severity.MEDIUM, action=Decision.REVISE),
    Rule(category="*", action=Decision.ALLOW),
]


class FailurePolicy(_Strict):
    stage1: FailureMode = FailureMode.CLOSED
    stage2: FailureMode = FailureMode.OPEN


class PolicySettings(_Strict):
    rules: list[Rule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    on_failure: FailurePolicy = FailurePolicy()
    refusal: str = "I can't help with that request."


class PluginSettings(_Strict):
    timeout_ms: float | None = Field(default=None, gt=0)  # None: the plugin's own (its class's timeout_ms)
    settings: dict[str, Any] = {}


class Stage2Settings(_Strict):
    # flags: the Unleash flags decide the mode per request (gate/flags.py); otherwise `mode` applies.
    flags: bool = True
    mode: Stage2Mode = Stage2Mode.OFF
    stickiness: Literal["session_id", "user_id", "tenant"] = "session_id"
    shadow: bool = True  # requests outside the rollout run Stage 2 in shadow mode
    flags_refresh_s: int = Field(default=15, ge=1)
    # Batch workers per Stage 2 plugin: one per core runs one model call per core at a time (measured in
    # benchmarks/RESULTS.md); a plugin that waits on the network (remote backend) wants more.
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    # Micro-batching of concurrent checks for plugins that implement gate_check_batch. Off by default: the
    # shipped classifier at 256 tokens runs 28 pairs/s per core at batch 8 against 49 at batch 1 on the
    # 2-core VM (benchmarks/RESULTS.md); it pays for short inputs and GPU-backed remote models.
    max_batch: int = Field(default=1, ge=1, le=256)
    max_wait_ms: float = Field(default=2.0, ge=0)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # Bearer token: from the environment variable WALTZ_GATE_API_TOKEN, or this file. Neither: no auth.
    token_file: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch: int = Field(default=64, ge=1, le=1024)
    graceful_timeout_s: float = Field(default=30.0, gt=0)
    access_log: bool = False
    audit: AuditSettings = AuditSettings()


def builtin_plugins() -> list[str]:
    """This package's own plugins: its entry points (pyproject.toml), in their order."""
    return [ep.name for ep in distribution("waltz-gate").entry_points.select(group=PROJECT)]


class GateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALTZ_GATE_", env_nested_delimiter="__", extra="forbid")

    # The embedded default: every plugin this package ships, Stage 1 patterns and Stage 2 with the shipped model
    # (offline flags enforce it).
    plugins: list[str] = Field(default_factory=builtin_plugins)
    plugin_settings: dict[str, PluginSettings] = {}
    budget_ms: float = Field(default=500.0, gt=0)
    policy: PolicySettings = PolicySettings()
    stage2: Stage2Settings = Stage2Settings()
    server: ServerSettings = ServerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init values; the environment overrides it.
        return env_settings, init_settings

    def plugin(self, name: str) -> PluginSettings:
        return self.plugin_settings.get(name, PluginSettings())


def describe(exc: ValidationError, prefix: str = "") -> str:
    """One sentence naming the first invalid field, for CLI errors and HTTP 4xx bodies."""
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(root)"
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    more = len(exc.errors()) - 1
    tail = f"; {more} more problem{'s' * (more > 1)}" if more else ""
    return f"{prefix}{loc}: {first['msg']}{shown}{tail}."


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content; raises ConfigError saying what could not be read, and why."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text.") from None


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file's top-level mapping (empty file: {}); raises ConfigError saying what is wrong."""
    try:
        data = yaml.safe_load(read_text(path, what)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level.")
    return data


def load_settings(path: str | Path | None = None) -> GateSettings:
    """Settings from a YAML file (optional) with environment overrides; raises ConfigError."""
    data = read_yaml_mapping(path) if path is not None else {}
    try:
        return GateSettings(**data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, prefix="invalid config: ")) from None
