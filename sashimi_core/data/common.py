"""Shared helpers for the offline data set builders: tool checks, atomic writes, manifests, audio I/O.

Everything here is independent of torch so the builders (and their worker processes) start fast.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au", ".opus", ".m4a")
CORE_SNDFILE_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".au")  # never handed to audioread
MANIFEST = "manifest.csv"
DATASET_JSON = "dataset.json"


class MissingToolError(RuntimeError):
    """A system tool or data file the builder needs is not installed; the message says how to install it."""


def normalize_split(split: str) -> str:
    """'val'/'validation' -> 'valid'; raises ValueError for anything that is not a split name."""
    try:
        return SPLIT_ALIASES[split.lower()]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}") from None


def require_tool(name: str, apt_package: str | None = None) -> str:
    """Absolute path of executable ``name`` on PATH, or MissingToolError with the apt-get command."""
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(
            f"{name} not found on PATH: install it with `apt-get install {apt_package or name}`")
    return path


def require_file(path: str | os.PathLike, what: str, apt_package: str) -> Path:
    """``path`` if it is an existing file, else MissingToolError naming ``what`` and the apt package."""
    p = Path(path)
    if not p.is_file():
        raise MissingToolError(f"{what} not found at {p}: install it with `apt-get install {apt_package}`")
    return p


def tool_version(cmd: Sequence[str]) -> str:
    """First non-empty output line of ``cmd`` (e.g. ``["espeak-ng", "--version"]``), or 'unknown'."""
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in (r.stdout + "\n" + r.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def seed_for(*keys: int) -> int:
    """A 63-bit integer seed derived deterministically from integer keys (e.g. (build_seed, clip_index))."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


