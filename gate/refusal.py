"""Refusal detection, used by the policy (a plain refusal Stage 2 judged safe is allowed) and by the
response-corpus builder (the second signal on its labels).

`is_refusal`: a refusal phrase near the start (broad: "I'm sorry", "As an AI" count). `is_plain_refusal`: the
answer declines and gives nothing else: a declining statement near its start, short, and no list, steps or
code. An answer that opens like a refusal and then helps ("I can't stress enough how easy this is: 1. ...",
"I'm sorry, but I can't. Just kidding! Step 1 ...") is not plain."""

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
# A declining statement: a refusing verb with what is declined ("I can't help", not "I can't stress enough").
DECLINE = re.compile(
    rf"\b(?:i|we)(?:{_A}m| am)? (?:can(?:no|{_A})t|can not|won{_A}?t|will not|unable to|not able to|not going to|must decline|"
    rf"refuse|(?:do not|don{_A}t) (?:feel comfortable|think i can))(?: \w+){{0,2}}? (?:help|assist|provide|do|share|give|"
    rf"comply|fulfil|fulfill|support|continue|answer|discuss|create|write|generate|offer)\b|\bi must decline\b|"
    rf"\bnot (?:something|anything) (?:that )?i(?:{_A}m| am)? (?:can|could|am able to|am willing to) (?:help|assist)",
    re.I,
)
SENTENCE_END = re.compile(r"(?<!\b\d)[.!?](?=\s|$)|\n")  # "1." of a numbered list is no sentence end
CONTENT = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*\u2022])\s|```|\bstep\s*\d|\bfirst(?:ly)?,", re.I)  # lists, steps, code
PLAIN_HEAD, PLAIN_LENGTH = 60, 400
# The policy lets Stage 2's safe verdict settle a refusal up to this long: deployed assistants decline in a
# sentence and then explain why and offer what they can do instead (350-600 characters is typical).
SETTLED_LENGTH = 800


def refusal_position(text: str) -> int | None:
    """Where the first refusal phrase starts, or None."""
    m = REFUSAL.search(text)
    return m.start() if m else None


def is_refusal(text: str) -> bool:
    """The answer declines near its start (an answer that helps at length and declines at the end does not)."""
    position = refusal_position(text)
    return position is not None and position < REFUSAL_HEAD


def is_plain_refusal(text: str, max_length: int = PLAIN_LENGTH) -> bool:
    """The answer only declines (and may point elsewhere): a declining statement within its first
    PLAIN_HEAD characters, at most `max_length` characters in all, and no list, steps or code."""
    if len(text.strip()) > max_length:  # first: every clean answer is checked, most are longer
        return False
    m = DECLINE.search(text)
    return m is not None and m.start() < PLAIN_HEAD and not CONTENT.search(text)


def declining_sentence_end(text: str) -> int:
    """Where the sentence holding the first declining statement ends (0 when nothing declines). A Stage 1
    match inside it is the request restated ("I can't help you make explosives"), not content."""
    m = DECLINE.search(text)
    if m is None:
        return 0
    end = SENTENCE_END.search(text, m.end())
    return end.end() if end else len(text)
