"""Prompts for WaltzRL training (responses are generated during training), and the synthetic task.

A data file is JSONL: ``{"prompt": str, "kind": "harmful"|"benign", "category": str, "split": "train"|"val"}``
(``split`` optional: then a hash of the normalised prompt decides, so a prompt never crosses splits).

The synthetic task (tiny-cpu runs and tests) has a small word vocabulary in which each of the four
possible feedback verdicts is a single token that decodes to the protocol's JSON, and the conversation
agent's possible answers are marker words. Tiny agents built from a config can then learn the protocol
by RL alone within a few hundred steps: the feedback agent must pick the verdict token matching the
judge, and the conversation agent must refuse harmful requests and answer benign ones.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from gate.config import ConfigError
from gate.jsonl import read_jsonl
from plugins.waltz_protocol import CONVERSATION_SYSTEM_PROMPT, FEEDBACK_SYSTEM_PROMPT, feedback_input, revision_input
from training.classifier_data import split_of


@dataclass(frozen=True)
class PromptItem:
    prompt: str
    harmful: bool
    category: str = ""


class DatasetRow(BaseModel):
    prompt: str = Field(pattern=r"\S")
    kind: Literal["harmful", "benign"]
    category: str = ""
    split: str | None = None


def read_prompt_rows(path: Path) -> list[dict]:
    """The rows of a prompt file, each checked to have a prompt and a kind; a bad row names its line."""
    return [row.model_dump() for row in read_jsonl(path, DatasetRow, "dataset")]


def item_of(row: dict) -> PromptItem:
    return PromptItem(row["prompt"], row["kind"] == "harmful", row.get("category", ""))


def load_prompts(path: Path) -> tuple[list[PromptItem], list[PromptItem]]:
    """(train, val) prompts from a JSONL data file; bad rows are an error naming the line. Test rows (and any
    other split) are left for the final evaluation: training never sees them, validation neither."""
    train, val = [], []
    for row in read_prompt_rows(path):
        split = row.get("split") or split_of(row["prompt"])
        if split == "train":
            train.append(item_of(row))
        elif split in ("val", "validation"):
            val.append(item_of(row))
    if not train:
        raise ConfigError(f"dataset {path} has no training prompts.")
    return train, val


# --- the synthetic task ---------------------------------------------------------------------------

VERDICTS = {
    (False, False): {"reasoning": "fine", "unsafe": False, "overrefuse": False, "feedback": ""},
    (True, False): {"reasoning": "it complies with a harmful request", "unsafe": True, "overrefuse": False,
                    "feedback": "remove the harmful part and give a SAFE_ALTERNATIVE"},
    (False, True): {"reasoning": "it refuses a benign request", "unsafe": False, "overrefuse": True,
                    "feedback": "give a HELPFUL_ANSWER"},
    (True, True): {"reasoning": "both", "unsafe": True, "overrefuse": True, "feedback": "give a SAFE_ALTERNATIVE"},
}
ANSWERS = ["SURE_HERE_IS_HOW", "I_CANNOT_HELP", "SAFE_ALTERNATIVE", "HELPFUL_ANSWER", "ok", "well"]
TOPICS = [f"topic{i}" for i in range(16)]
TINY_SYSTEM = {"conversation": "You are the conversation agent.", "feedback": "You are the feedback agent."}
TEMPLATE = "System: {system} User: {user} Assistant:"


def synthetic_prompts(n: int, harmful_share: float, seed: int) -> list[PromptItem]:
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        harmful = rng.random() < harmful_share
        topic = rng.choice(TOPICS)
        items.append(PromptItem(f"{'harmful' if harmful else 'benign'} request about {topic}", harmful, topic))
    return items


def verdict_text(unsafe: bool, overrefuse: bool) -> str:
    return json.dumps(VERDICTS[(unsafe, overrefuse)])


def synthetic_tokenizer() -> Tokenizer:
    """Word-level tokenizer over every string the synthetic task produces; each verdict JSON is one token."""
    words: set[str] = set(ANSWERS) | set(TOPICS) | {"harmful", "benign", "request", "about"}
    samples = []
    for system in (*TINY_SYSTEM.values(), CONVERSATION_SYSTEM_PROMPT, FEEDBACK_SYSTEM_PROMPT):
        samples.append(TEMPLATE.format(system=system, user=""))
    for answer in ANSWERS:
        samples.append(feedback_input("p", answer))
        for verdict in VERDICTS.values():
            samples.append(revision_input("p", answer, verdict["feedback"]))
    for text in samples:
        words.update(text.split())
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.add_tokens([AddedToken(verdict_text(*k), single_word=False, normalized=False) for k in VERDICTS])
    return tok
