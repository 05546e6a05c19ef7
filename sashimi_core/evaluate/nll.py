"""Test-set likelihood of a checkpoint: python -m sashimi_core.evaluate <checkpoint_dir> --data <name|folder>

    python -m sashimi_core.evaluate runs/sc09-tiny/checkpoint --data sc09-synth [--split test] [--length 16000]
                                    [--batches N] [--batch 8] [--device cpu|cuda] [--json results.json]

Prints the NLL in bits per sample with a 95% Student-t interval over clips (each clip's mean NLL is one
observation), the number of clips, and the unigram entropy of the evaluated 8-bit tokens: the NLL of the
best model that ignores context, a yardstick for how much the model learned. It also splits the NLL between
the clips' silent 10-ms blocks (RMS below -50 dBFS, the quality proxies' threshold) and the sounding ones: on
data with a noise floor the silent part sits near the noise's entropy and cannot fall, so the sounding part is
where a better model shows. Clips are the split's fixed segments of ``length`` samples (shorter files padded
with silence, as in SC09), in order, so runs compare.
A run folder (``runs/<name>``) is accepted in place of its ``checkpoint/`` sub-folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from sashimi_core.evaluate.quality import SILENCE_DB
from sashimi_core.ops.cauchy import set_threads
from sashimi_core.ops.metrics import mean_ci, nll_bits
from sashimi_core.ops.quantize import decode

BLOCKS_PER_SECOND = 100  # the silence split's blocks: 10 ms


def silent_samples(tokens: torch.Tensor, quantization: str, sample_rate: int,
                   threshold_db: float = SILENCE_DB) -> torch.Tensor:
    """tokens (B, L) -> bool (B, L): True where the sample lies in a 10-ms block (non-overlapping, from the
    clip's start; a short last block counts as it is) whose decoded RMS is below threshold_db dBFS."""
    block = max(1, sample_rate // BLOCKS_PER_SECOND)
    audio = decode(tokens, quantization).double()
    length = audio.shape[-1]
    pad = -length % block
    squares = torch.nn.functional.pad(audio.square(), (0, pad)).unflatten(-1, (-1, block))
    counts = torch.full((squares.shape[-2],), block, dtype=torch.float64)
    counts[-1] -= pad
    rms_db = 10 * torch.log10(squares.sum(-1) / counts + 1e-20)
    return (rms_db < threshold_db).repeat_interleave(block, -1)[..., :length]

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int = 8, max_batches: int | None = None,
             device: str | torch.device | None = None, amp: bool = False, confidence: float = 0.95,
             stop: Callable[[], bool] | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Per-clip NLL (bits per sample) of model on dataset items 0, 1, ... in order.

    dataset: indexable, item (L,) int64 tokens (an AudioClipDataset with random_crop=False). max_batches caps
    the batches evaluated; amp: bfloat16 autocast on CUDA (log-softmax stays float32). stop() is checked
    between batches (a stopped evaluation has "stopped": True and covers only the batches done, maybe none:
    then the numbers are nan); progress(done, total) is called after each batch.
    Returns {"nll_bits", "ci_low", "ci_high", "confidence", "n_clips", "n_samples", "per_clip_nll_bits",
    "unigram_entropy_bits", "stopped"} and, for models with a cfg (quantization, sample_rate), the silence
    split (`silent_samples`): "silent_share" of the samples, "nll_silent_bits" and "nll_sounding_bits" (means
    over all such samples: silent_share weighs them into nll_bits' pooled mean), "sounding_clip_mean" with
    "sounding_ci_low"/"sounding_ci_high" (the per-clip sounding means' average and t-interval) and
    "per_clip_sounding_nll_bits" (None for a clip without sound), for paired comparisons.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n = len(dataset)
    n_batches = -(-n // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max(1, int(max_batches)))
    if n == 0:
        raise ValueError("the evaluation data set is empty")
    was_training = model.training
    model.eval()
    per_clip: list[float] = []
    cfg = getattr(model, "cfg", None)
    n_tokens = getattr(cfg, "n_tokens", 256)
    split = hasattr(cfg, "quantization") and hasattr(cfg, "sample_rate")
    sums = torch.zeros(2, dtype=torch.float64)  # bits summed over silent, sounding samples
    counts_split = torch.zeros(2, dtype=torch.float64)
    per_clip_sounding: list[float | None] = []
    counts = torch.zeros(n_tokens, dtype=torch.float64)
    stopped = False
    try:
        for b in range(n_batches):
            if stop is not None and stop():
                stopped = True
                break
            items = range(b * batch_size, min(n, (b + 1) * batch_size))
            tokens = torch.stack([dataset[i] for i in items]).to(device)  # (B, L)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                logits = model(tokens)  # (B, L, V)
            bits = nll_bits(logits, tokens, reduction="none").double().cpu()  # (B, L)
            per_clip += bits.mean(-1).tolist()
            if split:
                silent = silent_samples(tokens.cpu(), cfg.quantization, cfg.sample_rate)
                sounding_sum, sounding_n = (bits * ~silent).sum(-1), (~silent).sum(-1)
                sums += torch.stack([(bits * silent).sum(), sounding_sum.sum()])
                counts_split += torch.stack([silent.sum(), sounding_n.sum()]).double()
                per_clip_sounding += [s / n if n else None
                                      for s, n in zip(sounding_sum.tolist(), sounding_n.tolist(), strict=True)]
            counts += torch.bincount(tokens.reshape(-1).cpu(), minlength=n_tokens).double()
            if progress is not None:
                progress(b + 1, n_batches)
    finally:
        model.train(was_training)
    nan = float("nan")
    mean, lo, hi = mean_ci(per_clip, confidence) if per_clip else (nan, nan, nan)
    p = counts[counts > 0] / counts.sum()  # unigram_entropy_bits over all evaluated tokens, from counts
    res = {"nll_bits": mean, "ci_low": lo, "ci_high": hi, "confidence": confidence,
           "n_clips": len(per_clip), "n_samples": int(counts.sum()), "per_clip_nll_bits": per_clip,
           "unigram_entropy_bits": float(-(p * torch.log2(p)).sum()) if per_clip else nan, "stopped": stopped}
    if split:
        means = (sums / counts_split).tolist()  # nan where no sample of that kind
        sounding = [x for x in per_clip_sounding if x is not None]
        s_mean, s_lo, s_hi = mean_ci(sounding, confidence) if sounding else (nan, nan, nan)
        res.update(silent_share=float(counts_split[0] / counts_split.sum()) if per_clip else nan,
                   nll_silent_bits=means[0], nll_sounding_bits=means[1], sounding_clip_mean=s_mean,
                   sounding_ci_low=s_lo, sounding_ci_high=s_hi, per_clip_sounding_nll_bits=per_clip_sounding)
    return res


def _checkpoint_dir(path: Path) -> Path:
    if not (path / "config.json").is_file() and (path / "checkpoint" / "config.json").is_file():
        return path / "checkpoint"  # a run folder
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sashimi_core.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="checkpoint folder (or a run folder with checkpoint/)")
    ap.add_argument("--data", required=True, help="data set name (sc09-synth, piano-synth, ...) or folder")
    ap.add_argument("--data-root", default="data", help="where named data sets live (default data/)")
    ap.add_argument("--split", default="test", choices=("train", "valid", "test"))
    ap.add_argument("--length", type=int, default=16000, help="samples per clip (default 16000)")
    ap.add_argument("--batches", type=int, default=None, help="evaluate at most this many batches")
    ap.add_argument("--batch", type=int, default=8, help="clips per batch (default 8)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--json", default=None, help="write the results as JSON to this file ('-' = stdout)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        set_threads(args.threads)

    from sashimi_core.checkpoint import atomic_write_json, load_model
    from sashimi_core.data.loaders import AudioClipDataset, resolve_dataset

    try:
        ckpt = _checkpoint_dir(Path(args.checkpoint))
        model = load_model(ckpt, map_location=args.device)
        root = resolve_dataset(args.data, args.data_root)
        data = AudioClipDataset(root, args.split, args.length, model.cfg.quantization, model.cfg.sample_rate,
                                random_crop=False)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = evaluate(model, data, args.batch, args.batches, args.device, confidence=args.confidence)
    res.update(checkpoint=str(ckpt), data=str(root), split=args.split, length=args.length,
               n_parameters=model.checkpoint["n_parameters"])
    pct = round(100 * args.confidence)
    print(f"checkpoint: {ckpt} ({model.cfg.architecture}, {res['n_parameters']:,} parameters)")
    print(f"data: {root} (split {args.split}, {res['n_clips']} clips of {args.length} samples)")
    print(f"{args.split} NLL: {res['nll_bits']:.4f} bits/sample, {pct}% CI [{res['ci_low']:.4f}, "
          f"{res['ci_high']:.4f}] (t-interval over {res['n_clips']} clips)")
    if "nll_sounding_bits" in res:
        print(f"  in silent 10-ms blocks (< {SILENCE_DB:g} dBFS, {res['silent_share']:.1%} of samples): "
              f"{res['nll_silent_bits']:.4f}; in sounding ones: {res['nll_sounding_bits']:.4f} (average of the "
              f"clips' sounding means {res['sounding_clip_mean']:.4f}, {pct}% CI [{res['sounding_ci_low']:.4f}, "
              f"{res['sounding_ci_high']:.4f}])")
    print(f"unigram entropy of the {args.split} tokens: {res['unigram_entropy_bits']:.4f} bits")
    if args.json == "-":
        print(json.dumps(res))
    elif args.json:
        atomic_write_json(Path(args.json), res)
    return 0

