"""Quality proxies (sashimi_core.evaluate.quality) on signals whose answers are known, and `python -m bench quality`."""
import json
import math

import numpy as np
import pytest

from app_helpers import make_tiny_checkpoint, write_audio
from sashimi_core.evaluate import quality

SR = 16000


def sine(seconds=1.0, freq=440.0, amplitude=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def white_noise(seconds=1.0, std=0.1, seed=0):
    return (std * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def piano_note(lead=0.25, note=1.5, tail=0.0, f0=220.0):
    """lead s of silence, a decaying harmonic tone (6 partials, 2.5 ms attack, upper partials decaying
    faster), then tail s of silence: the shape of a piano note."""
    t = np.arange(int(note * SR)) / SR
    tone = sum(0.6 / k * np.sin(2 * np.pi * f0 * k * t) * np.exp(-t * (2.0 + 0.7 * k)) for k in range(1, 7))
    tone *= 1 - np.exp(-t * 400)
    return np.concatenate([np.zeros(int(lead * SR)), tone, np.zeros(int(tail * SR))]).astype(np.float32)


def test_sine_is_tonal_pitched_never_silent_and_at_its_level():
    y = sine()
    assert quality.spectral_flatness(y, SR) < 1e-3
    assert quality.pitched_share(y, SR) >= 0.95
    assert quality.silent_share(y) == 0.0 and quality.sounding(y) == 1.0
    assert quality.onset_rate(y, SR) == 0.0  # a steady tone has no onset, not even at the clip's start
    level = quality.loudness(y)
    assert level["rms_dbfs_clip"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.05)  # -9.03
    assert level["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=0.05)  # -6.02
    assert level["rms_dbfs_median"] == pytest.approx(level["rms_dbfs_clip"], abs=0.1)


def test_white_noise_is_flat_and_unpitched():
    y = white_noise()
    assert quality.spectral_flatness(y, SR) > 0.45  # e^-gamma = 0.56 in expectation
    assert quality.pitched_share(y, SR) <= 0.05
    assert quality.silent_share(y) == 0.0
    assert quality.loudness(y)["rms_dbfs_clip"] == pytest.approx(-20.0, abs=0.2)


@pytest.mark.parametrize("y", [np.zeros(SR, np.float32), white_noise(std=1e-4)], ids=["zeros", "dither-80dB"])
def test_silence_is_all_silent_and_undefined_measures_are_nan(y):
    assert quality.silent_share(y) == 1.0 and quality.sounding(y) == 0.0
    assert math.isnan(quality.spectral_flatness(y, SR))
    assert math.isnan(quality.pitched_share(y, SR))
    assert quality.onset_rate(y, SR) == 0.0
    row = quality.clip_proxies(y, SR)
    assert set(row) == set(quality.METRICS)
    assert all(math.isfinite(row[k]) for k in ("silent_share", "onset_rate", "rms_dbfs_mean", "peak_dbfs"))
    assert row["rms_dbfs_mean"] < -70 and row["peak_dbfs"] < -50
    summary = quality.summarize([row, row])
    assert summary["silent_share"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2}
    assert quality.summarize([row, quality.clip_proxies(sine(), SR)])["sounding"]["mean"] == 0.5
    assert summary["spectral_flatness"]["n"] == 0 and math.isnan(summary["spectral_flatness"]["mean"])


def test_piano_note_is_pitched_tonal_with_one_onset_then_silence():
    """A decaying note followed by 2 s of silence: the "one note, then near-silence" failure shows as a high
    silent share and one onset, while pitch and flatness (of the sounding frames) look like music."""
    y = piano_note(tail=2.0)
    assert quality.pitched_share(y, SR) >= 0.8
    assert quality.spectral_flatness(y, SR) < 0.01
    onsets = quality.onset_times(y, SR)
    assert len(onsets) == 1 and abs(onsets[0] - 0.25) < 0.05
    assert quality.onset_rate(y, SR) == pytest.approx(1 / (y.size / SR))
    assert 0.5 < quality.silent_share(y) < 0.8  # the 2.25 s of silence and the note's quiet tail


def test_summarize_means_and_t_intervals_over_finite_clips():
    rows = [{"onset_rate": 1.0}, {"onset_rate": 3.0}, {"onset_rate": float("nan")}, {"onset_rate": None}]
    s = quality.summarize(rows, keys=("onset_rate",))["onset_rate"]
    assert s["n"] == 2 and s["mean"] == 2.0
    assert s["ci_high"] - 2.0 == pytest.approx(12.7062 * 1.0, rel=1e-3)  # t(0.975, 1) * sem, sem = 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


def _run_cli(tmp_path, model, data, *extra):
    from bench import quality as cli

    out = tmp_path / "out" / "q.json"
    rc = cli.main([str(model), "--data", str(data), "--n", "2", "--seconds", "0.25", "--prompt-seconds", "0.125",
                   "--nll-clips", "2", "--nll-seconds", "0.25", "--threads", "1", "--out", str(out), *extra])
    assert rc == 0
    return out, json.loads(out.read_text())


def test_cli_writes_json_markdown_and_png(tmp_path, tiny_model):
    data = tmp_path / "data"
    for split, n in (("train", 2), ("valid", 1), ("test", 3)):
        for i in range(n):
            write_audio(data / split / f"clip{i}.wav", seconds=1.0, freq=220.0 * (i + 1))
    out, res = _run_cli(tmp_path, tiny_model, data)
    assert res["benchmark"] == "quality" and res["speech"] is False and res["speech_metrics"] is None
    assert res["settings"]["n"] == 2 and res["settings"]["seconds"] == 0.25
    for name in ("unconditional", "continuation", "real"):
        assert set(res["sets"][name]["summary"]) == set(quality.METRICS)
        assert len(res["sets"][name]["per_clip"]) == 2
    real = res["sets"]["real"]["summary"]
    assert all(isinstance(real[k]["mean"], float) and math.isfinite(real[k]["mean"]) for k in quality.METRICS)
    assert real["silent_share"]["mean"] == 0.0 and real["pitched_share"]["mean"] > 0.5  # 0.3-amplitude sines
    assert math.isfinite(res["nll"]["nll_bits"]) and res["nll"]["n_clips"] == 2
    assert res["nll"]["silent_share"] == 0.0 and res["nll"]["nll_sounding_bits"] == pytest.approx(
        res["nll"]["nll_bits"], abs=1e-6)  # loud sines: every block sounds
    assert len(res["sources"]["real"]) == 2 and res["sources"]["real"][0]["file"].startswith("test/")
    md = out.with_suffix(".md").read_text()
    assert "| proxy | unconditional | continuation (generated part) | real (test) |" in md and "Test NLL" in md
    assert "% of samples), " in md and "in the sounding ones" in md
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert res["files"]["png"] == str(out.with_suffix(".png"))


def test_cli_speech_metrics_on_a_digit_folder(tmp_path, tiny_model):
    """--speech adds the classifier metrics (shipped classifier) and the recogniser shares."""
    data = tmp_path / "digits"
    for split, n in (("train", 1), ("test", 2)):
        for i, digit in enumerate(("one", "two")[:n]):
            write_audio(data / split / digit / f"spk{i}_nohash_0.wav", seconds=1.0, freq=300.0 + 100 * i)
    _, res = _run_cli(tmp_path, tiny_model, data, "--speech", "--no-pitch")
    sm = res["speech_metrics"]
    assert res["speech"] is True and res["settings"]["pitch"] == "off"
    for name in ("unconditional", "continuation"):
        assert all(math.isfinite(sm[name][k]) for k in ("is", "mis", "am", "fid"))
    assert math.isfinite(sm["real"]["is"]) and 0.0 <= sm["real"]["accuracy"] <= 1.0
    if isinstance(sm.get("recogniser"), str):
        pytest.skip(sm["recogniser"])
    assert 0.0 <= sm["real"]["recogniser"]["share"] <= 1.0 and "accuracy" in sm["real"]["recogniser"]
    assert sm["unconditional"]["recogniser"]["n"] == 2
