"""WaltzRL prompt sets: build one from packaged public sources, verify one (schema and checksum).

Schema, one JSON object per line:
    {"prompt": str, "kind": "harmful"|"benign", "category": str, "source": str, "licence": str,
     "split": "train"|"val"|"test"}
Prompts are deduplicated on normalised text (case and whitespace folded) and split by a hash of that
normalised text, so the same prompt can never land in two splits. The manifest beside the file
(`<file>.manifest.json`) records its sha256, counts per source and split, and the licences.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from gate.errors import WaltzGateError
from gate.jsonl import iter_jsonl
from training.checksum import sha256_file
from training.classifier_data import norm, split_of
from training.sources import SOURCES, refuse_reserved, rows

# Harmful: adversarial requests and jailbreaks; benign: ordinary and edgy-but-fine prompts. No reserved
# evaluation set (HarmBench among them) trains the agents.
DEFAULT_SOURCES = ("advbench", "donotanswer", "jailbreaks", "mtbench", "slabs")
KINDS = ("harmful", "benign")
SPLITS = ("train", "val", "test")


class DataError(WaltzGateError, ValueError):
    """A data file that does not verify; the message names the line."""


def build(out: Path, sources: tuple[str, ...] = DEFAULT_SOURCES, per_source: int = 2000) -> dict:
    """Write the prompt set; at most `per_source` prompts of each kind from each source (in file order),
    so one large set (S-Labs' 6,776 injections) cannot swamp the harmful/benign mix. A reserved evaluation
    source is refused."""
    refuse_reserved(sources, DataError)
    seen: set[str] = set()
    records = []
    for name in sources:
        kept: Counter = Counter()
        for row in rows(name):
            kind = "benign" if row.kind == "benign" else "harmful"  # injections are adversarial prompts
            key = norm(row.prompt)
            if not key or key in seen or kept[kind] >= per_source:
                continue
            kept[kind] += 1
            seen.add(key)
            records.append({"prompt": row.prompt, "kind": kind, "category": row.category, "source": row.source,
                            "licence": row.licence, "split": split_of(row.prompt)})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    manifest = {
        "file": out.name,
        "sha256": sha256_file(out),
        "rows": len(records),
        "by_split_and_kind": {s: dict(Counter(r["kind"] for r in records if r["split"] == s)) for s in SPLITS},
        "by_source": dict(Counter(r["source"] for r in records)),
        "licences": sorted({f"{r['source']}: {r['licence']}" for r in records}),
        "packages": {n: SOURCES[n].package for n in sources},
    }
    manifest_path(out).write_text(json.dumps(manifest, indent=2))
    return manifest


def manifest_path(data: Path) -> Path:
    return data.with_name(data.name + ".manifest.json")


def verify(path: Path, check_sum: bool = True) -> dict:
    """Counts of a valid file; raises JsonlError (a line that is not JSON) or DataError naming the first bad row,
    a split leak or a checksum mismatch."""
    splits_of: dict[str, str] = {}
    counts: Counter = Counter()
    for n, row in iter_jsonl(path):
        problem = _row_problem(row)
        if problem:
            raise DataError(f"{path} line {n}: {problem}")
        key = norm(row["prompt"])
        first = splits_of.setdefault(key, row["split"])
        if first != row["split"]:
            raise DataError(f"{path} line {n}: the same prompt is in both {first} and {row['split']}")
        counts[(row["split"], row["kind"])] += 1
    if not counts:
        raise DataError(f"{path} holds no rows")
    if check_sum:
        mpath = manifest_path(path)
        if not mpath.is_file():
            raise DataError(f"no checksum manifest {mpath.name} beside {path.name}")
        expected = json.loads(mpath.read_text())["sha256"]
        actual = sha256_file(path)
        if actual != expected:
            raise DataError(f"checksum mismatch for {path}: sha256 {actual[:16]}..., manifest says {expected[:16]}...")
    return {f"{s}/{k}": c for (s, k), c in sorted(counts.items())}


def _row_problem(row: dict) -> str | None:
    for key, allowed in (("kind", KINDS), ("split", SPLITS)):
        if row.get(key) not in allowed:
            return f"{key} must be one of {', '.join(allowed)} (got {row.get(key)!r})"
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        return "prompt must be a non-empty string"
    for key in ("category", "source", "licence"):
        if not isinstance(row.get(key), str):
            return f"{key} must be a string"
    return None
