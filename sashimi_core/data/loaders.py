"""Audio data sets for training: files on disk -> int64 token clips (length,).

Supported layouts (:func:`detect_layout`, checked in this order):

- ``manifest``: ``<root>/manifest.csv`` with ``file`` and ``split`` columns (both builders in this package).
- ``sc09``: the SC09 / Speech Commands folders ``zero/ .. nine/`` of 1 s WAVs. ``validation_list.txt`` and
  ``testing_list.txt`` (paths like ``zero/0a2b400e_nohash_0.wav``) pick valid/test, all else is train; with
  no lists, Speech Commands' own hash of the speaker id (``which_set``, 10%/10%) decides.
- ``split-folders``: ``<root>/train``, ``<root>/valid`` (or ``validation``/``val``), ``<root>/test``.
- ``youtubemix`` / ``beethoven``: a flat folder of audio files (median length > 10 s / <= 10 s). As in the
  SaShiMi reference, files sorted by name are split 88/6/6: ``[:int(.88n)]``, ``[int(.88n):int(.94n)]``,
  ``[int(.94n):]``.
- ``folder``: any folder tree of audio files; relative paths sorted and split 88/6/6 the same way.

Every file is decoded once (soundfile, else librosa), mixed to mono and resampled to ``sample_rate``. When
the whole split fits in ``cache_mb`` it is decoded up front (so unreadable files are found at once),
otherwise lazily through an LRU cache. The first time a file is used for an item it is quantised as a whole
and its cache entry becomes uint8 tokens, so later epochs only slice (encode is elementwise, so slicing
tokens equals quantising the slice).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..ops.quantize import encode
from . import common

log = logging.getLogger(__name__)

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LAYOUTS = ("manifest", "sc09", "split-folders", "youtubemix", "beethoven", "folder")
SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
BUILDABLE = ("sc09-synth", "piano-synth")
DOWNLOADABLE = ("sc09", "youtubemix", "beethoven")


# ------------------------------------------------------------------------------------------------ layout
def list_audio(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted audio files (by extension) under ``folder``, skipping hidden files and folders."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in common.AUDIO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _median_seconds(files: list[Path]) -> float:
    import soundfile as sf

    secs = []
    for f in files[:: max(1, len(files) // 20)]:
        try:
            secs.append(sf.info(str(f)).duration)
        except Exception:  # noqa: BLE001 - unreadable files are dealt with when loading
            continue
    return float(np.median(secs)) if secs else 0.0


def detect_layout(root: str | os.PathLike) -> str:
    """One of :data:`LAYOUTS` for ``root``; ValueError if it holds no audio, FileNotFoundError if missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if (root / common.MANIFEST).is_file():
        return "manifest"
    if any(list_audio(root / d) for d in DIGITS):
        return "sc09"
    if list_audio(root / "train"):
        return "split-folders"
    flat = list_audio(root, recursive=False)
    everything = list_audio(root)
    if not everything:
        raise ValueError(
            f"no audio files found in {root}: expected a manifest.csv "
            f"(from `python -m sashimi_core.data build`), SC09 digit folders (zero/ .. nine/), "
            f"train/valid/test folders, or audio files "
            f"({', '.join(common.AUDIO_EXTENSIONS)})")
    if flat and len(flat) == len(everything):
        return "youtubemix" if _median_seconds(flat) > 10.0 else "beethoven"
    return "folder"


def _ratio_split(files: list[Path], split: str) -> list[Path]:
    n = len(files)
    a, b = int(0.88 * n), int(0.94 * n)
    return {"train": files[:a], "valid": files[a:b], "test": files[b:]}[split]


def speech_commands_set(filename: str, validation_percentage: float = 10,
                        testing_percentage: float = 10) -> str:
    """Speech Commands' ``which_set``: split from a hash of the speaker in ``<speaker>_nohash_<n>.wav``."""
    hash_name = re.sub(r"_nohash_.*$", "", os.path.basename(filename))
    max_per_class = 2**27 - 1
    h = int(hashlib.sha1(hash_name.encode()).hexdigest(), 16)
    pct = (h % (max_per_class + 1)) * (100.0 / max_per_class)
    if pct < validation_percentage:
        return "valid"
    return "test" if pct < validation_percentage + testing_percentage else "train"


