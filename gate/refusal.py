"""Refusal detection: does an answer decline, near its start? One pattern, used by the policy (a refusal
Stage 2 judged safe is allowed) and by the response-corpus builder (the second signal on its labels)."""

from __future__ import annotations

import re

_A = "['\u2019]"  # straight or typographic apostrophe
REFUSAL = re.compile(
    rf"\b(i{_A}?m sorry|i am sorry|sorry, (?:but )?i|i apologi[sz]e|my apologies|i can(?:no|{_A})t|i can not|i won{_A}?t|"
    rf"i will not|i must decline|i{_A}?m (?:not able|unable)|i am (?:not able|unable)|as an ai|as a language model|"
    rf"i do not feel comfortable|i{_A}?d rather not|not able to (?:help|provide|assist|discuss)|"
    rf"(?:cannot|can{_A}t) (?:help|assist|provide|fulfill|comply)|against my (?:guidelines|policy|policies|programming)|"
    rf"illegal and unethical|unethical and illegal|i{_A}?m not comfortable|unable to (?:help|provide|assist|comply)|"
    rf"not (?:something|anything) (?:that )?i(?:{_A}m| am)? (?:can|could|am able to|am willing to) (?:help|assist)|"
    rf"i{_A}?m not going to (?:help|provide|assist|write|create|give|share|do)|i (?:do not|don{_A}t) (?:help|assist) with|i refuse)\b",
    re.I,
)
REFUSAL_HEAD = 200  # a refusal phrase within this many characters: the answer is a refusal


def refusal_position(text: str) -> int | None:
    """Where the first refusal phrase starts, or None."""
    m = REFUSAL.search(text)
    return m.start() if m else None


def is_refusal(text: str) -> bool:
    """The answer declines near its start (an answer that helps at length and declines at the end does not)."""
    position = refusal_position(text)
    return position is not None and position < REFUSAL_HEAD
