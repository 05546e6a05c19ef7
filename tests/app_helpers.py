"""Helpers for the playground tests: real audio files, a real (untrained) tiny checkpoint, and the app
launched as a real process (``python app.py``) on a free 127.0.0.1 port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def write_audio(path, seconds: float = 0.5, sr: int = 16000, channels: int = 1, amplitude: float = 0.3,
                subtype: str | None = "PCM_16", fmt: str | None = None, freq: float = 440.0) -> Path:
    """A sine (plus a little noise) written with soundfile; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    mono = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    data = np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1) if channels > 1 else mono
    sf.write(str(path), data.astype(np.float32), sr, subtype=subtype, format=fmt)
    return path


def make_tiny_checkpoint(folder, **metadata) -> Path:
    """save_model(SaShiMi(PRESETS["sashimi-tiny"]), folder): a real model with untrained weights."""
    import torch

    from sashimi_core import PRESETS, SaShiMi, save_model

    torch.manual_seed(0)
    metadata.setdefault("dataset", "none (untrained test model)")
    return save_model(SaShiMi(PRESETS["sashimi-tiny"]), folder, **metadata)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LaunchedApp:
    """`python app.py --host 127.0.0.1 --port <free>` with its folders under `tmp`; stop() ends it."""

    def __init__(self, tmp: Path, runs: Path, shipped: Path, extra_args: tuple[str, ...] = (),
                 timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = tmp / f"app-{self.port}.log"
        (tmp / "tmpdir").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, SASHIMI_RUNS=str(runs), SASHIMI_CHECKPOINTS=str(shipped),
                   SASHIMI_DATA=str(tmp / "data"), TMPDIR=str(tmp / "tmpdir"), GRADIO_ANALYTICS_ENABLED="False",
                   GRADIO_EXAMPLES_CACHE=str(tmp / "examples-cache"), PYTHONPATH=str(ROOT))
        env.pop("SPACE_ID", None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port",
                                      str(self.port), *extra_args], cwd=tmp, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def __enter__(self) -> LaunchedApp:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
