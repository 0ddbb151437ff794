"""Every pattern's examples match and its near-misses do not; pack files are validated on load."""

from __future__ import annotations

import pytest

from gate.types import Source
from plugins.pattern_pack import PatternError, PatternPack
from plugins.stage1 import installed_packs

# Every installed pattern plugin's pack: a pack added with its entry point is tested here as it is.
PACKS_LOADED = {name: PatternPack.load(path) for name, path in installed_packs().items()}
CASES = [
    (name, pattern, text, expect)
    for name, pack in PACKS_LOADED.items()
    for pattern in pack.patterns
    for text, expect in [(t, True) for t in pattern.examples] + [(t, False) for t in pattern.near_misses]
]


@pytest.mark.parametrize(
    "pack,pattern,text,expect", CASES, ids=[f"{c[1].id}:{'hit' if c[3] else 'miss'}:{c[2][:30]}" for c in CASES]
)
def test_pattern_examples_and_near_misses(pack, pattern, text, expect):
    source = Source.RESPONSE if pattern.sources == {Source.RESPONSE} else Source.PROMPT
    spans = PACKS_LOADED[pack].spans(pattern, text, source)
    assert bool(spans) is expect, f"{pattern.id} {'missed' if expect else 'matched'}: {text!r}"
    for span in spans:
        assert 0 <= span.start < span.end <= len(text)


@pytest.mark.parametrize("pack,minimum", [("harmful", 37), ("malicious", 8), ("privacy", 6)])
def test_pack_sizes(pack, minimum):
    assert len(PACKS_LOADED[pack].patterns) >= minimum


def test_privacy_pack_covers_required_kinds():
    categories = {p.category for p in PACKS_LOADED["privacy"].patterns}
    for kind in ("email", "phone", "ssn", "payment_card", "iban", "secret", "ip_address"):
        assert f"privacy.{kind}" in categories


def test_scan_reports_category_per_source():
    pack = PACKS_LOADED["privacy"]
    found = pack.scan("write to ann@example.org", Source.RESPONSE)
    assert [(d.category, d.source) for d in found] == [("privacy.email", Source.RESPONSE)]
    assert found[0].spans[0].evidence != "ann@example.org"  # masked, never raw


def test_response_only_pattern_is_not_applied_to_prompts():
    pack = PACKS_LOADED["harmful"]
    text = "Here's how to make a pipe bomb: first, get a steel pipe"
    assert any(d.message and "explosives.recipe_in_text" in d.message for d in pack.scan(text, Source.RESPONSE))
    assert not any(d.message and "explosives.recipe_in_text" in d.message for d in pack.scan(text, Source.PROMPT))


PACK_HEAD = "pack: t\nnormalize: full\ncategories:\n  c: {severity: high}\npatterns:\n"
GOOD = "  - {id: a, category: c, regex: 'abc', examples: [abc], near_misses: [abd]}\n"


@pytest.mark.parametrize(
    "body,needle",
    [
        ("  - {id: a, category: c, regex: 'a(b', examples: [x], near_misses: [y]}\n", "invalid RE2 regex"),
        ("  - {id: a, category: nope, regex: 'a', examples: [x], near_misses: [y]}\n", "not declared"),
        (GOOD + GOOD, "duplicate id"),
        ("  - {id: a, category: c, regex: 'a', validator: crc, examples: [x], near_misses: [y]}\n", "unknown validator"),
        ("  - {id: a, category: c, regex: 'a', examples: [], near_misses: [y]}\n", "examples"),
        ("  - {id: a, category: c, regex: '%{x}b', examples: [x], near_misses: [y]}\n", "not in defines"),
        ("  - {id: a, category: c, regex: '(a)\\1', examples: [x], near_misses: [y]}\n", "invalid RE2 regex"),
    ],
)
def test_bad_pack_files_fail_with_the_pattern_named(tmp_path, body, needle):
    path = tmp_path / "t.yaml"
    path.write_text(PACK_HEAD + body)
    with pytest.raises(PatternError, match=needle):
        PatternPack.load(path)


def test_catastrophic_backtracking_input_is_linear():
    # (a+)+$ style input: a naive backtracking engine explodes on it; RE2 cannot.
    pack = PACKS_LOADED["harmful"]
    text = "how to " + "make " * 50_000 + "!"
    assert pack.scan(text, Source.PROMPT) == []


def test_a_pack_from_another_package_is_found_through_its_entry_point(tmp_path, monkeypatch):
    from gate.config import GateSettings
    from gate.registry import load_plugins
    from gate.types import CheckRequest

    pack = tmp_path / "extra.yaml"
    pack.write_text(PACK_HEAD.replace("pack: t", "pack: extra") + GOOD)
    (tmp_path / "extra_pack.py").write_text(
        "from pathlib import Path\n\nfrom plugins.stage1 import PatternPlugin\n\n\n"
        "class ExtraPatterns(PatternPlugin):\n"
        f"    name, description, pack_file = 'extra', 'A test pack.', Path({str(pack)!r})\n")
    dist = tmp_path / "extra_pack-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-pack\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text("[waltz_gate]\nextra = extra_pack:ExtraPatterns\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert installed_packs()["extra"] == pack
    (plugin,) = load_plugins(GateSettings(plugins=["extra"]))
    assert plugin.description == "A test pack."
    assert [d.category for d in plugin.check(CheckRequest(prompt="abc"))] == ["extra.c"]
