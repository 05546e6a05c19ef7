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
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student-t cumulative distribution function."""
    if t * t < df:  # near the centre: the central mass form avoids cancellation in 1 - tail
        half_mass = 0.5 * betainc(0.5, df / 2.0, t * t / (df + t * t))
        return 0.5 + half_mass if t > 0 else 0.5 - half_mass
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Student-t quantile (inverse CDF) by bisection on t_cdf; accurate to ~1e-12."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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
