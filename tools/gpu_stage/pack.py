"""Pack part of a built data set as 8-bit mu-law tokens, xz-compressed, small enough to copy to a GPU machine.

    python tools/gpu_stage/pack.py DATA_DIR PACK_DIR TRAIN_FRACTION [VALID_FRACTION] [--not-in EARLIER_FRACTION]

Takes every (1 / fraction)-th file of the sorted split (train and valid), encodes it exactly as the trainer
does (`sashimi_core.ops.quantize.encode`), and writes PACK_DIR/{split}.xz (concatenated uint8 tokens) and
PACK_DIR/{split}.json ([file name, samples] in order). `unpack.py` turns it back into WAV folders whose tokens
are the same: the shipped GPU stages (docs/training.md) trained on such a pack because a lease copies at most
64 MiB. Only mu-law, 16 kHz, mono data sets. `--not-in F` first sets aside the train files that a pack with
train fraction F chose (an earlier stage's), so a later stage sees new audio.
"""
import argparse
import json
import lzma
import os
import sys

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from sashimi_core.data.loaders import split_files  # noqa: E402
from sashimi_core.ops.quantize import encode  # noqa: E402


def every_nth(files: list[str], fraction: float) -> list[str]:
    """Every (1 / fraction)-th of files, int(len * fraction) of them."""
    return [files[int(i / fraction)] for i in range(int(len(files) * fraction))]


def pack(src: str, dst: str, fractions: dict[str, float], not_in: float | None = None) -> None:
    os.makedirs(dst, exist_ok=True)
    for split, frac in fractions.items():
        files = sorted(split_files(src, split))
        if split == "train" and not_in:
            earlier = set(every_nth(files, not_in))
            files = [f for f in files if f not in earlier]
        chosen = every_nth(files, frac)
        arrays, index = [], []
        for f in chosen:
            audio, sr = sf.read(f, dtype="float32")
            if sr != 16000 or audio.ndim != 1:
                raise ValueError(f"{f}: expected 16 kHz mono, got {sr} Hz, shape {audio.shape}")
            tokens = encode(torch.from_numpy(audio), "mu-law").numpy().astype(np.uint8)
            arrays.append(tokens)
            index.append([os.path.relpath(f, src).replace("/", "__"), len(tokens)])
        blob = lzma.compress(np.concatenate(arrays).tobytes(), preset=6)
        with open(f"{dst}/{split}.xz", "wb") as out:
            out.write(blob)
        with open(f"{dst}/{split}.json", "w") as out:
            json.dump(index, out)
        print(f"{split}: {len(chosen)} of {len(files)} files, {sum(n for _, n in index):,} tokens, "
              f"{len(blob) / 1e6:.1f} MB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("pack_dir")
    ap.add_argument("train_fraction", type=float)
    ap.add_argument("valid_fraction", type=float, nargs="?", default=0.6)
    ap.add_argument("--not-in", type=float, default=None, metavar="EARLIER_FRACTION",
                    help="leave out the train files a pack with this train fraction chose")
    args = ap.parse_args()
    pack(args.data_dir, args.pack_dir, {"train": args.train_fraction, "valid": args.valid_fraction}, args.not_in)
