"""The baseline to beat (DESIGN.md section 4): securevector-guardian-model 1.4.0 (Apache-2.0), word and
character TF-IDF + logistic regression, pure Python.

A benchmark-only requirement, not a dependency of the project: `training.sources.wheel` downloads the
wheel with `pip download --no-deps` into the data cache (~/.cache/waltz-gate/wheels), its sha256 is
checked against the pin below, and the code is imported from the wheel itself (a zip on sys.path; it
needs nothing but the standard library). Nothing is installed.

It scores one text for attacks and harmful content; it knows no prompt/response split and no
over-refusal. A pair is fed in one of two ways (a pre-check is always the prompt alone):
- ``response``: the response alone (the unsafe label is about the response);
- ``pair``: the prompt, a blank line, then the response.
unsafe = ``svguardian.serve.analyze(text)["is_threat"]``: any non-benign class (prompt_injection,
jailbreak, harmful_content, data_exfiltration, pii, social_engineering, model_attack) at its own
calibrated threshold, long texts windowed as the package does. overrefuse: no prediction (None).
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from training.checksum import sha256_file
from training.sources import DEFAULT_CACHE, SourceError, wheel

PACKAGE = "securevector-guardian-model==1.4.0"
WHEEL_SHA256 = "c5fd76d593ac6c154cc58cf896cf05e5336d1242160b5d3fa4047bb4ab7cd936"
BUNDLE = "svguardian/_runtime/guardian.runtime.json.gz"
FEEDS = ("response", "pair")

Judge = Callable[[list[tuple[str, str | None]]], list[tuple[bool, bool | None]]]


def threat_detector(cache: Path = DEFAULT_CACHE) -> Callable[[str], bool]:
    """text -> is_threat, from the pinned wheel."""
    path = wheel(PACKAGE, cache)
    if sha256_file(path) != WHEEL_SHA256:
        raise SourceError(f"{path.name} does not match its pinned sha256 {WHEEL_SHA256}")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from svguardian.model.pure_infer import PureGuardian
    from svguardian.serve import analyze

    with zipfile.ZipFile(path) as z:  # PureGuardian.load wants a file path; the bundle sits in the zip
        guardian = PureGuardian(json.loads(gzip.decompress(z.read(BUNDLE))))
    return lambda text: bool(analyze(text, guardian)["is_threat"])


def securevector_judge(feed: str, cache: Path = DEFAULT_CACHE) -> Judge:
    """A judge over (prompt, response) pairs: (unsafe, None) each."""
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS}, not {feed!r}")
    threat = threat_detector(cache)

    def text(prompt: str, response: str | None) -> str:
        return prompt if response is None else response if feed == "response" else f"{prompt}\n\n{response}"

    return lambda pairs: [(threat(text(p, r)), None) for p, r in pairs]
