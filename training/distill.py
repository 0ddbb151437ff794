"""`waltz-gate distill`: a teacher labels (prompt, response) pairs; a compact classifier learns the labels.

Teachers (``--teacher``):
- ``onnx:DIR`` / ``remote:URL`` / ``scripted:FILE``: a trained feedback agent answering in the protocol's
  JSON (an exported ONNX causal LM, an OpenAI-compatible endpoint, or recorded answers). A pre-check row
  (no response) is asked as the gate asks it. An answer that is not the protocol's JSON is a format failure:
  the row is dropped and counted.
- ``judge:FILE``: any judge (the trainer's judge section as YAML: rule, classifier, remote); a judge labels
  responses, so rows without one are dropped and counted.
- ``classifier:DIR``: a Stage 2 classifier (ONNX); its probabilities are soft targets for every head.
The student has the teacher's heads: ``unsafe``/``overrefuse`` for an agent or judge (the gate reads them
directly), the teacher's own heads for a classifier. ``--gold-weight w`` mixes labels the rows already
carry into the targets (w * gold + (1 - w) * teacher, where a row has that head).

Rows whose ``split`` (or, without one, the hash split of the prompt) is ``train`` train the student; every
other row is held out, and the report gives the student's agreement with the teacher there (per head and
on the gate's unsafe/overrefuse decisions) and, where rows carry labels, both models' quality.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, model_validator

from gate.errors import WaltzGateError
from gate.jsonl import read_jsonl
from plugins.chat import REQUIRED, Chat
from plugins.feedback import DECOMPOSED, DIRECT, ask_feedback_agent, check_heads, classifier_labels
from plugins.waltz_protocol import FormatError
from training.classifier_data import split_of


class DistillError(WaltzGateError, ValueError):
    """Bad input to distillation; the message says which and why."""


class PairRow(BaseModel):
    prompt: str  # empty only beside a response: the response-corpus builder's response-only rows
    response: str | None = None
    labels: dict | None = None
    split: str | None = None

    @model_validator(mode="after")
    def _something_to_judge(self) -> PairRow:
        if not self.prompt.strip() and not (self.response or "").strip():
            raise ValueError("a row needs a prompt, or a response to judge alone")
        return self


def read_pairs(path: Path) -> list[dict]:
    """Rows {prompt, response|null[, labels][, split]} of a JSONL file, or of every *.jsonl in a folder."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise DistillError(f"{path} is neither a JSONL file nor a folder holding one")
    rows = [{"prompt": row.prompt, "response": row.response, "labels": row.labels or {},
             "split": row.split or split_of(row.prompt)}
            for file in files for row in read_jsonl(file, PairRow, "data file")]
    if not rows:
        raise DistillError(f"{path} holds no rows")
    return rows


