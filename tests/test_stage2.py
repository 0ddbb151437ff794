"""Stage 2: ONNX export (tiny models from a config), the generative and remote backends, micro-batching,
and the lean serving path."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from gate import CheckRequest, Gate, GateSettings, Status
from gate.config import ConfigError, describe
from plugins.chat import ChatSettings, make_chat
from plugins.onnx_models import CausalLM, ClassifierModel
from plugins.remote_llm import RemoteChat
from plugins.scripted_chat import ScriptedChat
from plugins.waltz_protocol import FormatError, parse_feedback, revision_input
from training.export import ExportError, export
from training.tiny import tiny_causal_lm, tiny_classifier


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> tuple[Path, Path]:
    src = tiny_causal_lm(tmp_path_factory.mktemp("lm") / "hf")
    out = src.parent / "onnx"
    export(src, out, min_agreement=0.9)
    return src, out


def test_export_refuses_low_agreement_and_writes_nothing(tmp_path, monkeypatch):
    import training.export as export_module

    measure = export_module._classifier_agreement

    def int8_flips_a_tenth(model_dir, tmp, fname, samples, max_tokens):
        # The measurement is real; the int8 variant is then reported as disagreeing on 10% of decisions.
        result = measure(model_dir, tmp, fname, samples, max_tokens)
        return {**result, "decision_agreement": 0.9} if fname == "model.int8.onnx" else result

    monkeypatch.setattr(export_module, "_classifier_agreement", int8_flips_a_tenth)
    src = tiny_classifier(tmp_path / "hf")
    with pytest.raises(ExportError, match="refused: decision agreement with the torch model is 0.9000"):
        export(src, tmp_path / "onnx", quantize=True, min_agreement=0.99)
    assert not (tmp_path / "onnx").exists()
    export(src, tmp_path / "onnx", quantize=True, min_agreement=0.9)  # at the threshold it is written
    assert (tmp_path / "onnx" / "model.int8.onnx").is_file()


def test_export_classifier_manifest_and_serving(tmp_path):
    src = tiny_classifier(tmp_path / "hf")
    out = tmp_path / "onnx"
    manifest = export(src, out, quantize=False, serve="fp32")
    assert manifest["task"] == "text-classification" and manifest["serves"] == "model.onnx"
    assert manifest["agreement"]["fp32"]["decision_agreement"] == 1.0
    assert manifest["agreement"]["fp32"]["max_logit_diff"] < 1e-4
    assert len(manifest["source_sha256"]) == 64 and manifest["opset"] == 18
    assert json.loads((out / "manifest.json").read_text()) == manifest
    model = ClassifierModel(out)
    probs = model.predict([("hello", None), ("hi", "I can't help with that.")])
    assert probs.shape == (2, 3) and ((probs >= 0) & (probs <= 1)).all()


def test_export_cli_errors_are_sentences(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gate", "export", "--model", str(tmp_path), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "config.json" in out.stderr and "Traceback" not in out.stderr


def test_onnx_generation_matches_torch_greedy(tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM

    src, out = tiny_lm
    fp32 = CausalLM(out, model_file="model.onnx")
    ids = fp32.tokenizer.encode("User: hello Assistant:").ids
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    with torch.inference_mode():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(ids):].tolist()
    assert fp32.generate_ids(ids, 12) == ref  # the KV cache path reproduces full recomputation


def test_generative_backend_malformed_json_is_a_plugin_error(tiny_lm):
    _, out = tiny_lm
    gate = Gate.from_settings(GateSettings(
        plugins=["waltzrl"], stage2={"flags": False, "mode": "enforce"},
        plugin_settings={"waltzrl": {"timeout_ms": 10000, "settings": {"backend": "generative", "model_dir": str(out),
                                                                       "max_new_tokens": 8}}},
    ))
    verdict = gate.check(CheckRequest(prompt="hi", response="hello"))
    gate.close()
    (finding,) = verdict.findings
    assert finding.status == Status.ERROR and "JSON" in finding.message
    assert verdict.degraded and verdict.bypassed and verdict.decision == "allow"  # Stage 2 fails open by default


@pytest.mark.parametrize(
    "text,error",
    [
        ('{"reasoning": "ok", "unsafe": false, "overrefuse": false, "feedback": ""}', None),
        ('Sure! ```json\n{"reasoning": "r", "unsafe": true, "overrefuse": false, "feedback": "Remove steps."}\n```', None),
        ("no json here", "no JSON object"),
        ('{"reasoning": "r", "unsafe": "yes", "overrefuse": false, "feedback": ""}', "wrong type for unsafe"),
        ('{"reasoning": "r", "unsafe": true, "overrefuse": false}', "lacks feedback"),
        ('{"reasoning": "r", "unsafe": true, "overrefuse": false, "feedback": " "}', "no feedback text"),
        ('{"reasoning": "r", "unsafe": true,, }', "does not parse"),
    ],
)
def test_feedback_json_parsing(text, error):
    if error is None:
        assert parse_feedback(text).reasoning
    else:
        with pytest.raises(FormatError, match=error):
            parse_feedback(text)


def test_one_factory_builds_every_chat_kind(tiny_lm, fake_openai, tmp_path):
    _, out = tiny_lm
    script = tmp_path / "agent.jsonl"
    script.write_text(json.dumps({"prompt": "hi", "response": "hello", "revision": "hello again"}) + "\n")
    onnx = make_chat(ChatSettings(kind="onnx", model_dir=out, model_file="model.onnx"))
    assert isinstance(onnx, CausalLM) and isinstance(onnx.chat("s", "hi", 4), str)
    remote = make_chat(ChatSettings.from_spec(f"remote:{fake_openai}"))
    assert isinstance(remote, RemoteChat) and remote.chat("You are the conversation agent.", "hi", 8) == "A revised, safe answer."
    scripted = make_chat(ChatSettings.from_spec(f"scripted:{script}"))
    assert isinstance(scripted, ScriptedChat) and scripted.chat("s", "hi", 8) == "hello"
    assert scripted.chat("s", revision_input("hi", "hello", "be nicer"), 8) == "hello again"
    assert isinstance(make_chat(ChatSettings.from_spec(f"onnx:{out}")), CausalLM)


def test_chat_factory_refuses_unknown_kinds_and_missing_settings():
    with pytest.raises(ConfigError, match="'gpu:x' names no chat: use onnx:DIR, remote:URL or scripted:FILE"):
        ChatSettings.from_spec("gpu:x")
    with pytest.raises(ConfigError, match="names no chat"):
        ChatSettings.from_spec("remote:")
    with pytest.raises(ValidationError) as caught:
        ChatSettings(kind="gpu")
    assert describe(caught.value) == "kind: Input should be 'onnx', 'remote' or 'scripted' (got 'gpu')."
    with pytest.raises(ConfigError, match=r"the remote chat needs url \(the OpenAI-compatible base URL\)"):
        make_chat(ChatSettings(kind="remote"))
    with pytest.raises(ConfigError, match="plugin 'waltzrl' failed to start: revision_backend generative: the onnx chat needs model_dir"):
        Gate.from_settings(GateSettings(plugins=["waltzrl"], stage2={"flags": False, "mode": "enforce"},
                                        plugin_settings={"waltzrl": {"settings": {"revision_backend": "generative"}}}))


def _remote_gate(url, **extra):
    settings = {"backend": "remote", "url": url, **extra}
    return Gate.from_settings(GateSettings(plugins=["waltzrl"], stage2={"flags": False, "mode": "enforce"},
                                           plugin_settings={"waltzrl": {"timeout_ms": 5000, "settings": settings}}))


def test_remote_backend_labels_and_feedback(fake_openai):
    gate = _remote_gate(fake_openai)
    flagged = gate.check(CheckRequest(prompt="q", response="UNSAFE steps"))
    clean = gate.check(CheckRequest(prompt="q", response="a fine answer"))
    broken = gate.check(CheckRequest(prompt="BROKEN", response="x"))
    gate.close()
    assert flagged.decision == "revise" and flagged.feedback == "Remove the unsafe steps." and not flagged.revised
    assert flagged.stage2.labels == {"unsafe": True, "overrefuse": False}
    assert clean.decision == "allow" and clean.findings == ()
    assert broken.findings[0].status == Status.ERROR and broken.degraded


def test_remote_revision_is_rechecked_and_returned(fake_openai):
    gate = _remote_gate(fake_openai, revision_backend="remote", revision_url=fake_openai)
    verdict = gate.check(CheckRequest(prompt="q", response="UNSAFE steps"))
    gate.close()
    assert verdict.decision == "revise" and verdict.revised and verdict.response == "A revised, safe answer."


def test_concurrent_stage2_checks_are_micro_batched(plugin_site):
    from plugins_for_tests import BatchRecorder

    BatchRecorder.sizes.clear()
    gate = Gate.from_settings(GateSettings(plugins=["batch_recorder"], stage2={"flags": False, "mode": "enforce", "workers": 16,
                                                                               "max_batch": 8, "max_wait_ms": 10}))
    with ThreadPoolExecutor(16) as pool:
        verdicts = list(pool.map(lambda i: gate.check(CheckRequest(prompt=f"p{i}", response="r")), range(64)))
    gate.close()
    assert all(v.findings == () and not v.degraded for v in verdicts)
    assert sum(BatchRecorder.sizes) == 64 and max(BatchRecorder.sizes) > 1 and max(BatchRecorder.sizes) <= 8
    hist = gate.metrics.registry.get_sample_value("waltz_gate_stage2_batch_size_count")
    assert hist == len(BatchRecorder.sizes)


def test_serving_path_imports_no_torch(tmp_path):
    code = (
        "import sys; from gate import Gate, GateSettings, CheckRequest; import gate.server, gate.client;"
        "g = Gate.from_settings(GateSettings(plugins=['harmful', 'waltzrl'], stage2={'flags': False, 'mode': 'enforce'}));"
        "v = g.check(CheckRequest(prompt='hi', response='hello'));"
        "print(sorted(m for m in ('torch', 'transformers', 'deepspeed', 'optimum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_classifier_with_unknown_heads_is_a_start_up_error(tmp_path):
    src = tiny_classifier(tmp_path / "hf", labels=("toxic", "spam"))
    export(src, tmp_path / "onnx", quantize=False, serve="fp32")
    with pytest.raises(ConfigError, match="neither"):
        Gate.from_settings(GateSettings(plugins=["waltzrl"], plugin_settings={
            "waltzrl": {"settings": {"backend": "classifier", "model_dir": str(tmp_path / "onnx")}}}))


@pytest.mark.parametrize(
    "labels,probs,has_response,expected",
    [
        (("prompt_harmful", "refusal", "response_harmful"), (0.9, 0.1, 0.2), False, (True, False)),
        (("prompt_harmful", "refusal", "response_harmful"), (0.1, 0.9, 0.1), True, (False, True)),
        (("prompt_harmful", "refusal", "response_harmful"), (0.9, 0.9, 0.1), True, (False, False)),  # refusing harm is right
        (("prompt_harmful", "refusal", "response_harmful"), (0.9, 0.1, 0.8), True, (True, False)),
        (("unsafe", "overrefuse"), (0.7, 0.2), False, (True, False)),
        (("unsafe", "overrefuse"), (0.2, 0.9), True, (False, True)),
        (("unsafe", "overrefuse"), (0.2, 0.9), False, (False, False)),  # a pre-check cannot over-refuse
    ],
)
def test_classifier_heads_to_labels(labels, probs, has_response, expected):
    from plugins.feedback import classifier_labels

    assert classifier_labels(labels, probs, {}, has_response)[:2] == expected


def test_a_refusal_of_a_request_judged_unsafe_alone_is_no_overrefusal():
    """The pair head may call a refusal an over-refusal; the plugin then reads the prompt alone, and an
    unsafe request cancels the label (one more pass, for those pairs only)."""
    import numpy as np

    from gate.types import CheckRequest
    from plugins.feedback import FeedbackAgent

    class StandIn:  # pair -> over-refusal for every refusal; the prompt alone -> unsafe when it says "bomb"
        labels = ("unsafe", "overrefuse")
        calls: list = []

        def predict(self, pairs):
            self.calls.append(pairs)
            return np.array([[0.9 if "bomb" in p else 0.1, 0.0] if r is None else [0.1, 0.8] for p, r in pairs])

    agent = FeedbackAgent()
    agent.classifier, agent.thresholds, agent.reviser = StandIn(), {"unsafe": 0.5, "overrefuse": 0.5}, None
    agent.settings = {"response_windows": 0}
    found = agent.gate_check_batch([CheckRequest(prompt="How do I build a bomb?", response="Sorry, I can't."),
                                    CheckRequest(prompt="How do I bake bread?", response="Sorry, I can't.")])
    assert found[0] == [] and [d.labels for d in found[1]] == [{"unsafe": False, "overrefuse": True}]
    assert StandIn.calls[1] == [("How do I build a bomb?", None), ("How do I bake bread?", None)]


def test_only_the_content_head_takes_the_windows_reading():
    import numpy as np

    from gate.types import CheckRequest
    from plugins.feedback import FeedbackAgent

    class StandIn:  # head and tail: nothing; some window: both heads high
        def __init__(self, labels):
            self.labels = labels

        def predict(self, pairs):
            return np.zeros((len(pairs), len(self.labels)))

        def predict_windowed(self, pairs, limit):
            assert limit == 4
            return self.predict(pairs), np.full((len(pairs), len(self.labels)), 0.9)

    for labels, want in ((("unsafe", "overrefuse"), {"unsafe": True, "overrefuse": False}),
                         (("prompt_harmful", "refusal", "response_harmful"), {"unsafe": True, "overrefuse": False})):
        agent = FeedbackAgent()
        agent.classifier, agent.thresholds, agent.reviser = StandIn(labels), {}, None
        agent.settings = {"response_windows": 4}
        (found,) = agent.gate_check_batch([CheckRequest(prompt="Tell me about my town.", response="A long answer.")])
        assert [d.labels for d in found] == [want]
        agent.settings = {"response_windows": 0}
        assert agent.gate_check_batch([CheckRequest(prompt="Tell me about my town.", response="A long answer.")]) == [[]]


def test_thresholds_are_per_head():
    from plugins.feedback import classifier_labels

    heads = ("prompt_harmful", "refusal", "response_harmful")
    assert classifier_labels(heads, (0.6, 0.0, 0.0), {"prompt_harmful": 0.7}, False)[0] is False
    assert classifier_labels(heads, (0.6, 0.0, 0.0), {}, False)[0] is True


def test_a_prompt_alone_is_judged_at_the_precheck_threshold():
    from plugins.feedback import PRECHECK, classifier_labels

    heads, chosen = ("unsafe", "overrefuse"), {"unsafe": 0.5, PRECHECK: 0.8}
    assert classifier_labels(heads, (0.7, 0.0), chosen, True)[0] is True  # a pair: unsafe's threshold
    assert classifier_labels(heads, (0.7, 0.0), chosen, False)[0] is False  # a prompt alone: the pre-check's
    assert classifier_labels(heads, (0.7, 0.0), {"unsafe": 0.5}, False)[0] is True  # none chosen: unsafe's


def test_the_overrefusal_recheck_reads_the_prompt_at_the_precheck_threshold():
    import numpy as np

    from gate.types import CheckRequest
    from plugins.feedback import PRECHECK, FeedbackAgent

    class StandIn:  # every pair: an over-refusal; the prompt alone scores 0.9
        labels = ("unsafe", "overrefuse")

        def predict(self, pairs):
            return np.array([[0.9, 0.0] if r is None else [0.1, 0.8] for _, r in pairs])

    agent = FeedbackAgent()
    agent.reviser, agent.settings = None, {"response_windows": 0}
    agent.classifier = StandIn()
    request = CheckRequest(prompt="How do I build a bomb?", response="Sorry, I can't.")
    agent.thresholds = {"unsafe": 0.5, "overrefuse": 0.5, PRECHECK: 0.85}
    assert agent.gate_check_batch([request]) == [[]]  # 0.9 >= 0.85: an unsafe request, refusing it is right
    agent.thresholds[PRECHECK] = 0.95
    assert [d.labels for d in agent.gate_check_batch([request])[0]] == [{"unsafe": False, "overrefuse": True}]


def test_a_threshold_for_no_head_is_a_start_up_error():
    with pytest.raises(ConfigError, match="thresholds name no head of the classifier: unsafr"):
        Gate.from_settings(GateSettings(plugins=["waltzrl"], plugin_settings={
            "waltzrl": {"settings": {"thresholds": {"unsafr": 0.5}}}}))
    # The pre-check's own is a known name for a model with an unsafe head (the shipped one).
    Gate.from_settings(GateSettings(plugins=["waltzrl"], plugin_settings={
        "waltzrl": {"settings": {"thresholds": {"unsafe_precheck": 0.9}}}}))
