import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi_core import PRESETS, SaShiMi
from sashimi_core.evaluate.nll import evaluate, silent_samples
from sashimi_core.evaluate.spectrogram import png_bytes_plain, wav_bytes, write_sample
from sashimi_core.ops.metrics import log_mel, mean_ci, nll_bits, t_ppf, unigram_entropy_bits
from sashimi_core.ops.quantize import encode

scipy_stats = pytest.importorskip("scipy.stats")


def test_nll_bits_is_cross_entropy_over_ln2():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 256, generator=g)
    tokens = torch.randint(0, 256, (2, 7), generator=g)
    logp = torch.log_softmax(logits.double(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    expected = -logp / math.log(2)
    per = nll_bits(logits, tokens, reduction="none")
    print("max diff", (per.double() - expected).abs().max().item())
    assert per.shape == (2, 7)
    assert torch.allclose(per.double(), expected, atol=1e-5)
    assert nll_bits(logits, tokens).item() == pytest.approx(expected.mean().item(), abs=1e-5)
    uniform = torch.zeros(1, 3, 256)
    assert nll_bits(uniform, torch.tensor([[0, 128, 255]])).item() == pytest.approx(8.0, abs=1e-6)
    with pytest.raises(ValueError):
        nll_bits(logits, tokens[:, :3])


def test_unigram_entropy_matches_scipy():
    tokens = np.random.default_rng(0).integers(0, 40, size=5000)
    counts = np.bincount(tokens, minlength=256)
    expected = scipy_stats.entropy(counts, base=2)
    assert unigram_entropy_bits(torch.as_tensor(tokens)) == pytest.approx(expected, abs=1e-10)
    assert unigram_entropy_bits(np.full(10, 128)) == 0.0
    assert unigram_entropy_bits(np.arange(256)) == pytest.approx(8.0)


@pytest.mark.parametrize("n", [2, 3, 5, 12, 40, 500])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_ci_matches_scipy_t_interval(n, confidence):
    x = np.random.default_rng(n).normal(3.0, 0.7, size=n)
    mean, lo, hi = mean_ci(x, confidence)
    elo, ehi = scipy_stats.t.interval(confidence, n - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    print(n, confidence, "diffs", lo - elo, hi - ehi)
    assert mean == pytest.approx(x.mean(), abs=1e-12)
    assert lo == pytest.approx(elo, abs=1e-9) and hi == pytest.approx(ehi, abs=1e-9)


def test_t_quantiles_and_edge_cases():
    assert t_ppf(0.975, 1e9) == pytest.approx(1.959964, abs=1e-6)  # the normal limit
    mean, lo, hi = mean_ci([2.5])
    assert mean == 2.5 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_log_mel_shape_and_levels():
    sr = 16000
    t = np.arange(sr) / sr
    mels = log_mel(0.5 * np.sin(2 * np.pi * 440 * t), sr, n_mels=80)
    assert mels.shape == (80, 1 + sr // 256) and mels.dtype == np.float32
    assert mels.max() > 0 and mels.min() >= -80.0
    assert int(mels.mean(1).argmax()) < 20  # 440 Hz sits in a low mel bin
    assert log_mel(np.zeros(100), sr).shape == (80, 1)  # shorter than n_fft: padded, no warning needed
    assert log_mel(np.zeros(0), sr).shape == (80, 0)


def test_write_sample_files(tmp_path):
    audio = 0.3 * np.sin(np.arange(4000) * 0.05)
    write_sample(audio, 16000, tmp_path / "a.wav", tmp_path / "a.png", title="step 1")
    data, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    info = sf.info(tmp_path / "a.wav")
    assert sr == 16000 and info.subtype == "PCM_16" and data.shape == (4000,)
    assert np.abs(data - audio).max() < 1e-4
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = png_bytes_plain(log_mel(audio, 16000))
    assert plain[:8] == b"\x89PNG\r\n\x1a\n" and len(plain) > 100
    assert sf.read(io.BytesIO(wav_bytes(np.array([2.0, -2.0]), 8000)))[0].tolist() == pytest.approx(
        [1.0, -1.0], abs=1e-4)  # clipped to full scale


def test_evaluate_function_ci_brackets_mean():
    torch.manual_seed(0)
    model = SaShiMi(PRESETS["sashimi-tiny"])
    g = torch.Generator().manual_seed(1)
    clips = [torch.randint(100, 156, (64,), generator=g) for _ in range(5)]
    res = evaluate(model, clips, batch_size=2)
    assert res["n_clips"] == 5 and res["n_samples"] == 5 * 64 and len(res["per_clip_nll_bits"]) == 5
    assert res["ci_low"] < res["nll_bits"] < res["ci_high"]
    with torch.no_grad():
        direct = nll_bits(model(torch.stack(clips)), torch.stack(clips)).item()
    assert res["nll_bits"] == pytest.approx(direct, abs=1e-5)
    assert res["unigram_entropy_bits"] == pytest.approx(unigram_entropy_bits(torch.stack(clips)), abs=1e-9)
    assert evaluate(model, clips, batch_size=2, max_batches=1)["n_clips"] == 2
    assert model.training  # mode restored


def test_silent_samples_marks_quiet_10ms_blocks():
    """16 kHz: blocks of 160 samples. Silence, then a -20 dBFS sine from sample 480, then -60 dBFS noise
    (quiet), with a length that leaves a short last block (loud) -> the mask is known block by block."""
    sr, n = 16000, 1000
    t = np.arange(n) / sr
    audio = np.zeros(n)
    audio[480:800] = 0.1 * math.sqrt(2) * np.sin(2 * np.pi * 440 * t[480:800])
    audio[800:960] = np.random.default_rng(0).normal(0, 1e-3, 160)
    audio[960:] = 0.5  # the short last block (40 samples) is loud
    mask = silent_samples(encode(audio, "mu-law")[None], "mu-law", sr)[0]
    expected = np.ones(n, bool)
    expected[480:800] = expected[960:] = False
    assert mask.shape == (n,) and (mask.numpy() == expected).all()
    assert silent_samples(encode(audio, "mu-law")[None], "mu-law", sr, threshold_db=-70)[0, 800:960].logical_not().all()


def test_evaluate_splits_nll_between_silent_and_sounding_samples():
    torch.manual_seed(0)
    model = SaShiMi(PRESETS["sashimi-tiny"])
    sr = model.cfg.sample_rate
    block = sr // 100
    quiet, loud = encode(np.zeros(4 * block), model.cfg.quantization), encode(
        0.3 * np.sin(np.arange(4 * block) * 0.05), model.cfg.quantization)
    clips = [torch.cat([quiet, loud]), torch.cat([quiet, quiet]), torch.cat([loud, quiet])]
    res = evaluate(model, clips, batch_size=2)
    with torch.no_grad():
        bits = nll_bits(model(torch.stack(clips)), torch.stack(clips), reduction="none").double()
    silent = torch.zeros(3, 8 * block, dtype=torch.bool)
    silent[0, :4 * block] = silent[1] = silent[2, 4 * block:] = True
    assert res["silent_share"] == pytest.approx(4 / 6)
    assert res["nll_silent_bits"] == pytest.approx(bits[silent].mean().item(), abs=1e-5)
    assert res["nll_sounding_bits"] == pytest.approx(bits[~silent].mean().item(), abs=1e-5)
    assert res["per_clip_sounding_nll_bits"][1] is None  # a clip without sound has no sounding mean
    assert res["per_clip_sounding_nll_bits"][0] == pytest.approx(bits[0, 4 * block:].mean().item(), abs=1e-5)
    weighted = res["silent_share"] * res["nll_silent_bits"] + (1 - res["silent_share"]) * res["nll_sounding_bits"]
    assert weighted == pytest.approx(res["nll_bits"], abs=1e-5)  # equal-length clips: the pooled mean
