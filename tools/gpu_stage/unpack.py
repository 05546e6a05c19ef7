"""Unpack a token pack (pack.py) into PACK_OUT/train and PACK_OUT/valid WAV folders (16-bit PCM, 16 kHz).

    python tools/gpu_stage/unpack.py PACK_DIR OUT_DIR

Each token is written as its mu-law level; the trainer's encoder maps the 16-bit sample back to the same token.
"""
import json
import lzma
import os
import sys

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from sashimi_core.ops.quantize import decode  # noqa: E402


def unpack(src: str, dst: str) -> None:
    for split in ("train", "valid"):
        with open(f"{src}/{split}.json") as f:
            index = json.load(f)
        with open(f"{src}/{split}.xz", "rb") as f:
            tokens = np.frombuffer(lzma.decompress(f.read()), dtype=np.uint8)
        os.makedirs(f"{dst}/{split}", exist_ok=True)
        at = 0
        for name, n in index:
            audio = decode(torch.from_numpy(tokens[at:at + n].astype(np.int64)), "mu-law").numpy()
            sf.write(f"{dst}/{split}/{name}", audio, 16000, subtype="PCM_16")
            at += n
        print(f"{split}: {len(index)} files, {at:,} tokens")


if __name__ == "__main__":
    unpack(sys.argv[1], sys.argv[2])
