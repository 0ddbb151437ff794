"""The guarded Stage 2 rollout (0 -> 10 -> 50 -> 100%) through the Unleash Admin API.

The plan file (gate/unleash/rollout-plan.yaml) names the project and environment, the steps with the
minimum time to stay at each, and the guards. Before moving to the next step, `advance` checks the dwell
time at the current step (from the flag's change events on the server) and reads the sidecars'
Prometheus metrics: error rate, p95 latency, block/revise rate and shadow-vs-enforce disagreement, each
against its limit. A tripped guard refuses to advance, saying which guard and the figure; with
``rollback`` it sets the previous step instead. The flag definitions are the bootstrap file's
(gate/unleash/flags.json): `init` creates them on a fresh server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gate.config import describe
from gate.errors import WaltzGateError
from gate.flags import ENFORCE_FLAG, KILL_FLAG


class RolloutError(WaltzGateError):
    """Something the operator must fix; the message is one sentence."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Step(_Strict):
    percent: int = Field(ge=0, le=100)
    min_dwell_hours: float = Field(default=0, ge=0)  # time to stay at this step before the next


class Guards(_Strict):
    metrics_urls: list[str] = ["http://127.0.0.1:8080/metrics"]
    min_checks: int = Field(default=100, ge=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p95_ms: float = Field(default=500, gt=0)
    max_block_revise_rate: float = Field(default=0.3, ge=0, le=1)
    max_shadow_disagreement: float = Field(default=0.05, ge=0, le=1)


class Plan(_Strict):
    project: str = "default"
    environment: str = "development"
    steps: list[Step] = Field(min_length=2)
    guards: Guards = Guards()

    @model_validator(mode="after")
    def _increasing(self) -> Plan:
        percents = [s.percent for s in self.steps]
        if percents != sorted(set(percents)):
            raise ValueError("steps must have strictly increasing percent values")
        return self

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise RolloutError(f"cannot read plan file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise RolloutError(f"plan file {path} is not valid YAML: {exc}") from None
        except ValidationError as exc:
            raise RolloutError(describe(exc, prefix=f"plan file {path}: ").rstrip(".")) from None

    def index(self, percent: int) -> int | None:
        return next((i for i, s in enumerate(self.steps) if s.percent == percent), None)


class AdminAPI:
    def __init__(self, url: str, token: str, project: str, environment: str, timeout_s: float = 10.0):
        self.project, self.environment = project, environment
        self._http = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": token}, timeout=timeout_s)

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise RolloutError(f"cannot reach the Unleash Admin API at {self._http.base_url}: {type(exc).__name__}") from None
        if r.status_code in (401, 403):
            raise RolloutError("the Unleash admin token was rejected (UNLEASH_ADMIN_TOKEN)")
        return r

    def _feature_path(self, name: str) -> str:
        return f"/api/admin/projects/{self.project}/features/{name}"

    def feature(self, name: str) -> dict | None:
        r = self._call("GET", self._feature_path(name))
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RolloutError(f"reading {name} failed: HTTP {r.status_code} {r.text[:200]}")
        return r.json()

    def environment_of(self, name: str) -> dict:
        feature = self.feature(name)
        if feature is None:
            raise RolloutError(f"flag {name} does not exist on the server; run `waltz-gate rollout init`")
        env = next((e for e in feature.get("environments", []) if e["name"] == self.environment), None)
        if env is None:
            raise RolloutError(f"flag {name} has no environment {self.environment!r} in project {self.project!r}")
        return env

    def create(self, definition: dict) -> bool:
        """Create one flag as the bootstrap file defines it; False when it already exists."""
        name = definition["name"]
        if self.feature(name) is not None:
            return False
        body = {k: definition[k] for k in ("name", "description", "type", "impressionData") if k in definition}
        self._expect(self._call("POST", f"/api/admin/projects/{self.project}/features", json=body), f"creating {name}")
        for strategy in definition.get("strategies", []):
            body = {k: strategy.get(k) for k in ("name", "parameters", "constraints") if k in strategy}
            path = f"{self._feature_path(name)}/environments/{self.environment}/strategies"
            self._expect(self._call("POST", path, json=body), f"adding a strategy to {name}")
        self.set_enabled(name, definition.get("enabled", False))
        return True

    def set_enabled(self, name: str, on: bool) -> None:
        path = f"{self._feature_path(name)}/environments/{self.environment}/{'on' if on else 'off'}"
        self._expect(self._call("POST", path), f"turning {name} {'on' if on else 'off'}")

    def rollout(self) -> tuple[int, dict]:
        """Current percentage of the enforce flag (0 when the flag is off) and its strategy."""
        env = self.environment_of(ENFORCE_FLAG)
        strategies = [s for s in env.get("strategies", []) if s["name"] == "flexibleRollout"]
        if len(strategies) != 1:
            raise RolloutError(f"{ENFORCE_FLAG} must have exactly one flexibleRollout strategy in {self.environment}")
        percent = int(strategies[0]["parameters"].get("rollout", "0")) if env.get("enabled") else 0
        return percent, strategies[0]

    def set_rollout(self, percent: int) -> None:
        _, strategy = self.rollout()
        parameters = {**strategy["parameters"], "rollout": str(percent)}
        path = f"{self._feature_path(ENFORCE_FLAG)}/environments/{self.environment}/strategies/{strategy['id']}"
        body = {"name": "flexibleRollout", "parameters": parameters, "constraints": strategy.get("constraints", [])}
        self._expect(self._call("PUT", path, json=body), f"setting {ENFORCE_FLAG} to {percent}%")
        if not self.environment_of(ENFORCE_FLAG).get("enabled"):
            self.set_enabled(ENFORCE_FLAG, True)

    def kill_switch(self) -> bool:
        return bool(self.environment_of(KILL_FLAG).get("enabled"))

    def last_change(self) -> datetime | None:
        """When the enforce flag's strategy was last added or changed (from the server's events)."""
        r = self._call("GET", f"/api/admin/events/{ENFORCE_FLAG}")
        if r.status_code != 200:
            raise RolloutError(f"reading the events of {ENFORCE_FLAG} failed: HTTP {r.status_code}")
        times = [
            datetime.fromisoformat(e["createdAt"].replace("Z", "+00:00"))
            for e in r.json().get("events", [])
            if e.get("type") in ("feature-strategy-update", "feature-strategy-add")
            and e.get("environment") in (None, self.environment)
        ]
        return max(times, default=None)

    @staticmethod
    def _expect(r: httpx.Response, what: str) -> None:
        if r.status_code >= 300:
            raise RolloutError(f"{what} failed: HTTP {r.status_code} {r.text[:200]}")


@dataclass
class GuardResult:
    name: str
    value: float
    limit: float
    ok: bool
    text: str


def read_metrics(urls: list[str]) -> dict[str, float]:
    """Sums over the sidecars of the counters and histogram buckets the guards need."""
    totals: dict[str, float] = {}
    for url in urls:
        try:
            r = httpx.get(url, timeout=5.0)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            raise RolloutError(f"cannot read sidecar metrics at {url}: {type(exc).__name__}") from None
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                if s.name == "waltz_gate_requests_total":
                    _add(totals, "checks", s.value)
                    _add(totals, f"decision:{s.labels['decision']}", s.value)
                    _add(totals, f"mode:{s.labels['stage2_mode']}", s.value)
                elif s.name == "waltz_gate_degraded_total":
                    _add(totals, "degraded", s.value)
                elif s.name == "waltz_gate_http_requests_total" and s.labels["route"].startswith("/v1/check"):
                    _add(totals, "http", s.value)
                    if s.labels["status"].startswith("5"):
                        _add(totals, "http5xx", s.value)
                elif s.name == "waltz_gate_stage2_shadow_disagreement_total":
                    _add(totals, "disagree", s.value)
                elif s.name == "waltz_gate_request_latency_seconds_bucket":
                    _add(totals, f"le:{s.labels['le']}", s.value)
    return totals


def _add(d: dict[str, float], key: str, value: float) -> None:
    d[key] = d.get(key, 0.0) + value


def p95_ms(totals: dict[str, float]) -> float:
    """p95 from the latency histogram's cumulative buckets (the bucket's upper bound)."""
    buckets = sorted((float(k[3:]), v) for k, v in totals.items() if k.startswith("le:"))
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    target = 0.95 * buckets[-1][1]
    return next(le for le, count in buckets if count >= target) * 1000


def check_guards(guards: Guards, totals: dict[str, float]) -> list[GuardResult]:
    checks = totals.get("checks", 0.0)
    results = [GuardResult("traffic", checks, guards.min_checks, checks >= guards.min_checks,
                           f"{checks:.0f} checks seen, at least {guards.min_checks} needed")]
    if checks == 0:
        return results
    errors = (totals.get("http5xx", 0.0) + totals.get("degraded", 0.0)) / checks
    p95 = p95_ms(totals)
    blocking = (totals.get("decision:block", 0.0) + totals.get("decision:revise", 0.0)) / checks
    shadow = totals.get("mode:shadow", 0.0)
    disagreement = totals.get("disagree", 0.0) / shadow if shadow else 0.0
    for name, value, limit, unit in (
        ("error rate", errors, guards.max_error_rate, "%"),
        ("p95 latency", p95, guards.max_p95_ms, " ms"),
        ("block/revise rate", blocking, guards.max_block_revise_rate, "%"),
        ("shadow disagreement", disagreement, guards.max_shadow_disagreement, "%"),
    ):
        shown = (f"{value * 100:.2f}%", f"{limit * 100:.2f}%") if unit == "%" else (f"{value:.1f} ms", f"{limit:.1f} ms")
        results.append(GuardResult(name, value, limit, value <= limit, f"{shown[0]} (limit {shown[1]})"))
    return results


def read_guards(guards: Guards) -> list[GuardResult]:
    """The guards against the sidecars' metrics now."""
    return check_guards(guards, read_metrics(guards.metrics_urls))


def hours_since(when: datetime | None) -> float:
    return float("inf") if when is None else (datetime.now(UTC) - when).total_seconds() / 3600


@dataclass(frozen=True)
class RolloutState:
    """The server's side: the enforce percentage, the kill switch, hours since the percentage last changed."""

    percent: int
    kill_switch: bool
    hours_held: float

    @classmethod
    def read(cls, api: AdminAPI) -> RolloutState:
        percent, _ = api.rollout()
        return cls(percent, api.kill_switch(), hours_since(api.last_change()))


@dataclass(frozen=True)
class Advance:
    """What `advance` decided from ``percent``. ``action``: advance (to ``target``, the next step); stay (the
    last step); refuse (the operator must act first; ``reason`` says what); hold or roll back (a guard tripped:
    stay, or go to ``target``, the previous step; ``reason`` names the guards and figures)."""

    action: Literal["advance", "stay", "refuse", "hold", "roll back"]
    percent: int
    target: int | None
    reason: str


def decide_advance(plan: Plan, state: RolloutState, guards: Callable[[], list[GuardResult]], rollback: bool) -> Advance:
    """The rollout's next move. `guards` (which reads the sidecars) is called only once the dwell time is over."""
    percent, step = state.percent, plan.index(state.percent)
    if state.kill_switch:
        return Advance("refuse", percent, None, "the kill switch is on; turn it off before advancing")
    if step is None:
        return Advance("refuse", percent, None,
                       f"the current rollout {percent}% is not a step of the plan; use `waltz-gate rollout set`")
    if step == len(plan.steps) - 1:
        return Advance("stay", percent, None, f"{ENFORCE_FLAG} is at the last step ({percent}%); nothing to advance")
    need = plan.steps[step].min_dwell_hours
    if state.hours_held < need:
        return Advance("refuse", percent, None,
                       f"refused: {percent}% has been held {state.hours_held:.1f} h of the {need:g} h the plan requires")
    tripped = [g for g in guards() if not g.ok]
    if not tripped:
        return Advance("advance", percent, plan.steps[step + 1].percent, "all guards pass")
    reasons = "; ".join(f"guard {g.name} tripped: {g.text}" for g in tripped)
    if rollback and step > 0:
        return Advance("roll back", percent, plan.steps[step - 1].percent, reasons)
    return Advance("hold", percent, None, reasons)


def bootstrap_definitions(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["features"]
    except (OSError, ValueError, KeyError) as exc:
        raise RolloutError(f"cannot read flag definitions from {path}: {exc}") from None
