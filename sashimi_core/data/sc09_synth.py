"""``sc09-synth``: an offline stand-in for SC09 (spoken digits "zero".."nine", 1 s at 16 kHz).

Speech comes from two formant/diphone synthesisers available as Debian packages:

- espeak-ng: every non-MBROLA English voice (``espeak-ng --voices=en``) x every voice variant
  (``espeak-ng --voices=variant``: +m1..m8, +f1..f5, +croak, +whisper, +klatt, ...) plus the plain voice,
  i.e. ~800 "speakers"; rate 120-220 wpm (``-s``), pitch 20-80 (``-p``).
- flite: its 16 kHz general-domain voices (kal16, awb, rms, slt; ``kal`` (8 kHz copy of kal16) and the
  limited-domain ``awb_time`` are left out); rate via ``duration_stretch``, pitch via ``int_f0_target_mean``.

A speaker is a voice including its variant (``en-us+m3``, ``flite:slt``). Speakers are split 80/10/10
into train/valid/test per tool (seeded shuffle), so no speaker is in two splits; every clip of a speaker
goes to that speaker's split. flite has only 4 speakers, so it gets 2/1/1 (any tool with >= 3 speakers
gets at least one per split); it makes ~10% of the clips.

Each clip: synthesise -> 16 kHz mono -> ``librosa.effects.trim`` (top_db=35) -> random placement in / crop
to exactly 16000 samples -> peak level U(0.3, 0.9) -> white noise at U(-80, -60) dBFS RMS (``NOISE_DBFS``; recipe
version 1 used U(-50, -35)) -> 16-bit WAV.
All randomness comes from ``seed_for(seed, clip_index)``, so a build is deterministic for a given seed and
the same installed voices (a different espeak-ng version may list other variants).

Piper (``pip install piper-tts``, 1.8.0) installs fine but ships no voice model; synthesis needs an
``.onnx`` voice downloaded from Hugging Face at run time (``python -m piper.download_voices``), which is not
reachable offline, so it is not used.

Layout (as SC09, plus split folders): ``<out>/<split>/<digit>/<speaker>_nohash_<index>.wav``, and
``<out>/manifest.csv`` with columns :data:`FIELDS`.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import common

log = logging.getLogger(__name__)

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLIP_LENGTH = common.SAMPLE_RATE  # 1 s
FIELDS = ("file", "split", "label", "speaker", "duration", "source", "voice", "rate", "pitch", "seed")
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
FLITE_FRACTION = 0.1
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
DEFAULT_CLIPS = 20000
SMALL_CLIPS = 300
# Version 2 lowered the noise from U(-50, -35) to U(-80, -60) dBFS: under 8-bit mu-law the old noise cost
# ~5 bits/sample in the ~60% of frames that hold no speech, which swamped what a model learns about speech.
RECIPE = 2
NOISE_DBFS = (-80.0, -60.0)


@dataclass(frozen=True)
class Clip:
    """One planned clip; every field is a deterministic function of (seed, index, installed voices)."""

    index: int
    label: str
    speaker: str
    source: str  # "espeak-ng" | "flite"
    voice: str  # espeak-ng "-v" argument (voice+variant) or flite voice name
    rate: int  # words per minute
    pitch: int  # 0-99 (espeak-ng scale)
    seed: int
    split: str

    @property
    def file(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.-]+", "-", self.speaker)
        return f"{self.split}/{self.label}/{slug}_nohash_{self.index:06d}.wav"


# ---------------------------------------------------------------------------------------------- voices
def espeak_voices(espeak: str = "espeak-ng") -> list[str]:
    """Non-MBROLA English voices, e.g. ['en-029', 'en-gb', ...] (MBROLA voices need the mbrola package)."""
    out = subprocess.run([espeak, "--voices=en"], capture_output=True, text=True, check=True).stdout
    voices = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[1] != "variant" and not cols[4].startswith("mb/"):
            voices.add(cols[1])
    return sorted(voices)


def espeak_variants(espeak: str = "espeak-ng") -> list[str]:
    """Voice variant names (``+name``), e.g. ['Alex', 'croak', 'f1', ..., 'whisper']; none with spaces."""
    out = subprocess.run([espeak, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    return sorted({m.group(1) for line in out.splitlines() if (m := re.search(r"!v/(\S+)\s*$", line))})


def list_speakers(tools: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    """{tool: sorted [(speaker id, voice argument)]} for the installed voices."""
    speakers: dict[str, list[tuple[str, str]]] = {}
    if "espeak-ng" in tools:
        variants = [""] + [f"+{v}" for v in espeak_variants()]
        names = [f"{v}{var}" for v in espeak_voices() for var in variants]
        speakers["espeak-ng"] = sorted((name, name) for name in names)
    if "flite" in tools:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        available = set(out.replace("Voices available:", "").split())
        speakers["flite"] = [(f"flite:{v}", v) for v in FLITE_VOICES if v in available]
    return {k: v for k, v in speakers.items() if v}


def split_speakers(speakers: list[str], seed: int) -> dict[str, str]:
    """{speaker: split}: seeded shuffle, then 80/10/10 (at least one speaker per split when n >= 3)."""
    order = list(speakers)
    np.random.default_rng(common.seed_for(seed, 1009)).shuffle(order)
    n = len(order)
    n_valid = max(round(n * SPLIT_FRACTIONS[1]), 1 if n >= 3 else 0)
    n_test = max(round(n * SPLIT_FRACTIONS[2]), 1 if n >= 3 else 0)
    n_train = n - n_valid - n_test
    return {s: "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
            for i, s in enumerate(order)}


def plan(n_clips: int, seed: int, speakers: dict[str, list[tuple[str, str]]]) -> list[Clip]:
    """The deterministic list of clips to build: digits cycle 0..9, speaker/rate/pitch drawn per clip."""
    split_of = {}
    for tool_speakers in speakers.values():
        split_of.update(split_speakers([s for s, _ in tool_speakers], seed))
    tools = sorted(speakers)
    clips = []
    for i in range(n_clips):
        clip_seed = common.seed_for(seed, i)
        rng = np.random.default_rng(clip_seed)
        if len(tools) == 1:
            tool = tools[0]
        else:
            tool = "flite" if ("flite" in speakers and rng.random() < FLITE_FRACTION) else "espeak-ng"
        speaker, voice = speakers[tool][rng.integers(len(speakers[tool]))]
        clips.append(Clip(index=i, label=DIGITS[i % 10], speaker=speaker, source=tool, voice=voice,
                          rate=int(rng.integers(120, 221)), pitch=int(rng.integers(20, 81)),
                          seed=clip_seed, split=split_of[speaker]))
    return clips


# -------------------------------------------------------------------------------------------- synthesis
def synthesize(clip: Clip, wav_path: str) -> None:
    """Run the clip's TTS tool, writing its native-rate WAV to ``wav_path``."""
    if clip.source == "espeak-ng":
        cmd = ["espeak-ng", "-v", clip.voice, "-s", str(clip.rate), "-p", str(clip.pitch), "-w", wav_path,
               clip.label]
    else:
        f0 = {"kal16": 100.0, "awb": 134.0, "rms": 80.0, "slt": 192.0}.get(clip.voice, 120.0)
        cmd = ["flite", "-voice", clip.voice, "--setf", f"duration_stretch={175.0 / clip.rate:.3f}",
               "--setf", f"int_f0_target_mean={f0 * 2 ** ((clip.pitch - 50) / 60):.1f}",
               "-t", clip.label, "-o", wav_path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not os.path.exists(wav_path) or os.path.getsize(wav_path) <= 44:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={r.returncode}): {r.stderr.strip()[-300:]}")


