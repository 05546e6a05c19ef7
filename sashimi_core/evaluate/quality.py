"""Quality proxies of an audio clip: cheap signal measurements that tell music from noise and silence.

    silent_share(audio)                     # share of frames whose RMS is below -50 dBFS, in [0, 1]
    sounding(audio)                         # 1.0 if any frame is at or above -50 dBFS, else 0.0
    spectral_flatness(audio, sr)            # median flatness of the non-silent frames (0 tone .. ~0.56 noise)
    pitched_share(audio, sr)                # share of non-silent frames pYIN finds pitched (50-2000 Hz)
    onset_rate(audio, sr)                   # onsets per second (librosa onset detector, non-silent frames)
    loudness(audio)                         # frame RMS dBFS mean / median, whole-clip RMS and peak dBFS
    clip_proxies(audio, sr)                 # all of the above for one clip -> flat dict
    summarize(rows)                         # per-clip dicts -> per-metric mean and 95% t-interval

A known failure of small models is "one note, then near-silence": a high silent share and an onset rate near
zero show it where flatness and pitch alone (measured on the few sounding frames) look fine. Its cousin for speech
models, "no word at all", shows as a low share of sounding clips (``sounding`` averaged over a set).

Conventions: audio is (T,) float in [-1, 1] at ``sample_rate`` Hz; dBFS is ``20 log10(rms)`` against full
scale 1.0 (a full-scale sine is -3 dBFS), floored at ``DB_FLOOR``. Frames are centred (librosa's
``center=True``), ``FRAME`` samples long every ``HOP`` samples, so every frame-wise measure has
``1 + T // HOP`` frames and the masks line up. Measures of non-silent frames are NaN when a clip has none.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

FRAME = 1024  # samples per analysis frame (64 ms at 16 kHz)
HOP = 256  # samples between frames (16 ms at 16 kHz)
SILENCE_DB = -50.0  # frames with RMS below this (dBFS) are silent
DB_FLOOR = -100.0  # dB values are floored here, so silence gives finite numbers
PITCH_FMIN, PITCH_FMAX = 50.0, 2000.0  # pYIN search range, Hz
PITCH_RATE = 8000  # pYIN runs on the clip resampled to this rate (4x Nyquist margin over PITCH_FMAX)
PITCH_FRAME, PITCH_HOP = 1024, 512  # pYIN frame and hop at PITCH_RATE: 128 ms and 64 ms
PITCH_THRESHOLD = 0.2  # a frame is pitched when pYIN's voiced probability reaches this
ONSET_SCALE_FLOOR = 4.0  # onset envelope (dB of mean log-mel rise) is scaled by max(its max, this)
ONSET_EDGE = 6  # onsets in the first frames (96 ms at 16 kHz) are edge artefacts, dropped


def _mono(audio) -> np.ndarray:
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"audio must be a 1-D waveform (T,), got shape {y.shape}")
    return y


def _db(x: np.ndarray) -> np.ndarray:
    return np.maximum(20.0 * np.log10(np.maximum(x, 1e-12)), DB_FLOOR)


def frame_rms_db(audio, frame_length: int = FRAME, hop_length: int = HOP) -> np.ndarray:
    """RMS of each centred frame in dBFS: audio (T,) -> (1 + T // hop_length,) float64, floored at DB_FLOOR."""
    import librosa

    y = _mono(audio)
    if y.size == 0:
        return np.zeros(0)
    rms = librosa.feature.rms(y=y, frame_length=frame_length, hop_length=hop_length, center=True)[0]
    return _db(rms.astype(np.float64))


def silent_frames(audio, threshold_db: float = SILENCE_DB, frame_length: int = FRAME,
                  hop_length: int = HOP) -> np.ndarray:
    """audio (T,) -> (frames,) bool, True where the frame's RMS is below threshold_db dBFS."""
    return frame_rms_db(audio, frame_length, hop_length) < threshold_db


def silent_share(audio, threshold_db: float = SILENCE_DB) -> float:
    """Share of frames (FRAME/HOP) whose RMS is below threshold_db dBFS: audio (T,) -> float in [0, 1]
    (1.0 for an empty clip)."""
    silent = silent_frames(audio, threshold_db)
    return float(silent.mean()) if silent.size else 1.0


def sounding(audio, threshold_db: float = SILENCE_DB) -> float:
    """1.0 if any frame of audio (T,) reaches threshold_db dBFS, else 0.0: its mean over a set is the share of
    clips that hold any sound at all (a speech model that often says nothing scores low)."""
    return float(silent_share(audio, threshold_db) < 1.0)


def spectral_flatness(audio, sample_rate: int, threshold_db: float = SILENCE_DB) -> float:
    """Median spectral flatness (geometric / arithmetic mean of the power spectrum, librosa) over the
    non-silent frames: audio (T,) -> float in [0, 1], NaN if every frame is silent.

    ~1e-10 for a pure tone, ~0.56 (e^-gamma) for white noise, 0.001-0.01 for piano-synth's real clips.
    ``sample_rate`` only keeps the signature of the other measures (flatness does not depend on it)."""
    import librosa

    del sample_rate
    y = _mono(audio)
    sounding = ~silent_frames(y, threshold_db)
    if not sounding.any():
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # n_fft longer than a very short clip
        flat = librosa.feature.spectral_flatness(y=y, n_fft=FRAME, hop_length=HOP, center=True)[0]
    return float(np.median(flat[sounding[:flat.size]]))


def pitched_share(audio, sample_rate: int, fmin: float = PITCH_FMIN, fmax: float = PITCH_FMAX,
                  threshold_db: float = SILENCE_DB, max_seconds: float | None = None,
                  threshold: float = PITCH_THRESHOLD) -> float:
    """Share of non-silent frames in which pYIN (librosa.pyin, fmin..fmax Hz) finds a pitch: audio (T,) ->
    float in [0, 1], NaN if every analysed frame is silent.

    For speed the clip is resampled to PITCH_RATE (8 kHz) and analysed in 128 ms frames every 64 ms (about
    0.25 s of CPU per second of audio); ``max_seconds`` analyses only the clip's first seconds. A frame
    counts as pitched when pYIN's voiced probability reaches ``threshold`` (0.2); its Viterbi ``voiced_flag``
    marks 50-90% of white-noise frames voiced (near fmin), where the probability stays ~0.01. Measured at
    8 kHz: a sine or a single note reads ~1.0, white noise 0.00, 4-s segments of polyphonic piano-synth
    0.02-0.9 (pYIN is monophonic: chords lower its voicing probability), so compare a model's share with
    the real clips' share, not with 1.
    """
    import librosa

    y = _mono(audio)
    if max_seconds is not None:
        y = y[:max(1, int(round(max_seconds * sample_rate)))]
    if sample_rate != PITCH_RATE and y.size:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=PITCH_RATE)
    sounding = ~silent_frames(y, threshold_db, PITCH_FRAME, PITCH_HOP)
    if not sounding.any():
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, _, prob = librosa.pyin(y, fmin=fmin, fmax=fmax, sr=PITCH_RATE, frame_length=PITCH_FRAME,
                                  hop_length=PITCH_HOP, center=True)
    n = min(prob.size, sounding.size)
    return float((prob[:n][sounding[:n]] >= threshold).mean())


