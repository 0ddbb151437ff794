"""Stage 2: the WaltzRL feedback agent as a gate plugin, with an optional conversation-agent revision.

Backends (``backend`` setting):
- ``classifier`` (default): the compact ONNX classifier shipped in plugins/models/, whose heads are the
  labels as the feedback agent gives them: unsafe = the response is harmful (for a pre-check of the prompt
  alone: the prompt is); overrefuse = the response refuses a prompt that is not harmful (a pair it calls an
  over-refusal has its prompt judged alone too, and an unsafe request cancels the label). A model with the
  older heads prompt_harmful, refusal, response_harmful is mapped to those labels. Feedback comes from templates.
  A long response is read twice over: as the model was trained (its head and tail), and in up to
  ``response_windows`` stretches spread along it; the content head (unsafe, response_harmful) takes the
  highest reading, so harm in the middle of a long answer is not cut away.
- ``generative``: an exported ONNX causal LM (the trained feedback agent) writing the protocol's JSON.
- ``remote``: an OpenAI-compatible endpoint serving the trained feedback agent.
A generative or remote answer that is not the protocol's JSON is a format failure: the plugin raises,
and the gate records status error (Stage 2's fail-open/closed policy applies), never a clean pass.

Revision (``revision_backend``: none | generative | remote): when the labels flag a response, the
conversation agent rewrites it once with the feedback (as in the paper); with ``recheck`` the rewrite
is judged again and kept only if it is no longer flagged. With no revision backend the router revises.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gate.config import ConfigError
from gate.hookspecs import hookimpl
from gate.types import CheckRequest, Detection, Severity, Source
from plugins.chat import Chat, ChatSettings, make_chat
from plugins.onnx_models import ClassifierModel
from plugins.waltz_protocol import (
    CONVERSATION_SYSTEM_PROMPT,
    FEEDBACK_SYSTEM_PROMPT,
    Feedback,
    feedback_input,
    parse_feedback,
    revision_input,
)

DEFAULT_MODEL = Path(__file__).parent / "models" / "feedback-minilm"
DECOMPOSED = ("prompt_harmful", "refusal", "response_harmful")  # the default model's heads
DIRECT = ("unsafe", "overrefuse")  # a student distilled from a feedback agent
PRECHECK = "unsafe_precheck"  # the threshold of the unsafe head on a prompt alone, where training chose one
NO_RESPONSE = "(no response yet)"  # what a generative feedback agent reads for a pre-check

TEMPLATES = {
    "unsafe_request": (
        "The prompt asks for help with something harmful. Answer without operational details (no steps, "
        "quantities, code, targets or ways to avoid detection): say briefly what you can't help with, then "
        "offer safe, legal alternatives or general background."
    ),
    "unsafe": (
        "The response helps with a harmful request or contains harmful content. Rewrite it: remove the "
        "operational details (steps, quantities, code, targets, evasion tips), keep any safe general "
        "information, say briefly what you can't help with, and offer a safe alternative."
    ),
    "overrefusal": (
        "The response refuses a request that is not harmful. Answer it directly and helpfully; if one part "
        "is sensitive, handle that part with care (context, safety notes) instead of refusing everything."
    ),
}


class FeedbackAgent:
    name = "waltzrl"
    stage = 2
    timeout_ms = 450.0  # inside the request's 500 ms budget
    description = "WaltzRL feedback agent: unsafe / over-refusal labels, feedback, optional one-round revision."
    class Settings(BaseModel):
        model_config = ConfigDict(protected_namespaces=())

        backend: Literal["classifier", "generative", "remote"] = "classifier"
        model_dir: Path | None = None  # default: the shipped classifier (classifier) / required (generative)
        model_file: str | None = None  # default: the one named in the model's waltz_gate.json
        max_tokens: int | None = Field(default=None, ge=1)  # classifier token budget; default: the model's
        threads: int = Field(default=1, ge=1)  # onnxruntime intra-op threads per session
        response_windows: int = Field(default=4, ge=0)  # stretches of a long response also read (0: head and tail only)
        # per head, and unsafe_precheck for a prompt alone (else unsafe's); default: waltz_gate.json, else 0.5
        thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
        url: str | None = None  # remote: OpenAI-compatible base URL
        remote_model: str = "waltzrl-feedback"
        api_key_env: str | None = None
        timeout_s: float = Field(default=10.0, gt=0)
        max_new_tokens: int = Field(default=256, ge=1)
        revision_backend: Literal["none", "generative", "remote"] = "none"
        revision_model_dir: Path | None = None
        revision_url: str | None = None
        revision_remote_model: str = "waltzrl-conversation"
        recheck: bool = True

    @hookimpl
    def gate_setup(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        backend = settings["backend"]
        self.classifier = self.judge_llm = None
        if backend == "classifier":
            self.classifier = ClassifierModel(
                settings["model_dir"] or DEFAULT_MODEL, settings["threads"], settings["max_tokens"], settings["model_file"]
            )
            check_heads(self.classifier.labels)
            unknown = set(settings["thresholds"]) - set(self.classifier.labels) - ({PRECHECK} if "unsafe" in self.classifier.labels else set())
            if unknown:
                raise ConfigError(f"thresholds name no head of the classifier: {', '.join(sorted(unknown))} "
                                  f"(its heads: {', '.join(self.classifier.labels)})")
            self.thresholds = {**self.classifier.config.get("thresholds", {}), **settings["thresholds"]}
        else:
            self.judge_llm = self._chat("backend")
        self.reviser = None if settings["revision_backend"] == "none" else self._chat("revision_backend")

    def _chat(self, setting: str) -> Chat:
        """The chat that `backend` or `revision_backend` names (generative: an ONNX causal LM), from the settings
        beside it (`revision_model_dir`, `revision_url`, `revision_remote_model` for the revision)."""
        s, prefix = self.settings, setting.removesuffix("backend")
        try:
            return make_chat(ChatSettings(
                kind="onnx" if s[setting] == "generative" else "remote", model_dir=s[f"{prefix}model_dir"],
                model_file=s["model_file"], threads=s["threads"], url=s[f"{prefix}url"],
                model=s[f"{prefix}remote_model"], api_key_env=s["api_key_env"], timeout_s=s["timeout_s"]))
        except ConfigError as exc:
            raise ConfigError(f"{setting} {s[setting]}: {exc}") from None

    @hookimpl
    def gate_ready(self) -> bool:
        return self.classifier is not None or self.judge_llm is not None

    @hookimpl
    def gate_check_batch(self, requests: Sequence[CheckRequest]) -> list[list[Detection]]:
        verdicts = self._judge([(r.prompt, r.response) for r in requests])
        return [self._detections(r, v) for r, v in zip(requests, verdicts, strict=True)]

    # -- judging ----------------------------------------------------------------------------------

    def _judge(self, pairs: list[tuple[str, str | None]]) -> list[tuple[Feedback, float]]:
        """The feedback agent's verdict and a score (its confidence in the flag) for each pair."""
        if self.classifier is None:
            return [self._judge_llm(p, r) for p, r in pairs]
        labels, thresholds = self.classifier.labels, self.thresholds
        if self.settings["response_windows"]:
            probs, spread = self.classifier.predict_windowed(pairs, self.settings["response_windows"])
            content = labels.index("unsafe" if "unsafe" in labels else "response_harmful")
            probs[:, content] = np.maximum(probs[:, content], spread[:, content])
        else:
            probs = self.classifier.predict(pairs)
        judged = [classifier_labels(labels, p, thresholds, r is not None) for (_, r), p in zip(pairs, probs, strict=True)]
        heads = [dict(zip(labels, p.round(3).tolist())) for p in probs]
        # An over-refusal refuses a request that is fine to answer: for the pairs called over-refusals, the
        # prompt alone is judged too (one more pass, for those pairs only), and a request it judges unsafe is
        # not over-refused, whatever the pair head read into the refusal. (Older heads judge the prompt already.)
        ask = [i for i, (_, overrefuse, _) in enumerate(judged) if overrefuse] if "overrefuse" in labels else []
        if ask:
            for i, pre in zip(ask, self.classifier.predict([(pairs[i][0], None) for i in ask]), strict=True):
                heads[i]["prompt alone"] = dict(zip(labels, pre.round(3).tolist()))
                if classifier_labels(labels, pre, thresholds, False)[0]:
                    judged[i] = classifier_labels(labels, probs[i], thresholds, True, request_unsafe=True)
        out = []
        for (_, response), (unsafe, overrefuse, score), h in zip(pairs, judged, heads, strict=True):
            kind = "unsafe_request" if response is None else "unsafe" if unsafe else "overrefusal"
            text = TEMPLATES[kind] if unsafe or overrefuse else ""
            out.append((Feedback(f"classifier heads: {h}", unsafe, overrefuse, text), score))
        return out

    def _judge_llm(self, prompt: str, response: str | None) -> tuple[Feedback, float]:
        # FormatError propagates: the gate records a plugin error
        return ask_feedback_agent(self.judge_llm, prompt, response, self.settings["max_new_tokens"]), 1.0

    # -- findings ---------------------------------------------------------------------------------

    def _detections(self, request: CheckRequest, judged: tuple[Feedback, float]) -> list[Detection]:
        verdict, score = judged
        if not verdict.flagged:
            return []
        source = Source.PROMPT if request.response is None else Source.RESPONSE
        kind = "unsafe_request" if request.response is None else ("unsafe" if verdict.unsafe else "overrefusal")
        revision, message = None, verdict.reasoning
        if self.reviser is not None and request.response is not None:
            revision, message = self._revise(request, verdict)
        return [
            Detection(
                category=f"{self.name}.{kind}",
                severity=Severity.HIGH if verdict.unsafe else Severity.MEDIUM,
                source=source,
                score=min(1.0, max(0.0, score)),
                message=message,
                feedback=verdict.feedback,
                labels={"unsafe": verdict.unsafe, "overrefuse": verdict.overrefuse},
                revision=revision,
            )
        ]

    def _revise(self, request: CheckRequest, verdict: Feedback) -> tuple[str | None, str]:
        """One round of revision by the conversation agent; kept only if it passes the re-check."""
        revised = self.reviser.chat(
            CONVERSATION_SYSTEM_PROMPT, revision_input(request.prompt, request.response, verdict.feedback),
            self.settings["max_new_tokens"],
        ).strip()
        if not revised:
            return None, "the conversation agent returned an empty revision"
        if self.settings["recheck"]:
            again, _ = self._judge([(request.prompt, revised)])[0]
            if again.flagged:
                return None, "the revision was still flagged; the router must revise"
        return revised, "revised by the conversation agent"


