"""The gate: runs Stage 1 and Stage 2 plugins under deadlines and turns their findings into a verdict.

Stage 1 plugins (patterns, microseconds) run in the calling thread: a thread hop would cost more than
the scan. Stage 2 plugins (models) run on their own micro-batching workers (gate/batching.py) and are
abandoned at their deadline, which is the smaller of the plugin's timeout and what is left of the
request's budget. Either way, a result that arrives after its deadline does not count: the plugin's
finding has status timeout, and the stage's fail-open/fail-closed policy decides what that means.
Under overload a Stage 2 check that its queue cannot finish in time is refused at once (status shed,
the same failure policy) instead of waiting out its deadline, and queued work nobody waits for is
dropped unrun, so the cores go to checks that can still make their deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from gate.batching import MicroBatcher, Overloaded
from gate.config import GateSettings
from gate.metrics import GateMetrics
from gate.policy import Policy
from gate.registry import LoadedPlugin, load_plugins
from gate.refusal import SETTLED_LENGTH, is_plain_refusal
from gate.types import CheckRequest, Decision, Detection, Finding, Stage2Info, Stage2Mode, Status, Verdict

# Decides the Stage 2 mode for one request, with the reason recorded in the verdict and audit log.
ModeResolver = Callable[[CheckRequest], tuple[Stage2Mode, str]]


@dataclass
class _Job:
    """One Stage 2 plugin's pending check: its future, its deadline, and (once known) result or exception."""

    plugin: LoadedPlugin
    future: Future
    deadline: float
    outcome: object = None


@dataclass
class _Run:
    """One check between submitting Stage 2 and settling it."""

    request: CheckRequest
    start: float
    deadline: float
    submitted: float = 0.0
    mode: Stage2Mode = Stage2Mode.OFF
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, Status] = field(default_factory=dict)  # each plugin's, as it ran (the audit's)
    findings: list[Finding] = field(default_factory=list)
    stage2: list[Finding] = field(default_factory=list)
    shadow: list[Finding] = field(default_factory=list)
    jobs: list[_Job] = field(default_factory=list)


