"""Data set builders (real espeak-ng/flite/fluidsynth runs, --small) and the audio loaders."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi_core.data import common, piano_synth, sc09_synth
from sashimi_core.data.loaders import (
    AudioClipDataset,
    detect_layout,
    resolve_dataset,
    speech_commands_set,
    split_files,
)
from sashimi_core.ops.quantize import ZERO_TOKEN, decode, encode

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sashimi_core.data", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, f"{args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
    return r


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"system tools not installed: {missing} (apt-get install {' '.join(missing)})")


def manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def wavs_on_disk(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.wav")}


def snapshot(root: Path) -> dict[str, int]:
    return {p: (root / p).stat().st_mtime_ns for p in wavs_on_disk(root)}


@pytest.fixture(scope="session")
def sc09_small(tmp_path_factory) -> Path:
    need("espeak-ng", "flite")
    out = tmp_path_factory.mktemp("sc09") / "sc09-synth"
    cli("build", "sc09-synth", "--out", str(out), "--small", "--seed", "3", "--no-progress")
    return out


@pytest.fixture(scope="session")
def piano_small(tmp_path_factory) -> Path:
    need("fluidsynth")
    if not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file():
        pytest.skip("soundfont missing (apt-get install fluid-soundfont-gm)")
    pytest.importorskip("music21")
    out = tmp_path_factory.mktemp("piano") / "piano-synth"
    cli("build", "piano-synth", "--out", str(out), "--small", "--no-progress")
    return out


# ------------------------------------------------------------------------------------------ sc09-synth
def test_sc09_small_files_and_manifest(sc09_small):
    rows = manifest(sc09_small)
    assert len(rows) == 300
    assert list(rows[0]) == ["file", "split", "label", "speaker", "duration", "source", "voice", "rate",
                             "pitch", "seed"]
    assert {r["file"] for r in rows} == wavs_on_disk(sc09_small)
    for r in rows:
        split, label, _ = r["file"].split("/")
        assert (split, label) == (r["split"], r["label"])
        info = sf.info(str(sc09_small / r["file"]))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
        assert 120 <= int(r["rate"]) <= 220 and 20 <= int(r["pitch"]) <= 80
    assert {r["source"] for r in rows} == {"espeak-ng", "flite"}
    assert {r["label"] for r in rows} == set("zero one two three four five six seven eight nine".split())
    meta = json.loads((sc09_small / "dataset.json").read_text())
    assert meta["sample_rate"] == 16000 and meta["clip_length"] == 16000
    assert meta["counts"] == {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
    assert "espeak-ng" in meta["tool_versions"] and "sc09-synth" in meta["build_command"]
    audio, _ = sf.read(str(sc09_small / rows[0]["file"]))
    assert 0.25 < np.abs(audio).max() <= 0.95  # random peak level 0.3-0.9 plus light noise


def test_sc09_no_speaker_in_two_splits(sc09_small):
    rows = manifest(sc09_small)
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r["speaker"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
    assert counts["train"] > 0.6 * len(rows) and counts["valid"] > 0 and counts["test"] > 0


def test_sc09_rerun_is_idempotent_and_deterministic(sc09_small, tmp_path):
    before, text = snapshot(sc09_small), (sc09_small / "manifest.csv").read_text()
    cli("build", "sc09-synth", "--out", str(sc09_small), "--small", "--seed", "3", "--no-progress")
    assert snapshot(sc09_small) == before  # nothing rebuilt
    assert (sc09_small / "manifest.csv").read_text() == text
    # Clip i depends only on (seed, i): a 12-clip build reproduces the first 12 clips byte for byte.
    other = tmp_path / "prefix"
    sc09_synth.build(other, clips=12, seed=3, workers=1, progress=False)
    rows = manifest(other)
    assert rows == manifest(sc09_small)[:12]
    for r in rows:
        assert (other / r["file"]).read_bytes() == (sc09_small / r["file"]).read_bytes()


def test_other_seed_into_same_folder_is_refused(sc09_small):
    with pytest.raises(ValueError, match="built with --seed 3"):
        sc09_synth.build(sc09_small, seed=4, small=True, progress=False)


def test_build_of_another_recipe_version_is_refused(tmp_path):
    out = tmp_path / "old"
    sc09_synth.build(out, clips=4, seed=0, workers=1, progress=False)
    info = json.loads((out / "dataset.json").read_text())
    assert info["options"]["recipe"] == sc09_synth.RECIPE
    del info["options"]["recipe"]  # as written before recipe versions existed: version 1
    (out / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="recipe version 1 .* builds version 2"):
        sc09_synth.build(out, clips=4, seed=0, workers=1, progress=False)


def test_sc09_noise_floor_is_light(sc09_small):
    """Recipe 2: the quietest 10-ms frames of a clip hold only the U(-80, -60) dBFS noise."""
    floors = []
    for r in manifest(sc09_small)[:40]:
        audio, _ = sf.read(sc09_small / r["file"], dtype="float32")
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        floors.append(20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)).min() + 1e-12))
    floors = np.array(floors)  # a clip filled with speech to its ends may have no noise-only frame
    assert -78 < np.median(floors) < -62 and np.mean((floors > -85) & (floors < -58)) >= 0.9, floors


def test_missing_tools_give_clear_message(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    r = cli("build", "sc09-synth", "--out", str(tmp_path / "s"), "--small", env=env, check=False)
    assert r.returncode == 2
    assert "espeak-ng not found" in r.stderr and "apt-get install espeak-ng" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("build", "piano-synth", "--out", str(tmp_path / "p"), "--small", env=env, check=False)
    assert r.returncode == 2
    assert "fluidsynth not found" in r.stderr and "apt-get install fluidsynth" in r.stderr
    if shutil.which("fluidsynth"):
        with pytest.raises(common.MissingToolError, match="apt-get install fluid-soundfont-gm"):
            piano_synth.build(tmp_path / "p", small=True, soundfont=str(tmp_path / "no.sf2"))


# ----------------------------------------------------------------------------------------- piano-synth
def test_piano_small_files_and_manifest(piano_small):
    rows = manifest(piano_small)
    assert 10 <= len(rows) <= 40
    assert list(rows[0]) == ["file", "split", "piece", "chunk", "duration", "source", "soundfont", "tempo",
                             "transpose"]
    assert {r["file"] for r in rows} == wavs_on_disk(piano_small)
    for r in rows:
        assert r["file"] == f"{r['split']}/{r['piece']}_{int(r['chunk']):03d}.wav"
        info = sf.info(str(piano_small / r["file"]))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 131072, "PCM_16")
        assert 0.85 <= float(r["tempo"]) <= 1.15 and -3 <= int(r["transpose"]) <= 3
    audio, _ = sf.read(str(piano_small / rows[0]["file"]))
    assert np.sqrt(np.mean(audio**2)) > 0.003  # not silent
    meta = json.loads((piano_small / "dataset.json").read_text())
    assert meta["clip_length"] == 131072 and sum(meta["counts"].values()) == len(rows)


def test_piano_no_piece_in_two_splits(piano_small):
    split_of: dict[str, set[str]] = {}
    for r in manifest(piano_small):
        split_of.setdefault(r["piece"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert set().union(*split_of.values()) == {"train", "valid", "test"}


def test_piano_rerun_is_idempotent(piano_small):
    before, text = snapshot(piano_small), (piano_small / "manifest.csv").read_text()
    cli("build", "piano-synth", "--out", str(piano_small), "--small", "--no-progress")
    assert snapshot(piano_small) == before
    assert (piano_small / "manifest.csv").read_text() == text


def test_info_command(piano_small):
    out = cli("info", str(piano_small)).stdout
    assert "layout manifest" in out and "train" in out and "total" in out


# -------------------------------------------------------------------------------------------- loaders
def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype="VORBIS" if path.suffix == ".ogg" else "PCM_16")
    return path


@pytest.fixture
def sc09_folder(tmp_path) -> Path:
    root = tmp_path / "sc09"
    for d in ("zero", "one"):
        for spk in ("aa11", "bb22", "cc33"):
            write(root / d / f"{spk}_nohash_0.wav", tone(1.0 if spk != "cc33" else 0.75, 16000))
    (root / "validation_list.txt").write_text("zero/bb22_nohash_0.wav\none/bb22_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("zero/cc33_nohash_0.wav\none/cc33_nohash_0.wav\n")
    return root


def test_sc09_layout_with_split_lists(sc09_folder):
    assert detect_layout(sc09_folder) == "sc09"
    names = {s: sorted(p.relative_to(sc09_folder).as_posix() for p in split_files(sc09_folder, s))
             for s in ("train", "valid", "test")}
    assert names == {"train": ["one/aa11_nohash_0.wav", "zero/aa11_nohash_0.wav"],
                     "valid": ["one/bb22_nohash_0.wav", "zero/bb22_nohash_0.wav"],
                     "test": ["one/cc33_nohash_0.wav", "zero/cc33_nohash_0.wav"]}
    ds = AudioClipDataset(sc09_folder, "test", length=16000)
    x = ds[0]
    assert x.dtype == torch.int64 and x.shape == (16000,)
    assert (x[12000:] == ZERO_TOKEN).all() and (x[:12000] != ZERO_TOKEN).any()  # 0.75 s padded at the end


def test_sc09_layout_without_lists_uses_speech_commands_hash(sc09_folder):
    (sc09_folder / "validation_list.txt").unlink()
    (sc09_folder / "testing_list.txt").unlink()
    for s in ("train", "valid", "test"):
        for p in split_files(sc09_folder, s):
            assert speech_commands_set(p.name) == s


@pytest.fixture
def flat_folder(tmp_path) -> Path:
    root = tmp_path / "flat"
    write(root / "a_8k.wav", tone(1.0, 8000), sr=8000)
    write(root / "b_44k_stereo.wav", np.stack([tone(1.0, 44100), np.zeros(44100, np.float32)], 1), sr=44100)
    write(root / "c_22k.flac", tone(2.5, 22050), sr=22050)
    (root / "d_corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    write(root / "e_too_short.wav", tone(0.02, 16000))  # 320 samples < min_length 4000 // 8
    for i in range(5):
        write(root / f"f_{i}.wav", tone(3.0, 16000, freq=220 * (i + 1)))
    (root / "notes.txt").write_text("not audio")
    return root


def test_flat_folder_mixed_rates_stereo_corrupt_short(flat_folder):
    assert detect_layout(flat_folder) == "beethoven"  # flat, clips <= 10 s
    files = sorted(p.name for p in flat_folder.iterdir() if p.suffix in (".wav", ".flac"))
    parts = [[p.name for p in split_files(flat_folder, s)] for s in ("train", "valid", "test")]
    assert sum(parts, []) == files and len(parts[0]) == int(0.88 * len(files))
    ds = AudioClipDataset(flat_folder, "train", length=4000)
    assert [Path(p).name for p, _ in ds.skipped] == ["d_corrupt.wav", "e_too_short.wav"]
    assert "unreadable" in ds.skipped[0][1] and "too short" in ds.skipped[1][1]
    lengths = dict(zip((p.name for p in ds.files), ds.lengths, strict=True))
    assert lengths["a_8k.wav"] == 16000 and lengths["b_44k_stereo.wav"] == 16000
    assert abs(lengths["c_22k.flac"] - 40000) <= 1
    stereo = ds.audio([p.name for p in ds.files].index("b_44k_stereo.wav"))
    assert 0.2 < np.abs(stereo[1000:-1000]).max() < 0.3  # (sine + silence) / 2
    assert all(ds[i].shape == (4000,) for i in range(len(ds)))


def test_long_flat_folder_is_youtubemix_and_nested_is_folder(tmp_path):
    for i in range(3):
        write(tmp_path / "ytm" / f"{i}.wav", tone(11.0, 8000), sr=8000)
    assert detect_layout(tmp_path / "ytm") == "youtubemix"
    write(tmp_path / "nested" / "x" / "a.wav", tone(0.5, 16000))
    write(tmp_path / "nested" / "y" / "b.ogg", tone(0.5, 16000))
    assert detect_layout(tmp_path / "nested") == "folder"
    write(tmp_path / "splits" / "train" / "a.wav", tone(0.5, 16000))
    write(tmp_path / "splits" / "validation" / "b.wav", tone(0.5, 16000))
    assert detect_layout(tmp_path / "splits") == "split-folders"
    assert [p.name for p in split_files(tmp_path / "splits", "valid")] == ["b.wav"]


def test_crops_deterministic_and_segments_cover_file(tmp_path):
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(10_000)).astype(np.float32)
    write(tmp_path / "long" / "train" / "a.wav", audio)
    ds1 = AudioClipDataset(tmp_path / "long", "train", length=3000, seed=5)
    ds2 = AudioClipDataset(tmp_path / "long", "train", length=3000, seed=5)
    assert len(ds1) == 4  # 3 full segments + a 1000-sample tail >= min_length (375)
    assert all(torch.equal(ds1[i], ds2[i]) for i in range(len(ds1)))
    first = [ds1[i] for i in range(len(ds1))]
    ds1.set_epoch(1)
    assert any(not torch.equal(a, ds1[i]) for i, a in enumerate(first))
    ds2.set_epoch(1)
    assert all(torch.equal(ds1[i], ds2[i]) for i in range(len(ds1)))
    fixed = AudioClipDataset(tmp_path / "long", "train", length=3000, random_crop=False)
    joined = np.concatenate([fixed.crop(i) for i in range(len(fixed))])
    stored = sf.read(str(tmp_path / "long" / "train" / "a.wav"), dtype="float32")[0]
    np.testing.assert_array_equal(joined[:10_000], stored)
    assert (joined[10_000:] == 0).all()
    lazy = AudioClipDataset(tmp_path / "long", "train", length=3000, seed=5, cache_mb=0)
    assert all(torch.equal(lazy[i], first[i]) for i in range(len(lazy)))
    ds1.set_epoch(0)
    ds1.precompute_tokens()
    assert all(torch.equal(ds1[i], first[i]) for i in range(len(ds1)))


@pytest.mark.parametrize("quantization", ["mu-law", "linear"])
def test_quantization_round_trip(tmp_path, quantization):
    write(tmp_path / "q" / "train" / "a.wav", tone(1.0, 16000, amp=0.9))
    ds = AudioClipDataset(tmp_path / "q", "train", length=8000, quantization=quantization)
    tokens, audio = ds[0], ds.crop(0)
    assert torch.equal(tokens, encode(audio, quantization))  # cached file tokens == quantised crop
    assert tokens.min() >= 0 and tokens.max() <= 255
    assert torch.equal(encode(decode(tokens, quantization), quantization), tokens)
    err = (decode(tokens, quantization).numpy() - audio).__abs__().max()
    assert err <= (1 / 128 if quantization == "linear" else 0.04)


def test_dataloader_batches(sc09_small):
    ds = AudioClipDataset(sc09_small, "valid")
    assert ds.layout == "manifest" and len(ds) == sum(r["split"] == "valid" for r in manifest(sc09_small))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)))
    assert batch.shape == (4, 16000) and batch.dtype == torch.int64


def test_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files found in .*empty"):
        AudioClipDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AudioClipDataset(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.wav").write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError, match="could be used"):
        AudioClipDataset(tmp_path / "bad", "test")
    with pytest.raises(ValueError, match="unknown split"):
        AudioClipDataset(tmp_path / "bad", "dev")


def test_resolve_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m sashimi_core.data build sc09-synth"):
        resolve_dataset("sc09-synth", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a folder nor a known data set"):
        resolve_dataset("mystery", data_root=tmp_path)
    (tmp_path / "piano-synth").mkdir()
    assert resolve_dataset("piano-synth", data_root=tmp_path) == tmp_path / "piano-synth"
    assert resolve_dataset(str(tmp_path)) == tmp_path


def test_atomic_wav_write_leaves_no_temp(tmp_path):
    common.write_wav_atomic(tmp_path / "x" / "a.wav", tone(0.1, 16000))
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["a.wav"]
    assert sf.info(str(tmp_path / "x" / "a.wav")).subtype == "PCM_16"