def postprocess(speech: np.ndarray, rng: np.random.Generator, length: int = CLIP_LENGTH) -> np.ndarray:
    """Mono 16 kHz speech (n,) -> (length,) float32: trim, random offset/crop, random peak, white noise."""
    import librosa

    trimmed, _ = librosa.effects.trim(speech, top_db=35)
    if trimmed.size == 0 or np.abs(trimmed).max() < 1e-4:
        raise RuntimeError("synthesised audio is silent")
    if trimmed.size >= length:
        start = int(rng.integers(0, trimmed.size - length + 1))
        clip = trimmed[start:start + length]
    else:
        offset = int(rng.integers(0, length - trimmed.size + 1))
        clip = np.zeros(length, np.float32)
        clip[offset:offset + trimmed.size] = trimmed
    clip = clip * (rng.uniform(0.3, 0.9) / np.abs(clip).max())
    noise_rms = 10 ** (rng.uniform(*NOISE_DBFS) / 20)
    clip = clip + rng.standard_normal(length) * noise_rms
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def build_clip(job: tuple[Clip, str]) -> tuple[dict | None, str | None]:
    """Worker: make one clip unless its WAV exists. Returns (manifest row, None) or (None, error)."""
    clip, out = job
    path = Path(out) / clip.file
    if not path.exists():
        try:
            with tempfile.TemporaryDirectory(prefix="sc09synth-") as tmp:
                raw = os.path.join(tmp, "raw.wav")
                synthesize(clip, raw)
                speech = common.load_audio(raw, common.SAMPLE_RATE)
            audio = postprocess(speech, np.random.default_rng(clip.seed + 1))
            common.write_wav_atomic(path, audio)
        except Exception as e:  # noqa: BLE001 - one bad voice must not kill a 20k-clip build
            return None, f"{clip.file}: {e}"
    return row(clip), None