def split_files(root: str | os.PathLike, split: str, layout: str | None = None) -> list[Path]:
    """Files of ``split`` ("train"/"valid"/"test") under ``root`` for ``layout`` (auto-detected if None)."""
    root, split = Path(root), common.normalize_split(split)
    layout = layout or detect_layout(root)
    if layout == "manifest":
        rows = common.read_manifest(root)
        return [root / r["file"] for r in rows if common.normalize_split(r["split"]) == split]
    if layout == "sc09":
        lists = {s: root / f"{name}_list.txt" for s, name in (("valid", "validation"), ("test", "testing"))}
        listed = {s: set(p.read_text().split()) if p.is_file() else None for s, p in lists.items()}
        use_hash = all(v is None for v in listed.values())
        out = []
        for f in (f for d in DIGITS for f in list_audio(root / d)):
            rel = f.relative_to(root).as_posix()
            if use_hash:
                s = speech_commands_set(rel)
            else:
                s = next((s for s, names in listed.items() if names and rel in names), "train")
            if s == split:
                out.append(f)
        return out
    if layout == "split-folders":
        return next((list_audio(root / d) for d in SPLIT_DIRS[split] if (root / d).is_dir()), [])
    if layout in ("youtubemix", "beethoven"):
        return _ratio_split(list_audio(root, recursive=False), split)
    if layout == "folder":
        return _ratio_split(list_audio(root), split)
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


