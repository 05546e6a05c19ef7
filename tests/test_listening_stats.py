"""Listening-test statistics against scipy/numpy on known data, bootstrap reproducibility and coverage, the
per-rater clip order (balanced, uniform positions: chi-square), the results tables on a built test, and
the flags on suspicious raters."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from scipy import stats as sps

from playground.listening import results, session, stats


def test_t_interval_matches_scipy():
    rng = np.random.default_rng(1)
    for n in (2, 3, 10, 57, 400):
        x = rng.integers(1, 6, n) + rng.normal(0, 0.1, n)  # no ties: scipy gives NaN for zero spread
        got = stats.t_interval(x)
        lo, hi = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
        print(n, got.lo - lo, got.hi - hi)
        assert got.mean == pytest.approx(x.mean())
        assert got.lo == pytest.approx(lo, abs=1e-10) and got.hi == pytest.approx(hi, abs=1e-10)
        assert got.sd == pytest.approx(x.std(ddof=1))
    flat = stats.t_interval([3.0, 3.0, 3.0])
    assert (flat.lo, flat.hi) == (3.0, 3.0)  # everyone agreed: a zero-width interval, not NaN
    single = stats.t_interval([4.0])
    assert single.mean == 4.0 and math.isnan(single.lo) and math.isnan(single.hi)
    assert math.isnan(stats.t_interval([]).mean)


def test_paired_and_welch_t_tests_match_scipy():
    rng = np.random.default_rng(2)
    a = rng.normal(3.5, 0.6, 14)
    b = a - 0.3 + rng.normal(0, 0.4, 14)
    got = stats.paired_t_test(a, b)
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-8)
    assert (got.lo, got.hi) == pytest.approx((ci.low, ci.high), rel=1e-9)
    c = rng.normal(3.0, 1.2, 9)
    got = stats.welch_t_test(a, c)
    ref = sps.ttest_ind(a, c, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-8)
    assert got.df == pytest.approx(ref.df, rel=1e-10)
    assert (got.lo, got.hi) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert math.isnan(stats.paired_t_test([1.0], [2.0]).p)
    assert stats.paired_t_test([3, 4, 5], [3, 4, 5]).p == 1.0  # identical: no difference, no crash


def test_holm_bonferroni():
    # sorted p: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1) -> 0.02, 0.03, 0.06, max(0.04, 0.06)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.5, float("nan"), 0.01])  # NaN is not part of the family
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # 2 x 0.8 capped at 1; monotone
    assert stats.holm([0.02, 0.5]) == pytest.approx([0.04, 0.5])


def _crossed(rng, n_raters, n_clips, mu=3.0, sd_rater=0.5, sd_clip=0.5, sd_noise=0.7):
    """Ratings y = mu + rater effect + clip effect + noise for every (rater, clip)."""
    r = rng.normal(0, sd_rater, n_raters)[:, None]
    c = rng.normal(0, sd_clip, n_clips)[None, :]
    y = mu + r + c + rng.normal(0, sd_noise, (n_raters, n_clips))
    raters, clips = np.meshgrid(np.arange(n_raters), np.arange(n_clips), indexing="ij")
    return raters.ravel(), clips.ravel(), y.ravel()


def test_bootstrap_is_reproducible_and_degrades_gracefully():
    raters, clips, y = _crossed(np.random.default_rng(3), 12, 6)
    a = stats.bootstrap_two_way(raters, clips, y, n_boot=800, seed=7)
    b = stats.bootstrap_two_way(raters, clips, y, n_boot=800, seed=7)
    c = stats.bootstrap_two_way(raters, clips, y, n_boot=800, seed=8)
    assert (a.lo, a.hi) == (b.lo, b.hi) and (a.lo, a.hi) != (c.lo, c.hi)
    assert a.lo < y.mean() < a.hi and a.mean == pytest.approx(y.mean())
    one_rater = stats.bootstrap_two_way(np.zeros(6), np.arange(6), y[:6], n_boot=500, seed=0)
    assert one_rater.lo < one_rater.mean < one_rater.hi  # one-way over clips
    assert math.isnan(stats.bootstrap_two_way([0], [0], [3.0]).lo)
    assert math.isnan(stats.bootstrap_two_way([], [], []).mean)


def test_two_way_bootstrap_covers_the_true_mean():
    """Simulated classroom tests (15 raters x 8 clips, rater and clip effects): the two-way bootstrap covers
    the true mean about 95% of the time; the t-interval over individual ratings does not (it treats 120
    correlated ratings as independent), which is why the results show both."""
    rng = np.random.default_rng(4)
    reps, boot_hits, t_hits = 300, 0, 0
    for _ in range(reps):
        raters, clips, y = _crossed(rng, 15, 8)
        b = stats.bootstrap_two_way(raters, clips, y, n_boot=600, seed=int(rng.integers(1 << 30)))
        t = stats.t_interval(y)
        boot_hits += b.lo <= 3.0 <= b.hi
        t_hits += t.lo <= 3.0 <= t.hi
    print(f"coverage of the true mean: two-way bootstrap {boot_hits / reps:.3f}, t over ratings {t_hits / reps:.3f}")
    assert 0.89 <= boot_hits / reps <= 0.995
    assert t_hits / reps < boot_hits / reps - 0.15


def test_clip_order_is_per_rater_balanced_and_uniform():
    """Every clip once per rater; over many raters each clip's position is uniform (chi-square test), and
    orders are as diverse as uniform random permutations (4000 draws from 8! = 40320: ~3807 distinct)."""
    clips = [f"c{i}" for i in range(8)]
    counts = np.zeros((8, 8))
    orders = set()
    for r in range(4000):
        order = session.clip_order("20250101-000000-abcdef", f"rater-{r}", clips)
        assert sorted(order) == sorted(clips)
        orders.add(tuple(order))
        for pos, clip in enumerate(order):
            counts[clips.index(clip), pos] += 1
    chi2, p = sps.chisquare(counts.ravel())  # expected 500 per (clip, position) cell
    print(f"position chi-square {chi2:.1f}, p = {p:.3f}")
    assert p > 0.001
    expected = 40320 * (1 - (1 - 1 / 40320) ** 4000)
    print(f"distinct orders {len(orders)} (uniform permutations: {expected:.0f})")
    assert abs(len(orders) - expected) < 60
    assert session.clip_order("t", "same", clips) == session.clip_order("t", "same", clips)  # resumable


def test_results_on_a_built_test(tmp_path):
    """Real build, real ratings: honest raters rate models by a known rule and pass the gold check, one
    careless rater rates everything 5 and is excluded; MOS and counts follow."""
    from listening_helpers import build_tiny, rate_everything

    root, folder, manifest, _ = build_tiny(tmp_path)
    clips = {c["id"]: c for c in manifest["clips"]}
    truth = {"alpha-model": 4, "beta-model": 3, "Real data": 5, "Anchor: white noise": 1, None: 1}
    honest = [rate_everything(root, manifest["code"], lambda c, s: truth[clips[c]["system"]]) for _ in range(3)]
    careless = rate_everything(root, manifest["code"], lambda c, s: 5)
    summary = results.summarize(folder, n_boot=300)
    assert summary["raters"]["excluded"] == [careless]
    assert set(summary["raters"]["gold"]) == set(honest) | {careless}
    rows = {(r["system"], r["scale"]): r for r in summary["rows"]}
    for system, score in truth.items():
        if system is None:
            continue
        for scale in ("quality", "intelligibility"):
            row = rows[system, scale]
            assert row["mos"] == score and row["n_raters"] == 3 and row["n_clips"] == 2 and row["n_ratings"] == 6
    pairs = {(t["a"], t["b"], t["scale"]): t for t in summary["pairwise"]}
    assert pairs["alpha-model", "beta-model", "quality"]["diff"] == pytest.approx(1.0)
    md = results.markdown(summary)
    assert md.splitlines()[0] == "| Model | Quality | Intelligibility |"
    assert "| alpha-model | 4.00 ± 0.00 | 4.00 ± 0.00 |" in md
    assert "1 excluded by gold checks" in md
    raw, summ = results.export(folder, summary)
    lines = raw.read_text().splitlines()
    assert lines[0].split(",") == results.RATINGS_CSV_HEADERS
    assert len(lines) == 1 + 4 * len(clips) * 2
    assert summ.read_text().splitlines()[0].split(",") == results.SUMMARY_CSV_HEADERS
    fig = results.figure(summary)
    assert len(fig.data) == 2 and list(fig.data[0].x) == summary["systems"]


def test_fast_and_identical_raters_are_flagged_and_can_be_left_out(tmp_path):
    """Real build (0.1 s clips, no minimum listening time), real ratings: a scripted rater that plays and
    rates at once (pushing alpha-model to 5 and passing the gold check) and one giving the same scores to
    every clip are flagged with reasons; an honest rater who waits for each clip is not. Flagged raters
    are counted by default and left out with exclude_flagged."""
    from listening_helpers import build_tiny, rate_everything

    root, folder, manifest, _ = build_tiny(tmp_path)
    clips = {c["id"]: c for c in manifest["clips"]}
    truth = {"alpha-model": 4, "beta-model": 3, "Real data": 5, "Anchor: white noise": 1, None: 1}
    honest = rate_everything(root, manifest["code"], lambda c, s: truth[clips[c]["system"]], wait=0.12)
    stuffer = rate_everything(root, manifest["code"],
                              lambda c, s: 5 if clips[c]["system"] == "alpha-model" else 1)
    same = rate_everything(root, manifest["code"], lambda c, s: 2, wait=0.12)
    summary = results.summarize(folder, n_boot=200)
    flagged = summary["raters"]["flagged"]
    print(flagged)
    assert set(flagged) == {stuffer, same} and honest not in flagged
    assert summary["raters"]["excluded"] == []  # all three pass the gold check
    assert any("listened to" in r for r in flagged[stuffer]) and any("before the clip" in r for r in flagged[stuffer])
    assert flagged[same] == [f"gave the same scores to all {len(clips)} clips"]
    mos = {(r["system"], r["scale"]): r["mos"] for r in summary["rows"]}
    assert mos["alpha-model", "quality"] == pytest.approx((4 + 5 + 2) / 3)  # counted by default
    kept = results.summarize(folder, n_boot=200, exclude_flagged=True)
    assert {r["system"]: r["mos"] for r in kept["rows"] if r["scale"] == "quality"} == {
        s: v for s, v in truth.items() if s is not None}
    md = results.markdown(summary)
    assert "2 flagged as suspicious, still counted" in md and f"- `{stuffer}`: listened to" in md
    assert "from 3 raters" in md and "from 1 rater (" in results.markdown(kept)
    rows = list(csv.DictReader(io.StringIO(results.ratings_csv(folder, exclude_flagged=True))))
    assert {r["rater_id"] for r in rows if r["rater_flags"]} == {stuffer, same}
    assert {r["rater_id"] for r in rows if r["rater_excluded"] == "1"} == {stuffer, same}
    default_rows = list(csv.DictReader(io.StringIO(results.ratings_csv(folder))))
    assert all(r["rater_excluded"] == "0" for r in default_rows)  # counted by default
