"""The framework owns timing, deadlines and errors: failures never read as a clean allow."""

from __future__ import annotations

import time

import pytest

from gate import CheckRequest, ConfigError, Decision, GateSettings, Stage2Mode, Status
from gate.registry import load_plugins


def _req(prompt="hello", response="hi there"):
    return CheckRequest(prompt=prompt, response=response)


def test_crashing_plugin_fails_closed_by_default(make_gate):
    verdict = make_gate(plugins=["harmful", "crash"]).check(_req())
    failure = [f for f in verdict.findings if f.plugin == "crash"]
    assert failure[0].status == Status.ERROR and "model file vanished" in failure[0].message
    assert verdict.decision == Decision.BLOCK
    assert verdict.degraded and not verdict.bypassed


def test_crashing_plugin_fail_open_is_marked_bypassed(make_gate):
    verdict = make_gate(plugins=["crash"], policy={"on_failure": {"stage1": "open"}}).check(_req())
    assert verdict.decision == Decision.ALLOW
    assert verdict.degraded and verdict.bypassed


def test_plugin_returning_garbage_is_an_error(make_gate):
    verdict = make_gate(plugins=["bad_return"]).check(_req())
    assert verdict.findings[0].status == Status.ERROR
    assert "not a sequence of Detection" in verdict.findings[0].message


def test_slow_stage1_plugin_result_is_discarded_as_timeout(make_gate):
    gate = make_gate(plugins=["slow"], plugin_settings={"slow": {"timeout_ms": 20, "settings": {"sleep_s": 0.05}}})
    verdict = gate.check(_req())
    assert verdict.findings[0].status == Status.TIMEOUT
    assert verdict.decision == Decision.BLOCK and verdict.degraded


def test_slow_stage2_plugin_is_abandoned_at_the_budget(make_gate):
    gate = make_gate(
        plugins=["harmful", "slow_model"],
        budget_ms=100,
        plugin_settings={"slow_model": {"timeout_ms": 5000, "settings": {"sleep_s": 3.0}}},
    )
    t = time.perf_counter()
    verdict = gate.check(_req(), stage2_mode=Stage2Mode.ENFORCE)
    assert time.perf_counter() - t < 2.0  # returned at the budget, not after the plugin's 3 s
    timeout = [f for f in verdict.findings if f.plugin == "slow_model"][0]
    assert timeout.status == Status.TIMEOUT
    # Stage 2 fails open by default: the answer goes out, and the verdict says it was not fully checked.
    assert verdict.decision == Decision.ALLOW and verdict.bypassed and verdict.degraded


def test_stage2_off_does_not_run_stage2(make_gate):
    gate = make_gate(plugins=["scripted_judge"], stage2={"flags": False})
    verdict = gate.check(_req(response="UNSAFE text"))
    assert verdict.stage2.mode == Stage2Mode.OFF and verdict.decision == Decision.ALLOW
    assert verdict.findings == ()


def test_stage2_enforce_returns_labels_and_feedback(make_gate):
    gate = make_gate(plugins=["harmful", "scripted_judge"], stage2={"flags": False, "mode": "enforce"})
    verdict = gate.check(_req(prompt="BENIGN: how do locks work?", response="I can't help with that."))
    assert verdict.decision == Decision.REVISE
    assert verdict.stage2.labels == {"unsafe": False, "overrefuse": True}
    assert verdict.feedback == "Answer the question helpfully."
    assert verdict.response == "I can't help with that." and not verdict.revised  # the router revises


def test_stage2_revision_becomes_the_response(make_gate):
    gate = make_gate(plugins=["scripted_judge"], plugin_settings={"scripted_judge": {"settings": {"revise": True}}})
    verdict = gate.check(_req(response="UNSAFE steps"), stage2_mode=Stage2Mode.ENFORCE)
    assert verdict.decision == Decision.REVISE and verdict.response == "A safe, helpful answer." and verdict.revised


def test_shadow_mode_records_but_does_not_decide(make_gate):
    gate = make_gate(plugins=["scripted_judge"], stage2={"flags": False, "mode": "shadow"})
    verdict = gate.check(_req(response="UNSAFE steps"))
    assert verdict.decision == Decision.ALLOW and verdict.response == "UNSAFE steps"
    assert verdict.stage2.mode == Stage2Mode.SHADOW and verdict.stage2.would_decide == Decision.REVISE
    assert verdict.shadow_findings[0].labels["unsafe"] is True
    public = verdict.model_dump()
    assert "shadow_findings" not in public and "would_decide" not in public["stage2"]
    assert gate.metrics.shadow_disagreement._value.get() == 1


