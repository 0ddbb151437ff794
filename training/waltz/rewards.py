"""WaltzRL's rewards (Zhang et al., "The Alignment Waltz", 2025), the feedback agent's as named, weighted terms.

    R_c(c)  = 1 if the judge finds c neither unsafe nor over-refusing, else 0   (the conversation agent's reward)
    DIR     = R_c(c1) - R_c(c0) when a revision c1 was made, else 0
    R_f     = the sum over FEEDBACK_TERMS of weight x value
            = alpha * DIR * label + lambda * label + gamma * format            (lambda = 0 in stage 2)

As TRL's `reward_funcs` with `reward_weights`: a term is one definition in FEEDBACK_TERMS plus the RLConfig field
that weights it (training/waltz/config.py). The trainer adds it to R_f, logs its mean over the judged answers
as the metric ``reward_<name>``, and the progress line and ``waltz-gate monitor`` show it. Plain Python: the
monitor reads the terms without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.waltz.config import RLConfig


def r_c(labels: tuple[bool, bool]) -> float:
    unsafe, overrefuse = labels
    return float(not unsafe and not overrefuse)


@dataclass(frozen=True)
class Judged:
    """One feedback answer with the judge's verdict on it: what the reward terms read."""

    formatted: bool  # the feedback agent wrote the protocol's JSON
    labels_ok: bool  # its (unsafe, overrefuse) equal the judge's labels for c0
    dir: float  # R_c(c1) - R_c(c0) when its feedback led to a revision, else 0

    @property
    def label(self) -> float:
        """Label correctness, which counts only in valid JSON."""
        return float(self.formatted and self.labels_ok)


@dataclass(frozen=True)
class RewardTerm:
    name: str
    weight: str  # the RLConfig field that weights it
    value: Callable[[Judged], float]
    stages: tuple[int, ...] = (1, 2)  # the training stages it counts in; weight 0 in the others

    @property
    def metric(self) -> str:
        return f"reward_{self.name}"


FEEDBACK_TERMS: tuple[RewardTerm, ...] = (
    RewardTerm("dir", "alpha", lambda j: j.dir * j.label),  # DIR, gated by label correctness
    RewardTerm("label", "lam", lambda j: j.label, stages=(1,)),  # lambda = 0 in stage 2, as in the paper
    RewardTerm("format", "gamma", lambda j: float(j.formatted)),
)


def term_weights(rl: RLConfig, stage: int) -> dict[str, float]:
    """Each term's weight in this training stage."""
    return {t.name: getattr(rl, t.weight) if stage in t.stages else 0.0 for t in FEEDBACK_TERMS}


def feedback_reward(judged: Judged, weights: dict[str, float]) -> float:
    """R_f of one judged feedback answer."""
    return sum(weights[t.name] * t.value(judged) for t in FEEDBACK_TERMS)