def onset_times(audio, sample_rate: int, threshold_db: float = SILENCE_DB) -> np.ndarray:
    """Onset times in seconds (librosa.onset.onset_detect on librosa's onset-strength envelope, HOP frames):
    audio (T,) -> (n_onsets,) float64.

    Three guards against onsets that are not there: the envelope (mean rise of the log-mel spectrum per
    frame, dB) is scaled by max(its maximum, ONSET_SCALE_FLOOR) instead of its maximum alone, so the tiny
    flux of a steady tone or a slow decay is not blown up to a peak; onsets in the first ONSET_EDGE frames
    are dropped (their 2048-sample windows reach into the zero padding before the clip, so any clip's start
    reads as an onset); and an onset counts only where its frame or one of the next two is non-silent (the
    detector would otherwise find onsets in the dither of near-silence)."""
    import librosa

    y = _mono(audio)
    sounding = ~silent_frames(y, threshold_db)
    if not sounding.any():
        return np.zeros(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        env = librosa.onset.onset_strength(y=y, sr=sample_rate, hop_length=HOP)
        env = env / max(float(env.max()), ONSET_SCALE_FLOOR)
        frames = librosa.onset.onset_detect(onset_envelope=env, sr=sample_rate, hop_length=HOP,
                                            units="frames", normalize=False)
    near = sounding.copy()
    for k in (1, 2):  # an onset frame may sit just before the sound it starts
        near[:-k] |= sounding[k:]
    frames = frames[(frames >= ONSET_EDGE) & (frames < near.size)]
    frames = frames[near[frames]]
    return frames.astype(np.float64) * HOP / sample_rate


def onset_rate(audio, sample_rate: int, threshold_db: float = SILENCE_DB) -> float:
    """Onsets per second of audio (T,) (see :func:`onset_times`): float >= 0, 0.0 for silence."""
    y = _mono(audio)
    seconds = y.size / sample_rate
    return float(onset_times(y, sample_rate, threshold_db).size / seconds) if seconds > 0 else math.nan


def loudness(audio) -> dict:
    """Level of audio (T,) in dBFS (floored at DB_FLOOR): {"rms_dbfs_mean", "rms_dbfs_median"} over all
    FRAME/HOP frames (silent ones included), "rms_dbfs_clip" (RMS of the whole clip), "peak_dbfs"."""
    y = _mono(audio)
    frames = frame_rms_db(y)
    if y.size == 0:
        return {"rms_dbfs_mean": DB_FLOOR, "rms_dbfs_median": DB_FLOOR, "rms_dbfs_clip": DB_FLOOR,
                "peak_dbfs": DB_FLOOR}
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    return {"rms_dbfs_mean": float(frames.mean()), "rms_dbfs_median": float(np.median(frames)),
            "rms_dbfs_clip": float(_db(np.array(rms))), "peak_dbfs": float(_db(np.array(np.abs(y).max())))}


METRICS = ("spectral_flatness", "pitched_share", "silent_share", "sounding", "onset_rate", "rms_dbfs_mean",
           "rms_dbfs_median", "rms_dbfs_clip", "peak_dbfs")  # keys of clip_proxies, in report order


def clip_proxies(audio, sample_rate: int, pitch: bool = True, pitch_seconds: float | None = None) -> dict:
    """All proxies of one clip (T,) -> {name: float} with the keys of METRICS (NaN where undefined;
    pitched_share NaN too when ``pitch`` is False, pYIN being the slow one)."""
    y = _mono(audio)
    silent = silent_share(y)
    out = {"spectral_flatness": spectral_flatness(y, sample_rate),
           "pitched_share": pitched_share(y, sample_rate, max_seconds=pitch_seconds) if pitch else math.nan,
           "silent_share": silent, "sounding": float(silent < 1.0),  # = sounding(y), without a second pass
           "onset_rate": onset_rate(y, sample_rate)}
    out.update(loudness(y))
    return out


def summarize(rows: list[dict], keys=METRICS, confidence: float = 0.95) -> dict:
    """Per-clip proxy dicts -> {key: {"mean", "ci_low", "ci_high", "n"}} over the clips where the value is
    finite (n of them; mean NaN when none, bounds NaN when fewer than two): a Student-t interval of the
    mean over clips (``sashimi_core.ops.metrics.mean_ci``)."""
    from sashimi_core.ops.metrics import mean_ci

    out = {}
    for key in keys:
        vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        mean, lo, hi = mean_ci(vals, confidence) if vals else (math.nan, math.nan, math.nan)
        out[key] = {"mean": mean, "ci_low": lo, "ci_high": hi, "n": len(vals)}
    return out
