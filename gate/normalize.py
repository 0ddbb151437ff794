"""Text normalisation before pattern scans, keeping a map back to the original offsets.

Two levels:
- ``light``: Unicode NFKC per character, format (zero-width) and control characters removed. Used where
  digits matter (phone numbers, card numbers).
- ``full``: light, plus diacritics stripped, common homoglyphs folded to Latin (Cyrillic/Greek look-alikes)
  and leetspeak digits/symbols folded to letters (``b0mb`` -> ``bomb``). Used by topic packs.

Plain ASCII without control characters takes a fast path: one ``str.translate``, and when it deleted
nothing, offsets are unchanged. Other text is split into ASCII runs, copied as they are, and the characters between
them, folded one by one; each piece records where it came from, so a match in the normalised text maps
back to a span of the original.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Level = Literal["light", "full"]

# Characters outside printable ASCII (plus tab/newline/CR) need per-character folding.
_COMPLEX_RUN = re.compile(r"[^\x20-\x7e\t\n\r]+")

_LEET = {ord(k): v for k, v in {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a"}.items()}
# ASCII control characters (but tab, newline, carriage return) are deleted at both levels.
_CONTROLS = {c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]}
_ASCII_TABLE: dict[str, dict[int, str | None]] = {"light": _CONTROLS, "full": {**_CONTROLS, **_LEET}}

_HOMOGLYPHS = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "ӏ": "l", "ո": "n",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J",
    # Typographic quotes, so "here’s" reads as "here's"
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    # Greek
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}


@lru_cache(maxsize=8192)
def _fold_char(ch: str, level: Level) -> str:
    if level == "light":
        out = unicodedata.normalize("NFKC", ch)
        return "".join(c for c in out if unicodedata.category(c) not in ("Cf", "Cc") or c in "\t\n\r")
    out = []
    for c in unicodedata.normalize("NFKD", _HOMOGLYPHS.get(ch, ch)):
        cat = unicodedata.category(c)
        if cat in ("Mn", "Me", "Cf") or (cat == "Cc" and c not in "\t\n\r"):
            continue
        out.append(_HOMOGLYPHS.get(c, c))
    return "".join(out).translate(_LEET)


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalised text plus the pieces it was built from (empty when offsets are unchanged)."""

    text: str
    # Parallel lists, one entry per piece: start in `text`, start and length in the original, and
    # whether the piece is a run copied verbatim (offsets inside it map one to one).
    _norm_starts: tuple[int, ...] = ()
    _orig_starts: tuple[int, ...] = ()
    _orig_lens: tuple[int, ...] = ()
    _linear: tuple[bool, ...] = ()

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a [start, end) span of the normalised text to the original text."""
        if not self._norm_starts:
            return start, end
        begin = self._map(start, is_end=False)
        return begin, max(begin, self._map(end, is_end=True))  # an empty span stays empty

    def _map(self, pos: int, is_end: bool) -> int:
        probe = pos - 1 if is_end and pos > 0 else pos
        i = max(bisect.bisect_right(self._norm_starts, probe) - 1, 0)
        if self._linear[i]:
            return self._orig_starts[i] + (pos - self._norm_starts[i])
        return self._orig_starts[i] + (self._orig_lens[i] if is_end else 0)


def normalize(text: str, level: Level) -> Normalized:
    if text.isascii():
        out = text.translate(_ASCII_TABLE[level])
        if len(out) == len(text):  # nothing deleted: offsets are unchanged
            return Normalized(out)
    pieces: list[str] = []
    norm_starts: list[int] = []
    orig_starts: list[int] = []
    orig_lens: list[int] = []
    linear: list[bool] = []
    npos = 0

    def add(piece: str, orig_start: int, orig_len: int, is_linear: bool) -> None:
        nonlocal npos
        norm_starts.append(npos)
        orig_starts.append(orig_start)
        orig_lens.append(orig_len)
        linear.append(is_linear)
        pieces.append(piece)
        npos += len(piece)

    pos = 0
    for run in _COMPLEX_RUN.finditer(text):
        if run.start() > pos:
            seg = text[pos : run.start()]
            add(seg.translate(_LEET) if level == "full" else seg, pos, len(seg), True)
        for i, ch in enumerate(run.group()):
            add(_fold_char(ch, level), run.start() + i, 1, False)
        pos = run.end()
    if pos < len(text):
        seg = text[pos:]
        add(seg.translate(_LEET) if level == "full" else seg, pos, len(seg), True)
    return Normalized("".join(pieces), tuple(norm_starts), tuple(orig_starts), tuple(orig_lens), tuple(linear))


def mask(evidence: str, keep: int = 1, limit: int = 24) -> str:
    """Masked evidence for logs: the first and last `keep` characters, stars between."""
    if len(evidence) <= 2 * keep:
        return "*" * len(evidence)
    middle = min(len(evidence) - 2 * keep, limit)
    return evidence[:keep] + "*" * middle + evidence[-keep:]
