"""How the Stage 2 classifier sees a (prompt, response) pair: shared by training and serving.

Uses only `tokenizers` (no torch), so the serving path stays lean and training encodes exactly as
serving does. Layout: ``[CLS] prompt [SEP] response [SEP]`` (``[CLS] prompt [SEP]`` for a pre-check); a
RoBERTa/MPNet-style tokenizer gets its own pair layout, ``<s> prompt </s></s> response </s>``.

Long inputs are handled on purpose: each side is cut to its share of ``max_tokens`` keeping its head and
its tail (half each) and dropping the middle. Jailbreak templates often put the real request at the end
and harmful answers can start after a long preamble, so neither end may be lost. The response gets what
the prompt does not need, and at least a third of the budget. The middle of a long response is not lost
either: `encode_windowed` also gives more views of it (the same prompt, then a stretch of the response of the same share),
for a head that judges content wherever it is to read.
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
        return self.encode_windowed(pairs, 0)[0]

    def encode_windowed(self, pairs: Sequence[tuple[str, str | None]], limit: int
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, list[int]]:
        """`encode`'s batch, and up to `limit` more views of each response longer than its share: overlapping
        stretches of that share spread evenly from its start to its end, each after the prompt as `encode` cuts
        it (None when no response is that long), with, per window row, the index of its pair. One tokenization
        serves both."""
        rows, windows, owners = [], [], []
        for i, ((_, response), (p, r, share)) in enumerate(zip(pairs, self._split(pairs), strict=True)):
            if response is None:
                p = head_tail(p, self.max_tokens - 2)
                rows.append(([self.cls_id, *p, self.sep_id], len(p) + 2))
                continue
            rows.append(self._row(p, head_tail(r, share)))
            if limit < 1 or share < 1 or len(r) <= share:
                continue
            n = min(limit, -(-len(r) // share) + 1)  # one more than covers it, so windows overlap: no edge splits a passage
            starts = sorted({round(k * (len(r) - share) / (n - 1)) for k in range(n)}) if n > 1 else [(len(r) - share) // 2]
            windows += [self._row(p, r[s : s + share]) for s in starts]
            owners += [i] * len(starts)
        return self._batch(rows), (self._batch(windows) if windows else None), owners

    def _split(self, pairs: Sequence[tuple[str, str | None]]) -> list[tuple[list[int], list[int], int]]:
        """Per pair: the prompt's ids (cut to its share when there is a response), the response's ids, and the
        response's share of the budget."""
        prompts = self.tokenizer.encode_batch([p for p, _ in pairs], add_special_tokens=False)
        responses = self.tokenizer.encode_batch([r or "" for _, r in pairs], add_special_tokens=False)
        budget = self.max_tokens - 2 - len(self.middle)
        out = []
        for (_, response), p_enc, r_enc in zip(pairs, prompts, responses, strict=True):
            p, r = p_enc.ids, r_enc.ids
            if response is not None:
                p = head_tail(p, min(len(p), max(budget - len(r), (2 * budget) // 3)))
            out.append((p, r, budget - len(p)))
        return out

    def _row(self, p: list[int], r: list[int]) -> tuple[list[int], int]:
        return [self.cls_id, *p, *self.middle, *r, self.sep_id], len(p) + 1 + len(self.middle)

    def _batch(self, rows: list[tuple[list[int], int]]) -> dict[str, np.ndarray]:
        width = max(len(ids) for ids, _ in rows)
        out = {k: np.zeros((len(rows), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        out["input_ids"].fill(self.pad_id)
        for i, (ids, first) in enumerate(rows):
            out["input_ids"][i, : len(ids)] = ids
            out["attention_mask"][i, : len(ids)] = 1
            out["token_type_ids"][i, first : len(ids)] = 1
        return out