# ------------------------------------------------------------------------------------------------ dataset
class AudioClipDataset(Dataset):
    """Token clips from one split of an audio folder.

    Item ``i`` is an int64 tensor (length,) of tokens in [0, 255] (``sashimi_core.ops.quantize.encode``);
    silence padding encodes to token 128. Each file contributes ``n // length`` segments plus one for a tail
    of at least ``min_length`` samples (padded with silence at the end, as SC09 clips are), so a file shorter
    than ``length`` gives one padded item and one shorter than ``min_length`` (default ``length // 8``) is
    skipped. ``random_crop=False``: item = fixed non-overlapping segment. ``random_crop=True``: item = a
    random ``length`` window of the same file, drawn from ``(seed, epoch, index)`` only, so resuming is exact;
    call :meth:`set_epoch` before each epoch (not visible to persistent DataLoader workers).

    Attributes: ``files`` (kept paths), ``lengths`` (samples at ``sample_rate``), ``skipped`` (list of
    (path, reason) for unreadable, empty and too-short files), ``layout``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", length: int = 16000,
                 quantization: str = "mu-law", sample_rate: int = common.SAMPLE_RATE,
                 random_crop: bool = True, seed: int = 0, min_length: int | None = None,
                 layout: str | None = None, cache_mb: float = 2048):
        self.root, self.split = Path(root), common.normalize_split(split)
        self.length, self.quantization, self.sample_rate = int(length), quantization, int(sample_rate)
        self.random_crop, self.seed, self.epoch = random_crop, int(seed), 0
        self.min_length = int(min_length) if min_length is not None else max(1, self.length // 8)
        self.layout = layout or detect_layout(self.root)
        self._pad_token = int(encode(np.zeros(1, np.float32), quantization)[0])  # also checks the name
        candidates = split_files(self.root, self.split, self.layout)
        if not candidates:
            raise ValueError(
                f"split {self.split!r} of {self.root} (layout {self.layout!r}) has no audio files")
        self.skipped: list[tuple[str, str]] = []
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_limit = int(cache_mb * 2**20)
        self._cache_bytes = 0
        self._scan(candidates)

    # -- scanning
    def _probe(self, path: Path) -> tuple[int, np.ndarray | None]:
        """Samples at ``sample_rate`` from the header; decodes the file when the header is not readable."""
        import soundfile as sf

        if not path.exists():
            raise FileNotFoundError("file listed but missing")
        try:
            info = sf.info(str(path))
            return math.ceil(info.frames * self.sample_rate / info.samplerate), None
        except Exception:  # noqa: BLE001 - not a soundfile format: decode it (librosa/audioread)
            audio = common.load_audio(path, self.sample_rate)
            return audio.size, audio

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        log.warning("skipping %s: %s", path, reason)

    def _scan(self, candidates: list[Path]) -> None:
        files, lengths, decoded = [], [], []
        for p in candidates:
            try:
                n, audio = self._probe(p)
            except Exception as e:  # noqa: BLE001
                self._skip(p, f"unreadable: {type(e).__name__}: {e}")
                continue
            files.append(p), lengths.append(n), decoded.append(audio)
        preload = sum(lengths) * 4 <= self._cache_limit
        self.files, self.lengths = [], []
        for p, n, audio in zip(files, lengths, decoded, strict=True):
            if preload and audio is None:
                try:
                    audio = self._decode(p)  # actual decoded length (a truncated file is shorter)
                except Exception as e:  # noqa: BLE001
                    self._skip(p, f"unreadable: {type(e).__name__}: {e}")
                    continue
            if audio is not None:
                n = audio.size
            if n == 0:
                self._skip(p, "empty")
                continue
            if n < self.min_length:
                self._skip(p, f"too short ({n} samples < min_length {self.min_length})")
                continue
            if audio is not None:
                self._remember(len(self.files), audio)
            self.files.append(p)
            self.lengths.append(n)
        if not self.files:
            reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in self.skipped[:5])
            more = " ..." if len(self.skipped) > 5 else ""
            raise ValueError(f"none of the {len(candidates)} audio files of split {self.split!r} in "
                             f"{self.root} could be used ({reasons}{more})")
        self.items: list[tuple[int, int]] = []  # (file index, segment start)
        for fi, n in enumerate(self.lengths):
            n_seg, tail = divmod(n, self.length)
            n_seg += 1 if tail >= self.min_length or n_seg == 0 else 0
            self.items.extend((fi, k * self.length) for k in range(n_seg))

    # -- cache: file index -> float32 audio (after decoding) or uint8 tokens (after first use as tokens)
    def _decode(self, path: Path, n: int | None = None) -> np.ndarray:
        """(n,) float32; ``n`` given: trimmed/padded to the length the index was built with."""
        audio = common.load_audio(path, self.sample_rate)
        if n is None or audio.size == 0:
            return audio
        return audio[:n] if audio.size >= n else np.pad(audio, (0, n - audio.size))

    def _remember(self, fi: int, array: np.ndarray) -> None:
        old = self._cache.pop(fi, None)
        self._cache_bytes -= old.nbytes if old is not None else 0
        self._cache[fi] = array
        self._cache_bytes += array.nbytes
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= dropped.nbytes

    def audio(self, fi: int) -> np.ndarray:
        """File ``fi`` as float32 audio (lengths[fi],) at ``sample_rate`` (cached until tokenised)."""
        cached = self._cache.get(fi)
        if cached is not None and cached.dtype == np.float32:
            self._cache.move_to_end(fi)
            return cached
        audio = self._decode(self.files[fi], self.lengths[fi])
        if audio.size == 0:
            raise RuntimeError("decoded to no samples")
        if cached is None:
            self._remember(fi, audio)
        return audio

    def tokens(self, fi: int) -> np.ndarray:
        """File ``fi`` quantised: uint8 (lengths[fi],). Each file is encoded once, then only sliced; the
        cached float audio is replaced by its tokens (4x smaller)."""
        cached = self._cache.get(fi)
        if cached is not None and cached.dtype == np.uint8:
            self._cache.move_to_end(fi)
            return cached
        tok = encode(self.audio(fi), self.quantization).numpy().astype(np.uint8)
        self._remember(fi, tok)
        return tok

    def precompute_tokens(self) -> None:
        """Tokenise every file now (in this process), e.g. before handing the data set to DataLoader
        workers, which would otherwise each re-encode the files they touch in every epoch."""
        for fi in range(len(self.files)):
            self.tokens(fi)

    # -- items
    def set_epoch(self, epoch: int) -> None:
        """Choose the random crops of ``epoch`` (call before each epoch; resuming at an epoch is exact)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _window(self, index: int, get) -> tuple[np.ndarray, int]:
        """(whole file via ``get(fi)``, crop start) for item ``index``; a file that fails to decode late
        (lazy mode) is recorded in ``skipped`` and replaced by the next file."""
        fi, start = self.items[index]
        for _attempt in range(len(self.files)):
            try:
                data = get(fi)
                break
            except Exception as e:  # noqa: BLE001
                self._skip(self.files[fi], f"unreadable: {type(e).__name__}: {e}")
                fi, start = (fi + 1) % len(self.files), 0
        else:
            raise RuntimeError(f"no readable audio left in {self.root}")
        if self.random_crop:
            start = 0
            if data.size > self.length:
                rng = np.random.default_rng([self.seed, self.epoch, index])
                start = int(rng.integers(0, data.size - self.length + 1))
        return data, start

    def crop(self, index: int) -> np.ndarray:
        """Item ``index`` as float32 audio (length,) in [-1, 1], silence-padded at the end (the audio that
        ``self[index]`` quantises; re-decodes the file once it has been tokenised)."""
        audio, start = self._window(index, self.audio)
        clip = audio[start:start + self.length]
        return np.pad(clip, (0, self.length - clip.size)) if clip.size < self.length else clip

    def __getitem__(self, index: int) -> torch.Tensor:
        """Item ``index``: int64 tokens (length,); padding is the token of silence (128)."""
        tok, start = self._window(index, self.tokens)
        out = np.full(self.length, self._pad_token, dtype=np.int64)
        clip = tok[start:start + self.length]
        out[:clip.size] = clip
        return torch.from_numpy(out)

    @property
    def seconds(self) -> float:
        return sum(self.lengths) / self.sample_rate

    def __repr__(self) -> str:
        return (f"AudioClipDataset({str(self.root)!r}, split={self.split!r}, layout={self.layout!r}, "
                f"files={len(self.files)}, items={len(self)}, length={self.length}, "
                f"quantization={self.quantization!r}, skipped={len(self.skipped)})")


