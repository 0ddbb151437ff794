"""How the Stage 2 classifier sees a (prompt, response) pair: shared by training and serving.

Uses only `tokenizers` (no torch), so the serving path stays lean and training encodes exactly as
serving does. Layout: ``[CLS] prompt [SEP] response [SEP]`` (``[CLS] prompt [SEP]`` for a pre-check); a
RoBERTa/MPNet-style tokenizer gets its own pair layout, ``<s> prompt </s></s> response </s>``.

Long inputs are handled on purpose: each side is cut to its share of ``max_tokens`` keeping its head and
its tail (half each) and dropping the middle. Jailbreak templates often put the real request at the end
and harmful answers can start after a long preamble, so neither end may be lost. The response gets what
the prompt does not need, and at least a third of the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


def head_tail(ids: list[int], keep: int) -> list[int]:
    if len(ids) <= keep:
        return ids
    head = (keep + 1) // 2
    return ids[:head] + ids[len(ids) - (keep - head) :] if keep > head else ids[:head]


@dataclass
class PairEncoder:
    tokenizer: Tokenizer
    max_tokens: int = 256

    @classmethod
    def load(cls, path: str | Path, max_tokens: int = 256) -> PairEncoder:
        tok = Tokenizer.from_file(str(path))
        tok.no_truncation()
        tok.no_padding()
        return cls(tok, max_tokens)

    def __post_init__(self) -> None:
        # a RoBERTa-style post-processor (MPNet's) marks the <s>/</s> layout; anything else is BERT's
        roberta = type(self.tokenizer.post_processor).__name__ == "RobertaProcessing"
        cls, sep, pad = ("<s>", "</s>", "<pad>") if roberta else ("[CLS]", "[SEP]", "[PAD]")
        self.cls_id, self.sep_id = self.tokenizer.token_to_id(cls), self.tokenizer.token_to_id(sep)
        if self.cls_id is None or self.sep_id is None:
            raise ValueError(f"the tokenizer has no {cls}/{sep} tokens; a BERT- or MPNet-style tokenizer is required")
        self.pad_id = self.tokenizer.token_to_id(pad) or 0
        self.middle = [self.sep_id] * (2 if roberta else 1)  # between prompt and response

    def encode(self, pairs: Sequence[tuple[str, str | None]]) -> dict[str, np.ndarray]:
        """Batch of int64 arrays: input_ids, attention_mask, token_type_ids (padded to the longest)."""
        prompts = self.tokenizer.encode_batch([p for p, _ in pairs], add_special_tokens=False)
        responses = self.tokenizer.encode_batch([r or "" for _, r in pairs], add_special_tokens=False)
        rows = []
        for (_, response), p_enc, r_enc in zip(pairs, prompts, responses, strict=True):
            p, r = p_enc.ids, r_enc.ids
            if response is None:
                p = head_tail(p, self.max_tokens - 2)
                rows.append(([self.cls_id, *p, self.sep_id], len(p) + 2))
                continue
            budget = self.max_tokens - 2 - len(self.middle)
            p_keep = min(len(p), max(budget - len(r), (2 * budget) // 3))
            p = head_tail(p, p_keep)
            r = head_tail(r, budget - len(p))
            rows.append(([self.cls_id, *p, *self.middle, *r, self.sep_id], len(p) + 1 + len(self.middle)))
        width = max(len(ids) for ids, _ in rows)
        out = {k: np.zeros((len(rows), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        out["input_ids"].fill(self.pad_id)
        for i, (ids, first) in enumerate(rows):
            out["input_ids"][i, : len(ids)] = ids
            out["attention_mask"][i, : len(ids)] = 1
            out["token_type_ids"][i, first : len(ids)] = 1
        return out
