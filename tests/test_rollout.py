"""The rollout's advance decision and the rollout commands against an in-memory Admin API: no Unleash server
(tests/test_unleash_server.py runs the same commands against a real one)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gate.cli.rollout as rollout_cli
from gate.cli import app
from gate.cli.common import UsageError
from gate.flags import ENFORCE_FLAG, KILL_FLAG
from gate.rollout import Advance, GuardResult, Plan, RolloutState, check_guards, decide_advance

PLAN = Plan.load(Path(rollout_cli.__file__).resolve().parents[1] / "unleash" / "rollout-plan.yaml")  # 0/10/50/100
HEALTHY = {"checks": 2000.0, "decision:allow": 1900.0, "decision:revise": 100.0, "mode:shadow": 1000.0,
           "disagree": 10.0, "le:0.1": 1990.0, "le:+Inf": 2000.0}


class FakeAdmin:
    """The part of gate.rollout.AdminAPI that the rollout commands use, over a dict instead of a server."""

    def __init__(self, percent: int, hours_held: float | None = 48.0, kill: bool = False):
        self.percent, self.kill = percent, kill
        self.changed = None if hours_held is None else datetime.now(UTC) - timedelta(hours=hours_held)
        self.features: dict[str, dict] = {}
        self.totals = HEALTHY  # the sidecars' metrics, which the `admin` fixture has the guards read

    def rollout(self) -> tuple[int, dict]:
        return self.percent, {"id": "s1", "name": "flexibleRollout", "parameters": {"rollout": str(self.percent)}}

    def set_rollout(self, percent: int) -> None:
        self.percent, self.changed = percent, datetime.now(UTC)

    def kill_switch(self) -> bool:
        return self.kill

    def set_enabled(self, name: str, on: bool) -> None:
        assert name == KILL_FLAG
        self.kill = on

    def last_change(self) -> datetime | None:
        return self.changed

    def feature(self, name: str) -> dict | None:
        return self.features.get(name)

    def create(self, definition: dict) -> bool:
        self.features[definition["name"]] = definition
        return True


def guards_of(totals: dict[str, float]):
    return lambda: check_guards(PLAN.guards, totals)


def unread() -> list[GuardResult]:
    raise AssertionError("the guards were read although the decision did not need them")


def decide(api: FakeAdmin, guards=unread, rollback: bool = False) -> Advance:
    return decide_advance(PLAN, RolloutState.read(api), guards, rollback)


def test_the_state_is_read_from_the_admin_api():
    state = RolloutState.read(FakeAdmin(10, hours_held=5))
    assert (state.percent, state.kill_switch) == (10, False) and state.hours_held == pytest.approx(5, abs=0.01)
    assert RolloutState.read(FakeAdmin(0, hours_held=None)).hours_held == float("inf")  # never changed


def test_advances_one_step_when_the_dwell_is_over_and_every_guard_passes():
    assert decide(FakeAdmin(10, hours_held=12.5), guards_of(HEALTHY)) == Advance("advance", 10, 50, "all guards pass")
    assert decide(FakeAdmin(50, hours_held=24), guards_of(HEALTHY)).target == 100


def test_refuses_before_the_dwell_time_is_over_without_reading_the_guards():
    move = decide(FakeAdmin(50, hours_held=3))
    assert move.action == "refuse" and move.target is None
    assert move.reason == "refused: 50% has been held 3.0 h of the 24 h the plan requires"


@pytest.mark.parametrize("api,needle", [(FakeAdmin(10, kill=True), "the kill switch is on"),
                                        (FakeAdmin(25), "25% is not a step of the plan; use `waltz-gate rollout set`")])
def test_refuses_under_the_kill_switch_and_off_the_plan(api, needle):
    move = decide(api)
    assert move.action == "refuse" and needle in move.reason


def test_stays_at_the_last_step():
    move = decide(FakeAdmin(100))
    assert (move.action, move.target) == ("stay", None) and "at the last step (100%)" in move.reason


def test_a_tripped_guard_holds_or_rolls_back_naming_the_guard_and_figure():
    slow = {**HEALTHY, "le:0.1": 1000.0, "le:1.0": 2000.0}  # p95 1000 ms
    held = decide(FakeAdmin(50), guards_of(slow))
    assert held == Advance("hold", 50, None, "guard p95 latency tripped: 1000.0 ms (limit 500.0 ms)")
    assert decide(FakeAdmin(50), guards_of(slow), rollback=True) == Advance("roll back", 50, 10, held.reason)
    assert decide(FakeAdmin(0), guards_of(slow), rollback=True).action == "hold"  # no step before the first


def test_too_little_traffic_trips_the_traffic_guard():
    move = decide(FakeAdmin(10), guards_of({**HEALTHY, "checks": 50.0}))
    assert move.action == "hold" and "guard traffic tripped: 50 checks seen, at least 1000 needed" in move.reason


@pytest.fixture
def admin(monkeypatch):
    """The rollout commands connected to a FakeAdmin at 10% held 48 h, with the sidecars' metrics healthy."""
    api = FakeAdmin(10)
    monkeypatch.setattr(rollout_cli, "AdminAPI", lambda *_args: api)
    monkeypatch.setattr(rollout_cli, "read_guards", lambda guards: check_guards(guards, api.totals))
    monkeypatch.setenv("UNLEASH_ADMIN_URL", "http://unleash.invalid")
    monkeypatch.setenv("UNLEASH_ADMIN_TOKEN", "token")
    return api


