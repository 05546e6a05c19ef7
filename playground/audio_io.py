"""Audio in and out for the playground: read any upload soundfile/librosa can decode, check it, and turn it
into the model's input (mono float32 at the model's sample rate); write results as 16-bit PCM WAV.

Numpy and librosa only (no torch). Every problem a user can cause raises :class:`AudioInputError` (a
ValueError) with a sentence that says what is wrong and what to do; recoverable oddities (NaN samples, a
silent clip, many channels, an unusual rate) are reported as warnings in the returned :class:`PromptAudio`.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

MIN_PROMPT_S = 0.01  # shorter prompts are almost certainly a mistake (a click, an empty trim)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000
MAX_CHANNELS = 64
SILENCE_PEAK = 1e-4  # peak below this (about -80 dBFS) counts as silence
PICKLE_MAGIC = (b"\x80", b"PK")  # pickle protocol 2+ / torch.save zip


class AudioInputError(ValueError):
    """An uploaded or recorded clip cannot be used; the message is meant for the user."""


@dataclass
class PromptAudio:
    """A prompt ready for a model: audio (n,) float32 mono at sample_rate, plus what happened to it."""

    audio: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int
    source_seconds: float
    sha256: str  # of the audio actually used (after trimming and resampling), for the params JSON
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def _file_hint(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:1] in PICKLE_MAGIC or head[:2] in PICKLE_MAGIC:
        return " It looks like a pickle/zip file, not audio."
    if head.lstrip()[:1] in (b"{", b"[", b"<") or all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return " It looks like a text file, not audio."
    return ""


def duration(path) -> float:
    """Length in seconds of an audio file from its header (0.0 when it cannot be read)."""
    try:
        return float(sf.info(str(path)).duration)
    except Exception:  # noqa: BLE001 - any unreadable file: no estimate, the upload check says why
        return 0.0


def read_audio(path, max_seconds: float | None = None) -> tuple[int, np.ndarray]:
    """Decode an audio file -> (sample_rate, audio (n, channels) float32). Raises AudioInputError.

    The header is checked before decoding so a huge upload is refused without reading it all."""
    if path is None or str(path) == "":
        raise AudioInputError("No audio was given.")
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"The audio file {path.name!r} was not found on the server (upload it again).")
    if path.stat().st_size == 0:
        raise AudioInputError(f"The uploaded file {path.name!r} is empty (0 bytes).")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None
    if info is not None:
        if info.frames == 0 or info.duration == 0:
            raise AudioInputError(f"{path.name!r} contains no audio samples.")
        if max_seconds is not None and info.duration > 4 * max_seconds + 10:
            raise AudioInputError(f"{path.name!r} is {info.duration:.1f} s long; the limit for prompts here "
                                  f"is {max_seconds:g} s. Cut it down before uploading.")
        try:
            audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioInputError(f"{path.name!r} could not be decoded ({exc}); the file may be truncated "
                                  "or corrupt.") from exc
        return int(sr), audio
    # Not something libsndfile knows: try librosa (audioread/ffmpeg, when installed).
    try:
        import librosa

        with warnings.catch_warnings():  # librosa warns on its way from soundfile to audioread
            warnings.simplefilter("ignore")
            audio, sr = librosa.load(str(path), sr=None, mono=False)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not audio we can read"
        raise AudioInputError(f"{path.name!r} is not an audio file we can read.{_file_hint(path)} Upload "
                              "WAV, FLAC, OGG/Vorbis or MP3.") from exc
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio[:, None] if audio.ndim == 1 else audio.T
    if audio.size == 0:
        raise AudioInputError(f"{path.name!r} contains no audio samples.")
    return int(sr), audio


def to_mono_float(data: np.ndarray) -> tuple[np.ndarray, int, list[str]]:
    """Samples as Gradio passes them (int16/int32/float, (n,) or (n, channels)) -> (mono float32 in
    [-1, 1], channel count, warnings). NaN/inf samples become 0 (with a warning)."""
    warnings: list[str] = []
    data = np.asarray(data)
    if data.ndim == 0 or data.size == 0:
        raise AudioInputError("The audio contains no samples.")
    if data.ndim > 2:
        raise AudioInputError(f"Audio must be (samples,) or (samples, channels); got shape {data.shape}.")
    if data.ndim == 2 and data.shape[0] <= MAX_CHANNELS < data.shape[1]:
        data = data.T  # (channels, n) given: transpose
    channels = 1 if data.ndim == 1 else data.shape[1]
    if channels > MAX_CHANNELS:
        raise AudioInputError(f"The audio has {channels} channels; at most {MAX_CHANNELS} are supported.")
    if np.issubdtype(data.dtype, np.integer):
        scale = float(2 ** (8 * data.dtype.itemsize - 1))
        offset = scale if np.issubdtype(data.dtype, np.unsignedinteger) else 0.0
        audio = (data.astype(np.float64) - offset) / scale
    elif np.issubdtype(data.dtype, np.floating):
        audio = data.astype(np.float64)
    else:
        raise AudioInputError(f"Unsupported sample type {data.dtype}.")
    bad = ~np.isfinite(audio)
    if bad.any():
        if bad.all():
            raise AudioInputError("Every sample of the audio is NaN or infinite; the file is corrupt.")
        warnings.append(f"{int(bad.sum())} NaN/infinite samples were replaced by silence.")
        audio = np.where(bad, 0.0, audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
        if channels > 1:
            warnings.append(f"Mixed {channels} channels down to mono.")
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        warnings.append(f"The audio peaks at {peak:.2f} (above full scale); it was clipped to [-1, 1].")
        audio = np.clip(audio, -1.0, 1.0)
    return audio.astype(np.float32), channels, warnings


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Mono float32 resampling with librosa (soxr high quality)."""
    if orig_sr == target_sr:
        return audio
    import librosa

    out = librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")
    return out.astype(np.float32)


