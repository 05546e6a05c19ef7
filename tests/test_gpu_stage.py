"""tools/gpu_stage: a token pack unpacks to WAV folders whose tokens are the original files' tokens."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import ROOT
from sashimi_core.data.loaders import AudioClipDataset
from sashimi_core.ops.quantize import encode


def test_pack_then_unpack_gives_the_same_tokens(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for split, n in (("train", 6), ("valid", 2)):
        (data / split).mkdir(parents=True)
        for i in range(n):
            t = np.arange(4000 + 1000 * i) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + rng.normal(0, 10 ** (-1 - i / 3), t.size)
            sf.write(data / split / f"{split}{i}.wav", audio.clip(-1, 1), 16000, subtype="PCM_16")
    pack, out = tmp_path / "pack", tmp_path / "out"
    tool = ROOT / "tools" / "gpu_stage"
    subprocess.run([sys.executable, str(tool / "pack.py"), str(data), str(pack), "0.5", "1.0"], check=True)
    subprocess.run([sys.executable, str(tool / "unpack.py"), str(pack), str(out)], check=True)

    names = [name for name, _ in json.loads((pack / "train.json").read_text())]
    assert names == ["train__train0.wav", "train__train2.wav", "train__train4.wav"]  # every second file
    for split, count in (("train", 3), ("valid", 2)):
        unpacked = sorted((out / split).iterdir())
        assert len(unpacked) == count
        for path in unpacked:
            original = data / split / path.name.split("__", 1)[1]
            want = encode(torch.from_numpy(sf.read(original, dtype="float32")[0]), "mu-law")
            got = encode(torch.from_numpy(sf.read(path, dtype="float32")[0]), "mu-law")
            assert torch.equal(got, want), path.name
    ds = AudioClipDataset(out, "train", length=4000, random_crop=False)  # the trainer reads the unpacked folders
    assert len(ds.files) == 3 and ds.layout == "split-folders"


def test_not_in_sets_aside_an_earlier_stage_files(tmp_path):
    data = tmp_path / "data"
    for split, n in (("train", 8), ("valid", 1)):
        (data / split).mkdir(parents=True)
        for i in range(n):
            sf.write(data / split / f"{split}{i}.wav", np.zeros(800), 16000, subtype="PCM_16")
    tool = ROOT / "tools" / "gpu_stage"
    subprocess.run([sys.executable, str(tool / "pack.py"), str(data), str(tmp_path / "p"), "1.0", "1.0", "--not-in",
                    "0.5"], check=True)
    names = [name for name, _ in json.loads((tmp_path / "p" / "train.json").read_text())]
    assert names == [f"train__train{i}.wav" for i in (1, 3, 5, 7)]  # the files a 0.5 pack did not take


def test_run_stage_fills_its_budget_with_rounds_on_cpu(tmp_path):
    """The whole lease script on CPU with the tiny preset: unpack, probe, then cosine rounds from the last
    checkpoint at a third of the learning rate while time is left (SAFETY 0.35 leaves room for a second)."""
    import os
    import tarfile

    from sashimi_core.train.trainer import main as train

    data = tmp_path / "data"
    for split, n in (("train", 4), ("valid", 2)):
        (data / split).mkdir(parents=True)
        for i in range(n):
            t = np.arange(16000) / 16000
            sf.write(data / split / f"{split}{i}.wav", 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t), 16000,
                     subtype="PCM_16")
    tool = ROOT / "tools" / "gpu_stage"
    subprocess.run([sys.executable, str(tool / "pack.py"), str(data), str(tmp_path / "pack"), "1.0", "1.0"],
                   check=True)
    init = tmp_path / "init"
    assert train(["--data", str(data), "--preset", "sashimi-tiny", "--out", str(init), "--steps", "2", "--batch",
                  "2", "--length", "512", "--val-every", "0", "--sample-every", "0", "--threads", "1",
                  "--no-progress"]) == 0
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), DATA=str(tmp_path / "unpacked"), INIT=str(init / "checkpoint"),
               PRESET="sashimi-tiny", DEV="cpu", B="2", L="512", LR="3e-3", BUDGET="45", SAFETY="0.35",
               RESERVE="4", MIN_ROUND="10", MIN_STEPS="10", PROBE_STEPS="40", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(tool / "run_stage.py"), str(tmp_path / "pack")], check=True, env=env,
                   cwd=ROOT, timeout=120)
    with tarfile.open(out / "stage.tar") as t:
        names = t.getnames()
        configs = [json.load(t.extractfile(n)) for n in sorted(names) if n.endswith("train_config.json")]
    assert "checkpoint/model.safetensors" in names and "run1-metrics.jsonl" in names
    assert len(configs) >= 2, (out / "driver.log").read_text()
    assert configs[0]["init_from"] == str(init / "checkpoint") and configs[1]["lr"] == pytest.approx(1e-3)
    assert configs[1]["init_from"].endswith("run1-init")