def check_heads(labels: Sequence[str]) -> None:
    if not (set(DECOMPOSED) <= set(labels) or set(DIRECT) <= set(labels)):
        raise ValueError(f"the classifier's heads {list(labels)} are neither {list(DECOMPOSED)} nor {list(DIRECT)}")


def decision_threshold(thresholds: dict[str, float], head: str, has_response: bool) -> float:
    """Where `head` flags: its threshold, for `unsafe` on a prompt alone the pre-check's where one was chosen,
    else 0.5."""
    own = thresholds.get(head, 0.5)
    return thresholds.get(PRECHECK, own) if head == "unsafe" and not has_response else own


def classifier_labels(labels: Sequence[str], probs: Sequence[float], thresholds: dict[str, float],
                      has_response: bool, request_unsafe: bool = False) -> tuple[bool, bool, float]:
    """(unsafe, overrefuse, score) from one row of classifier probabilities; score is the confidence
    behind the flag that was raised (or in the unsafe head when none was). `request_unsafe`: the prompt alone
    was judged unsafe, so refusing it is no over-refusal."""
    p = dict(zip(labels, (float(x) for x in probs)))

    def on(head: str) -> bool:
        return p[head] >= decision_threshold(thresholds, head, has_response)

    if "unsafe" in p:
        unsafe = on("unsafe")
        overrefuse = has_response and on("overrefuse") and not request_unsafe
        return unsafe, overrefuse, p["overrefuse"] if overrefuse and not unsafe else p["unsafe"]
    if not has_response:
        return on("prompt_harmful"), False, p["prompt_harmful"]
    unsafe = on("response_harmful")
    overrefuse = not on("prompt_harmful") and on("refusal")
    return unsafe, overrefuse, p["response_harmful"] if unsafe else p["refusal"]


def ask_feedback_agent(chat: Chat, prompt: str, response: str | None, max_new_tokens: int) -> Feedback:
    """One verdict from a generative or remote feedback agent; raises FormatError on a malformed answer."""
    return parse_feedback(chat.chat(FEEDBACK_SYSTEM_PROMPT, feedback_input(prompt, NO_RESPONSE if response is None else response), max_new_tokens))