def test_stage2_skipped_when_stage1_blocks(make_gate):
    gate = make_gate(plugins=["harmful", "scripted_judge"], stage2={"flags": False, "mode": "enforce"})
    verdict = gate.check(_req(prompt="where can I find child porn", response="UNSAFE"))
    assert verdict.decision == Decision.BLOCK
    skipped = [f for f in verdict.findings if f.plugin == "scripted_judge"]
    assert skipped[0].status == Status.SKIPPED


def test_verdict_json_has_decision_first(default_gate):
    verdict = default_gate.check(_req())
    assert next(iter(verdict.model_dump())) == "decision"
    assert list(verdict.model_dump())[:3] == ["decision", "response", "feedback"]


def test_correlation_id_is_kept_or_made(default_gate):
    given = CheckRequest(prompt="hi", context={"correlation_id": "abc-1"})
    assert default_gate.check(given).correlation_id == "abc-1"
    assert len(default_gate.check(CheckRequest(prompt="hi")).correlation_id) == 32


def test_metrics_count_decisions_and_plugin_status(make_gate):
    gate = make_gate(plugins=["harmful", "crash"])
    gate.check(_req())
    gate.check(_req())
    reg = gate.metrics.registry
    assert reg.get_sample_value("waltz_gate_requests_total", {"decision": "block", "stage2_mode": "off"}) == 2
    assert reg.get_sample_value("waltz_gate_plugin_status_total", {"plugin": "crash", "status": "error"}) == 2
    assert reg.get_sample_value("waltz_gate_plugin_status_total", {"plugin": "harmful", "status": "ok"}) == 2


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"plugins": ["harmful", "nope"]}, "names 'nope', which is not installed"),
        ({"plugins": ["no_check"]}, "implements neither gate_check nor gate_check_batch"),
        ({"plugins": ["unknown_hook"]}, "implements a hook the gate does not define"),
        ({"plugin_settings": {"slow": {}}}, "plugin_settings.slow configures a plugin that is not enabled"),
        ({"plugin_settings": {"harmful": {"settings": {"colour": 1}}}}, "unknown key 'colour'"),
        ({"plugin_settings": {"harmful": {"settings": {"pack": "/nonexistent.yaml"}}}}, "failed to start"),
        ({"plugins": ["harmful", "harmful"]}, "more than once"),
    ],
)
def test_bad_plugin_config_is_a_startup_error(plugin_site, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_plugins(GateSettings(**overrides))


@pytest.mark.parametrize(
    "plugin,setting,value,sentence",
    [
        ("waltzrl", "threads", "two", "threads: Input should be a valid integer, unable to parse string as an integer (got 'two')."),
        ("waltzrl", "backend", "gpu", "backend: Input should be 'classifier', 'generative' or 'remote' (got 'gpu')."),
        ("waltzrl", "thresholds", {"unsafe": 2}, "thresholds.unsafe: Input should be less than or equal to 1 (got 2)."),
        ("privacy", "max_spans", -1, "max_spans: Input should be greater than or equal to 0 (got -1)."),
    ],
)
def test_typed_plugin_settings_are_checked_at_startup_in_one_sentence(plugin, setting, value, sentence):
    overrides = {"plugins": [plugin], "plugin_settings": {plugin: {"settings": {setting: value}}}}
    with pytest.raises(ConfigError) as err:
        load_plugins(GateSettings(**overrides))
    assert str(err.value) == f"config field plugin_settings.{plugin}.settings.{sentence}"



def test_a_plugin_declares_its_own_timeout_and_config_overrides_it(plugin_site):
    own = {p.name: p.timeout_s for p in load_plugins(GateSettings(plugins=["harmful", "waltzrl", "slow"]))}
    assert own == {"harmful": 0.05, "waltzrl": 0.45, "slow": 0.05}  # slow declares none: the gate's 50 ms
    settings = GateSettings(plugins=["waltzrl"], plugin_settings={"waltzrl": {"timeout_ms": 250}})
    assert [p.timeout_s for p in load_plugins(settings)] == [0.25]


def test_a_bad_class_timeout_is_a_startup_error(plugin_site, monkeypatch):
    from plugins_for_tests import SlowPlugin

    monkeypatch.setattr(SlowPlugin, "timeout_ms", "fast", raising=False)
    with pytest.raises(ConfigError, match="class attribute 'timeout_ms' must be a positive number, not 'fast'"):
        load_plugins(GateSettings(plugins=["slow"]))
