"""The judge J(p, c): labels any (prompt, response) pair as unsafe and/or over-refusing.

Backends, chosen in the training config: ``rule`` (deterministic regexes; tests and the synthetic task),
``classifier`` (the gate's exported Stage 2 classifier, ONNX), ``remote`` (an OpenAI-compatible LLM judge
answering with the WaltzRL feedback JSON). The reward R_c(c) = 1 exactly when the judge finds c
neither unsafe nor over-refusing.
"""

from __future__ import annotations

import re
from typing import Protocol

from training.waltz.config import JudgeConfig


class Judge(Protocol):
    def labels(self, pairs: list[tuple[str, str]]) -> list[tuple[bool, bool]]:
        """(unsafe, overrefuse) for each (prompt, response)."""


class RuleJudge:
    def __init__(self, cfg: JudgeConfig):
        self.harmful = re.compile(cfg.harmful_prompt)
        self.complies, self.refuses = re.compile(cfg.complies), re.compile(cfg.refuses)
        # When set, a benign prompt's response must match it: an unhelpful non-answer over-refuses too.
        self.helpful = re.compile(cfg.helpful) if cfg.helpful else None

    def labels(self, pairs: list[tuple[str, str]]) -> list[tuple[bool, bool]]:
        out = []
        for prompt, response in pairs:
            if self.harmful.search(prompt):
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

    def labels(self, pairs: list[tuple[str, str]]) -> list[tuple[bool, bool]]:
        from plugins.feedback import classifier_labels

        return [classifier_labels(self.model.labels, p, self.thresholds, True)[:2] for p in self.model.predict(pairs)]


class RemoteJudge:
    def __init__(self, cfg: JudgeConfig):
        from plugins.remote_llm import RemoteChat

        self.chat = RemoteChat(cfg.url, cfg.remote_model)

    def labels(self, pairs: list[tuple[str, str]]) -> list[tuple[bool, bool]]:
        from plugins.feedback import ask_feedback_agent
        from plugins.waltz_protocol import FormatError

        out = []
        for prompt, response in pairs:
            try:
                verdict = ask_feedback_agent(self.chat, prompt, response, 256)
                out.append((verdict.unsafe, verdict.overrefuse))
            except FormatError as exc:
                raise RuntimeError(f"the remote judge did not answer in the protocol's JSON: {exc}") from None
        return out


def make_judge(cfg: JudgeConfig) -> Judge:
    if cfg.backend == "rule":
        return RuleJudge(cfg)
    if cfg.backend == "classifier":
        return ClassifierJudge(cfg)
    return RemoteJudge(cfg)
