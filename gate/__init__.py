"""waltz-gate: a plugin-based safety gate for LLM agents."""

from gate.config import ConfigError, GateSettings, load_settings
from gate.engine import Gate
from gate.hookspecs import hookimpl
from gate.types import (
    CheckRequest,
    Context,
    Decision,
    Detection,
    Finding,
    Severity,
    Source,
    Span,
    Stage2Mode,
    Status,
    Verdict,
)

__all__ = [
    "CheckRequest", "ConfigError", "Context", "Decision", "Detection", "Finding", "Gate", "GateSettings",
    "Severity", "Source", "Span", "Stage2Mode", "Status", "Verdict", "hookimpl", "load_settings",
]
