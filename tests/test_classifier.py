"""The SC09 digit classifier: front end vs librosa, shapes, save/load, training smoke run, and the shipped
checkpoint end to end on a freshly built --small sc09-synth."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sashimi_core.evaluate.classifier import (
    DEFAULT_PATH,
    DIGITS,
    ClassifierConfig,
    DigitClassifier,
    TrainConfig,
    accuracy,
    augment,
    load_classifier,
    load_split,
    save_model_with_card,
    train,
)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(channels=(4, 8), convs_per_block=1)


@pytest.fixture(scope="module")
def sc09_small(tmp_path_factory) -> Path:
    """A fresh 300-clip sc09-synth (seed 11, not the seed the shipped classifier was trained on)."""
    missing = [t for t in ("espeak-ng", "flite") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"system tools not installed: {missing} (apt-get install {' '.join(missing)})")
    out = tmp_path_factory.mktemp("sc09") / "sc09-synth"
    r = subprocess.run([sys.executable, "-m", "sashimi_core.data", "build", "sc09-synth", "--out", str(out),
                        "--small", "--seed", "11", "--no-progress"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def all_clips(root: Path) -> tuple[np.ndarray, np.ndarray]:
    parts = [load_split(root, s) for s in ("train", "valid", "test")]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def result_stub(n: int = 1) -> dict:
    return {"dataset": "unit-test", "n_train": n, "n_valid": n, "n_test": n, "valid_accuracy": 0.5,
            "test_accuracy": 0.5, "epochs": 1, "best_epoch": 1, "train_seconds": 1.0, "threads": 1,
            "torch": torch.__version__, "history": [], "train_config": vars(TrainConfig())}


# ------------------------------------------------------------------------------------------ shipped model
def test_shipped_classifier_is_accurate_on_a_fresh_small_build(sc09_small):
    model = load_classifier()
    audio, labels = all_clips(sc09_small)
    acc = accuracy(model, audio, labels)
    test_audio, test_labels = load_split(sc09_small, "test")
    test_acc = accuracy(model, test_audio, test_labels)
    print(f"shipped classifier: {100 * acc:.1f}% on all {len(labels)} clips, {100 * test_acc:.1f}% on "
          f"{len(test_labels)} test clips")
    assert acc > 0.8


def test_shipped_checkpoint_files():
    files = {p.name: p.stat().st_size for p in DEFAULT_PATH.iterdir()}
    assert set(files) >= {"config.json", "model.safetensors", "README.md"}
    assert sum(files.values()) < 5 * 2**20
    config = json.loads((DEFAULT_PATH / "config.json").read_text())
    assert config["architecture"] == "sc09-classifier" and config["metadata"]["test_accuracy"] > 0.9
    card = (DEFAULT_PATH / "README.md").read_text()
    assert "Intended use" in card and "Metric features only" in card and "test" in card
    model = load_classifier()
    assert not model.training and model.cfg.labels == DIGITS


# ------------------------------------------------------------------------------------------ model
def test_log_mel_front_end_matches_librosa():
    import librosa

    model = DigitClassifier(ClassifierConfig(**TINY))
    y = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    cfg = model.cfg
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=cfg.n_fft, win_length=cfg.win_length,
                                         hop_length=cfg.hop_length, n_mels=cfg.n_mels, fmin=cfg.f_min,
                                         fmax=cfg.f_max, center=True, pad_mode="constant")
    db = 10 * np.log10(mel + 1e-10)
    db = np.maximum(db, db.max() - 80)
    ref = (db - db.mean()) / (db.std(ddof=1) + 1e-3)
    got = model.frontend(torch.from_numpy(y)[None])[0].numpy()
    print("log-mel max diff", np.abs(got - ref).max())
    assert got.shape == (64, 101) and np.abs(got - ref).max() < 1e-4


def test_shapes_level_invariance_and_input_checks():
    torch.manual_seed(0)
    model = DigitClassifier(ClassifierConfig()).eval()
    x = 0.3 * torch.randn(3, 16000)
    with torch.no_grad():
        f, logits = model.features(x), model.logits(x)
        assert f.shape == (3, 128) and logits.shape == (3, 10)
        diff = (model.logits(0.1 * x) - logits).abs().max().item()
        print("logit change under -20 dB gain", diff)
        assert diff < 1e-3  # per-clip standardised log-mel
        assert model.logits(x[:, :8000]).shape == (3, 10) and model.logits(x[0]).shape == (1, 10)
    feats, probs = model.embed(x.numpy(), batch_size=2)
    assert feats.shape == (3, 128) and probs.shape == (3, 10) and np.allclose(probs.sum(1), 1)
    with pytest.raises(ValueError):
        model.features(torch.zeros(2, 1, 16000))


def test_augment_keeps_shape_and_range_and_is_seeded():
    x = 0.9 * torch.sin(torch.linspace(0, 2000, 16000))[None].repeat(8, 1)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.abs().max() <= 1.0 and torch.equal(a, b) and not torch.equal(a, x)


def test_save_load_roundtrip_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = DigitClassifier(ClassifierConfig(**TINY)).eval()
    out = save_model_with_card(model, tmp_path / "clf", result_stub())
    loaded = load_classifier(out)
    x = 0.2 * torch.randn(2, 16000)
    with torch.no_grad():
        assert torch.equal(loaded.logits(x), model.logits(x))
    assert loaded.cfg.channels == (4, 8)
    cfg = json.loads((out / "config.json").read_text())
    cfg["architecture"] = "sashimi"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not 'sc09-classifier'"):
        load_classifier(out)
    with pytest.raises(ValueError):
        load_classifier(tmp_path / "missing")


# ------------------------------------------------------------------------------------------ training
def test_train_smoke_writes_a_loadable_checkpoint(sc09_small, tmp_path):
    tc = TrainConfig(data=str(sc09_small), out=str(tmp_path / "clf"), epochs=1, batch_size=64)
    r = train(tc, ClassifierConfig(**TINY))
    print({k: r[k] for k in ("valid_accuracy", "test_accuracy", "train_seconds")})
    assert r["n_train"] + r["n_valid"] + r["n_test"] == 300 and len(r["history"]) == 1
    model = load_classifier(tmp_path / "clf")
    assert model.checkpoint["metadata"]["dataset"] == "sc09-synth"
    assert "| test |" in (tmp_path / "clf" / "README.md").read_text()
