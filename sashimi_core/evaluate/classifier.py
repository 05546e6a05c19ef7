"""SC09 digit classifier: the feature extractor behind the automatic audio metrics (FID, IS, mIS, AM).

SaShiMi (Goel et al. 2022, §5.2 and App. C.2) scores unconditional SC09 samples with a ResNeXt trained on
SC09's ten digits, following DiffWave (Kong et al. 2021). This is a compact stand-in of the same role:

    audio (B, 16000) float in [-1, 1]
      -> log-mel (B, 1, 64 mels, 101 frames): 25 ms Hann window, 10 ms hop, 20-8000 Hz, per-clip standardised
      -> 4 conv blocks (a stride-2 and a stride-1 3x3 conv, each + BN + ReLU): (B, 128, 4, 7)
      -> global average pool -> features (B, 128)      (the penultimate layer: FID's embedding)
      -> dropout -> linear -> logits (B, 10)           (softmax: p(y|x) for IS, mIS, AM)

Per-clip standardisation makes the output invariant to the clip's level. Training augments with random time
shift, gain, white noise and 8-bit mu-law/linear re-quantisation (generated audio is 8-bit), so the metrics
see content rather than a model's quantiser.

Checkpoint: the ``sashimi_core.checkpoint`` folder format (config.json with architecture ``sc09-classifier``,
model.safetensors, README.md card); the mel filterbank is a stored buffer, so features do not depend on the
installed librosa. Load with :func:`load_classifier`. Train with
``python -m sashimi_core.evaluate.classifier train --data data/sc09-synth --out checkpoints/sc09-classifier``.
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi_core import checkpoint
from sashimi_core.nn.registry import register_architecture

log = logging.getLogger(__name__)

ARCHITECTURE = "sc09-classifier"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "checkpoints" / "sc09-classifier"


@dataclass
class ClassifierConfig:
    architecture: str = ARCHITECTURE
    sample_rate: int = 16000  # Hz; input clips must already be at this rate
    clip_length: int = 16000  # samples (1 s, as SC09); other lengths are padded/cropped centrally
    n_fft: int = 512  # FFT size; the 400-sample window is zero-padded to it
    win_length: int = 400  # 25 ms Hann window
    hop_length: int = 160  # 10 ms hop -> 101 centred frames per second
    n_mels: int = 64  # mel bands (librosa Slaney mel scale)
    f_min: float = 20.0  # Hz, lowest mel edge
    f_max: float = 8000.0  # Hz, highest mel edge (Nyquist)
    channels: tuple = (16, 32, 64, 128)  # conv block widths; the last is the feature dimension
    convs_per_block: int = 2  # 3x3 conv + BN + ReLU layers per block, the first with stride 2
    dropout: float = 0.2  # before the output layer
    n_classes: int = 10  # digits zero..nine
    labels: tuple = DIGITS  # class names, in logit order


class LogMel(nn.Module):
    """audio (B, T) float -> per-clip standardised log-mel (B, n_mels, frames) float32."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        import librosa

        self.n_fft, self.win_length, self.hop_length = cfg.n_fft, cfg.win_length, cfg.hop_length
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min,
                                 fmax=cfg.f_max)
        self.register_buffer("mel_basis", torch.from_numpy(fb).float())  # (n_mels, n_fft/2+1), saved
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio.float(), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=True, pad_mode="constant", return_complex=True)  # (B, F, frames)
        power = torch.view_as_real(spec).square().sum(-1)  # (B, F, frames) |X|^2 (cheaper than abs().square())
        mel = self.mel_basis @ power  # (B, n_mels, frames)
        db = 10.0 * torch.log10(mel + 1e-10)
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)  # 80 dB dynamic range per clip
        mean, std = db.mean(dim=(1, 2), keepdim=True), db.std(dim=(1, 2), keepdim=True)
        return (db - mean) / (std + 1e-3)  # level-invariant; an all-silent clip maps to zeros


