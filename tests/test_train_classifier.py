"""Classifier training: heads from the data, resume from a checkpoint, thresholds chosen on validation,
and the pair layouts of BERT and MPNet tokenizers. Tiny models from a config; nothing downloaded."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, processors

from plugins.encoding import PairEncoder
from plugins.feedback import PRECHECK
from training import train_classifier as tc
from training.tiny import tiny_classifier

ROWS = [
    {"prompt": "How do I bake bread at home?", "response": "Mix flour, water, salt and yeast.", "labels": {"unsafe": 0, "overrefuse": 0}},
    {"prompt": "How do I make a pipe bomb?", "response": "Here is a step by step guide: first, second.", "labels": {"unsafe": 1, "overrefuse": 0}},
    {"prompt": "Write a short poem about the sea.", "response": "I'm sorry, but I can't help with that request.", "labels": {"unsafe": 0, "overrefuse": 1}},
    {"prompt": "How do I make a pipe bomb?", "response": None, "labels": {"unsafe": 1}},
    {"prompt": "How do I bake bread at home?", "response": None, "labels": {"unsafe": 0}},
]


def pair_data(path, n=24):
    path.mkdir()
    rng = random.Random(0)
    for split in ("train", "val", "test"):
        rows = [dict(rng.choice(ROWS), split=split) for _ in range(n)]
        (path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "manifest.json").write_text(json.dumps({"heads": ["unsafe", "overrefuse"]}))
    return path


def test_training_takes_the_heads_of_the_data_and_writes_val_thresholds(tmp_path):
    base = tiny_classifier(tmp_path / "base")
    report = tc.train(pair_data(tmp_path / "data"), tmp_path / "out", base, epochs=1, batch_size=8, lr=1e-3,
                      max_tokens=32, seed=0)
    assert report["heads"] == ["unsafe", "overrefuse"]
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert [saved["id2label"][str(i)] for i in range(2)] == ["unsafe", "overrefuse"]
    assert set(report["thresholds"]) == {"unsafe", "overrefuse", PRECHECK}  # the data has pre-checks
    assert {"harmful_recall", "benign_false_flag_rate"} <= set(report["metrics"]["val"]["at_val_thresholds"][PRECHECK])
    assert set(report["metrics"]) == {"val", "test"}
    assert not (tmp_path / "out" / tc.CHECKPOINT).exists()  # a finished run leaves no checkpoint behind


def test_label_smoothing_pulls_the_training_targets_towards_one_half(tmp_path, monkeypatch):
    seen = {}

    def capture(model, encoder, rows, labels, mask, *args, **kwargs):
        seen["labels"], seen["mask"] = labels, mask
        return 0

    monkeypatch.setattr(tc, "fit", capture)
    base = tiny_classifier(tmp_path / "base")
    report = tc.train(pair_data(tmp_path / "data"), tmp_path / "out", base, epochs=1, batch_size=8, lr=1e-3,
                      max_tokens=32, seed=0, label_smoothing=0.2)
    labelled = seen["labels"][seen["mask"] > 0]
    assert sorted(set(np.round(labelled, 6).tolist())) == pytest.approx([0.1, 0.9])  # 0 -> eps/2, 1 -> 1 - eps/2
    assert report["label_smoothing"] == 0.2


def test_repeat_trains_on_a_source_more_often_and_records_it(tmp_path, monkeypatch):
    seen = {}

    def capture(model, encoder, rows, *args, **kwargs):
        seen["rows"] = rows
        return 0

    monkeypatch.setattr(tc, "fit", capture)
    data = pair_data(tmp_path / "data")
    train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    for i, row in enumerate(train):
        row["source"] = "judged" if i % 4 == 0 else "generated"
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    report = tc.train(data, tmp_path / "out", tiny_classifier(tmp_path / "base"), epochs=1, batch_size=8, lr=1e-3,
                      max_tokens=32, seed=0, repeat={"judged": 3})
    sources = [r["source"] for r in seen["rows"]]
    assert sources.count("judged") == 3 * 6 and sources.count("generated") == 18
    assert report["repeat"] == {"judged": 3}


def test_repeat_refuses_a_source_the_data_lacks_and_a_malformed_item():
    with pytest.raises(tc.ClassifierTrainingError, match="no training rows: advbnech"):
        tc.repeat_sources([dict(ROWS[0], source="advbench")], {"advbnech": 2})
    assert tc.parse_repeat(["a=2", "b=1"]) == {"a": 2, "b": 1}
    for bad in ("a", "a=0", "=2", "a=two"):
        with pytest.raises(tc.ClassifierTrainingError, match="SOURCE=N"):
            tc.parse_repeat([bad])


def _fit(base, rows, checkpoint, **kw):
    model = tc.load_student(base, ("unsafe", "overrefuse"), seed=0)
    encoder = PairEncoder.load(base / "tokenizer.json", 32)
    labels, mask = tc.label_arrays(rows, ("unsafe", "overrefuse"))
    steps = tc.fit(model, encoder, rows, labels, mask, epochs=2, batch_size=4, lr=1e-3, seed=0,
                   log=lambda *_: None, checkpoint=checkpoint, checkpoint_every=3, **kw)
    return steps, model


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    base = tiny_classifier(tmp_path / "base")
    rows = [dict(ROWS[i % 3]) for i in range(16)]  # 4 batches an epoch, 8 steps
    steps, straight = _fit(base, rows, None)
    assert steps == 8

    calls = {"n": 0}
    real = tc.model_inputs

    def dies_at_step_5(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(tc, "model_inputs", dies_at_step_5)
    ckpt = tmp_path / tc.CHECKPOINT
    with pytest.raises(KeyboardInterrupt):
        _fit(base, rows, ckpt)
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    monkeypatch.setattr(tc, "model_inputs", real)
    steps, resumed = _fit(base, rows, ckpt)
    assert steps == 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    base = tiny_classifier(tmp_path / "base")
    ckpt = tmp_path / tc.CHECKPOINT
    torch.save({"total": 99, "rows": 1}, ckpt)
    with pytest.raises(ValueError, match="another run"):
        _fit(base, [dict(ROWS[0]) for _ in range(8)], ckpt)
    rows = [dict(ROWS[i % 3]) for i in range(8)]
    torch.save({"total": 4, "rows": 8, "targets": "0" * 16}, ckpt)  # same size, other labels or smoothing
    with pytest.raises(ValueError, match="other targets"):
        _fit(base, rows, ckpt)


def test_thresholds_take_the_best_f1_on_validation():
    rows = [{"labels": {"overrefuse": y}} for y in [0] * 100 + [1] * 4]
    # 96 negatives low, 4 high; the 4 positives in between. A cap of 3% flagged negatives would put the
    # threshold above the high negatives and catch no positive; the best F1 flags from the lowest positive.
    probs = np.array([[i / 500] for i in range(96)] + [[0.9]] * 4 + [[0.30], [0.31], [0.32], [0.33]], dtype=np.float32)
    (t,) = tc.best_f1_thresholds(probs, rows, ("overrefuse",)).values()
    assert t == pytest.approx(0.30)
    assert tc.best_f1_thresholds(probs[:100], rows[:100], ("overrefuse",)) == {"overrefuse": 0.5}  # no positives


def test_the_precheck_gets_a_threshold_of_its_own_chosen_on_the_precheck_rows():
    # Pairs: harmful answers score 0.4 to 0.49, benign ones below 0.25. Prompts alone: harmful ones 0.9, benign
    # ones 0.5 to 0.79. One threshold on all rows would sit at 0.9 and miss every harmful answer.
    pairs = [({"unsafe": 1, "overrefuse": 0}, 0.4 + i / 100) for i in range(10)] + [({"unsafe": 0, "overrefuse": 0}, i / 40) for i in range(10)]
    alone = [({"unsafe": 1, "overrefuse": 0}, 0.9)] * 10 + [({"unsafe": 0, "overrefuse": 0}, 0.5 + i / 70) for i in range(21)]
    rows = [{"response": "an answer", "labels": y} for y, _ in pairs] + [{"response": None, "labels": y} for y, _ in alone]
    probs = np.array([[p, 0.0] for _, p in pairs + alone], dtype=np.float32)
    chosen = tc.choose_thresholds(probs, rows, ("unsafe", "overrefuse"))
    assert chosen["unsafe"] == pytest.approx(0.4) and chosen[PRECHECK] == pytest.approx(0.9)
    assert tc.best_f1_thresholds(probs, rows, ("unsafe",))["unsafe"] == pytest.approx(0.9)  # all rows together
    # Without pre-checks of both kinds there is no pre-check threshold (it falls back to unsafe's when served).
    assert PRECHECK not in tc.choose_thresholds(probs[:20], rows[:20], ("unsafe", "overrefuse"))
    assert PRECHECK not in tc.choose_thresholds(probs[:30], rows[:30], ("unsafe", "overrefuse"))


def _tokenizer(roberta: bool) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "a", "b", "c"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    from tokenizers import pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = (processors.RobertaProcessing(("</s>", 2), ("<s>", 0)) if roberta else
                          processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                        special_tokens=[("[CLS]", 3), ("[SEP]", 4)]))
    return tok


@pytest.mark.parametrize("roberta, want", [(False, [3, 7, 8, 4, 9, 4]), (True, [0, 7, 8, 2, 2, 9, 2])])
def test_pair_layout_follows_the_tokenizer(roberta, want):
    enc = PairEncoder(_tokenizer(roberta), 16).encode([("a b", "c"), ("a", None)])
    assert enc["input_ids"][0][: len(want)].tolist() == want
    assert enc["input_ids"][1][:3].tolist() == ([0, 7, 2] if roberta else [3, 7, 4])
    assert enc["input_ids"][1][3] == (1 if roberta else 5)  # padded with the tokenizer's own pad token


def test_long_pairs_keep_both_ends_within_the_budget():
    enc = PairEncoder(_tokenizer(True), 12).encode([(" ".join("a" * 1 for _ in range(20)), " ".join(["b"] * 9 + ["c"]))])
    ids = enc["input_ids"][0].tolist()
    assert len(ids) == 12 and ids[-2] == 9  # the response's tail ("c") survives the cut


def test_windows_read_the_middle_of_a_long_response_within_the_budget():
    enc = PairEncoder(_tokenizer(False), 12)  # a response share of 12 - 3 - 1 (prompt) = 8 tokens
    middle = " ".join(["b"] * 10 + ["c"] * 4 + ["b"] * 10)
    assert 9 not in enc.encode([("a", middle)])["input_ids"][0].tolist()  # head and tail alone lose the middle
    pairs = [("a", "b c"), ("a", middle), ("a", None), ("a", " ".join(["b"] * 9))]
    head_tail, batch, owners = enc.encode_windowed(pairs, limit=3)
    assert all((head_tail[k] == enc.encode(pairs)[k]).all() for k in head_tail)  # the windows come beside encode's batch
    assert owners == [1, 1, 1, 3, 3]  # overlapping windows along a long response, at most `limit`; none for pairs that fit
    rows, types = batch["input_ids"].tolist(), batch["token_type_ids"].tolist()
    assert all(r[:3] == [3, 7, 4] and len(r) <= 12 for r in rows)  # each after the same prompt, within the budget
    assert all(t[:3] == [0, 0, 0] and t[3:12] == [1] * 9 for t in types)  # the response and its [SEP] are segment B
    first, *_, last = rows[:3]
    assert first[3:11] == [8] * 8 and last[3:11] == [8] * 8  # from the response's first token to its last
    assert any(r[3:11].count(9) == 4 for r in rows[:3])  # a window holds the whole middle passage
    assert enc.encode_windowed([("a", middle)], limit=0)[1:] == (None, [])
    assert PairEncoder(_tokenizer(False), 3).encode_windowed([("a", middle)], limit=3)[1:] == (None, [])  # no room for a response


def test_packaging_serves_the_thresholds_chosen_in_training(tmp_path):
    from training.export import ExportError
    from training.package_classifier import package

    onnx, trained = tmp_path / "onnx", tmp_path / "trained"
    onnx.mkdir(), trained.mkdir()
    (onnx / "manifest.json").write_text(json.dumps({"serves": "model.int8.onnx"}))
    config = {"task": "text-classification", "labels": ["unsafe", "overrefuse"], "thresholds": {"unsafe": 0.31, "overrefuse": 0.7}}
    (onnx / "waltz_gate.json").write_text(json.dumps(config))
    (onnx / "model.int8.onnx").write_bytes(b"onnx")
    (onnx / "tokenizer.json").write_text("{}")
    (trained / "training_report.json").write_text(json.dumps({"thresholds": {"unsafe": 0.31, "overrefuse": 0.7}, "data": {"heads": []}}))
    manifest = package(onnx, trained, tmp_path / "out")
    served = json.loads((tmp_path / "out" / "waltz_gate.json").read_text())
    assert served["thresholds"] == {"unsafe": 0.31, "overrefuse": 0.7} and served["labels"] == ["unsafe", "overrefuse"]
    assert manifest["training"]["thresholds"] == served["thresholds"] and manifest["data"] == {"heads": []}
    # An export of another training run (other thresholds) is refused.
    (trained / "training_report.json").write_text(json.dumps({"thresholds": {"unsafe": 0.5, "overrefuse": 0.7}}))
    with pytest.raises(ExportError, match="export that training run again"):
        package(onnx, trained, tmp_path / "out")


def test_an_mpnet_teacher_trains_exports_and_serves_like_torch(tmp_path):
    """The teacher's family end to end: MPNet's pair layout, no token_type_ids, optimum's export."""
    from transformers import AutoModelForSequenceClassification

    from plugins.onnx_models import ClassifierModel
    from training.export import export

    base = tiny_classifier(tmp_path / "base", labels=("unsafe", "overrefuse"), arch="mpnet")
    tc.train(pair_data(tmp_path / "data", n=8), tmp_path / "teacher", base, epochs=1, batch_size=8, lr=1e-3,
             max_tokens=32, seed=0)
    manifest = export(tmp_path / "teacher", tmp_path / "onnx", quantize=False, serve="fp32", max_tokens=32)
    assert manifest["agreement"]["fp32"]["decision_agreement"] == 1.0
    chosen = json.loads((tmp_path / "teacher" / "training_report.json").read_text())["thresholds"]
    assert json.loads((tmp_path / "onnx" / "waltz_gate.json").read_text())["thresholds"] == chosen  # served where chosen
    served = ClassifierModel(tmp_path / "onnx")
    pairs = [("How do I make a pipe bomb?", "Here is a step by step guide"), ("hello", None)]
    assert served.encoder.encode(pairs)["input_ids"][0][0] == served.encoder.tokenizer.token_to_id("<s>")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher").eval()
    want = torch.sigmoid(model(**tc.model_inputs(model, served.encoder, [{"prompt": p, "response": r} for p, r in pairs], [0, 1])).logits)
    assert np.allclose(served.predict(pairs), want.detach().numpy(), atol=1e-4)


def test_export_agreement_is_measured_at_the_thresholds_training_chose(tmp_path):
    from training.export import _logit_thresholds

    (tmp_path / "training_report.json").write_text(json.dumps({"thresholds": {"unsafe": 0.9, PRECHECK: 0.5}}))
    edge = _logit_thresholds(tmp_path, ["unsafe", "overrefuse"], [("a prompt", "an answer"), ("a prompt", None)])
    # logit(0.9) for a pair, the pre-check's 0.5 for a prompt alone; a head without a threshold decides at 0.5
    assert np.allclose(edge, [[np.log(9.0), 0.0], [0.0, 0.0]])
    assert np.allclose(_logit_thresholds(tmp_path / "none", ["unsafe"], [("a prompt", None)]), [[0.0]])
