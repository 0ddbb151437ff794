"""The Stage 2 classifier's data build, from the real wheels (PyPI packages, cached after the first run)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gate.jsonl import read_jsonl
from training import classifier_data
from training.train_classifier import heldout_prompt_metrics

SPLITS = ("train", "val", "test", "heldout")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier-data")
    manifest = classifier_data.build(out, heldout=["harmbench", "mtbench"], sharegpt=300)
    return out, manifest, {s: read_jsonl(out / f"{s}.jsonl") for s in SPLITS}


def test_no_prompt_crosses_splits_and_held_out_sources_are_never_trained_on(built):
    _, manifest, data = built
    split_of_prompt: dict[str, str] = {}
    for split, rows in data.items():
        for row in rows:
            assert split_of_prompt.setdefault(classifier_data.norm(row["prompt"]), split) == split, row["prompt"]
    assert {r["source"] for r in data["heldout"]} >= {"harmbench", "mtbench"}
    assert not {"harmbench", "mtbench"} & {r["source"] for s in ("train", "val", "test") for r in data[s]}
    for split, rows in data.items():
        assert manifest["files"][split]["rows"] == len(rows)
        assert sum(manifest["rows_by_split_and_source"][split].values()) == len(rows)


def test_labels_follow_the_sources(built):
    _, _, data = built
    rows = [r for s in ("train", "val", "test") for r in data[s]]
    by = Counter((r["source"], r["response"] is None, r["labels"]["prompt_harmful"]) for r in rows)
    # Pre-checks: harmful sets and attacks are harmful, the packs' near-misses are benign.
    assert by[("advbench", True, 1)] > 300 and by[("jailbreaks", True, 1)] > 300
    assert by[("pack-near-misses", True, 0)] > 50 and by[("pack-near-misses", True, 1)] == 0
    assert by[("slabs", True, 0)] > 1000 and by[("slabs", True, 1)] > 1000
    templated = [r for r in rows if r["meta"].get("response") == "refusal-template"]
    assert templated and all(r["labels"]["refusal"] == 1 and r["labels"]["response_harmful"] == 0 for r in templated)
    # Refusals of benign ShareGPT prompts: the over-refusal case.
    assert any(r["source"] == "sharegpt" and r["labels"]["prompt_harmful"] == 0 for r in templated)
    scorer = [r for r in rows if r["source"] == "pyrit-refusal_scorer"]
    assert scorer and all(r["labels"]["prompt_harmful"] is None and r["labels"]["refusal"] in (0, 1) for r in scorer)


@pytest.mark.parametrize(("score", "label"), [("0.9", 1), ("0.1", 0), ("0.5", None), ("", None), ("n/a", None)])
def test_human_scores_become_labels_and_the_undecided_middle_is_dropped(score, label):
    assert classifier_data._label(score) == label


def test_prompt_metrics_at_a_threshold_and_at_the_false_flag_bar():
    rows = [{"response": None, "labels": {"prompt_harmful": y}} for y in [1] * 4 + [0] * 20] + \
           [{"response": "a reply", "labels": {"prompt_harmful": 1}}]  # not a pre-check: ignored
    harmful = [0.9, 0.8, 0.6, 0.3]
    benign = [0.7] + [0.1] * 19  # one benign prompt (5% of 20) scores above two harmful ones
    probs = np.array([[p] for p in harmful + benign + [0.0]])
    m = heldout_prompt_metrics(probs, rows)
    assert (m["harmful_recall"], m["benign_false_flag_rate"]) == (0.75, 0.05)
    # With at most 5% flagged, the threshold may sit just above the second highest benign score (0.1).
    assert m["recall_at_max_false_flags"] == 1.0
    assert heldout_prompt_metrics(probs, rows, max_false_flags=0.0)["recall_at_max_false_flags"] == 0.5
