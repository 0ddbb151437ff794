"""Stage 2 rollout flags, offline from a bootstrap file (the embedded default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gate import CheckRequest, ConfigError, Gate, GateSettings
from gate.config import Stage2Settings
from gate.flags import DEFINITIONS, ENFORCE_FLAG, KILL_FLAG, Stage2Flags
from gate.metrics import GateMetrics

SESSIONS = [f"session-{i}" for i in range(10_000)]


def bootstrap(tmp_path: Path, rollout: int, kill: bool = False, stickiness: str = "sessionId",
              constraints: list | None = None) -> Path:
    state = json.loads(DEFINITIONS.read_text())
    enforce, kill_flag = state["features"]
    enforce["strategies"][0]["parameters"].update(rollout=str(rollout), stickiness=stickiness)
    enforce["strategies"][0]["constraints"] = constraints or []
    kill_flag["enabled"] = kill
    path = tmp_path / f"boot-{rollout}-{kill}-{stickiness}-{bool(constraints)}.json"
    path.write_text(json.dumps(state))
    return path


@pytest.fixture
def flags_at(tmp_path):
    made = []

    def make(rollout: int, **kw) -> Stage2Flags:
        settings = Stage2Settings(**{k: v for k, v in kw.items() if k in ("stickiness", "shadow")})
        extra = {k: v for k, v in kw.items() if k in ("kill", "stickiness_field", "constraints")}
        path = bootstrap(tmp_path, rollout, extra.get("kill", False), extra.get("stickiness_field", "sessionId"),
                         extra.get("constraints"))
        made.append(Stage2Flags(settings, GateMetrics(), bootstrap=path))
        return made[-1]

    yield make
    for f in made:
        f.close()


def enforced(flags: Stage2Flags, sessions=SESSIONS) -> set[str]:
    return {s for s in sessions if flags.resolve(CheckRequest(prompt="x", context={"session_id": s}))[0] == "enforce"}


def test_ten_percent_of_sessions_and_sticky_to_fifty(flags_at):
    at10, at50 = enforced(flags_at(10)), enforced(flags_at(50))
    assert abs(len(at10) / len(SESSIONS) - 0.10) <= 0.015
    assert abs(len(at50) / len(SESSIONS) - 0.50) <= 0.015
    assert at10 <= at50  # every session enforced at 10% still is at 50%
    assert enforced(flags_at(0)) == set() and enforced(flags_at(100)) == set(SESSIONS)


@pytest.mark.parametrize("rollout", [0, 10, 37, 50, 100])
def test_fast_bucketing_agrees_with_the_sdk(flags_at, rollout):
    flags = flags_at(rollout)
    assert flags._rollout == (rollout, ENFORCE_FLAG)
    sdk = {s for s in SESSIONS[:3000] if flags.client.is_enabled(ENFORCE_FLAG, {"sessionId": s})}
    assert enforced(flags, SESSIONS[:3000]) == sdk


def test_flags_with_constraints_go_through_the_sdk(flags_at):
    constraints = [{"contextName": "sessionId", "operator": "STR_STARTS_WITH", "values": ["session-1"]}]
    flags = flags_at(100, constraints=constraints)
    assert flags._rollout is None
    assert enforced(flags, SESSIONS[:200]) == {s for s in SESSIONS[:200] if s.startswith("session-1")}


def test_outside_the_rollout_is_shadow_or_off(flags_at):
    request = CheckRequest(prompt="x", context={"session_id": "session-1"})
    mode, reason = flags_at(0).resolve(request)
    assert mode == "shadow" and "not in the waltz-gate.stage2.enforce rollout" in reason
    assert flags_at(0, shadow=False).resolve(request)[0] == "off"
    mode, reason = flags_at(50).resolve(CheckRequest(prompt="x"))
    assert mode == "shadow" and reason.startswith("no session_id")
    # At 100% the rollout is over: a request with no key to bucket on is enforced too (check --prompt).
    assert flags_at(100).resolve(CheckRequest(prompt="x"))[0] == "enforce"


def test_kill_switch_turns_stage2_off_everywhere(flags_at):
    flags = flags_at(100, kill=True)
    modes = {flags.resolve(CheckRequest(prompt="x", context={"session_id": s}))[0] for s in SESSIONS[:500]}
    assert modes == {"off"}
    assert KILL_FLAG in flags.resolve(CheckRequest(prompt="x", context={"session_id": "a"}))[1]


def test_stickiness_on_user_id(flags_at):
    flags = flags_at(50, stickiness="user_id", stickiness_field="userId")
    a = CheckRequest(prompt="x", context={"user_id": "user-7", "session_id": "s1"})
    b = CheckRequest(prompt="x", context={"user_id": "user-7", "session_id": "s2"})
    assert flags.resolve(a) == flags.resolve(b)


@pytest.mark.parametrize("content,needle", [(None, "cannot read"), ("{bad", "not valid JSON"), ("[]", "client features format")])
def test_bad_bootstrap_is_a_config_error(tmp_path, content, needle):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        Stage2Flags(Stage2Settings(), GateMetrics(), bootstrap=path)


def test_url_without_token_is_a_config_error(monkeypatch):
    monkeypatch.setenv("UNLEASH_URL", "http://127.0.0.1:9/api")
    monkeypatch.delenv("UNLEASH_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="UNLEASH_API_TOKEN is not"):
        Stage2Flags(Stage2Settings(), GateMetrics())


def test_gate_uses_the_flags_and_the_verdict_says_why(tmp_path, monkeypatch, plugin_site):
    monkeypatch.setenv("WALTZ_GATE_FLAGS_BOOTSTRAP", str(bootstrap(tmp_path, 50)))
    gate = Gate.from_settings(GateSettings(plugins=["harmful", "scripted_judge"]))
    verdicts = [gate.check(CheckRequest(prompt="q", response="UNSAFE", context={"session_id": s})) for s in SESSIONS[:400]]
    gate.close()
    modes = {v.stage2.mode for v in verdicts}
    assert modes == {"enforce", "shadow"}
    for v in verdicts:
        if v.stage2.mode == "enforce":
            assert v.decision == "revise" and "on for this session_id" in v.stage2.reason
        else:
            assert v.decision == "allow" and v.stage2.would_decide == "revise" and v.stage2.reason.endswith("shadow")


def test_no_server_enforces_stage2_for_every_request(monkeypatch):
    for name in ("UNLEASH_URL", "UNLEASH_API_TOKEN", "WALTZ_GATE_FLAGS_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    flags = Stage2Flags(Stage2Settings(), GateMetrics())
    try:
        assert flags.source == "bootstrap"
        assert {flags.resolve(CheckRequest(prompt="q", context={"session_id": s}))[0] for s in SESSIONS[:200]} == {"enforce"}
        assert flags.resolve(CheckRequest(prompt="q"))[0] == "enforce"  # no session id (`waltz-gate check --prompt`)
    finally:
        flags.close()


def test_a_server_backed_gate_starts_from_the_definitions_at_zero_percent(monkeypatch):
    # Until the server answers (here it never does), no session is enforced: shadow first, as the plan says.
    monkeypatch.setenv("UNLEASH_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("UNLEASH_API_TOKEN", "client-token")
    monkeypatch.delenv("WALTZ_GATE_FLAGS_BOOTSTRAP", raising=False)
    flags = Stage2Flags(Stage2Settings(flags_refresh_s=3600), GateMetrics())
    try:
        assert flags.source == "server"
        assert {flags.resolve(CheckRequest(prompt="q", context={"session_id": s}))[0] for s in SESSIONS[:200]} == {"shadow"}
    finally:
        flags.close()
