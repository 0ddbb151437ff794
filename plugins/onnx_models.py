"""ONNX Runtime models for Stage 2: the multi-head classifier and a causal LM with a KV cache.

Only onnxruntime, tokenizers and numpy: nothing here imports torch or transformers. A model folder
(written by ``waltz-gate export``) holds the ONNX file(s), ``tokenizer.json``, ``waltz_gate.json`` (task,
labels, token budget, which ONNX file to serve) and ``manifest.json`` (provenance and measured agreement).
Sessions are created once and shared by all threads; ``run`` is thread-safe in onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from gate.errors import WaltzGateError
from plugins.encoding import PairEncoder


class ModelError(WaltzGateError, ValueError):
    """A model folder that cannot be served; the message names the file."""


def read_config(model_dir: Path) -> dict:
    path = model_dir / "waltz_gate.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc.msg}") from None


def session(path: Path, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
        raise ModelError(f"onnxruntime cannot load {path}: {exc}") from None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class ClassifierModel:
    """Multi-label sequence classifier over (prompt, response) pairs: sigmoid probability per label."""

    def __init__(self, model_dir: str | Path, threads: int = 1, max_tokens: int | None = None, model_file: str | None = None):
        model_dir = Path(model_dir)
        self.config = read_config(model_dir)
        if self.config.get("task") != "text-classification":
            raise ModelError(f"{model_dir} holds a {self.config.get('task')!r} model, not text-classification")
        self.labels: list[str] = self.config["labels"]
        self.encoder = PairEncoder.load(model_dir / "tokenizer.json", max_tokens or self.config.get("max_tokens", 256))
        self.session = session(model_dir / (model_file or self.config["model_file"]), threads)
        self._inputs = {i.name for i in self.session.get_inputs()}

    def predict(self, pairs: list[tuple[str, str | None]]) -> np.ndarray:
        """[len(pairs), len(labels)] probabilities."""
        return self._run(self.encoder.encode(pairs))

    def predict_windowed(self, pairs: list[tuple[str, str | None]], limit: int) -> tuple[np.ndarray, np.ndarray]:
        """`predict`'s probabilities, and [len(pairs), len(labels)]: the highest probability over up to `limit`
        windows of each response longer than its share of the budget (PairEncoder.encode_windowed); 0 for a pair
        that fits, or has no response."""
        batch, windows, owners = self.encoder.encode_windowed(pairs, limit)
        spread = np.zeros((len(pairs), len(self.labels)), dtype=np.float32)
        if windows is not None:
            np.maximum.at(spread, owners, self._run(windows))
        return self._run(batch), spread

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = self.session.run(["logits"], {k: v for k, v in batch.items() if k in self._inputs})
        return _sigmoid(logits.astype(np.float32))


class CausalLM:
    """Greedy decoding with an ONNX causal LM exported with past key values (optimum's text-generation-with-past)."""

    def __init__(self, model_dir: str | Path, threads: int = 1, model_file: str | None = None):
        model_dir = Path(model_dir)
        self.config = read_config(model_dir)
        if self.config.get("task") != "text-generation-with-past":
            raise ModelError(f"{model_dir} holds a {self.config.get('task')!r} model, not text-generation-with-past")
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.template: str = self.config.get("chat_template", "{system}\n\nUser: {user}\nAssistant:")
        self.eos_ids = set(self.config.get("eos_token_ids", []))
        self.bos_id: int | None = self.config.get("bos_token_id")  # prepended when the template does not add it
        # The start of every answer, as in training (AgentConfig.response_prefix): written for the model after the
        # prompt, tokenized on its own as the trainer did, and returned in front of what the model generated.
        self.response_prefix: str = self.config.get("response_prefix", "")
        self._prefix_ids = self.tokenizer.encode(self.response_prefix, add_special_tokens=False).ids if self.response_prefix else []
        self.session = session(model_dir / (model_file or self.config["model_file"]), threads)
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self._past = [name for name in self._inputs if name.startswith("past_key_values")]
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        feed = {}
        for name in self._past:
            shape = self._inputs[name].shape  # [batch, kv_heads, past_len, head_dim], last two symbolic/int
            heads, head_dim = shape[1], shape[3]
            feed[name] = np.zeros((batch, heads, 0, head_dim), dtype=np.float32)
        return feed

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation of `ids` (batch of one), stopping at an end-of-sequence token."""
        feed = self._empty_past(1)
        tokens = np.array([ids], dtype=np.int64)
        total = len(ids)
        out: list[int] = []
        for _ in range(max_new_tokens):
            feed["input_ids"] = tokens
            if "attention_mask" in self._inputs:
                feed["attention_mask"] = np.ones((1, total), dtype=np.int64)
            if "position_ids" in self._inputs:
                feed["position_ids"] = np.arange(total - tokens.shape[1], total, dtype=np.int64)[None, :]
            results = dict(zip(self._outputs, self.session.run(self._outputs, feed), strict=True))
            nxt = int(results["logits"][0, -1].argmax())
            if nxt in self.eos_ids:
                break
            out.append(nxt)
            for name in self._past:
                feed[name] = results[name.replace("past_key_values", "present")]
            tokens = np.array([[nxt]], dtype=np.int64)
            total += 1
        return out

    def chat(self, system: str, user: str, max_new_tokens: int) -> str:
        ids = self.tokenizer.encode(self.template.format(system=system, user=user)).ids
        if self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids = [self.bos_id, *ids]
        return self.response_prefix + self.tokenizer.decode(self.generate_ids([*ids, *self._prefix_ids], max_new_tokens))
