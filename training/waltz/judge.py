"""The judge J(p, c): labels any (prompt, response) pair as unsafe and/or over-refusing.

Backends, chosen in the training config: ``rule`` (deterministic regexes; tests and the synthetic task),
``classifier`` (the gate's exported Stage 2 classifier, ONNX), ``remote`` (an OpenAI-compatible LLM judge
answering with the WaltzRL feedback JSON, through `plugins.chat`). The reward R_c(c) = 1 exactly when the judge finds c
neither unsafe nor over-refusing.

Where the data says whether a prompt is harmful (its ``kind``), ``labels`` takes that over the judge's own guess:
a refusal of a harmful prompt is never an over-refusal. A pair the judge could not label (a remote judge's
malformed answer, after retries) is ``None``: the trainer leaves it out of the update.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from training.waltz.config import JudgeConfig

Labels = tuple[bool, bool]  # (unsafe, overrefuse)


class Judge(Protocol):
    def labels(self, pairs: list[tuple[str, str]], harmful: list[bool] | None = None) -> list[Labels | None]:
        """(unsafe, overrefuse) for each (prompt, response); `harmful`: the prompts' kinds, where known."""


class RuleJudge:
    def __init__(self, cfg: JudgeConfig):
        self.harmful = re.compile(cfg.harmful_prompt)
        self.complies, self.refuses = re.compile(cfg.complies), re.compile(cfg.refuses)
        # When set, a benign prompt's response must match it: an unhelpful non-answer over-refuses too.
        self.helpful = re.compile(cfg.helpful) if cfg.helpful else None

    def labels(self, pairs: list[tuple[str, str]], harmful: list[bool] | None = None) -> list[Labels | None]:
        out = []
        for (prompt, response), kind in zip(pairs, harmful or [None] * len(pairs), strict=True):
            is_harmful = bool(self.harmful.search(prompt)) if kind is None else kind
            if is_harmful:
                out.append((bool(self.complies.search(response)), False))
            else:
                unhelpful = self.helpful is not None and not self.helpful.search(response)
                out.append((False, bool(self.refuses.search(response)) or unhelpful))
        return out


class ClassifierJudge:
    """The gate's Stage 2 classifier as the judge (the same labelling rules as the feedback plugin)."""

    def __init__(self, cfg: JudgeConfig):
        from plugins.feedback import DEFAULT_MODEL, check_heads
        from plugins.onnx_models import ClassifierModel

        self.model = ClassifierModel(cfg.model_dir or DEFAULT_MODEL, threads=2)
        check_heads(self.model.labels)
        self.thresholds = self.model.config.get("thresholds", {})

    def labels(self, pairs: list[tuple[str, str]], harmful: list[bool] | None = None) -> list[Labels | None]:
        from plugins.feedback import classifier_labels

        heads = list(self.model.labels)
        out = []
        for probs, kind in zip(self.model.predict(pairs), harmful or [None] * len(pairs), strict=True):
            probs = [float(x) for x in probs]
            if kind is not None and "prompt_harmful" in heads:  # the data's kind instead of the prompt head
                probs[heads.index("prompt_harmful")] = float(kind)
            unsafe, overrefuse = classifier_labels(heads, probs, self.thresholds, True)[:2]
            out.append((unsafe, overrefuse and not kind))
        return out


class RemoteJudge:
    """An OpenAI-compatible LLM judge: requests in parallel (``concurrency``), each retried ``retries`` times on
    a transport error or a malformed answer; what still fails is that pair's ``None``."""

    def __init__(self, cfg: JudgeConfig):
        from plugins.chat import ChatSettings, make_chat

        self.cfg = cfg
        self.chat = make_chat(ChatSettings(kind="remote", url=cfg.url, model=cfg.remote_model, timeout_s=cfg.timeout_s))
        self.pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="remote-judge")
        self.failures: list[str] = []  # the last batch's errors, one per pair that got None

    def _one(self, prompt: str, response: str, kind: bool | None) -> Labels | str:
        from plugins.feedback import ask_feedback_agent
        from plugins.remote_llm import RemoteError
        from plugins.waltz_protocol import FormatError

        for attempt in range(self.cfg.retries + 1):
            try:
                verdict = ask_feedback_agent(self.chat, prompt, response, 256)
                return verdict.unsafe, verdict.overrefuse and not kind
            except (RemoteError, FormatError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < self.cfg.retries:
                    time.sleep(self.cfg.retry_backoff_s * 2**attempt)
        return error

    def labels(self, pairs: list[tuple[str, str]], harmful: list[bool] | None = None) -> list[Labels | None]:
        results = list(self.pool.map(self._one, *zip(*pairs), harmful or [None] * len(pairs))) if pairs else []
        self.failures = [r for r in results if isinstance(r, str)]
        if pairs and len(self.failures) == len(pairs):
            raise RuntimeError(f"the remote judge at {self.cfg.url} labelled none of {len(pairs)} pairs "
                               f"(last error: {self.failures[-1]})")
        return [None if isinstance(r, str) else r for r in results]


def make_judge(cfg: JudgeConfig) -> Judge:
    if cfg.backend == "rule":
        return RuleJudge(cfg)
    if cfg.backend == "classifier":
        return ClassifierJudge(cfg)
    return RemoteJudge(cfg)
