"""WaltzRL rewards and the REINFORCE++ loss, on numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from training.waltz import rewards, rl
from training.waltz.config import JudgeConfig, RLConfig
from training.waltz.judge import RuleJudge


def test_conversation_reward():
    assert rewards.r_c((False, False)) == 1.0
    assert rewards.r_c((True, False)) == rewards.r_c((False, True)) == 0.0


@pytest.mark.parametrize(
    "fmt,label,dir_,expected",
    [
        (True, True, 1.0, 1.0 * 1 * 1 + 0.5 + 0.25),   # correct labels, revision fixed it
        (True, False, 1.0, 0.25),                        # DIR is gated by label correctness
        (True, True, -1.0, -1.0 + 0.5 + 0.25),           # correct labels, revision made it worse
        (False, True, 0.0, 0.0),                         # no valid JSON: nothing, not even the label
        (True, True, 0.0, 0.75),
    ],
)
def test_feedback_reward(fmt, label, dir_, expected):
    weights = rewards.term_weights(RLConfig(alpha=1.0, lam=0.5, gamma=0.25), stage=1)
    assert rewards.feedback_reward(rewards.Judged(fmt, label, dir_), weights) == pytest.approx(expected)


def test_stage_2_drops_the_label_term():
    weights = rewards.term_weights(RLConfig(alpha=1.0, lam=0.5, gamma=0.25), stage=2)
    assert weights == {"dir": 1.0, "label": 0.0, "format": 0.25}
    assert rewards.feedback_reward(rewards.Judged(True, True, 1.0), weights) == pytest.approx(1.25)


def test_returns_put_the_reward_on_the_last_token_and_subtract_kl():
    rewards = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float32)
    old = torch.tensor([[0.0, -1.0, -1.0, 0.0], [-1.0] * 4])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0], [-1.0] * 4])
    returns, kl = rl.returns_with_kl(rewards, old, ref, mask, kl_coef=0.1)
    assert kl[0].tolist() == pytest.approx([0.0, 0.5, 0.0, 0.0])
    # row 0: per-token rewards [0, -0.05, 1, 0] summed to the end (masked)
    assert returns[0].tolist() == pytest.approx([0.0, 0.95, 1.0, 0.0])
    assert returns[1].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])


def test_normalise_over_the_masked_batch():
    values = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = rl.normalise(values, mask)
    kept = out[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
    assert out[:, 2].tolist() == [0.0, 0.0]


def test_clipped_loss_stops_pushing_past_the_clip():
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    adv = torch.ones(1, 2)
    inside = torch.full((1, 2), 0.1, requires_grad=True)   # ratio 1.105: inside 1 +- 0.2
    outside = torch.full((1, 2), 0.5, requires_grad=True)  # ratio 1.65: clipped
    rl.clipped_loss(inside, old, adv, mask, clip=0.2).backward()
    rl.clipped_loss(outside, old, adv, mask, clip=0.2).backward()
    assert inside.grad.abs().sum() > 0 and outside.grad.abs().sum() == 0


def test_rule_judge():
    judge = RuleJudge(JudgeConfig(harmful_prompt=r"\bharmful\b", complies="SURE", refuses="CANNOT", helpful="HELPFUL"))
    assert judge.labels([("harmful x", "SURE"), ("harmful x", "CANNOT"), ("benign", "CANNOT"), ("benign", "ok"),
                         ("benign", "HELPFUL")]) == [(True, False), (False, False), (False, True), (False, True),
                                                      (False, False)]


def test_equal_returns_are_not_blown_up_into_noise():
    values = torch.tensor([[1.0, 1.0 + 1e-5], [1.0 - 1e-5, 1.0]])
    out = rl.normalise(values, torch.ones(2, 2))
    assert out.abs().max().item() < 1e-3


def test_chunked_logprobs_equal_the_full_log_softmax_and_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    tokens = torch.randint(0, 11, (3, 5))
    tokens[0, 0] = 2  # a token that is never sampled
    full = torch.log_softmax(logits.index_fill(-1, torch.tensor([2]), float("-inf")), -1).gather(-1, tokens[..., None])[..., 0]
    chunked = rl.token_logprobs(logits, tokens, never=(2,), chunk=4)  # 15 positions: chunks of 4, 4, 4, 3
    finite = torch.isfinite(full)
    assert chunked[0, 0] == float("-inf") and torch.allclose(chunked[finite], full[finite], atol=1e-6)
    (grad_full,) = torch.autograd.grad(full[finite].sum(), logits)
    (grad_chunked,) = torch.autograd.grad(chunked[finite].sum(), logits)
    assert torch.allclose(grad_full, grad_chunked, atol=1e-6)
    assert rl.token_logprobs(logits.detach().bfloat16(), tokens, chunk=4).dtype == torch.float32
