"""Statistics for listening tests (numpy, and scipy's Student t).

- :func:`t_interval`: mean ± t(0.975, n-1)·s/√n over a set of ratings (the interval MOS papers report).
- :func:`bootstrap_two_way`: percentile interval of the mean when raters *and* clips are resampled with
  replacement (a crossed design: every rating belongs to one rater and one clip). Ratings of one rater, or
  of one clip, are correlated, so treating all ratings as independent (the t-interval above) understates
  the uncertainty; the two-way bootstrap is the interval teachers should trust.
- :func:`paired_t_test` on per-rater means (raters who heard both systems), :func:`welch_t_test` for
  independent groups, and :func:`holm` for the Holm-Bonferroni step-down correction of a family of p-values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

LEVEL = 0.95


# ------------------------------------------------------------------------------------- t distribution
def t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t with df degrees of freedom."""
    return float(student_t.sf(t, df))


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: the t with P(T <= t) = p."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return float(student_t.ppf(p, df))


# ----------------------------------------------------------------------------------------- intervals
@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval; lo/hi are NaN when there is too little data."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0


def t_interval(x: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and t-interval mean ± t((1+level)/2, n-1)·s/√n (s: sample sd, ddof=1). Needs n >= 2 for a CI."""
    x = np.asarray(x, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = float(x.std(ddof=1))
    half = t_ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def bootstrap_two_way(raters: Sequence, clips: Sequence, scores: Sequence[float], *, n_boot: int = 2000,
                      level: float = LEVEL, seed: int | None = 0) -> Interval:
    """Percentile bootstrap interval of the mean rating, resampling raters and clips (two-way).

    raters, clips, scores: one entry per rating (any hashable ids). Each replicate draws the raters with
    replacement and, independently, the clips with replacement; a rating of rater r on clip c then counts
    (times r was drawn) x (times c was drawn). Replicates where no drawn rater rated a drawn clip are
    skipped. With one rater (or one clip) it reduces to the one-way bootstrap over the other factor.
    The same seed gives the same interval."""
    y = np.asarray(scores, dtype=np.float64)
    if y.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    r_ids, r_idx = np.unique(np.asarray(raters, dtype=object).astype(str), return_inverse=True)
    c_ids, c_idx = np.unique(np.asarray(clips, dtype=object).astype(str), return_inverse=True)
    n_r, n_c = len(r_ids), len(c_ids)
    total = np.zeros((n_r, n_c))  # (R, C) sum of scores
    count = np.zeros((n_r, n_c))  # (R, C) number of ratings
    np.add.at(total, (r_idx, c_idx), y)
    np.add.at(count, (r_idx, c_idx), 1.0)
    mean = float(y.mean())
    if y.size < 2 or (n_r < 2 and n_c < 2) or n_boot <= 0:
        return Interval(mean, math.nan, math.nan, int(y.size), float(y.std(ddof=1)) if y.size > 1 else math.nan)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, n_boot, 500):  # chunks keep the (B, R) and (B, C) weight matrices small
        b = min(500, n_boot - start)
        w_r = rng.multinomial(n_r, np.full(n_r, 1.0 / n_r), size=b).astype(np.float64)  # (B, R)
        w_c = rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=b).astype(np.float64)  # (B, C)
        num = ((w_r @ total) * w_c).sum(1)  # (B,)
        den = ((w_r @ count) * w_c).sum(1)  # (B,)
        ok = den > 0
        means.append(num[ok] / den[ok])
    means = np.concatenate(means)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(mean, float(lo), float(hi), int(y.size), float(y.std(ddof=1)))


# ------------------------------------------------------------------------------------------- tests
@dataclass(frozen=True)
class TestResult:
    """A two-sided test: statistic, degrees of freedom, p-value, mean difference (a - b) and its t-CI."""

    __test__ = False  # not a pytest test class

    statistic: float
    df: float
    p: float
    diff: float
    lo: float
    hi: float
    n: int


def paired_t_test(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> TestResult:
    """Two-sided paired t-test of mean(a - b) = 0 (a[i], b[i] from the same rater). NaN when n < 2."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = int(d.size)
    if n < 2:
        diff = float(d.mean()) if n else math.nan
        return TestResult(math.nan, math.nan, math.nan, diff, math.nan, math.nan, n)
    diff, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        stat = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return TestResult(stat, n - 1, p, diff, diff, diff, n)
    stat = diff / se
    half = t_ppf(0.5 + level / 2.0, n - 1) * se
    return TestResult(stat, n - 1, 2.0 * t_sf(abs(stat), n - 1), diff, diff - half, diff + half, n)


def welch_t_test(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> TestResult:
    """Two-sided Welch t-test of mean(a) = mean(b) for independent groups (Welch-Satterthwaite df)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
        return TestResult(math.nan, math.nan, math.nan, diff, math.nan, math.nan, int(a.size + b.size))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0:
        return TestResult(0.0 if diff == 0 else math.copysign(math.inf, diff), math.nan,
                          1.0 if diff == 0 else 0.0, diff, diff, diff, int(a.size + b.size))
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    stat = diff / se
    half = t_ppf(0.5 + level / 2.0, df) * se
    return TestResult(stat, df, 2.0 * t_sf(abs(stat), df), diff, diff - half, diff + half, int(a.size + b.size))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1). NaN entries stay NaN and do not
    count towards the family size. Reject hypothesis i at level alpha when adjusted[i] <= alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
