"""The plugin API of waltz-gate: every hook a plugin may implement, in one place.

A plugin is a class, published under the entry-point group ``waltz_gate``::

    # pyproject.toml of your package
    [project.entry-points.waltz_gate]
    profanity = "my_package.profanity:ProfanityPlugin"

The gate instantiates the class with no arguments, then calls its hooks. Class attributes describe it:

    name: str                 the entry-point name; findings carry it
    stage: int                1 (patterns: cheap, run inline) or 2 (models: run in a worker pool)
    description: str          one line, shown by ``waltz-gate plugins``
    timeout_ms: float         how long a check may take (default 50); fit it to the plugin's latency:
                              ``plugin_settings.<name>.timeout_ms`` overrides it
    Settings: type            a pydantic model of the plugin's settings, typed and with defaults: the
                              gate validates ``plugin_settings.<name>.settings`` against it at start-up
                              and a bad value is a start-up error naming the field
    defaults: dict            instead of ``Settings``, plain default settings (values are not type-checked)

Both stages implement the same hooks. The framework, not the plugin, owns timing, deadlines, error
capture and metrics: a plugin only judges. If ``gate_check`` raises, or its answer arrives after the
plugin's timeout (or the request's budget), the framework records a finding with status ``error`` or
``timeout`` and the policy applies fail-open or fail-closed for that stage. Stage 1 plugins run in the
request's thread, so they must not block (the built-ins use a linear-time regex engine); Stage 2
plugins run in a thread pool and are abandoned at their deadline.

Example::

    from pydantic import BaseModel

    from gate import Detection, Severity, Source, hookimpl

    class ProfanityPlugin:
        name, stage, description = "profanity", 1, "Flags profanity."

        class Settings(BaseModel):
            words: list[str] = ["darn"]

        @hookimpl
        def gate_setup(self, settings):
            self.words = settings["words"]

        @hookimpl
        def gate_check(self, request):
            text = (request.response or "").lower()
            return [Detection(category="profanity.word", severity=Severity.LOW, source=Source.RESPONSE)
                    for w in self.words if w in text]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pluggy

from gate.types import CheckRequest, Detection

PROJECT = "waltz_gate"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gate_setup(settings: dict[str, Any]) -> None:
    """Prepare the plugin once, at start-up: compile patterns, load a model.

    ``settings`` is a dict: the plugin's section of the gate's config validated by its ``Settings``
    model (every field, defaults filled in), or its ``defaults`` updated with that section. Raise an
    exception with a clear message to refuse start-up (for instance a model file that is missing).
    Optional.
    """


@hookspec
def gate_check(request: CheckRequest) -> Sequence[Detection]:
    """Judge one request and return what was found: an empty sequence when nothing was.

    Called concurrently from several threads: keep per-request state local. ``request.response`` is
    None for a pre-check of the prompt alone. Each ``Detection`` says which text (``source``) it was
    found in, its ``category`` (``<plugin>.<kind>``, matched by the policy), severity and score, and
    masked evidence spans (never raw sensitive text). Stage 2 plugins also set ``labels``
    (``unsafe``/``overrefuse``), ``feedback`` for the conversation agent and, when they wrote one,
    a ``revision``. Required.
    """


@hookspec
def gate_check_batch(requests: Sequence[CheckRequest]) -> Sequence[Sequence[Detection]]:
    """Judge several requests at once: one sequence of detections per request, in order.

    Optional, for model plugins (Stage 2). When a plugin implements it, the framework gathers concurrent
    checks into micro-batches (``stage2.max_batch``, ``stage2.max_wait_ms``) and calls this instead of
    ``gate_check``. A plugin must implement at least one of the two.
    """


@hookspec
def gate_ready() -> bool:
    """Report whether the plugin can serve (models loaded, files readable). Optional: default True."""
