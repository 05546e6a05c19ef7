"""Shared pieces of the listening-test tests: real tiny checkpoints, a folder of real audio files, a test
built by the real builder (real generation, real WAVs, real SQLite), and a rater that plays and rates."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

MODEL_NAMES = ("alpha-model", "beta-model")  # distinctive system names the blindness tests search for
REAL_PREFIX = "realclip-secret"  # distinctive real-data file names


def make_checkpoints(folder: Path, names=MODEL_NAMES) -> Path:
    """Untrained sashimi-tiny checkpoints (different seeds) saved with save_model under folder/<name>."""
    import torch

    from sashimi_core import PRESETS, SaShiMi, save_model

    for i, name in enumerate(names):
        if not (folder / name / "config.json").is_file():
            torch.manual_seed(i)
            save_model(SaShiMi(PRESETS["sashimi-tiny"]), folder / name, dataset="none (test model)")
    return folder


def make_real_folder(folder: Path, n: int = 6, sr: int = 8000, seconds: float = 0.5) -> Path:
    """n short tones at another sample rate, in a sub-folder (exercises recursion and resampling)."""
    for i in range(n):
        path = folder / "speaker" / f"{REAL_PREFIX}-{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(sr * seconds)) / sr
        sf.write(str(path), (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), sr)
    return folder


def build_tiny(tmp: Path, **overrides):
    """A ready test from two tiny models, real data, a noise anchor and a noise gold clip (0.1 s clips).
    Returns (root, folder, manifest, model_roots)."""
    from playground.listening import catalog
    from playground.listening.builder import build_test
    from playground.listening.config import TestSpec

    ck = make_checkpoints(tmp / "checkpoints")
    real = make_real_folder(tmp / "real")
    spec = dict(title="Class test", kind="speech", models=list(MODEL_NAMES), real_dir=str(real), anchor="noise",
                clips_per_system=2, clip_seconds=0.1, gold_noise=1, min_listen_fraction=0.0)
    spec.update(overrides)
    roots = [(ck, True)]
    root = tmp / "listening"
    folder = build_test(TestSpec(**spec), root, model_roots=roots)
    return root, folder, catalog.read_manifest(folder), roots


def rate_everything(root: Path, code: str, score_fn, rater_id: str | None = None, wait: float = 0.0) -> str:
    """Join (or resume) and rate every clip through the session API; score_fn(clip_id, scale_id) -> 1..5."""
    from playground.listening import session

    screen = session.join(root, code, rater_id)
    while not screen.finished:
        session.played(root, code, screen.rater_id, screen.clip_id)
        if wait:
            time.sleep(wait)
        scores = {s["id"]: score_fn(screen.clip_id, s["id"]) for s in screen.scales}
        screen = session.rate(root, code, screen.rater_id, screen.clip_id, scores)
    return screen.rater_id


def run_concurrently(target, args: list) -> float:
    """Start one thread per item of args (target(item)), wait for all; returns the wall time in seconds."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=target, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0
