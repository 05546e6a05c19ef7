"""Metrics: likelihood in bits, confidence intervals, log-mel spectrograms.

    nll_bits(logits, tokens)            # mean -log2 p(token): the paper's "NLL in bits" (nats / ln 2)
    unigram_entropy_bits(tokens)        # entropy of the token histogram: what a model without context reaches
    mean_ci(values, confidence=0.95)    # (mean, lo, hi), Student-t interval; no scipy needed
    log_mel(audio, sample_rate)         # (n_mels, frames) log-mel spectrogram in dB (librosa)

The digit-classifier metrics of the paper (FID, IS, mIS, AM on SC09) belong in this file too (section at the
end). Shapes: B batch, L length, V tokens.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import t as student_t

LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------ likelihood
def nll_bits(logits: torch.Tensor, tokens: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood in bits per sample.

    logits (..., V) float (any dtype: computed in float32), tokens (...) int64 ->
    "mean": scalar; "sum": scalar; "none": (...) per position.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}")
    nats = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction="none")
    bits = nats.reshape(tokens.shape) / LN2
    if reduction == "none":
        return bits
    if reduction == "sum":
        return bits.sum()
    if reduction == "mean":
        return bits.mean()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def unigram_entropy_bits(tokens, n_tokens: int = 256) -> float:
    """Entropy (bits) of the empirical token distribution of tokens (any shape, ints in [0, n_tokens))."""
    t = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens)
    t = t.reshape(-1).long()
    if t.numel() == 0:
        raise ValueError("unigram_entropy_bits needs at least one token")
    if t.min() < 0 or t.max() >= n_tokens:
        raise ValueError(f"tokens must lie in [0, {n_tokens - 1}]")
    p = torch.bincount(t, minlength=n_tokens).double() / t.numel()
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())


# ------------------------------------------------------------------------------------------ t-interval
def t_ppf(q: float, df: float) -> float:
    """Student-t quantile (inverse CDF)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    return float(student_t.ppf(q, df))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t confidence interval of the mean, as scipy.stats.t.interval(confidence,
    n - 1, loc=mean, scale=sem). With one value the bounds are nan."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, float("nan"), float("nan")
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    half = t_ppf(0.5 + confidence / 2.0, x.size - 1) * sem
    return mean, mean - half, mean + half


# ------------------------------------------------------------------------------------------ spectrograms
def log_mel(audio, sample_rate: int, n_mels: int = 80, n_fft: int = 1024, hop_length: int = 256,
            top_db: float = 80.0) -> np.ndarray:
    """Log-mel spectrogram in dB relative to a full-scale sine's power (ref 1.0), floored top_db below 0 dB.

    audio (T,) float in [-1, 1] -> (n_mels, frames) float32, frames = 1 + T // hop_length (centred frames).
    A fixed reference (not the clip's maximum) keeps levels comparable across clips."""
    import librosa

    y = np.asarray(audio, dtype=np.float32).reshape(-1)
    if y.size == 0:
        return np.full((n_mels, 0), -top_db, dtype=np.float32)
    with warnings.catch_warnings():  # clips shorter than n_fft are zero-padded; librosa warns about it
        warnings.simplefilter("ignore", UserWarning)
        mel = librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                             n_mels=n_mels, power=2.0, fmax=sample_rate / 2)
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    return np.maximum(db, -top_db).astype(np.float32)


# ------------------------------------------------------------------------------------------ classifier metrics
# SC09 digit-classifier metrics (FID, IS, mIS, AM) go here.


def non_finite(named_tensors) -> list[str]:
    """Names of the floating-point tensors in (name, tensor) pairs that hold NaN or inf."""
    named = [(k, v) for k, v in named_tensors if v.is_floating_point()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist()  # one host sync on a GPU
    return [k for (k, _), ok in zip(named, flags, strict=True) if not ok]