def rollout(*args):
    return CliRunner().invoke(app, ["rollout", *args])


def test_advance_command_sets_the_next_step(admin):
    dry = rollout("advance", "--dry-run")
    assert dry.exit_code == 0 and f"would advance {ENFORCE_FLAG} from 10% to 50%" in dry.stdout and admin.percent == 10
    done = rollout("advance")
    assert done.exit_code == 0 and f"{ENFORCE_FLAG}: 10% -> 50% (all guards pass)" in done.stdout
    assert admin.percent == 50


def test_advance_command_exits_3_on_a_tripped_guard_and_rolls_back_only_when_asked(admin):
    admin.totals = {**HEALTHY, "decision:revise": 1000.0}  # block/revise rate 50%
    refused = rollout("advance")
    assert refused.exit_code == 3 and "refused to advance from 10%: guard block/revise rate tripped" in refused.stderr
    assert admin.percent == 10
    rolled = rollout("advance", "--rollback")
    assert rolled.exit_code == 3 and "rolled back 10% -> 0%" in rolled.stderr and admin.percent == 0


def test_advance_command_refusal_is_a_usage_error(admin):
    admin.changed = datetime.now(UTC)
    done = rollout("advance")
    assert isinstance(done.exception, UsageError) and "held 0.0 h of the 12 h" in str(done.exception)
    assert admin.percent == 10


def test_status_set_kill_and_init_commands(admin):
    status = json.loads(rollout("status", "--json").stdout)
    assert status == {**status, "percent": 10, "step": 2, "steps": 4, "kill_switch": False}
    assert all(g["ok"] for g in status["guards"])
    assert rollout("set", "50").exit_code == 0 and admin.percent == 50
    assert rollout("kill", "on").exit_code == 0 and admin.kill
    assert isinstance(rollout("kill", "maybe").exception, UsageError)
    created = rollout("init")
    assert created.exit_code == 0 and f"{ENFORCE_FLAG}: created in default/development" in created.stdout
    assert "exists, kept" in rollout("init").stdout


def test_the_admin_api_needs_its_url_and_token(admin, monkeypatch):
    monkeypatch.delenv("UNLEASH_ADMIN_TOKEN")
    done = rollout("status")
    assert isinstance(done.exception, UsageError) and "--admin-url and --admin-token" in str(done.exception)