def _block(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    """n_convs x (3x3 conv + BN + ReLU); the first conv has stride 2 (halves mels and frames)."""
    layers = []
    for i in range(n_convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DigitClassifier(nn.Module):
    """Log-mel CNN over 1-s 16 kHz clips: ``features`` (B, D) for FID, ``logits``/``probs`` (B, 10)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMel(cfg)
        chans = (1, *cfg.channels)
        self.blocks = nn.Sequential(*[_block(chans[i], chans[i + 1], cfg.convs_per_block)
                                      for i in range(len(cfg.channels))])
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.channels[-1], cfg.n_classes)

    @property
    def feature_dim(self) -> int:
        return self.cfg.channels[-1]

    def _prepare(self, audio) -> torch.Tensor:
        x = audio if isinstance(audio, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(audio, np.float32))
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2:
            raise ValueError(f"audio must be (B, T) or (T,), got shape {tuple(x.shape)}")
        x = x.to(self.head.weight.device, torch.float32)
        T, L = x.shape[1], self.cfg.clip_length
        if T > L:  # central crop
            x = x[:, (T - L) // 2:(T - L) // 2 + L]
        elif T < L:  # centred zero pad
            x = F.pad(x, ((L - T) // 2, L - T - (L - T) // 2))
        return x

    def features(self, audio) -> torch.Tensor:
        """audio (B, T) float in [-1, 1] at 16 kHz -> penultimate features (B, D) float32 (D = channels[-1])."""
        x = self.frontend(self._prepare(audio))[:, None]  # (B, 1, n_mels, frames)
        x = self.blocks(x)  # (B, C, n_mels/16, frames/16) with 4 blocks
        return x.mean(dim=(2, 3))  # (B, C)

    def logits(self, audio) -> torch.Tensor:
        """audio (B, T) -> logits (B, n_classes)."""
        return self.head(self.dropout(self.features(audio)))

    forward = logits

    @torch.no_grad()
    def embed(self, audio, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode features and class probabilities of many clips: audio (N, T) -> ((N, D), (N, n_classes))
        float64 numpy arrays, computed in batches."""
        was_training = self.training
        self.eval()
        feats, probs = [], []
        try:
            for i in range(0, len(audio), batch_size):
                f = self.features(audio[i:i + batch_size])
                feats.append(f.double().cpu().numpy())
                probs.append(torch.softmax(self.head(f).double(), dim=-1).cpu().numpy())
        finally:
            self.train(was_training)
        D, K = self.feature_dim, self.cfg.n_classes
        return (np.concatenate(feats) if feats else np.zeros((0, D)),
                np.concatenate(probs) if probs else np.zeros((0, K)))


register_architecture(ARCHITECTURE, ClassifierConfig, DigitClassifier)


def load_classifier(path=DEFAULT_PATH, map_location="cpu") -> DigitClassifier:
    """Load the shipped (or any) classifier folder via ``checkpoint.load_model`` (safetensors only, never a
    pickle); returned in eval mode. Raises ValueError if the folder holds another kind of model."""
    directory = Path(path)
    config = checkpoint.read_config(directory)
    if config["architecture"] != ARCHITECTURE:
        raise ValueError(f"{directory} holds a {config['architecture']!r} checkpoint, not {ARCHITECTURE!r}")
    return checkpoint.load_model(directory, map_location)


# ------------------------------------------------------------------------------------------------ data
def load_split(root, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clips and labels of one split of an SC09-layout data set with manifest.csv (sc09-synth):
    -> audio (N, 16000) float32, labels (N,) int64. ``limit`` keeps the first N rows of the manifest."""
    import soundfile as sf

    from sashimi_core.data import common

    root = Path(root)
    rows = [r for r in common.read_manifest(root) if r["split"] == split]
    if not rows:
        raise ValueError(f"{root}/manifest.csv has no clips in split {split!r}")
    rows = rows[:limit] if limit else rows
    audio = np.zeros((len(rows), 16000), np.float32)
    labels = np.array([DIGITS.index(r["label"]) for r in rows], np.int64)
    for i, r in enumerate(rows):
        y, sr = sf.read(root / r["file"], dtype="float32", always_2d=True)
        if sr != 16000:
            raise ValueError(f"{r['file']}: sample rate {sr}, expected 16000")
        y = y.mean(axis=1)[:16000]
        audio[i, :len(y)] = y
    return audio, labels


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation of a batch (B, T): random shift (+-150 ms, zero fill), gain (-20..+3 dB, clipped),
    white noise (half the clips, -70..-30 dBFS RMS) and 8-bit re-quantisation (30%: mu-law, 10%: linear)."""
    from sashimi_core.ops.quantize import decode, encode

    B, T = x.shape
    u = lambda *s: torch.rand(*s, generator=generator)
    shifts = ((u(B) * 2 - 1) * 0.15 * 16000).long().tolist()
    out = torch.zeros_like(x)
    for b, s in enumerate(shifts):  # shift right by s (left if negative), zero-filled
        if s >= 0:
            out[b, s:] = x[b, :T - s]
        else:
            out[b, :T + s] = x[b, -s:]
    gain = 10 ** ((u(B, 1) * 23 - 20) / 20)
    noise = torch.randn(B, T, generator=generator) * 10 ** ((u(B, 1) * 40 - 70) / 20) * (u(B, 1) < 0.5)
    out = (out * gain + noise).clamp(-1, 1)
    r = u(B)
    for b in torch.nonzero(r < 0.4).flatten().tolist():
        q = "mu-law" if r[b] < 0.3 else "linear"
        out[b] = decode(encode(out[b], q), q).float()
    return out


@torch.no_grad()
def accuracy(model: DigitClassifier, audio: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy (0..1) of eval-mode predictions on audio (N, T) with labels (N,)."""
    _, probs = model.embed(torch.from_numpy(audio), batch_size)
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


# ------------------------------------------------------------------------------------------------ training
@dataclass
class TrainConfig:
    data: str = "data/sc09-synth"  # SC09-layout folder with manifest.csv
    out: str = "checkpoints/sc09-classifier"  # checkpoint folder to write
    epochs: int = 4  # passes over the train split (the shipped model: 4, 8.8 min on 1 thread)
    batch_size: int = 64
    lr: float = 3e-3  # AdamW peak lr (one-cycle: 10% warm-up, cosine decay)
    weight_decay: float = 1e-2
    seed: int = 0
    threads: int = 1  # torch CPU threads
    limit: int | None = None  # clips per split (debugging)
    max_minutes: float | None = None  # stop after this much training time (the best valid epoch is kept)


def train(tc: TrainConfig, cfg: ClassifierConfig | None = None) -> dict:
    """Train on the train split, select the epoch with the best valid accuracy, save to tc.out, and return
    {"valid_accuracy", "test_accuracy", "train_seconds", "epochs", ...}."""
    from sashimi_core.data.common import build_options

    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    t0 = time.time()
    splits = {s: load_split(tc.data, s, tc.limit) for s in ("train", "valid", "test")}
    log.info("loaded %s clips in %.1fs", {s: len(v[1]) for s, v in splits.items()}, time.time() - t0)
    x_train, y_train = torch.from_numpy(splits["train"][0]), torch.from_numpy(splits["train"][1])
    model = DigitClassifier(cfg or ClassifierConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(y_train) / tc.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr, total_steps=tc.epochs * steps_per_epoch, pct_start=0.1)
    best, history, t_train = (-1.0, None, 0), [], time.time()
    for epoch in range(tc.epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=gen)
        total, correct, seen, t_ep = 0.0, 0, 0, time.time()
        for i in range(0, len(perm), tc.batch_size):
            idx = perm[i:i + tc.batch_size]
            x, y = augment(x_train[idx], gen), y_train[idx]
            logits = model.logits(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        val_acc = accuracy(model, *splits["valid"])
        history.append({"epoch": epoch + 1, "train_loss": total / seen, "train_accuracy": correct / seen,
                        "valid_accuracy": val_acc, "seconds": time.time() - t_ep})
        log.info("epoch %d: loss %.4f train acc %.4f valid acc %.4f (%.0fs)", epoch + 1, total / seen,
                 correct / seen, val_acc, time.time() - t_ep)
        if val_acc > best[0]:
            best = (val_acc, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
        if tc.max_minutes is not None and time.time() - t_train > 60 * tc.max_minutes:
            log.info("time budget of %.1f min reached after epoch %d", tc.max_minutes, epoch + 1)
            break
    train_seconds = time.time() - t_train
    model.load_state_dict(best[1])
    model.eval()
    result = {"valid_accuracy": best[0], "test_accuracy": accuracy(model, *splits["test"]),
              "best_epoch": best[2], "epochs": len(history), "train_seconds": round(train_seconds, 1),
              "threads": tc.threads, "n_train": len(y_train), "n_valid": len(splits["valid"][1]),
              "n_test": len(splits["test"][1]), "torch": torch.__version__, "history": history,
              "dataset": Path(tc.data).name, "dataset_recipe": (build_options(tc.data) or {}).get("recipe"),
              "train_config": vars(tc).copy()}
    save_model_with_card(model, tc.out, result)
    return result


def save_model_with_card(model: DigitClassifier, out, result: dict) -> Path:
    """Write the classifier folder (config.json, model.safetensors, README.md card built from ``result``)."""
    meta = {k: v for k, v in result.items() if k != "history"}
    meta["task"] = "audio-classification (metric features only)"
    card = model_card(model, result)
    return checkpoint.save_model(model, out, card=card, **meta, history=result["history"])


def model_card(model: DigitClassifier, r: dict) -> str:
    """README.md text from a training result (plus optional "reference_metrics": {name: {metric: value}})."""
    n = sum(p.numel() for p in model.parameters())
    c = model.cfg
    recipe = f" recipe {r['dataset_recipe']}" if r.get("dataset_recipe") else ""
    refs = ""
    if r.get("reference_metrics"):
        refs = ("\n## Reference metric values (real clips, `python -m sashimi_core.evaluate.audio_metrics`)\n"
                "| generated set | vs real set | n | FID | IS | mIS | AM | recogniser share (acc.) |\n"
                "|---|---|---|---|---|---|---|---|\n")
        for m in r["reference_metrics"]:
            refs += (f"| {m['generated']} | {m['real']} | {m['n']} | {m['fid']:.3f} | {m['is']:.2f} | "
                     f"{m['mis']:.4g} | {m['am']:.3f} | {m.get('recogniser', '-')} |\n")
        refs += ("\nIS/mIS/AM of the real test clips themselves (the upper references) are in the rows where the\n"
                 "generated and real sets coincide. mIS is large because the classifier is very confident on this\n"
                 "synthetic data (mIS grows with exp of the cross-class log-probability gap). FID is biased\n"
                 "upwards at small n: compare FIDs at equal n only.\n")
    return f"""---
license: mit
tags:
- audio
- audio-classification
- spoken-digits
- metrics
datasets:
- {r['dataset']}
metrics:
- accuracy
---

# sc09-classifier

Compact log-mel CNN ({n:,} parameters) that classifies 1-s 16 kHz spoken digits "zero".."nine". It is the
feature extractor of `sashimi_core.evaluate.audio_metrics` (FID on its {c.channels[-1]}-d penultimate features; IS,
mIS and AM on its softmax), standing in for the ResNeXt SC09 classifier of SaShiMi/DiffWave.

## Intended use
Metric features only: comparing generated digit audio with real clips of the same data set. It is not a
speech recogniser; its numbers are comparable only with numbers computed with this same checkpoint, never with
the papers' SC09 numbers (different classifier, different data).

## Model
Log-mel ({c.n_mels} mels, {c.win_length / 16:.0f} ms window, {c.hop_length / 16:.0f} ms hop,
{c.f_min:.0f}-{c.f_max:.0f} Hz, per-clip standardised) -> {len(c.channels)} conv blocks of widths
{list(c.channels)} ({c.convs_per_block} 3x3 convs each, the first with stride 2) -> global average pool -> linear.

## Training data
`{r['dataset']}`{recipe} (the offline SC09 stand-in built by `python -m sashimi_core.data build sc09-synth`:
espeak-ng and flite voices, split by voice), train split ({r['n_train']:,} clips), augmented with random shift
(+-150 ms), gain (-20..+3 dB), white noise (-70..-30 dBFS) and 8-bit mu-law/linear re-quantisation.
AdamW (lr {r['train_config']['lr']}, weight decay {r['train_config']['weight_decay']}, one-cycle),
batch {r['train_config']['batch_size']}, {r['epochs']} epochs in {r['train_seconds'] / 60:.1f} min on
{r['threads']} CPU thread(s) (torch {r['torch']}); the epoch with the best valid accuracy ({r['best_epoch']}) is kept.

## Results
| split | clips | accuracy |
|---|---|---|
| valid | {r['n_valid']:,} | {100 * r['valid_accuracy']:.2f}% |
| test | {r['n_test']:,} | {100 * r['test_accuracy']:.2f}% |
{refs}
## Limitations
Trained only on synthetic (formant/diphone) voices: on real human speech (e.g. the real SC09) accuracy will be
much lower, so retrain it on real data before scoring models trained on real data.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sashimi_core.evaluate.classifier",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the digit classifier")
    for name, default in vars(TrainConfig()).items():
        kind = type(default) if default is not None else (int if name == "limit" else float)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    e = sub.add_parser("eval", help="accuracy of a classifier checkpoint on a split")
    e.add_argument("--data", default="data/sc09-synth")
    e.add_argument("--checkpoint", default=str(DEFAULT_PATH))
    e.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "train":
        tc = TrainConfig(**{k: v for k, v in vars(args).items() if k != "command"})
        r = train(tc)
        print(f"valid {100 * r['valid_accuracy']:.2f}%  test {100 * r['test_accuracy']:.2f}%  "
              f"({r['train_seconds'] / 60:.1f} min, best epoch {r['best_epoch']}/{r['epochs']}) -> {tc.out}")
    else:
        model = load_classifier(args.checkpoint)
        audio, labels = load_split(args.data, args.split)
        print(f"{args.split}: {100 * accuracy(model, audio, labels):.2f}% of {len(labels)} clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