# ------------------------------------------------------------------------------------------------ helpers
def resolve_dataset(name_or_path: str | os.PathLike, data_root: str | os.PathLike = "data") -> Path:
    """A data set name ("sc09-synth", "piano-synth", "sc09", "youtubemix", "beethoven") -> ``data_root/name``,
    or an existing folder path as is. FileNotFoundError says how to build or where to put it."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    name = str(name_or_path)
    candidate = Path(data_root) / name
    if candidate.is_dir():
        return candidate
    if name in BUILDABLE:
        raise FileNotFoundError(
            f"data set {name!r} not found at {candidate}: build it with "
            f"`python -m sashimi_core.data build {name} --out {candidate}` "
            f"(add --small for a quick test set)")
    if name in DOWNLOADABLE:
        raise FileNotFoundError(
            f"data set {name!r} not found at {candidate}: download it (see the SaShiMi / state-spaces "
            f"README) and unpack it there, or build the offline stand-in "
            f"`{'sc09-synth' if name == 'sc09' else 'piano-synth'}`")
    raise FileNotFoundError(f"{name!r} is neither a folder nor a known data set name "
                            f"({', '.join(BUILDABLE + DOWNLOADABLE)}) under {data_root}")


def summarize(root: str | os.PathLike) -> dict:
    """{"layout": ..., "splits": {split: {"files": n, "seconds": s}}} from headers (no decoding)."""
    import soundfile as sf

    root = Path(root)
    layout = detect_layout(root)
    if layout == "manifest":
        rows = common.read_manifest(root)
        missing = sum(not (root / r["file"]).exists() for r in rows)
        return {"layout": layout, "splits": common.split_summary(rows), "missing_files": missing}
    splits = {}
    for s in common.SPLITS:
        files = split_files(root, s, layout)
        secs = 0.0
        for f in files:
            try:
                secs += sf.info(str(f)).duration
            except Exception:  # noqa: BLE001
                continue
        splits[s] = {"files": len(files), "seconds": round(secs, 3)}
    return {"layout": layout, "splits": splits}
