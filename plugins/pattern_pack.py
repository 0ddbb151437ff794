"""Pattern packs: regexes kept as data, compiled once into one RE2 set scan per pack and source.

RE2 runs in time linear in the input, so no pattern can backtrack catastrophically. A scan first asks
the pack's `re2.Set` which patterns match anywhere (one pass over the text); only those patterns are then
run on their own to find spans, which are mapped back to offsets of the original text.

A pack file (YAML) holds:
    pack: the plugin name; categories are reported as `<pack>.<category>`
    description: one line, shown by `waltz-gate plugins`
    normalize: light | full (see gate.normalize); patterns are written against the normalised text
    defines: named regex fragments, used in patterns as %{name}
    categories: per category: severity, and feedback (what the agent must change, for revise)
    patterns: id, category, regex, optional sources (prompt/response), validator, severity, and
        examples (must match) and near_misses (must not), which the test suite runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gate.errors import WaltzGateError
from gate.normalize import Level, Normalized, mask, normalize
from gate.types import Detection, Severity, Source, Span


def luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = re.sub(r"[\s-]", "", candidate).upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ssn_ok(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ipv4_ok(candidate: str) -> bool:
    parts = candidate.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 and (p == "0" or p[0] != "0") for p in parts)


def phone_ok(candidate: str) -> bool:
    return 10 <= sum(c.isdigit() for c in candidate) <= 15


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "luhn": luhn_ok,
    "iban": iban_ok,
    "ssn": ssn_ok,
    "ipv4": ipv4_ok,
    "phone": phone_ok,
}


class PatternError(WaltzGateError, ValueError):
    """A pack file that cannot be used; the message names the pack and pattern."""


class _CategorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    severity: Severity
    feedback: str | None = None


class _PatternSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    category: str
    regex: str
    sources: list[Source] = [Source.PROMPT, Source.RESPONSE]
    validator: str | None = None
    severity: Severity | None = None
    examples: list[str] = Field(min_length=1)
    near_misses: list[str] = Field(min_length=1)

    @field_validator("validator")
    @classmethod
    def _known_validator(cls, v: str | None) -> str | None:
        if v is not None and v not in VALIDATORS:
            raise ValueError(f"unknown validator {v!r}; known: {', '.join(VALIDATORS)}")
        return v


class PackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pack: str
    description: str = ""
    normalize: Level
    defines: dict[str, str] = {}
    categories: dict[str, _CategorySpec]
    patterns: list[_PatternSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Pattern:
    id: str
    category: str  # qualified: <pack>.<category>
    severity: Severity
    regex: re2._Regexp
    sources: frozenset[Source]
    validator: Callable[[str], bool] | None
    examples: tuple[str, ...]
    near_misses: tuple[str, ...]


_DEFINE = re.compile(r"%\{(\w+)\}")


class PatternPack:
    def __init__(self, spec: PackSpec, origin: str):
        self.name = spec.pack
        self.level: Level = spec.normalize
        self.categories = {f"{spec.pack}.{k}": v for k, v in spec.categories.items()}
        options = re2.Options()
        options.case_sensitive = False
        options.max_mem = 64 << 20
        self.patterns: list[Pattern] = []
        seen: set[str] = set()
        for p in spec.patterns:
            where = f"{origin}: pattern {p.id!r}"
            if p.id in seen:
                raise PatternError(f"{where}: duplicate id")
            seen.add(p.id)
            category = f"{spec.pack}.{p.category}"
            if category not in self.categories:
                raise PatternError(f"{where}: category {p.category!r} is not declared under categories")
            regex = _DEFINE.sub(lambda m: _expand(spec.defines, m.group(1), where), p.regex)
            try:
                compiled = re2.compile(regex, options)
            except re2.error as exc:
                raise PatternError(f"{where}: invalid RE2 regex: {exc}") from None
            self.patterns.append(
                Pattern(
                    id=p.id,
                    category=category,
                    severity=p.severity or self.categories[category].severity,
                    regex=compiled,
                    sources=frozenset(p.sources),
                    validator=VALIDATORS[p.validator] if p.validator else None,
                    examples=tuple(p.examples),
                    near_misses=tuple(p.near_misses),
                )
            )
        # One set per source, so a scan of the prompt never reports response-only patterns.
        self._sets: dict[Source, tuple[re2.Set | None, list[Pattern]]] = {}
        for source in Source:
            members = [p for p in self.patterns if source in p.sources]
            scan = None
            if members:
                scan = re2.Set.SearchSet(options)
                for p in members:
                    scan.Add(p.regex.pattern)
                scan.Compile()
            self._sets[source] = (scan, members)

    @classmethod
    def load(cls, path: str | Path) -> PatternPack:
        return cls(read_spec(path), str(path))

    def scan(self, text: str, source: Source, max_spans: int = 16) -> list[Detection]:
        """Detections in `text`, one per category, with a span for every match (offsets into the original
        text, so that every match can be redacted); only the first `max_spans` keep masked evidence."""
        scan, members = self._sets[source]
        if scan is None or not text:
            return []
        norm = normalize(text, self.level)
        hits = scan.Match(norm.text)
        if not hits:
            return []
        by_category: dict[str, tuple[Severity, set[tuple[int, int]], list[str]]] = {}
        for index in sorted(hits):
            pattern = members[index]
            found = self._matches(pattern, text, norm)
            if not found:
                continue
            severity, offsets, ids = by_category.setdefault(pattern.category, (pattern.severity, set(), []))
            if pattern.severity.rank > severity.rank:
                by_category[pattern.category] = (pattern.severity, offsets, ids)
            offsets.update(found)
            ids.append(pattern.id)
        return [
            Detection(
                category=category,
                severity=severity,
                source=source,
                spans=tuple(
                    Span(source=source, start=start, end=end, evidence=mask(text[start:end]) if i < max_spans else "")
                    for i, (start, end) in enumerate(sorted(offsets))
                ),
                message=f"matched {', '.join(ids)}",
                feedback=self.categories[category].feedback,
            )
            for category, (severity, offsets, ids) in by_category.items()
        ]

    def spans(self, pattern: Pattern, text: str, source: Source) -> list[Span]:
        """Spans where one pattern matches `text` (validator applied): what the pack tests check."""
        return [
            Span(source=source, start=start, end=end, evidence=mask(text[start:end]))
            for start, end in self._matches(pattern, text, normalize(text, self.level))
        ]

    @staticmethod
    def _matches(pattern: Pattern, text: str, norm: Normalized) -> list[tuple[int, int]]:
        """Every (start, end) in the original text where `pattern` matches and its validator agrees."""
        found = []
        for m in pattern.regex.finditer(norm.text):
            start, end = norm.original_span(m.start(), m.end())
            if not pattern.validator or pattern.validator(text[start:end]):
                found.append((start, end))
        return found


def read_spec(path: str | Path) -> PackSpec:
    """A pack file, parsed and validated (its patterns not yet compiled)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PatternError(f"cannot read pattern pack {path}: {exc}") from None
    try:
        return PackSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise PatternError(f"pattern pack {path}: {loc}: {first['msg']}") from None


def _expand(defines: dict[str, str], name: str, where: str) -> str:
    if name not in defines:
        raise PatternError(f"{where}: %{{{name}}} is not in defines")
    return defines[name]
