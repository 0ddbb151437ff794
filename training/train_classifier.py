"""Fine-tune an encoder into a Stage 2 multi-label classifier over (prompt, response) pairs.

The heads are the data's (its manifest's ``heads``): ``unsafe``/``overrefuse`` for the response-corpus pair
data (`training.response_corpus build`), ``prompt_harmful``/``refusal``/``response_harmful`` for the older
classifier data. They are the sigmoid outputs of one ``AutoModelForSequenceClassification``, so the standard
ONNX exporter handles it. A source that does not give a label masks that head's loss for the row. Inputs are
encoded by `plugins.encoding.PairEncoder`, the same code the gate serves with. Each head's threshold is
chosen on the validation split (best F1; for ``unsafe``/``overrefuse`` on its pairs, with ``unsafe_precheck`` for
a prompt alone chosen on its pre-check rows) and written to the report, from which packaging puts it into the
served config.

    python -m training.train_classifier --data runs/pair-data --out runs/classifier
        [--base minilm-l6|mpnet-base|PATH] [--epochs 2] [--batch-size 32] [--learning-rate 5e-5]
        [--max-tokens 256] [--layers N] [--checkpoint-every 200] [--label-smoothing 0.1]
        [--repeat pyrit-scorer-evals=3]

``--repeat SOURCE=N`` trains on each training row of that source N times an epoch (the validation and test
splits are left as they are): a small source close to what the gate will read weighs more than its size.

Training writes ``checkpoint.pt`` into ``--out`` every ``--checkpoint-every`` steps; run the same command
again to resume from it (the batch order, optimiser, schedule and RNG continue exactly).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from gate.errors import WaltzGateError
from gate.jsonl import read_jsonl
from plugins.encoding import PairEncoder
from plugins.feedback import PRECHECK
from training.classifier_data import HEADS
from training.encoders import base_model

CHECKPOINT = "checkpoint.pt"


class ClassifierTrainingError(WaltzGateError, ValueError):
    """A run that cannot start as asked (a bad --repeat, a checkpoint of another run); the message says why."""


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


def model_inputs(model, encoder: PairEncoder, rows: list[dict], idx: list[int]) -> dict[str, torch.Tensor]:
    """The encoded batch, as the tensors the model's forward takes (MPNet takes no token_type_ids)."""
    enc = encoder.encode([(rows[i]["prompt"], rows[i]["response"]) for i in idx])
    accepted = inspect.signature(model.forward).parameters
    return {k: torch.from_numpy(v) for k, v in enc.items() if k in accepted}