class Gate:
    def __init__(
        self,
        settings: GateSettings,
        plugins: list[LoadedPlugin],
        modes: ModeResolver | None = None,
        metrics: GateMetrics | None = None,
    ):
        self.settings = settings
        self.plugins = plugins
        self.policy = Policy(settings.policy)
        self.metrics = metrics or GateMetrics()
        self._modes = modes or (lambda _request: (settings.stage2.mode, "config"))
        self.flags = None  # the Unleash flags, when they decide the modes (from_settings)
        self._stage1 = [p for p in plugins if p.stage == 1]
        self._stage2 = [p for p in plugins if p.stage == 2]
        self._batchers = {p.name: self._batcher(p) for p in self._stage2}

    def _batcher(self, plugin: LoadedPlugin) -> MicroBatcher:
        """Stage 2 workers for one plugin; a plugin without gate_check_batch gets batches of one."""
        s2, m, name = self.settings.stage2, self.metrics, plugin.name

        def on_batch(size: int, seconds: float) -> None:
            m.batch_size.observe(size)
            m.stage2_busy.labels(name).inc(seconds)

        if plugin.check_batch is not None:
            fn, max_batch = plugin.check_batch, s2.max_batch
        else:
            fn, max_batch = (lambda requests, _check=plugin.check: [_check(r) for r in requests]), 1
        batcher = MicroBatcher(fn, max_batch, s2.max_wait_ms / 1000.0, workers=s2.workers, on_batch=on_batch,
                               on_expired=m.stage2_expired.labels(name).inc, name=f"stage2-{name}")
        m.stage2_queue_depth.labels(name).set_function(lambda: batcher.depth)
        m.stage2_workers.labels(name).set(s2.workers)
        return batcher

    @property
    def has_stage2(self) -> bool:
        return bool(self._stage2)

    @classmethod
    def from_settings(cls, settings: GateSettings, modes: ModeResolver | None = None) -> Gate:
        """A gate with the configured plugins; Stage 2 modes come from the Unleash flags unless given."""
        plugins = load_plugins(settings)
        metrics = GateMetrics()
        flags = None
        if modes is None and settings.stage2.flags and any(p.stage == 2 for p in plugins):
            from gate.flags import Stage2Flags

            flags = Stage2Flags(settings.stage2, metrics)
            modes = flags.resolve
        gate = cls(settings, plugins, modes=modes, metrics=metrics)
        gate.flags = flags
        return gate

    def retry_after_s(self) -> int:
        """Whole seconds until the Stage 2 queues have drained (at least 1): the Retry-After of a shed check."""
        return max(1, math.ceil(max((b.drain_s() for b in self._batchers.values()), default=0.0)))

    def ready(self) -> dict[str, bool]:
        out = {}
        for p in self.plugins:
            try:
                out[p.name] = bool(p.ready())
            except Exception:
                out[p.name] = False
        return out

    def close(self) -> None:
        if self.flags is not None:
            self.flags.close()
        for batcher in self._batchers.values():
            batcher.close()

    def check(self, request: CheckRequest, stage2_mode: Stage2Mode | None = None) -> Verdict:
        """Judge one request. ``stage2_mode`` overrides the flags (``waltz-gate check --stage2``)."""
        run = self._start(request, stage2_mode)
        for job in run.jobs:
            try:
                job.outcome = job.future.result(timeout=max(0.0, job.deadline - time.perf_counter()))
            except Exception as exc:  # noqa: BLE001 - settled into a finding by _finish
                job.outcome = exc
        return self._finish(run)

    async def check_async(self, request: CheckRequest, stage2_mode: Stage2Mode | None = None) -> Verdict:
        """`check` for an event loop: Stage 1 runs inline, Stage 2 results are awaited, no thread is held."""
        run = self._start(request, stage2_mode)
        for job in run.jobs:
            try:
                job.outcome = await asyncio.wait_for(asyncio.wrap_future(job.future),
                                                     timeout=max(0.0, job.deadline - time.perf_counter()))
            except Exception as exc:  # noqa: BLE001 - settled into a finding by _finish
                job.outcome = exc
        return self._finish(run)

    def _start(self, request: CheckRequest, stage2_mode: Stage2Mode | None) -> _Run:
        """Stage 1, the Stage 2 mode, and Stage 2 submitted to its workers (or shed, or skipped)."""
        start = time.perf_counter()
        run = _Run(request, start, start + self.settings.budget_ms / 1000.0)
        for plugin in self._stage1:
            run.findings += self._run_inline(plugin, run)
        run.timings["stage1"] = _ms(time.perf_counter() - run.start)

        if not self._stage2:
            run.mode, run.reason = Stage2Mode.OFF, "no Stage 2 plugin loaded"
        elif stage2_mode is not None:
            run.mode, run.reason = stage2_mode, "override"
        else:
            run.mode, run.reason = self._modes(request)
        if run.mode == Stage2Mode.OFF:
            return run
        run.submitted = time.perf_counter()
        if any(f.action == Decision.BLOCK for f in run.findings):
            run.stage2 = [self._skipped(p, "stage 1 already blocked", run) for p in self._stage2]
            return run
        for p in self._stage2:
            deadline = min(run.submitted + p.timeout_s, run.deadline)
            try:
                run.jobs.append(_Job(p, self._batchers[p.name].future(request, deadline), deadline))
            except Overloaded as exc:
                self.metrics.stage2_shed.labels(p.name).inc()
                run.stage2.append(self._failed(p, Status.SHED, f"shed: {exc}", 0.0, run))
        return run

    def _finish(self, run: _Run) -> Verdict:
        for job in run.jobs:
            run.stage2 += self._settle(job, time.perf_counter() - run.submitted, run)
        if run.mode != Stage2Mode.OFF:
            run.timings["stage2"] = _ms(time.perf_counter() - run.submitted)
            (run.findings if run.mode == Stage2Mode.ENFORCE else run.shadow).extend(run.stage2)
        correlation_id = run.request.context.correlation_id or uuid.uuid4().hex
        verdict = self._verdict(run, correlation_id)
        self.metrics.requests.labels(verdict.decision, run.mode).inc()
        self.metrics.latency.labels(verdict.decision).observe(verdict.latency_ms / 1000.0)
        return verdict

    # -- running plugins --------------------------------------------------------------------------

    def _run_inline(self, plugin: LoadedPlugin, run: _Run) -> list[Finding]:
        t = time.perf_counter()
        try:
            result = plugin.check(run.request)
        except Exception as exc:
            return [self._failed(plugin, Status.ERROR, f"{type(exc).__name__}: {exc}", time.perf_counter() - t, run)]
        elapsed = time.perf_counter() - t
        if elapsed > plugin.timeout_s:
            return [self._failed(plugin, Status.TIMEOUT, f"took {_ms(elapsed)} ms, over its timeout", elapsed, run)]
        return self._wrap(plugin, result, elapsed, run)

    def _settle(self, job: _Job, elapsed: float, run: _Run) -> list[Finding]:
        """A Stage 2 job's outcome as findings: its detections, or a timeout/error finding."""
        outcome = job.outcome
        if isinstance(outcome, TimeoutError):  # waited out, or dropped unrun (DeadlineExceeded)
            job.future.cancel()
            return [self._failed(job.plugin, Status.TIMEOUT, "deadline exceeded", elapsed, run)]
        if isinstance(outcome, Exception):
            return [self._failed(job.plugin, Status.ERROR, f"{type(outcome).__name__}: {outcome}", elapsed, run)]
        return self._wrap(job.plugin, outcome, elapsed, run)

    # -- findings ---------------------------------------------------------------------------------

    def _wrap(self, plugin: LoadedPlugin, result: object, elapsed: float, run: _Run) -> list[Finding]:
        if not isinstance(result, list | tuple) or not all(isinstance(d, Detection) for d in result):
            got = type(result).__name__
            return [self._failed(plugin, Status.ERROR, f"returned {got}, not a sequence of Detection", elapsed, run)]
        self._observe(plugin, Status.OK, elapsed, run)
        latency = _ms(elapsed)
        return [
            Finding(**dict(d), plugin=plugin.name, stage=plugin.stage, status=Status.OK,
                    action=self.policy.action(d.category, d.source, d.severity), latency_ms=latency)
            for d in result
        ]

    def _failed(self, plugin: LoadedPlugin, status: Status, message: str, elapsed: float, run: _Run) -> Finding:
        self._observe(plugin, status, elapsed, run)
        return Finding(
            plugin=plugin.name,
            stage=plugin.stage,
            status=status,
            category="gate.plugin_failure",
            action=self.policy.failure_action(plugin.stage),
            message=message,
            latency_ms=_ms(elapsed),
        )

    def _skipped(self, plugin: LoadedPlugin, reason: str, run: _Run) -> Finding:
        run.statuses[plugin.name] = Status.SKIPPED
        self.metrics.plugin_status.labels(plugin.name, Status.SKIPPED).inc()
        return Finding(plugin=plugin.name, stage=plugin.stage, status=Status.SKIPPED, message=reason)

    def _observe(self, plugin: LoadedPlugin, status: Status, elapsed: float, run: _Run) -> None:
        run.timings[f"plugin.{plugin.name}"] = _ms(elapsed)
        run.statuses[plugin.name] = status
        self.metrics.plugin_status.labels(plugin.name, status).inc()
        self.metrics.plugin_latency.labels(plugin.name).observe(elapsed)

    # -- verdict ----------------------------------------------------------------------------------

    def _refusal_judged_safe(self, run: _Run) -> bool:
        """The response is a plain refusal (up to SETTLED_LENGTH characters), and every Stage 2 plugin judged it
        (status ok), did not label it unsafe, and let it through or called it an over-refusal of a prompt that
        Stage 1 flagged (Policy.settled_overrefusal)."""
        response = run.request.response
        return (response is not None and bool(self._stage2)
                and all(run.statuses.get(p.name) == Status.OK for p in self._stage2)
                and all((f.action == Decision.ALLOW or self.policy.settled_overrefusal(f, run.findings))
                        and not f.labels.get("unsafe") for f in run.stage2)
                and is_plain_refusal(response, max_length=SETTLED_LENGTH))

    def _verdict(self, run: _Run, correlation_id: str) -> Verdict:
        request, findings, shadow, timings = run.request, run.findings, run.shadow, run.timings
        judged_safe = self._refusal_judged_safe(run)
        decision, text, feedback, revised = self.policy.decide(request, findings, judged_safe and run.mode == Stage2Mode.ENFORCE)
        failures = [f for f in findings if f.status in (Status.ERROR, Status.TIMEOUT, Status.SHED)]
        degraded = bool(failures)
        bypassed = any(f.action == Decision.ALLOW for f in failures)
        if degraded:
            self.metrics.degraded.labels(str(bypassed).lower()).inc()

        would_decide = None
        if run.mode == Stage2Mode.SHADOW:
            would_decide = self.policy.decide(request, findings + shadow, judged_safe)[0]
            if would_decide != decision:
                self.metrics.shadow_disagreement.inc()
        stage2_ok = [f for f in findings if f.stage == 2 and f.status == Status.OK]
        labels: dict[str, bool] = {}
        for f in stage2_ok:
            for k, v in f.labels.items():
                labels[k] = labels.get(k, False) or v
        category = next((f.category for f in stage2_ok if f.action != Decision.ALLOW), None)

        timings["total"] = _ms(time.perf_counter() - run.start)
        return Verdict(
            decision=decision,
            response=text,
            feedback=feedback,
            revised=revised,
            findings=tuple(findings),
            stage2=Stage2Info(mode=run.mode, reason=run.reason, labels=labels, category=category, would_decide=would_decide),
            bypassed=bypassed,
            degraded=degraded,
            latency_ms=timings["total"],
            correlation_id=correlation_id,
            timings=timings,
            shadow_findings=tuple(shadow),
            plugin_statuses=run.statuses,
        )


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
