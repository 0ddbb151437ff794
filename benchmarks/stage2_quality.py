"""Quality of served Stage 2 classifiers (the ONNX files the gate loads), side by side on the same rows.

    python benchmarks/stage2_quality.py --data runs/classifier-data [--models plugins/models/feedback-minilm DIR ...]

For each split (test, and heldout: sources never trained on) and each model: precision/recall per head,
and on pre-checks (prompt alone) the harmful-prompt recall and the false-flag rate on benign prompts, at
the thresholds the gate uses (the model's waltz_gate.json, else 0.5); and the best harmful-prompt recall
any threshold gets with at most 5% of the benign prompts flagged (the bar's operating point: how well the
prompt head ranks, whatever its calibration; on the held-out split this picks the threshold on those rows,
so it says whether the bar is reachable at all, not what a shipped threshold gives).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from plugins.onnx_models import ClassifierModel
    from training.train_classifier import head_metrics, heldout_prompt_metrics, load_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="classifier data folder (python -m training.classifier_data)")
    ap.add_argument("--models", type=Path, nargs="+", default=[ROOT / "plugins" / "models" / "feedback-minilm"])
    ap.add_argument("--splits", nargs="+", default=["test", "heldout"])
    args = ap.parse_args()
    print("| model | split | prompt_harmful P / R | refusal P / R | response_harmful P / R | pre-check harmful recall | benign false flags | best recall at <= 5% false flags |")
    print("|---|---|---|---|---|---:|---:|---:|")
    for model_dir in args.models:
        model = ClassifierModel(model_dir, threads=2)
        heads = tuple(model.labels)
        thresholds = model.config.get("thresholds", {})
        for split in args.splits:
            rows = load_rows(args.data / f"{split}.jsonl")
            probs = np.concatenate([model.predict([(r["prompt"], r["response"]) for r in rows[i : i + 64]])
                                    for i in range(0, len(rows), 64)])
            # Apply the gate's thresholds by shifting each head so that its threshold sits at 0.5.
            shifted = probs - np.array([thresholds.get(h, 0.5) for h in heads]) + 0.5
            m = head_metrics(shifted, rows, heads)
            pre = heldout_prompt_metrics(shifted, rows, heads.index("prompt_harmful"))

            def pr(h):
                return f"{m[h]['precision']:.3f} / {m[h]['recall']:.3f}" if h in m and m[h]["positives"] else "-"

            print(f"| {model_dir.name} | {split} | {pr('prompt_harmful')} | {pr('refusal')} | {pr('response_harmful')} | "
                  f"{pre.get('harmful_recall', float('nan')):.3f} ({pre.get('harmful_recall_n', 0)}) | "
                  f"{pre.get('benign_false_flag_rate', float('nan')):.3f} ({pre.get('benign_false_flag_rate_n', 0)}) | "
                  f"{pre.get('recall_at_max_false_flags', float('nan')):.3f} |", flush=True)


if __name__ == "__main__":
    main()
