"""Drawing one token from logits, shared by every generation loop (the plain, fast and CUDA-graph ones).

    tokens, logp = sample_token(logits, temperature, top_p, generator)     # logits (B, V)
    tokens, logp = sample_from_uniform(logits, temperature, top_p, u)      # u (B,): no host sync
"""
from __future__ import annotations

import math

import torch


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of tokens whose probability reaches top_p (at least one).
    logits (B, V) -> (B, V) with the rest set to -inf."""
    if top_p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches top_p
    remove[..., 0] = False
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator):
    """logits (B, V) -> (tokens (B,), log-probs of the sampling distribution (B, V))."""
    if temperature == 0:
        logp = torch.log_softmax(logits.float(), -1)
        return logits.argmax(-1), logp
    logp = torch.log_softmax(top_p_filter(logits.float() / temperature, top_p), -1)
    return torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1), logp


def accumulate_stats(nll: torch.Tensor, ent: torch.Tensor, logits: torch.Tensor, token: torch.Tensor,
                     logp: torch.Tensor) -> None:
    """In place, per row (float64, nats): nll += -log p_model(token); ent += entropy of the sampling
    distribution logp (B, V). logits (B, V) are the model's."""
    model_logp = torch.log_softmax(logits.float(), -1)
    nll.sub_(model_logp.gather(-1, token.unsqueeze(-1)).squeeze(-1).double())
    ent.sub_((logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1).double())


def sample_from_uniform(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor):
    """Inverse-CDF sampling: logits (B, V), uniforms u (B,) in [0, 1) -> (tokens (B,), log-probs (B, V)).

    The same distribution as `sample_token`, with the randomness passed in, and no host sync: this runs
    inside CUDA graphs (`graph_step.py`)."""
    if temperature == 0:
        return logits.argmax(-1), torch.log_softmax(logits.float(), -1)
    logp = torch.log_softmax(top_p_filter(logits.float() / temperature, top_p), -1)
    cdf = logp.exp().cumsum(-1)
    token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    token = token.clamp_max(logits.shape[-1] - 1)
    dropped = logp.gather(-1, token.unsqueeze(-1)).squeeze(-1) == float("-inf")  # rounding at the CDF's top
    return torch.where(dropped, logp.argmax(-1), token), logp


def check_generation_args(n_steps, n_samples, temperature, top_p) -> None:
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if not isinstance(n_samples, int) or not 1 <= n_samples <= 1024:
        raise ValueError(f"n_samples must be an integer in [1, 1024], got {n_samples!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and 0 <= temperature <= 10):
        raise ValueError(f"temperature must be in [0, 10] (0 = greedy), got {temperature!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
