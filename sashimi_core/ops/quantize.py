"""8-bit audio quantisers: waveform in [-1, 1] <-> integer tokens in [0, 255].

Both quantisers map silence (0.0) to token 128, the "zero token" the model's shifted input starts with.

- mu-law: identical to ``librosa.mu_compress(x, mu=255, quantize=True) + 128`` and its inverse
  ``librosa.mu_expand(t - 128, mu=255, quantize=True)`` (tested against librosa), written in torch so it
  runs on batches and on GPU.
- linear: uniform bins of width 2/256 over [-1, 1]; decoding returns the bin centre.

Unlike the reference implementation we never decode a linear model with mu-law: ``decode(tokens, q)`` picks
the inverse that matches how the model was trained.
"""
from __future__ import annotations

import numpy as np
import torch

BITS = 8
LEVELS = 2**BITS  # 256 tokens
ZERO_TOKEN = LEVELS // 2  # 128: the token for silence
QUANTIZATIONS = ("mu-law", "linear")


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def mu_law_encode(audio, mu: int = LEVELS - 1) -> torch.LongTensor:
    """audio (...) float in [-1, 1] -> tokens (...) int64 in [0, mu]. Values outside [-1, 1] are clipped."""
    x = _as_tensor(audio).to(torch.float64).clamp(-1.0, 1.0)
    compressed = torch.sign(x) * torch.log1p(mu * x.abs()) / np.log1p(mu)
    # librosa: np.digitize(compressed, linspace(-1, 1, mu + 1), right=True) - (mu + 1) // 2
    bins = torch.linspace(-1.0, 1.0, mu + 1, dtype=torch.float64)
    tokens = torch.bucketize(compressed, bins, right=False)  # == np.digitize(..., right=True)
    return tokens.clamp(0, mu).long()


def mu_law_decode(tokens, mu: int = LEVELS - 1) -> torch.Tensor:
    """tokens (...) int in [0, mu] -> audio (...) float32 in [-1, 1] (librosa.mu_expand with quantize=True)."""
    t = _as_tensor(tokens).to(torch.float64)
    y = (t - (mu + 1) // 2) * 2.0 / (mu + 1)
    audio = torch.sign(y) / mu * torch.expm1(y.abs() * np.log1p(mu))
    return audio.to(torch.float32)


def linear_encode(audio, levels: int = LEVELS) -> torch.LongTensor:
    """audio (...) float in [-1, 1] -> tokens (...) int64 in [0, levels-1]: uniform bins of width 2/levels."""
    x = _as_tensor(audio).to(torch.float64).clamp(-1.0, 1.0)
    return torch.floor((x + 1.0) * (levels / 2.0)).clamp(0, levels - 1).long()


def linear_decode(tokens, levels: int = LEVELS) -> torch.Tensor:
    """tokens (...) int in [0, levels-1] -> audio (...) float32: the centre of each bin."""
    t = _as_tensor(tokens).to(torch.float64)
    return ((t + 0.5) * (2.0 / levels) - 1.0).to(torch.float32)


def encode(audio, quantization: str) -> torch.LongTensor:
    """Quantise with the named scheme ("mu-law" or "linear")."""
    if quantization == "mu-law":
        return mu_law_encode(audio)
    if quantization == "linear":
        return linear_encode(audio)
    raise ValueError(f"unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}")


def decode(tokens, quantization: str) -> torch.Tensor:
    """Inverse of :func:`encode` for the same scheme."""
    if quantization == "mu-law":
        return mu_law_decode(tokens)
    if quantization == "linear":
        return linear_decode(tokens)
    raise ValueError(f"unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}")