class ClassifierTeacher:
    def __init__(self, model_dir: str):
        from plugins.onnx_models import ClassifierModel

        self.model = ClassifierModel(model_dir, threads=2)
        self.heads = tuple(self.model.labels)

    def label(self, pairs: list[tuple[str, str | None]], log) -> np.ndarray:
        out = []
        for i in range(0, len(pairs), 64):
            out.append(self.model.predict(pairs[i : i + 64]))
            if (i // 64) % 50 == 0:
                log(f"teacher labelled {i + len(out[-1])}/{len(pairs)}")
        return np.concatenate(out).astype(np.float32)


class AgentTeacher:
    heads = DIRECT

    def __init__(self, chat: Chat, max_new_tokens: int = 256):
        self.chat, self.max_new_tokens = chat, max_new_tokens

    def label(self, pairs: list[tuple[str, str | None]], log) -> np.ndarray:
        out = np.full((len(pairs), 2), np.nan, dtype=np.float32)
        for i, (prompt, response) in enumerate(pairs):
            try:
                verdict = ask_feedback_agent(self.chat, prompt, response, self.max_new_tokens)
            except FormatError:
                continue
            out[i] = (verdict.unsafe, verdict.overrefuse)
        return out


class JudgeTeacher:
    heads = DIRECT

    def __init__(self, judge):
        self.judge = judge

    def label(self, pairs: list[tuple[str, str | None]], log) -> np.ndarray:
        out = np.full((len(pairs), 2), np.nan, dtype=np.float32)
        idx = [i for i, (_, r) in enumerate(pairs) if r is not None]
        if idx:
            out[idx] = np.array(self.judge.labels([pairs[i] for i in idx]), dtype=np.float32)
        return out


def make_teacher(spec: str):
    kind, _, where = spec.partition(":")
    usage = f"--teacher {spec!r}: use onnx:DIR, remote:URL, scripted:FILE (a feedback agent), judge:FILE or classifier:DIR"
    if not where:
        raise DistillError(usage)
    if kind == "classifier":
        return ClassifierTeacher(where)
    if kind == "judge":
        from gate.config import read_yaml_mapping
        from training.waltz.config import JudgeConfig
        from training.waltz.judge import make_judge

        return JudgeTeacher(make_judge(JudgeConfig.model_validate(read_yaml_mapping(Path(where), "judge config"))))
    if kind in REQUIRED:
        from training.evaluate import make_agent

        return AgentTeacher(make_agent(spec))
    raise DistillError(usage)


def targets(rows: list[dict], teacher_probs: np.ndarray, heads: tuple[str, ...], gold_weight: float) -> np.ndarray:
    """Teacher targets, mixed with the rows' own labels where they have them and gold_weight > 0."""
    out = teacher_probs.copy()
    if gold_weight > 0:
        for i, row in enumerate(rows):
            for j, head in enumerate(heads):
                gold = row["labels"].get(head)
                if gold is not None:
                    out[i, j] = gold_weight * float(gold) + (1 - gold_weight) * out[i, j]
    return out


def gate_labels(heads: tuple[str, ...], probs: np.ndarray, rows: list[dict]) -> np.ndarray:
    """[n, 2] booleans: the gate's (unsafe, overrefuse) for each row, as the feedback plugin reads the heads."""
    return np.array([classifier_labels(heads, p, {}, r["response"] is not None)[:2] for p, r in zip(probs, rows)],
                    dtype=bool).reshape(len(rows), 2)


def agreement(heads: tuple[str, ...], teacher: np.ndarray, student: np.ndarray, rows: list[dict]) -> dict:
    t_lab, s_lab = gate_labels(heads, teacher, rows), gate_labels(heads, student, rows)
    return {
        "rows": len(rows),
        "heads": {h: round(float(((teacher[:, j] >= 0.5) == (student[:, j] >= 0.5)).mean()), 4) for j, h in enumerate(heads)},
        "unsafe": round(float((t_lab[:, 0] == s_lab[:, 0]).mean()), 4),
        "overrefuse": round(float((t_lab[:, 1] == s_lab[:, 1]).mean()), 4),
        "decision": round(float((t_lab == s_lab).all(axis=1).mean()), 4),
    }


def quality(heads: tuple[str, ...], probs: np.ndarray, rows: list[dict]) -> dict:
    """Against the classifier data's labels, which the rows carry (for a teacher with the same heads)."""
    from training.train_classifier import head_metrics, heldout_prompt_metrics

    return {"heads": head_metrics(probs, rows, heads), **heldout_prompt_metrics(probs, rows, heads.index("prompt_harmful"))}


def distill(data: Path, teacher_spec: str, out: Path, base: Path, layers: int | None = None, epochs: int = 1,
            batch_size: int = 32, lr: float = 5e-5, max_tokens: int = 256, seed: int = 0, max_steps: int | None = None,
            gold_weight: float = 0.0, log=print) -> dict:
    from plugins.encoding import PairEncoder
    from training.train_classifier import fit, load_student, predict

    if out.exists() and any(out.iterdir()):
        raise DistillError(f"{out} exists and is not empty; choose a new folder")
    if not (base / "tokenizer.json").is_file():
        raise DistillError(f"--base {base} has no tokenizer.json (a BERT-style checkpoint folder is needed)")
    started = time.time()
    rows = read_pairs(data)
    teacher = make_teacher(teacher_spec)
    check_heads(teacher.heads)
    log(f"teacher {teacher_spec} ({', '.join(teacher.heads)}) labelling {len(rows)} rows")
    probs = teacher.label([(r["prompt"], r["response"]) for r in rows], log)
    kept = ~np.isnan(probs).any(axis=1)
    dropped = int((~kept).sum())
    rows, probs = [r for r, k in zip(rows, kept) if k], probs[kept]
    train_idx = [i for i, r in enumerate(rows) if r["split"] == "train"]
    held_idx = [i for i, r in enumerate(rows) if r["split"] != "train"]
    if not train_idx or not held_idx:
        raise DistillError(f"need rows in the train split and held-out rows; have {len(train_idx)} and {len(held_idx)} "
                           f"({dropped} dropped: the teacher gave no label)")
    heads = teacher.heads
    y = targets(rows, probs, heads, gold_weight)
    train_rows = [rows[i] for i in train_idx]
    encoder = PairEncoder.load(base / "tokenizer.json", max_tokens)
    model = load_student(base, heads, layers, log, seed)
    steps = fit(model, encoder, train_rows, y[train_idx], np.ones_like(y[train_idx]), epochs, batch_size, lr, seed,
                max_steps, log)
    held_rows = [rows[i] for i in held_idx]
    student = predict(model, encoder, held_rows)
    by_split: dict[str, list[int]] = {}
    for k, r in enumerate(held_rows):
        by_split.setdefault(r["split"], []).append(k)
    report = {
        "teacher": teacher_spec, "heads": list(heads), "base": str(base), "layers": model.config.num_hidden_layers,
        "rows": {"train": len(train_idx), "held_out": len(held_idx), "dropped_no_teacher_label": dropped},
        "steps": steps, "epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "max_tokens": max_tokens,
        "seed": seed, "gold_weight": gold_weight,
        "agreement": agreement(heads, probs[held_idx], student, held_rows),
        "agreement_by_split": {s: agreement(heads, probs[held_idx][ix], student[ix], [held_rows[k] for k in ix])
                               for s, ix in sorted(by_split.items())},
    }
    if heads == DECOMPOSED and any(r["labels"] for r in held_rows):
        report["quality"] = {
            s: {"student": quality(heads, student[ix], [held_rows[k] for k in ix]),
                "teacher": quality(heads, probs[held_idx][ix], [held_rows[k] for k in ix])}
            for s, ix in sorted(by_split.items())
        }
    report["seconds"] = round(time.time() - started)
    manifest = data / "manifest.json"
    report["data"] = json.loads(manifest.read_text()) if data.is_dir() and manifest.is_file() else {"file": str(data)}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    (out / "training_report.json").write_text(json.dumps(report, indent=2))
    return report
