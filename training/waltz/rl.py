"""WaltzRL's REINFORCE++-style policy-gradient loss. Pure functions over tensors (the rewards are in rewards.py).

Each sequence's reward sits on its last token; every token also carries -kl_coef * (log pi_old - log pi_ref),
the KL penalty to the frozen reference; returns are summed to the end of the sequence (no critic, no discount),
then advantages are normalised over all tokens of the global batch. The loss is PPO's clipped surrogate on the
ratio pi / pi_old.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


LOGP_CHUNK = 256  # positions per fp32 log-softmax: 128 MB at a 128k vocabulary


def _chunk_logprobs(logits: torch.Tensor, tokens: torch.Tensor, never: tuple[int, ...], temperature: float) -> torch.Tensor:
    x = logits.float() / temperature
    if never:  # out of place: for fp32 logits, x is the model's own tensor
        x = x.index_fill(-1, torch.tensor(never, device=x.device), float("-inf"))
    return x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, never: tuple[int, ...] = (),
                   chunk: int = LOGP_CHUNK, temperature: float = 1.0) -> torch.Tensor:
    """log p(tokens[:, t] | ...) under softmax(logits / temperature), the distribution sampled from, with logits
    aligned so that logits[:, t] predicts tokens[:, t]; `never` tokens have probability 0. The fp32 log-softmax runs over `chunk` positions at a time, and under autograd each
    chunk is recomputed in backward instead of kept: no fp32 copy of the whole [B, T, vocabulary] exists."""
    from torch.utils.checkpoint import checkpoint

    flat, targets = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1)
    grad = torch.is_grad_enabled() and flat.requires_grad
    parts = [checkpoint(_chunk_logprobs, flat[i : i + chunk], targets[i : i + chunk], never, temperature,
                        use_reentrant=False)
             if grad else _chunk_logprobs(flat[i : i + chunk], targets[i : i + chunk], never, temperature)
             for i in range(0, len(flat), chunk)]
    return torch.cat(parts).reshape(tokens.shape)


def returns_with_kl(rewards: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                    kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token returns [B, T] and the per-token KL estimate (log pi_old - log pi_ref), masked."""
    kl = (old_logp - ref_logp) * mask
    per_token = -kl_coef * kl
    last = mask.cumsum(-1).argmax(-1)  # index of each row's last response token
    per_token = per_token.clone()
    per_token[torch.arange(len(rewards)), last] += rewards
    returns = per_token.flip(-1).cumsum(-1).flip(-1) * mask
    return returns, kl


STD_FLOOR = 0.05  # a batch with (almost) equal returns must not have its noise blown up to unit variance


def normalise(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the masked entries of the whole batch, across processes when distributed.

    The std is floored at STD_FLOOR: when every sample earned the same reward, the only differences left
    are the tiny KL terms, and scaling those to unit variance would turn the update into noise."""
    stats = torch.stack([(values * mask).sum(), (values * values * mask).sum(), mask.sum()]).double()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(stats)
    total, sq, n = stats.tolist()
    mean = total / max(n, 1.0)
    var = max(sq / max(n, 1.0) - mean * mean, 0.0)
    return ((values - mean) / max(var**0.5, STD_FLOOR)) * mask


def clipped_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                 clip: float) -> torch.Tensor:
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    return -(surrogate * mask).sum() / mask.sum().clamp(min=1)
