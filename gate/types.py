"""The types shared end to end: the request, a plugin's detection, the finding, the verdict.

All are frozen. A plugin returns `Detection`s (its judgement only); the framework wraps each in a
`Finding` with the plugin's name, stage, status, latency and the action the policy chose. A plugin that
crashed or ran past its deadline yields a Finding with status error/timeout and no detection, so a
failure is never mistaken for a clean pass.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Ranked(StrEnum):
    """An enum whose members are declared from mildest to strictest; `rank` compares them."""

    @property
    def rank(self) -> int:
        return list(type(self)).index(self)


class Decision(_Ranked):
    """What the router does with the agent's answer; members are ordered from mildest to strictest."""

    ALLOW = "allow"
    REDACT = "redact"
    REVISE = "revise"
    BLOCK = "block"


class Severity(_Ranked):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Status(StrEnum):
    """Whether a plugin produced a judgement, kept apart from what that judgement was."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    SHED = "shed"  # refused at admission: the Stage 2 queue could not finish it inside its deadline
    SKIPPED = "skipped"


class Source(StrEnum):
    """Which text a detection was made in: the user's prompt or the agent's response."""

    PROMPT = "prompt"
    RESPONSE = "response"


class Stage2Mode(StrEnum):
    OFF = "off"
    SHADOW = "shadow"
    ENFORCE = "enforce"


class Context(_Frozen):
    session_id: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, max_length=256)
    tenant: str | None = Field(default=None, max_length=256)
    agent: str | None = Field(default=None, max_length=256)
    correlation_id: str | None = Field(default=None, max_length=256)


class CheckRequest(_Frozen):
    """A prompt and, unless this is a pre-check of the prompt alone, the agent's response to it."""

    prompt: str
    response: str | None = None
    context: Context = Context()


class Span(_Frozen):
    """Where a detection was made: offsets into the original text and masked evidence (never raw)."""

    source: Source
    start: int
    end: int
    evidence: str


class _Found(_Frozen):
    """What a plugin found, declared once: a Detection is this with category, severity and source required; a
    Finding is this plus what the framework recorded. A failure's finding has category ``gate.plugin_failure``
    and the reason as message; a skipped plugin's, the reason only."""

    category: str | None = None
    severity: Severity | None = None
    source: Source | None = None
    score: float | None = None
    spans: tuple[Span, ...] = ()
    message: str | None = None
    feedback: str | None = None
    labels: dict[str, bool] = {}
    revision: str | None = None


class Detection(_Found):
    """A plugin's judgement: what it found. Stage 2 plugins also fill labels, feedback and revision."""

    category: str
    severity: Severity
    source: Source
    score: float = Field(default=1.0, ge=0.0, le=1.0)


class Finding(_Found):
    """A detection (or a failure to produce one) as the framework records it."""

    plugin: str
    stage: int
    status: Status
    action: Decision = Decision.ALLOW
    revision: str | None = Field(default=None, exclude=True)  # the verdict's response carries it
    latency_ms: float = 0.0


class Stage2Info(_Frozen):
    mode: Stage2Mode
    reason: str
    labels: dict[str, bool] = {}
    category: str | None = None
    # In shadow mode: what the decision would have been with Stage 2 enforced. Audit log and metrics
    # only: it is not sent to the caller.
    would_decide: Decision | None = Field(default=None, exclude=True)


class Verdict(_Frozen):
    """The gate's answer. `decision` comes first on purpose: it is what the router reads."""

    decision: Decision
    response: str | None
    feedback: str | None = None
    # True when `response` is a revision the gate's conversation agent wrote (decision revise).
    revised: bool = False
    findings: tuple[Finding, ...] = ()
    stage2: Stage2Info
    bypassed: bool = False
    degraded: bool = False
    latency_ms: float
    correlation_id: str
    timings: dict[str, float] = {}
    # Stage 2 findings in shadow mode: audit log only.
    shadow_findings: tuple[Finding, ...] = Field(default=(), exclude=True)
    # Each plugin's status in this check, shadow and skipped ones included: audit log only.
    plugin_statuses: dict[str, Status] = Field(default={}, exclude=True)
