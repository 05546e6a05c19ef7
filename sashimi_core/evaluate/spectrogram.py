"""Audio sample files: 16-bit PCM WAV plus a PNG log-mel spectrogram (used by training's periodic samples).

    write_sample(audio, sample_rate, "samples/step_000100_0.wav", "samples/step_000100_0.png", title=...)

The PNG is drawn with matplotlib (Agg backend, axes in seconds and mel bins) when it is installed; otherwise
a plain image of the spectrogram (viridis-like colours, low frequencies at the bottom) is written with zlib,
so sample files never depend on an optional plotting package. Both files are written atomically.
"""
from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from sashimi_core.checkpoint import atomic_write_bytes
from sashimi_core.ops.metrics import log_mel

log = logging.getLogger(__name__)

HOP = 256  # log-mel hop used for the pictures


def wav_bytes(audio, sample_rate: int) -> bytes:
    """audio (T,) float in [-1, 1] -> the bytes of a mono 16-bit PCM WAV file."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0), int(sample_rate),
             subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _viridis(v: np.ndarray) -> np.ndarray:
    """v (...) in [0, 1] -> (..., 3) uint8, a piecewise-linear approximation of matplotlib's viridis."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)
    pos = np.clip(v, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).round().astype(np.uint8)


def png_bytes_plain(mels: np.ndarray, scale: int = 2) -> bytes:
    """(n_mels, frames) dB -> bytes of an RGB PNG (no axes), written with zlib only."""
    lo, hi = float(mels.min(initial=0.0)), float(mels.max(initial=0.0))
    img = _viridis((mels[::-1] - lo) / max(hi - lo, 1e-6))  # (n_mels, frames, 3), low mels at the bottom
    img = img.repeat(scale, 0).repeat(scale, 1) if img.size else np.zeros((1, 1, 3), np.uint8)
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def png_bytes(mels: np.ndarray, sample_rate: int, hop_length: int = HOP, title: str | None = None) -> bytes:
    """(n_mels, frames) dB -> PNG bytes: a matplotlib figure if available, else :func:`png_bytes_plain`."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return png_bytes_plain(mels)
    fig = Figure(figsize=(6, 2.6), dpi=100)
    ax = fig.add_subplot()
    seconds = mels.shape[1] * hop_length / sample_rate
    im = ax.imshow(mels, origin="lower", aspect="auto", cmap="viridis", extent=(0, seconds, 0, mels.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="dB")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_sample(audio, sample_rate: int, wav_path, png_path=None, title: str | None = None) -> None:
    """Write audio (T,) float in [-1, 1] as a 16-bit WAV and, if png_path, its log-mel spectrogram PNG."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    atomic_write_bytes(Path(wav_path), wav_bytes(audio, sample_rate))
    if png_path is not None:
        mels = log_mel(audio, sample_rate, hop_length=HOP)
        atomic_write_bytes(Path(png_path), png_bytes(mels, sample_rate, HOP, title))
