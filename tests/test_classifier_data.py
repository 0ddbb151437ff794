"""The Stage 2 classifier's data build, from the real wheels (PyPI packages, cached after the first run)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from training import classifier_data
from training.sources import rows
from training.train_classifier import label_arrays, load_rows, positive_weights


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier-data")
    manifest = classifier_data.build(out, heldout=["harmbench", "mtbench"], sharegpt=300)
    data = {s: load_rows(out / f"{s}.jsonl") for s in ("train", "val", "test", "heldout")}
    return manifest, data


def test_neuralchemy_rows_skip_harmbench_and_keep_kinds():
    got = rows("neuralchemy")
    kinds = Counter(r.kind for r in got)
    assert kinds["benign"] > 1000 and kinds["injection"] > 1000 and kinds["jailbreak"] > 100
    harmbench = {classifier_data.norm(r.prompt) for r in rows("harmbench")}
    # HarmBench is the held-out source: none of its behaviours may enter through this set.
    assert not harmbench & {classifier_data.norm(r.prompt) for r in got}


def test_injections_are_unlabelled_for_the_prompt_head_and_jailbreaks_are_harmful(built):
    _, data = built
    by_source = Counter()
    for row in data["train"]:
        if row["response"] is None and row["source"] in ("slabs", "neuralchemy", "jailbreaks"):
            by_source[(row["source"], row["labels"]["prompt_harmful"])] += 1
    assert by_source[("slabs", None)] > 1000 and by_source[("slabs", 0)] > 1000
    assert by_source[("jailbreaks", 1)] > 100 and by_source[("jailbreaks", None)] == 0
    assert by_source[("neuralchemy", 1)] > 50  # its jailbreak rows


def test_pyrit_requests_are_also_prechecks_and_no_prompt_crosses_splits(built):
    manifest, data = built
    prechecks = [r for r in data["train"] if r["source"].startswith("pyrit-") and r["response"] is None]
    assert len(prechecks) > 100 and all(r["labels"]["prompt_harmful"] == 1 for r in prechecks)
    seen = {}
    for split, rs in data.items():
        for r in rs:
            assert seen.setdefault(classifier_data.norm(r["prompt"]), split) == split
    assert {r["source"] for r in data["heldout"]} >= {"harmbench", "mtbench"}
    assert "neuralchemy" in manifest["sources"]


def test_positive_weights_balance_rare_positives_and_ignore_unlabelled_rows():
    rows_ = [{"labels": {"prompt_harmful": 1, "refusal": None, "response_harmful": 0}}] + \
            [{"labels": {"prompt_harmful": 0, "refusal": 1, "response_harmful": None}}] * 4 + \
            [{"labels": {"prompt_harmful": None, "refusal": 0, "response_harmful": 0}}] * 30
    labels, mask = label_arrays(rows_)
    w = positive_weights(labels, mask, cap=10.0)
    # prompt_harmful: 4 negatives / 1 positive; refusal: 30 / 4; response_harmful: no positive -> capped.
    np.testing.assert_allclose(w, [4.0, 7.5, 10.0])