def prepare_prompt(audio, target_sr: int, *, trim_start: float = 0.0, trim_end: float = 0.0,
                   max_seconds: float = 60.0) -> PromptAudio:
    """Turn a path or (sample_rate, ndarray) into a mono prompt at target_sr, trimmed.

    trim_start: seconds cut from the start; trim_end: the time (s) where the prompt ends, 0 = end of clip.
    Raises AudioInputError for unusable input (empty, corrupt, too short or long after trimming)."""
    if isinstance(audio, (str, os.PathLike)):
        sr, data = read_audio(audio, max_seconds=max_seconds)
    elif isinstance(audio, tuple) and len(audio) == 2:
        sr, data = audio
    else:
        raise AudioInputError("Audio must be a file path or a (sample_rate, samples) pair.")
    if not isinstance(sr, (int, np.integer)) or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioInputError(f"Sample rate {sr!r} Hz is not supported (allowed {MIN_SAMPLE_RATE}-"
                              f"{MAX_SAMPLE_RATE} Hz).")
    sr = int(sr)
    mono, channels, warnings = to_mono_float(data)
    source_seconds = len(mono) / sr
    trim_start, trim_end = float(trim_start or 0.0), float(trim_end or 0.0)
    if not (np.isfinite(trim_start) and np.isfinite(trim_end)) or trim_start < 0 or trim_end < 0:
        raise AudioInputError("Trim start and trim end must be non-negative numbers of seconds.")
    end = source_seconds if trim_end == 0 else min(trim_end, source_seconds)
    if trim_start >= end:
        raise AudioInputError(f"Trim start ({trim_start:g} s) must be before the end of the prompt "
                              f"({end:.3f} s; the clip is {source_seconds:.3f} s long).")
    mono = mono[int(round(trim_start * sr)):int(round(end * sr))]
    seconds = len(mono) / sr
    if seconds < MIN_PROMPT_S:
        raise AudioInputError(f"The prompt is only {seconds * 1000:.1f} ms long; use at least "
                              f"{MIN_PROMPT_S * 1000:.0f} ms, or clear it to generate without a prompt.")
    if seconds > max_seconds:
        raise AudioInputError(f"The prompt is {seconds:.1f} s long; the limit here is {max_seconds:g} s. "
                              "Use Trim start/end to pick a shorter part.")
    if sr != target_sr:
        warnings.append(f"Resampled the prompt from {sr} Hz to the model's {target_sr} Hz.")
    mono = resample(mono, sr, target_sr)
    if float(np.abs(mono).max(initial=0.0)) < SILENCE_PEAK:
        warnings.append("The prompt is silent; the model will continue from silence.")
    digest = hashlib.sha256(mono.tobytes()).hexdigest()
    return PromptAudio(mono, target_sr, sr, channels, source_seconds, digest, warnings)


def write_wav(path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio as 16-bit PCM WAV, as is (clipped to [-1, 1], never peak-normalised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), int(sample_rate),
             subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return path


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16 PCM (clipped)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def load_wav(path) -> tuple[int, np.ndarray]:
    """Read a result WAV back as (sample_rate, mono float32)."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return int(sr), audio.mean(axis=1)