# ----------------------------------------------------------------------------------------------- writes
def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_wav_atomic(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono ``audio`` (n,) float in [-1, 1] as 16-bit PCM WAV via temp file + os.replace."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_manifest(out: str | os.PathLike, rows: Sequence[dict], fieldnames: Sequence[str]) -> Path:
    """Write ``<out>/manifest.csv`` atomically; rows are dicts with (at least) ``fieldnames``."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(out) / MANIFEST
    write_text_atomic(path, buf.getvalue())
    return path


def read_manifest(root: str | os.PathLike) -> list[dict]:
    """Rows of ``<root>/manifest.csv`` as dicts of strings."""
    with open(Path(root) / MANIFEST, newline="") as f:
        return list(csv.DictReader(f))


def remove_stale_temp_files(out: str | os.PathLike) -> int:
    """Delete ``.*.tmp`` leftovers of a killed build under ``out``; returns how many were removed."""
    n = 0
    for p in Path(out).rglob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def prune_unlisted(out: str | os.PathLike, keep: set[str]) -> int:
    """Delete WAVs under ``<out>/{train,valid,test}/`` whose relative path is not in ``keep`` (left over from
    an earlier, larger build or a killed one), so the manifest always matches the files. Returns the count."""
    out = Path(out)
    n = 0
    for split in SPLITS:
        for p in (out / split).rglob("*.wav"):
            if p.relative_to(out).as_posix() not in keep:
                p.unlink()
                n += 1
    if n:
        log.info("removed %d WAVs not in this build's manifest", n)
    return n


def split_summary(rows: Iterable[dict]) -> dict[str, dict[str, float]]:
    """{split: {"files": n, "seconds": total duration}} from manifest-like rows (``split``, ``duration``)."""
    out = {s: {"files": 0, "seconds": 0.0} for s in SPLITS}
    for r in rows:
        s = out.setdefault(r["split"], {"files": 0, "seconds": 0.0})
        s["files"] += 1
        s["seconds"] += float(r["duration"])
    for s in out.values():
        s["seconds"] = round(s["seconds"], 3)
    return out


def build_options(out: str | os.PathLike) -> dict | None:
    """The ``options`` of the build in ``out`` (its dataset.json), or None when there is none readable. Builds
    from before recipe versions existed get ``"recipe": 1``."""
    try:
        options = json.loads((Path(out) / DATASET_JSON).read_text())["options"]
        return {"recipe": 1, **options}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_seed(out: str | os.PathLike, seed: int, recipe: int = 1) -> None:
    """ValueError if ``out`` already holds a build made with another seed or another recipe version
    (its files would be mixed up)."""
    options = build_options(out)
    if options is None or "seed" not in options:
        return
    if options["seed"] != seed:
        raise ValueError(f"{out} was built with --seed {options['seed']}; re-run with --seed {options['seed']} to "
                         f"resume, or use a new --out for seed {seed}")
    if options["recipe"] != recipe:
        raise ValueError(f"{out} was built with recipe version {options['recipe']} of this data set and this code "
                         f"builds version {recipe}; delete {out} or use a new --out to build it afresh")


def write_dataset_json(out: str | os.PathLike, name: str, clip_length: int, rows: Sequence[dict],
                       tool_versions: dict[str, str], options: dict, command: str) -> Path:
    """``<out>/dataset.json``: name, sample rate, clip length, per-split counts, build command
    (``command``: the equivalent CLI call), options and tool versions."""
    summary = split_summary(rows)
    info = {
        "name": name,
        "sample_rate": SAMPLE_RATE,
        "clip_length": clip_length,
        "clip_seconds": clip_length / SAMPLE_RATE,
        "counts": {k: v["files"] for k, v in summary.items()},
        "seconds": {k: v["seconds"] for k, v in summary.items()},
        "total_files": len(rows),
        "build_command": command,
        "options": options,
        "tool_versions": tool_versions,
    }
    path = Path(out) / DATASET_JSON
    write_json_atomic(path, info)
    return path


def python_versions(*modules: str) -> dict[str, str]:
    """{module: __version__} for importable modules (used in dataset.json)."""
    import importlib

    out = {"python": sys.version.split()[0]}
    for m in modules:
        try:
            out[m] = str(getattr(importlib.import_module(m), "__version__", "unknown"))
        except ImportError:
            out[m] = "missing"
    return out


# -------------------------------------------------------------------------------------------- parallel
def _die_with_parent() -> None:
    """Pool initializer: on Linux, ask the kernel to SIGTERM this worker when the build process dies (a
    killed build would otherwise leave workers blocked on the task queue forever)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def map_ordered(fn: Callable, items: Sequence, workers: int, desc: str, window: int | None = None,
                progress: bool = True) -> Iterator:
    """Yield ``fn(item)`` for each item in order, computed by a process pool of ``workers`` (1 = inline).

    At most ``window`` items are in flight (default 4 * workers), so the consumer can stop early (close the
    generator) without the pool having run the whole list. Shows a tqdm bar on stderr when ``progress``.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="it", disable=not progress, file=sys.stderr)
    try:
        if workers <= 1:
            for item in items:
                yield fn(item)
                bar.update(1)
            return
        from collections import deque
        from concurrent.futures import ProcessPoolExecutor

        window = window or 4 * workers
        with ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent) as pool:
            pending: deque = deque()
            it = iter(items)
            try:
                for item in it:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= window:
                        yield pending.popleft().result()
                        bar.update(1)
                while pending:
                    yield pending.popleft().result()
                    bar.update(1)
            finally:
                for f in pending:
                    f.cancel()
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------- audio
def to_mono(audio: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> (n,) float32 by averaging channels."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, orig_sr: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n,) float32 at ``orig_sr`` -> (ceil(n * sample_rate / orig_sr),) float32 (librosa, soxr_hq)."""
    if orig_sr == sample_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import librosa

    out = librosa.resample(audio, orig_sr=orig_sr, target_sr=sample_rate, res_type="soxr_hq")
    return out.astype(np.float32)


def warm_up_librosa() -> None:
    """Import librosa and run trim/resample once (~2 s of lazy imports and JIT) in the parent process, so
    forked pool workers inherit the warm state instead of each paying for it."""
    import librosa

    x = np.random.default_rng(0).standard_normal(8192).astype(np.float32)
    librosa.effects.trim(x, top_db=35)
    resample(x, 22050, SAMPLE_RATE)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file soundfile (or, failing that, librosa/audioread) can read -> mono (n,) float32 at
    ``sample_rate``. Raises the decoder's exception for unreadable files."""
    import soundfile as sf

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError:
        if Path(path).suffix.lower() in CORE_SNDFILE_EXTENSIONS:
            raise  # a broken WAV/FLAC/AIFF: report libsndfile's reason, audioread would not do better
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            audio, sr = librosa.load(str(path), sr=None, mono=True)
    return resample(to_mono(audio), int(sr), sample_rate)