def row(clip: Clip) -> dict:
    d = asdict(clip)
    d.update(file=clip.file, duration=CLIP_LENGTH / common.SAMPLE_RATE)
    return {k: d[k] for k in FIELDS}


# ----------------------------------------------------------------------------------------------- build
def check_tools(tools: tuple[str, ...]) -> dict[str, str]:
    """MissingToolError unless every tool is installed; returns {tool: version line}."""
    versions = {}
    for tool in tools:
        common.require_tool(tool, {"espeak-ng": "espeak-ng", "flite": "flite"}[tool])
        versions[tool] = common.tool_version([tool, "--version"])
    return versions


def build(out: str | os.PathLike, clips: int | None = None, seed: int = 0, workers: int = 2,
          small: bool = False, tools: tuple[str, ...] = ("espeak-ng", "flite"),
          progress: bool = True) -> dict:
    """Build (or finish building) sc09-synth in ``out``; returns the dataset.json content as a dict.

    Existing clip files are kept (resume); the manifest and dataset.json are rewritten from what exists.
    """
    import json

    versions = check_tools(tools)
    out = Path(out)
    common.check_seed(out, seed, RECIPE)
    out.mkdir(parents=True, exist_ok=True)
    common.remove_stale_temp_files(out)
    n = clips if clips is not None else (SMALL_CLIPS if small else DEFAULT_CLIPS)
    speakers = list_speakers(tools)
    if not speakers:
        raise RuntimeError(f"no usable voices found for {tools}")
    todo = plan(n, seed, speakers)
    log.info("sc09-synth: %d clips, %d speakers, %d workers -> %s", n, sum(map(len, speakers.values())),
             workers, out)
    missing = [c for c in todo if not (out / c.file).exists()]  # finished clips are kept as they are
    errors = []
    if missing:
        common.warm_up_librosa()
        for _, err in common.map_ordered(build_clip, [(c, str(out)) for c in missing], workers, "sc09-synth",
                                         window=64 * max(workers, 1), progress=progress):
            if err is not None:
                errors.append(err)
                log.warning("skipped %s", err)
    rows = [row(c) for c in todo if (out / c.file).exists()]
    common.prune_unlisted(out, {r["file"] for r in rows})
    common.write_manifest(out, rows, FIELDS)
    options = {"clips": n, "seed": seed, "recipe": RECIPE, "small": small, "tools": list(tools),
               "failed": len(errors)}
    versions.update(common.python_versions("librosa", "soundfile", "numpy"))
    command = (f"python -m sashimi_core.data build sc09-synth --out {out} --clips {n} --seed {seed} "
               f"--tools {','.join(tools)}")
    common.write_dataset_json(out, "sc09-synth", CLIP_LENGTH, rows, versions, options, command)
    return json.loads((out / common.DATASET_JSON).read_text())