def predict(model, encoder: PairEncoder, rows: list[dict], batch_size: int = 64) -> np.ndarray:
    """Sigmoid probabilities [n, heads]."""
    model.eval()
    out = np.zeros((len(rows), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for idx in batches(rows, batch_size, random.Random(0), shuffle=False):
            out[idx] = torch.sigmoid(model(**model_inputs(model, encoder, rows, idx)).logits).numpy()
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
                           max_false_flags: float = 0.05, head: str = "prompt_harmful") -> dict:
    """On pre-check rows (prompt alone): harmful-prompt recall and the false-flag rate on benign prompts at
    `threshold`; and the best recall any threshold gets with at most `max_false_flags` of the benign prompts
    flagged (how well the head ranks, whatever its calibration). `column` is the pre-check head, `head` its label."""
    out = {}
    scores = {}
    for name, want in (("harmful_recall", 1), ("benign_false_flag_rate", 0)):
        sel = [i for i, r in enumerate(rows) if r["response"] is None and r["labels"].get(head) == want]
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


def choose_thresholds(probs: np.ndarray, rows: list[dict], heads: tuple[str, ...]) -> dict:
    """Per head, the threshold with the best F1 on these rows (the validation split). With an `unsafe` head,
    the pair heads are chosen on the pairs and the pre-check (prompt alone) gets a threshold of its own,
    `unsafe_precheck`, chosen on the pre-check rows: a prompt alone scores unlike a pair, and one threshold
    for both trades pre-check false flags for answer recall. (The older heads read `prompt_harmful` on both.)"""
    if "unsafe" not in heads:
        return best_f1_thresholds(probs, rows, heads)
    pair = np.array([r["response"] is not None for r in rows], dtype=bool)
    out = best_f1_thresholds(probs[pair], [r for r, k in zip(rows, pair) if k], heads)
    pre = [r for r, k in zip(rows, pair) if not k]
    if {0, 1} <= {r["labels"].get("unsafe") for r in pre}:  # else none: a prompt alone is judged at unsafe's
        out[PRECHECK] = best_f1_thresholds(probs[~pair][:, [heads.index("unsafe")]], pre, ("unsafe",))["unsafe"]
    return out


def best_f1_thresholds(probs: np.ndarray, rows: list[dict], heads: tuple[str, ...]) -> dict:
    """Per head, the threshold with the best F1 on these rows: candidates are the scores themselves, so the
    choice is exact; 0.5 for a head without both positives and negatives. F1 rather than a false-flag cap
    because positives are rare for some heads (over-refusals): a cap on the share of negatives flagged would
    let the flags outnumber the positives."""
    labels, mask = label_arrays(rows, heads)
    out = {}
    for j, head in enumerate(heads):
        keep = mask[:, j] > 0
        y, p = labels[keep, j] > 0.5, probs[keep, j]
        if y.all() or not y.any():
            out[head] = 0.5
            continue
        order = np.argsort(-p, kind="stable")
        tp = np.cumsum(y[order])  # hits when the threshold is each score in turn, highest first
        f1 = 2 * tp / (np.arange(1, len(p) + 1) + y.sum())
        out[head] = float(p[order][int(np.argmax(f1))])
    return out


def report_metrics(probs: dict[str, np.ndarray], rows: dict[str, list[dict]], heads: tuple[str, ...]) -> tuple[dict, dict]:
    """(thresholds chosen on val, metrics per held-out split at 0.5 and at those thresholds). Where there is a
    pre-check threshold, the heads at theirs are measured on the pairs alone and the pre-check (prompt recall,
    benign false flags) at its own; else the heads on every row."""
    thresholds = choose_thresholds(probs["val"], rows["val"], heads)
    metrics = {}
    for split, p in probs.items():
        metrics[split] = {"heads": head_metrics(p, rows[split], heads), **heldout_prompt_metrics(p, rows[split], 0, head=heads[0])}
        pair = [i for i, r in enumerate(rows[split]) if r["response"] is not None or PRECHECK not in thresholds]
        decided = {h: head_metrics(p[pair][:, [j]], [rows[split][i] for i in pair], (h,), thresholds[h]).get(h)
                   for j, h in enumerate(heads)}
        if PRECHECK in thresholds:
            decided[PRECHECK] = heldout_prompt_metrics(p, rows[split], heads.index("unsafe"), thresholds[PRECHECK], head="unsafe")
        metrics[split]["at_val_thresholds"] = {h: m for h, m in decided.items() if m}
    return thresholds, metrics


def repeat_sources(rows: list[dict], repeat: dict[str, int]) -> list[dict]:
    """The training rows with each row of a source in `repeat` present that many times (in place, in order)."""
    unknown = set(repeat) - {r.get("source") for r in rows}
    if unknown:
        raise ClassifierTrainingError(f"--repeat names sources with no training rows: {', '.join(sorted(unknown))}")
    return [r for r in rows for _ in range(repeat.get(r.get("source"), 1))]


def parse_repeat(items: list[str]) -> dict[str, int]:
    """``SOURCE=N`` items (N >= 1) into a mapping; a malformed item raises ClassifierTrainingError with a sentence."""
    repeat = {}
    for item in items:
        source, _, times = item.partition("=")
        if not source or not times.isdigit() or int(times) < 1:
            raise ClassifierTrainingError(f"--repeat takes SOURCE=N with N a whole number >= 1, got {item!r}")
        repeat[source] = int(times)
    return repeat


def load_student(base: Path, heads: tuple[str, ...], layers: int | None = None, log=print, seed: int = 0):
    """A multi-label classifier over `heads` from an encoder base (BERT or MPNet); with `layers`, keep that
    many encoder layers spread evenly over the base's depth (a faster student). The new head's random
    initialisation is seeded, so a run is repeatable."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(heads), problem_type="multi_label_classification",
        id2label=dict(enumerate(heads)), label2id={h: i for i, h in enumerate(heads)},
        ignore_mismatched_sizes=True,
    )
    if layers is not None and layers < model.config.num_hidden_layers:
        total = model.config.num_hidden_layers
        keep = sorted({round(i * (total - 1) / max(layers - 1, 1)) for i in range(layers)})
        encoder = model.base_model.encoder
        encoder.layer = torch.nn.ModuleList(encoder.layer[i] for i in keep)
        model.config.num_hidden_layers = len(keep)
        log(f"student with encoder layers {keep} of {total}")
    return model


def fit(model, encoder: PairEncoder, rows: list[dict], labels: np.ndarray, mask: np.ndarray, epochs: int,
        batch_size: int, lr: float, seed: int, max_steps: int | None = None, log=print,
        checkpoint: Path | None = None, checkpoint_every: int = 200) -> int:
    """Masked binary cross-entropy (soft targets allowed) with AdamW and linear warm-up/decay; returns steps.
    With `checkpoint`, the state is saved there every `checkpoint_every` steps and training resumes from it."""
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
    targets = hashlib.sha256(labels.tobytes() + mask.tobytes()).hexdigest()[:16]  # a resume must keep them
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state["total"] != total or state["rows"] != len(rows):
            raise ClassifierTrainingError(f"{checkpoint} is from another run ({state['rows']} rows, {state['total']} steps; "
                             f"this one: {len(rows)} rows, {total} steps): remove it or use another --out")
        if state.get("targets", targets) != targets:
            raise ClassifierTrainingError(f"{checkpoint} was trained towards other targets (other labels or --label-smoothing): "
                             "remove it or use another --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {checkpoint} at step {step}/{total}")
    log(f"training on {len(rows)} rows, {total} steps, batch {batch_size}, max_tokens {encoder.max_tokens}")
    done = 0  # steps of the batch order replayed so far: a resumed run skips the ones already trained
    while done < total:
        model.train()
        for idx in batches(rows, batch_size, rng, shuffle=True):
            done += 1
            if done <= step:
                continue
            logits = model(**model_inputs(model, encoder, rows, idx)).logits
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
            if checkpoint is not None and (step % checkpoint_every == 0) and step < total:
                tmp = checkpoint.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "step": step, "total": total, "rows": len(rows),
                            "targets": targets, "torch_rng": torch.get_rng_state()}, tmp)
                tmp.replace(checkpoint)
            if step >= total:
                break
    return step


def train(data: Path, out: Path, base: Path, epochs: int, batch_size: int, lr: float, max_tokens: int, seed: int,
          max_steps: int | None = None, layers: int | None = None, log=print, checkpoint_every: int = 200,
          label_smoothing: float = 0.0, repeat: dict[str, int] | None = None) -> dict:
    started = time.time()
    data_manifest = json.loads((data / "manifest.json").read_text())
    heads = tuple(data_manifest.get("heads", HEADS))
    rows = {s: read_jsonl(data / f"{s}.jsonl") for s in ("train", "val", "test", "heldout") if (data / f"{s}.jsonl").is_file()}
    rows["train"] = repeat_sources(rows["train"], repeat or {})  # a bad --repeat stops before the model loads
    encoder = PairEncoder.load(base / "tokenizer.json", max_tokens)
    model = load_student(base, heads, layers, log, seed)
    labels, mask = label_arrays(rows["train"], heads)
    # Targets pulled towards 0.5 (a hard 0/1 of eps becomes eps/2 and 1 - eps/2): the logits stay bounded, so a
    # model trained on generated answers is less sure of itself on answers unlike them.
    labels = labels * (1 - label_smoothing) + label_smoothing / 2
    out.mkdir(parents=True, exist_ok=True)
    step = fit(model, encoder, rows["train"], labels, mask, epochs, batch_size, lr, seed, max_steps, log,
               out / CHECKPOINT, checkpoint_every)
    probs = {split: predict(model, encoder, rows[split]) for split in rows if split != "train"}
    thresholds, metrics = report_metrics(probs, rows, heads)
    model.save_pretrained(out)
    (out / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    (out / CHECKPOINT).unlink(missing_ok=True)
    report = {"base": str(base), "layers": model.config.num_hidden_layers, "heads": list(heads), "steps": step,
              "epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "max_tokens": max_tokens, "seed": seed,
              "label_smoothing": label_smoothing, "repeat": repeat or {}, "train_seconds": round(time.time() - started), "thresholds": thresholds,
              "metrics": metrics, "data": data_manifest}
    (out / "training_report.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", default="minilm-l6", help="minilm-l6 (default), mpnet-base, or a model folder")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=None, help="keep this many encoder layers (a faster student)")
    ap.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (resume by rerunning)")
    ap.add_argument("--label-smoothing", type=float, default=0.0, help="targets eps/2 and 1 - eps/2 instead of 0 and 1")
    ap.add_argument("--repeat", nargs="*", default=[], metavar="SOURCE=N",
                    help="train on each row of SOURCE N times an epoch (e.g. pyrit-scorer-evals=3)")
    args = ap.parse_args()
    if not 0 <= args.label_smoothing < 1:
        ap.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    try:
        repeat = parse_repeat(args.repeat)
    except ClassifierTrainingError as e:
        ap.error(str(e))
    try:
        report = train(args.data, args.out, base_model(args.base), args.epochs, args.batch_size, args.learning_rate,
                       args.max_tokens, args.seed, args.max_steps, args.layers, checkpoint_every=args.checkpoint_every,
                       label_smoothing=args.label_smoothing, repeat=repeat)
    except ClassifierTrainingError as e:
        ap.exit(2, f"train_classifier: {e}\n")
    print(json.dumps(report["metrics"], indent=2))


if __name__ == "__main__":
    main()
