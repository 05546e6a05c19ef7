"""Pack part of a built data set as 8-bit mu-law tokens, xz-compressed, small enough to copy to a GPU machine.

    python tools/gpu_stage/pack.py DATA_DIR PACK_DIR TRAIN_FRACTION [VALID_FRACTION]

Takes every (1 / fraction)-th file of the sorted split (train and valid), encodes it exactly as the trainer
does (`sashimi_core.ops.quantize.encode`), and writes PACK_DIR/{split}.xz (concatenated uint8 tokens) and
PACK_DIR/{split}.json ([file name, samples] in order). `unpack.py` turns it back into WAV folders whose tokens
are the same: the shipped GPU stages (docs/training.md) trained on such a pack because a lease copies at most
64 MiB. Only mu-law, 16 kHz, mono data sets.
"""
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


def pack(src: str, dst: str, fractions: dict[str, float]) -> None:
    os.makedirs(dst, exist_ok=True)
    for split, frac in fractions.items():
        files = sorted(split_files(src, split))
        step = 1.0 / frac
        chosen = [files[int(i * step)] for i in range(int(len(files) * frac))]
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
    train = float(sys.argv[3])
    pack(sys.argv[1], sys.argv[2], {"train": train, "valid": float(sys.argv[4]) if len(sys.argv) > 4 else 0.6})
