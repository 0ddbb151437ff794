"""Policy: findings -> actions -> one decision, the text to return, and the feedback to revise with."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import lru_cache

from gate.config import FailureMode, PolicySettings, Rule
from gate.refusal import declining_sentence_end
from gate.types import CheckRequest, Decision, Finding, Severity, Source, Span, Status


class Policy:
    def __init__(self, settings: PolicySettings):
        self.settings = settings
        # Rules are fixed after start-up, so the mapping can be memoised per (category, source, severity).
        self.rule = lru_cache(maxsize=4096)(self._rule)

    def _rule(self, category: str, source: Source, severity: Severity) -> Rule | None:
        for rule in self.settings.rules:
            if (
                fnmatchcase(category, rule.category)
                and (rule.source is None or rule.source == source)
                and severity.rank >= rule.min_severity.rank
            ):
                return rule
        return None

    def action(self, category: str, source: Source, severity: Severity) -> Decision:
        rule = self.rule(category, source, severity)
        return rule.action if rule else Decision.ALLOW

    def _settled_by_refusal(self, f: Finding, declined_upto: int) -> bool:
        """A Stage 1 revise that a plain refusal, judged safe by Stage 2, settles: one on the prompt, or one on
        the response whose every match ends within the sentence that declines (`declined_upto`)."""
        if f.stage != 1 or f.action != Decision.REVISE:
            return False
        if f.source == Source.RESPONSE:
            if not f.spans or any(s.source != Source.RESPONSE or s.end > declined_upto for s in f.spans):
                return False
        elif f.source != Source.PROMPT:
            return False
        rule = self.rule(f.category, f.source, f.severity)
        return rule is None or rule.refusal_suffices

    @staticmethod
    def settled_overrefusal(f: Finding, findings: Iterable[Finding]) -> bool:
        """A Stage 2 over-refusal label on a prompt that Stage 1 found harmful (a finding on the prompt that revises
        or blocks): declining such a request is no over-refusal, and the gate never asks an agent to answer what its
        own patterns flagged. The finding stays in the verdict; it does not decide. Only a revise whose one label
        is over-refusal is settled: a block, or any other label beside it (unsafe), still decides."""
        return (f.stage == 2 and f.action == Decision.REVISE and bool(f.labels.get("overrefuse"))
                and not any(v for k, v in f.labels.items() if k != "overrefuse")
                and any(g.stage == 1 and g.status == Status.OK and g.source == Source.PROMPT
                        and g.action in (Decision.REVISE, Decision.BLOCK) for g in findings))

    def failure_action(self, stage: int) -> Decision:
        mode = self.settings.on_failure.stage1 if stage == 1 else self.settings.on_failure.stage2
        return Decision.BLOCK if mode == FailureMode.CLOSED else Decision.ALLOW

    def decide(self, request: CheckRequest, findings: Iterable[Finding],
               refusal_judged_safe: bool = False) -> tuple[Decision, str | None, str | None, bool]:
        """The decision, the text to return, the feedback and whether the text is a revision.

        Redaction comes before blocking: personal data is masked in the response whatever else is
        decided, and only a finding whose own action is block blocks the answer. A redact finding with
        no span in the response (a plugin that gives no spans, a rule that redacts what was found in the
        prompt) leaves nothing to mask, so it is decided as revise: it never passes as redacted.

        `refusal_judged_safe`: the response is a plain refusal (gate/refusal.py) and Stage 2, enforced, judged
        it safe. A refusal of a harmful request is the outcome the gate wants, so Stage 1's revise findings on
        the prompt, and those on the response that only match the declining sentence (the request restated),
        do not send it back (they stay in the verdict), unless their rule says a refusal does not suffice
        (self-harm). Any other answer to a flagged prompt is still revised. An over-refusal label on a prompt that
        Stage 1 flagged does not decide, nor stop the refusal counting as judged safe (`settled_overrefusal`).
        """
        findings = list(findings)
        declined_upto = declining_sentence_end(request.response or "") if refusal_judged_safe else 0
        decision = Decision.ALLOW
        redact: list[tuple[Span, str]] = []
        feedback: list[str] = []
        revision = None
        for f in findings:
            if f.status == Status.SKIPPED:
                continue
            action = f.action
            if (refusal_judged_safe and self._settled_by_refusal(f, declined_upto)) or self.settled_overrefusal(f, findings):
                continue
            if action == Decision.REDACT:
                spans = [(s, f.category) for s in f.spans if s.source == Source.RESPONSE]
                redact += spans
                action = Decision.REDACT if spans else Decision.REVISE
            if action.rank > decision.rank:
                decision = action
            if action in (Decision.REVISE, Decision.BLOCK) and f.feedback and f.feedback not in feedback:
                feedback.append(f.feedback)
            if f.action == Decision.REVISE and f.revision:
                revision = f.revision
        revised = decision == Decision.REVISE and revision is not None
        if decision == Decision.BLOCK:
            text = self.settings.refusal
        elif revised:
            text = revision
        else:
            text = apply_redactions(request.response, redact)
        return decision, text, "\n".join(feedback) or None, revised


def apply_redactions(text: str | None, spans: list[tuple[Span, str]]) -> str | None:
    """Replace each span with a label such as [EMAIL]; overlapping spans are merged."""
    if text is None or not spans:
        return text
    merged: list[list] = []
    for span, category in sorted(spans, key=lambda x: (x[0].start, -x[0].end)):
        if merged and span.start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], span.end)
        else:
            merged.append([span.start, span.end, category.rsplit(".", 1)[-1].upper()])
    out, pos = [], 0
    for start, end, label in merged:
        out += [text[pos:start], f"[{label}]"]
        pos = end
    out.append(text[pos:])
    return "".join(out)
