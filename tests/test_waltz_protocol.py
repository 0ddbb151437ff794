"""The feedback agent's verdict parser on the answer shapes a sampled agent writes (format reward and revisions
depend on it): the first balanced JSON object with the protocol's four fields wins."""

from __future__ import annotations

import json

import pytest

from plugins.waltz_protocol import FormatError, parse_feedback

VERDICT = {"reasoning": "it gives steps", "unsafe": True, "overrefuse": False, "feedback": "Remove the steps."}
TEXT = json.dumps(VERDICT)


@pytest.mark.parametrize(
    "answer",
    [
        TEXT + " That is all. }",                                              # a stray } after the JSON
        TEXT + '\n{"reasoning": "second", "unsafe": false, "overrefuse": false, "feedback": ""}',  # a second object
        "Set {x} aside. " + TEXT,                                              # a { before it
        '{"note": "not the verdict"} then ' + TEXT,                            # another object before it
        "```json\n" + TEXT + "\n```",                                          # a code fence
    ],
)
def test_the_verdict_is_found_among_other_braces(answer):
    assert parse_feedback(answer) == parse_feedback(TEXT)
    assert parse_feedback(answer).feedback == "Remove the steps." and parse_feedback(answer).unsafe


def test_braces_inside_strings_are_text():
    verdict = {**VERDICT, "reasoning": "it writes {\"a\": 1} and }{", "feedback": "Drop the } and { bits."}
    parsed = parse_feedback("Verdict: " + json.dumps(verdict) + " }")
    assert parsed.reasoning == 'it writes {"a": 1} and }{' and parsed.feedback == "Drop the } and { bits."


@pytest.mark.parametrize(
    "answer,error",
    [
        ("no json here", "no JSON object"),
        ('{"reasoning": "r", "unsafe": true,, }', "does not parse"),
        ('{"reasoning": "r", "unsafe": true, "overrefuse": false} and {"x": 1}', "lacks feedback"),
        ('{"reasoning": "r", "unsafe": "yes", "overrefuse": false, "feedback": ""}', "wrong type for unsafe"),
    ],
)
def test_malformed_answers_say_what_is_wrong(answer, error):
    with pytest.raises(FormatError, match=error):
        parse_feedback(answer)
