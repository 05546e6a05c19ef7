"""FID / IS / mIS / AM against hand-computed values, evaluate_audio plumbing, and the pocketsphinx recogniser."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from sashimi_core.evaluate import audio_metrics as am
from sashimi_core.evaluate.classifier import ClassifierConfig, DigitClassifier


def soft_onehot(labels, k: int = 10, a: float = 0.1) -> np.ndarray:
    """(1 - a) one-hot + a uniform: rows with known entropy and no zeros."""
    p = np.full((len(labels), k), a / k)
    p[np.arange(len(labels)), labels] += 1 - a
    return p


def brute_mis(p: np.ndarray) -> float:
    kl = [np.sum(p[i] * np.log(p[i] / p[j])) for i in range(len(p)) for j in range(len(p))]
    return float(np.exp(np.mean(kl)))


# ------------------------------------------------------------------------------------------------ FID
def test_frechet_distance_diagonal_gaussians_analytic():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # commuting covariances: |mu1 - mu2|^2 + sum (sqrt v1 - sqrt v2)^2 = 5 + (4 + 1 + 0) = 10
    got = am.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    print("diag FID", got)
    assert got == pytest.approx(10.0, abs=1e-10)
    assert am.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(9.0 + 1.0)  # 1-D: dmu^2 + dsigma^2


def test_frechet_distance_non_commuting_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real)
    got = am.frechet_distance(mu1, s1, mu2, s2)
    print("FID", got, "scipy", ref, "diff", abs(got - ref))
    assert got == pytest.approx(ref, rel=1e-8)
    assert am.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-8)  # symmetric


def test_fid_of_samples_against_themselves_and_the_analytic_value():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 8)) * np.arange(1, 9)
    assert am.fid(x, x) == pytest.approx(0.0, abs=1e-8)
    # two large samples of N(0, I) and N(1, 4I) in 4-D: analytic FID = 4 * 1 + 4 * (2 - 1)^2 = 8
    a, b = rng.standard_normal((50000, 4)), 1.0 + 2.0 * rng.standard_normal((50000, 4))
    got = am.fid(a, b)
    print("sample FID", got, "analytic 8")
    assert got == pytest.approx(8.0, rel=0.02)


def test_fid_singular_covariances_are_finite():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 16)), rng.standard_normal((7, 16))  # N < D: rank-deficient covariances
    got = am.fid(x, y)
    assert np.isfinite(got) and got >= 0
    with pytest.raises(ValueError):
        am.fid(x[:1], y)
    with pytest.raises(ValueError):
        am.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ----------------------------------------------------------------------------------------- IS, mIS, AM
def test_inception_score_known_tables():
    k = 10
    assert am.inception_score(np.full((7, k), 1 / k)) == pytest.approx(1.0)  # uninformative classifier
    assert am.inception_score(np.eye(k)[np.arange(50) % k]) == pytest.approx(k)  # confident and balanced
    assert am.inception_score(np.eye(k)[np.zeros(20, int)]) == pytest.approx(1.0)  # mode collapse
    p = np.array([[0.5, 0.5], [1.0, 0.0]])  # by hand: p(y) = (0.75, 0.25)
    kl = np.mean([0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25), np.log(1 / 0.75)])
    assert am.inception_score(p) == pytest.approx(np.exp(kl))


def test_modified_inception_score_matches_pairwise_definition():
    k, a = 10, 0.1
    p = soft_onehot(np.arange(30) % k, k, a)
    # within a class KL = 0; across classes KL = (1 - a + a/k) log((1 - a + a/k)/(a/k)) + (a/k) log((a/k)/(1 - a + a/k))
    hi, lo = 1 - a + a / k, a / k
    kl_across = (hi - lo) * np.log(hi / lo)
    expected = np.exp((k - 1) / k * kl_across)  # a random pair is from different classes w.p. (k-1)/k
    got = am.modified_inception_score(p)
    print("mIS", got, "expected", expected)
    assert got == pytest.approx(expected, rel=1e-10)
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.ones(k) * 0.3, size=25)
    assert am.modified_inception_score(q) == pytest.approx(brute_mis(q), rel=1e-10)
    assert am.modified_inception_score(np.full((5, k), 1 / k)) == pytest.approx(1.0)


def test_am_score_known_tables():
    k = 10
    balanced = np.eye(k)[np.arange(40) % k]
    assert am.am_score(balanced, np.full(k, 1 / k)) == pytest.approx(0.0, abs=1e-12)  # perfect
    p = soft_onehot(np.arange(20) % k, k, 0.2)
    mean_entropy = -np.sum(p[0] * np.log(p[0]))
    assert am.am_score(p, p) == pytest.approx(mean_entropy)  # reference = itself: KL term is 0
    # by hand: generated all class 0 with prob 0.8 (rest 0.2/9); reference uniform over 2 classes of K=2
    g = np.array([[0.8, 0.2], [0.8, 0.2]])
    ref = np.array([0.5, 0.5])
    expected = 0.5 * np.log(0.5 / 0.8) + 0.5 * np.log(0.5 / 0.2) - (0.8 * np.log(0.8) + 0.2 * np.log(0.2))
    assert am.am_score(g, ref) == pytest.approx(expected)
    with pytest.raises(ValueError):
        am.am_score(g, np.ones(3) / 3)
    with pytest.raises(ValueError):
        am.inception_score(np.array([[0.5, 0.6]]))  # rows must sum to 1


# ------------------------------------------------------------------------------------------- evaluate
def test_evaluate_audio_keys_and_self_reference():
    torch.manual_seed(0)
    clf = DigitClassifier(ClassifierConfig(channels=(4, 8), convs_per_block=1)).eval()  # untrained, tiny
    rng = np.random.default_rng(4)
    real = (0.1 * rng.standard_normal((12, 16000))).astype(np.float32)
    out = am.evaluate_audio(real, real, clf, real_labels=np.arange(12) % 10)
    print({k: v for k, v in out.items() if k != "generated_class_histogram"})
    assert out["fid"] == pytest.approx(0.0, abs=1e-6)
    assert out["is"] == pytest.approx(out["reference"]["is"]) and out["am"] == pytest.approx(out["reference"]["am"])
    assert sum(out["generated_class_histogram"]) == 12 and 0 <= out["reference"]["accuracy"] <= 1
    other = am.evaluate_audio(real[:, ::-1].copy() * 3, real, clf)
    assert other["fid"] > 0
    with pytest.raises(ValueError):
        am.evaluate_audio(real[0], real, clf)


# ------------------------------------------------------------------------------------------ recogniser
def espeak_clip(word: str, folder) -> np.ndarray:
    """espeak-ng's default voice saying ``word``, 16 kHz, centred in a 1-s clip at peak 0.7 (as sc09-synth)."""
    import librosa
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    path = folder / f"{word}.wav"
    subprocess.run(["espeak-ng", "-w", str(path), word], capture_output=True, check=True, timeout=60)
    y, sr = sf.read(str(path), dtype="float32")
    y, _ = librosa.effects.trim(librosa.resample(y, orig_sr=sr, target_sr=16000), top_db=35)
    clip = np.zeros(16000, np.float32)
    start = (16000 - len(y[:16000])) // 2
    clip[start:start + len(y[:16000])] = y[:16000]
    return 0.7 * clip / np.abs(clip).max()


def test_recogniser_hears_espeak_seven_and_rejects_silence(tmp_path):
    if not am.recogniser_available():
        pytest.skip("pocketsphinx not installed (pip install pocketsphinx)")
    seven, three = espeak_clip("seven", tmp_path), espeak_clip("three", tmp_path)
    words = am.recognise_digits(np.stack([seven, three, np.zeros(16000, np.float32)]))
    print(words)
    assert words == ["seven", "three", None]
    share = am.recogniser_share(np.stack([seven, np.zeros(16000, np.float32)]), labels=[7, 0])
    assert share["share"] == pytest.approx(0.5) and share["accuracy"] == pytest.approx(0.5)
    assert share["accuracy_recognised"] == pytest.approx(1.0) and share["histogram"][7] == 1
