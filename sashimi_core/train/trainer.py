"""Train SaShiMi (or a registered baseline) on audio: python -m sashimi_core.train --data D --preset P --out O

    python -m sashimi_core.train --data sc09-synth --preset sashimi-tiny --out runs/tiny --steps 2000
    python -m sashimi_core.train --out runs/tiny --resume                      # continue after a stop/kill
    torchrun --nproc_per_node 2 -m sashimi_core.train ...                      # DDP, gloo on CPU, nccl on GPU
    from sashimi_core.train import TrainConfig, train; train(TrainConfig(data=..., preset=..., out=...))

Run folder (the Gradio app reads it; only rank 0 writes):
    train_config.json  the resolved TrainConfig fields + "model" {architecture, config, n_parameters},
                       "dataset_root", "world_size", "hardware", "torch_version" (written at start)
    metrics.jsonl      one JSON object per line, flushed per line; each has "kind" and "time" (unix s):
        {"kind": "status", "status": "running"|"finished"|"failed"|"stopped", "message", "step"}
        {"kind": "train", "step", "loss_bits", "lr", "samples_per_s", "elapsed_s", "total_steps"}
        {"kind": "val", "step", "val_nll_bits"}
        {"kind": "sample", "step", "wav", "png", "nll_bits"}   (wav/png relative to the run folder)
    samples/           step_000100_0.wav (16-bit PCM) and step_000100_0.png (log-mel spectrogram)
    checkpoint/        the latest model (save_model): load_model(<out>/checkpoint) works
    state/             resume state, no pickles: model.safetensors, optimizer.safetensors (AdamW tensors
                       "state.<param index>.<key>" + RNG byte tensors), state.json (step, data position, lr
                       schedule, loss window, python/numpy RNG, metrics.jsonl offset), complete.json (marker)

Resume is exact: batches are a pure function of (seed, epoch, position) (see `epoch_batches`), random crops of
(seed, epoch, index), and the torch RNG (dropout) is reseeded each step from (seed, rank, step); so after a
SIGKILL, `--resume` reproduces every later loss of an uninterrupted run bit for bit on CPU (same threads).
metrics.jsonl is cut back to its length at the checkpoint, so no step appears twice.

Models: --preset names a SaShiMi preset (sashimi.PRESETS) or a baseline one (baselines.BASELINE_PRESETS, e.g.
wavenet-512, samplernn-3tier); --override changes single config fields.
Optimizer: AdamW. Parameters tagged ``p._ssm`` (S4's dt, Λ, B, P; DESIGN §3) get --ssm-lr and no weight decay;
all others --lr and --weight-decay (biases and norms included, as in the reference trainer).
Schedule: linear warm-up, then cosine to 0, constant, or plateau (x0.2 after --plateau-patience validations
without improvement). Loss: cross-entropy, reported in bits per sample.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from sashimi_core.checkpoint import atomic_write_json, build_model, save_model, validate_config
from sashimi_core.evaluate.nll import evaluate
from sashimi_core.nn.registry import ALL_PRESETS
from sashimi_core.ops.cauchy import set_threads
from sashimi_core.train.ema import WeightAverage
from sashimi_core.train.run_state import RunLog, discard_partial_state, find_state, load_state, save_state
from sashimi_core.train.warm_start import warm_start

log = logging.getLogger(__name__)
LN2 = math.log(2.0)


@dataclass
class TrainConfig:
    data: str = ""  # data set name under data_root (sc09-synth, piano-synth, ...) or a folder
    out: str = ""  # run folder (runs/<name>)
    preset: str = ""  # model preset: sashimi.PRESETS or baselines.BASELINE_PRESETS
    architecture: str | None = None  # sashimi, wavenet, samplernn (registered ones); None: the preset's
    overrides: dict = field(default_factory=dict)  # model config fields changed from the preset
    quantization: str | None = None  # "mu-law"/"linear"; None keeps the preset's
    data_root: str = "data"
    steps: int = 1000  # optimizer steps in total
    batch: int = 1  # clips per step per process (paper: 1 on YouTubeMix)
    length: int = 16000  # samples per clip (SC09: 16000, YouTubeMix: 131072)
    lr: float = 4e-3  # base learning rate (paper; SC09 1e-3 in later runs)
    ssm_lr: float = 1e-3  # learning rate of the tagged SSM parameters (dt, Λ, B, P)
    weight_decay: float = 0.0
    warmup: int = 100  # linear warm-up steps
    schedule: str = "cosine"  # cosine | plateau | constant
    plateau_patience: int = 5  # validations without improvement before lr x0.2 (plateau schedule)
    clip: float = 1.0  # gradient-norm clipping (0 = off)
    log_every: int = 10
    val_every: int = 250  # 0 = never
    val_batches: int = 16
    sample_every: int = 500  # 0 = never
    sample_seconds: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0
    threads: int | None = None  # torch.set_num_threads; default all cores / local processes
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # DataLoader worker processes
    amp: bool = True  # bfloat16 autocast on CUDA; S4 kernels stay fp32/complex64
    amp_cpu: bool = False  # bfloat16 autocast of the training step on CPU too (validation stays fp32)
    checkpoint_activations: bool = False  # SaShiMi: recompute residual blocks in backward (less memory, slower)
    progress: bool = True  # tqdm bar (rank 0)
    resume: bool = False
    init_from: str | None = None  # checkpoint whose weights start a new run (same config, or deeper)
    ema: float = 0.0  # decay of a weight average used for validation, samples and the checkpoint (0 = off)


# Fields that define a run: a resumed run must keep them (the rest may change, e.g. more --steps).
IDENTITY = ("data", "preset", "architecture", "overrides", "quantization", "batch", "length", "lr", "ssm_lr",
            "weight_decay", "warmup", "schedule", "clip", "seed", "init_from")


class TrainingFailed(RuntimeError):
    """Training stopped with status "failed" (message already written to metrics.jsonl)."""


# ------------------------------------------------------------------------------------------ model config
def coerce_override(text, current):
    """Parse an override value (JSON, or a bare word / comma list) to the type of the current value."""
    if not isinstance(text, str):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = {"None": None, "none": None, "True": True, "False": False}.get(text, text)
        if isinstance(current, tuple) and isinstance(value, str):
            value = [int(v) for v in value.strip("()[] ").split(",") if v.strip()]
    if isinstance(current, tuple) and isinstance(value, list | int):
        value = tuple(value) if isinstance(value, list) else (value,)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        value = float(value)  # larger ints stay ints, for validate_config to refuse
    return value


def model_fields(cfg: TrainConfig) -> tuple[str, dict]:
    """(architecture, model config fields): the preset, then overrides, then --quantization; validated (types and
    size bounds, checkpoint.validate_config) before any data is read or model built."""
    presets = {k: v for k, v in ALL_PRESETS.items() if cfg.architecture in (None, v.architecture)}
    if not presets:
        raise ValueError(f"unknown architecture {cfg.architecture!r}; known: sashimi, wavenet, samplernn")
    if cfg.preset not in presets:
        raise ValueError(f"unknown preset {cfg.preset!r}{f' for {cfg.architecture}' if cfg.architecture else ''}; "
                         f"choose one of {sorted(presets)}")
    fields = dataclasses.asdict(presets[cfg.preset])
    architecture = fields.pop("architecture")
    for key, text in cfg.overrides.items():
        if key not in fields:
            raise ValueError(f"--override {key}=...: the {architecture} config has no field {key!r}; "
                             f"fields: {sorted(fields)}")
        fields[key] = coerce_override(text, fields[key])
    if cfg.quantization is not None:
        fields["quantization"] = cfg.quantization
    validate_config(architecture, fields, f"--preset {cfg.preset}")
    return architecture, fields


# ------------------------------------------------------------------------------------------ optimizer, schedule
def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups from parameter tags: SSM params (p._ssm) lr=ssm_lr, no weight decay; the rest lr, wd."""
    ssm = [p for p in model.parameters() if getattr(p, "_ssm", False)]
    rest = [p for p in model.parameters() if not getattr(p, "_ssm", False)]
    groups = [{"name": "base", "params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
               "base_lr": cfg.lr}]
    if ssm:
        groups.append({"name": "ssm", "params": ssm, "lr": cfg.ssm_lr, "weight_decay": 0.0,
                       "base_lr": cfg.ssm_lr})
    return groups


def lr_scale(it: int, cfg: TrainConfig, plateau_scale: float = 1.0) -> float:
    """Multiplier of every group's base lr at step it (0-based): linear warm-up, then the schedule."""
    if it < cfg.warmup:
        return (it + 1) / cfg.warmup
    if cfg.schedule == "cosine":
        progress = (it - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return plateau_scale if cfg.schedule == "plateau" else 1.0


def compute_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats of model(tokens) (B, L, V) against tokens (B, L)."""
    logits = model(tokens)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens.reshape(-1))


# ------------------------------------------------------------------------------------------ data order
def epoch_batches(n: int, batch: int, world: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's batches of an epoch: a permutation of range(n) drawn from (seed, epoch), cut into global
    batches of batch*world items (the last partial one dropped); rank r takes items [r*batch, (r+1)*batch)."""
    order = np.random.default_rng([seed, epoch, 0x5A5]).permutation(n)
    g = batch * world
    return [order[j * g + rank * batch: j * g + (rank + 1) * batch].tolist() for j in range(n // g)]


def data_stream(dataset, cfg: TrainConfig, world: int, rank: int, epoch: int, position: int):
    """Yield (tokens (B, L), epoch, position) forever from (epoch, position) on; position = index into the
    epoch's shuffled order of the next unread item, and the pair returned is where to resume after it."""
    g = cfg.batch * world
    while True:
        dataset.set_epoch(epoch)
        batches = epoch_batches(len(dataset), cfg.batch, world, rank, cfg.seed, epoch)
        first = position // g
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches[first:], num_workers=cfg.num_workers)
        for j, tokens in enumerate(loader, start=first):
            done = j + 1 == len(batches)
            yield tokens, (epoch + 1 if done else epoch), (0 if done else (j + 1) * g)
        epoch, position = epoch + 1, 0


# ------------------------------------------------------------------------------------------ run folder
def check_out_folder(cfg: TrainConfig) -> dict | None:
    """Refuse to overwrite another run; on resume return the saved train_config.json (None if fresh)."""
    path = Path(cfg.out) / "train_config.json"
    if not path.is_file():
        if cfg.resume:
            log.warning("--resume: %s holds no run yet; starting a new one", cfg.out)
        return None
    saved = json.loads(path.read_text())
    if not cfg.resume:
        raise ValueError(f"{cfg.out} already holds a training run (preset {saved.get('preset')!r}, data "
                         f"{saved.get('data')!r}); pass --resume to continue it, or choose another --out")
    changed = [k for k in IDENTITY if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        diff = ", ".join(f"{k}: {saved[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ValueError(f"--resume cannot change {diff} of the run in {cfg.out}; start a new run instead")
    return saved


# ------------------------------------------------------------------------------------------ distributed
def setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) joins the process group: nccl on CUDA,
    gloo on CPU; each process uses GPU LOCAL_RANK."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    kind = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    device = torch.device(kind, local_rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    set_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return rank, world, device


def hardware(device: torch.device, world: int) -> str:
    """E.g. "NVIDIA H100 80GB HBM3 x2" or "AMD EPYC 7B13, 2 threads" (recorded in the checkpoint)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
        except (OSError, StopIteration):
            cpu = platform.processor() or platform.machine()
        name = f"{cpu}, {torch.get_num_threads()} threads"
    return f"{name} x{world}" if world > 1 else name


# ------------------------------------------------------------------------------------------ training
def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; returns the final run dict (step, samples_seen, ...).

    Raises ValueError/FileNotFoundError for bad configuration, TrainingFailed when training fails."""
    if cfg.schedule not in ("cosine", "plateau", "constant"):
        raise ValueError(f"--schedule must be cosine, plateau or constant, got {cfg.schedule!r}")
    if not cfg.out:
        raise ValueError("--out (the run folder) is required")
    for name in ("steps", "batch", "length", "log_every", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    saved = check_out_folder(cfg)
    rank, world, device = setup_distributed(cfg)
    main_proc, out = rank == 0, Path(cfg.out)
    state_dir = find_state(out) if saved is not None else None
    resumed = json.loads((state_dir / "state.json").read_text()) if state_dir else None
    runlog = RunLog(out / "metrics.jsonl", main_proc, resumed["metrics_offset"] if resumed else None,
                    fresh=state_dir is None)  # killed before its first checkpoint: start the log afresh
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signal.Signals(signum).name

    handlers = {}
    for sig in (signal.SIGTERM, signal.SIGINT):  # graceful stop: finish the step, checkpoint, status "stopped"
        try:
            handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: no graceful stop
            pass
    t_start = time.time()
    run = {"step": 0, "epoch": 0, "position": 0, "samples_seen": 0, "wall_time_s": 0.0, "val_nll_bits": None,
           "plateau": {"best": None, "bad": 0, "scale": 1.0}, "window": {"loss_sum": 0.0, "n": 0}}
    try:
        from sashimi_core.data.loaders import AudioClipDataset, resolve_dataset

        architecture, fields = model_fields(cfg)
        root = resolve_dataset(cfg.data, cfg.data_root)
        train_ds = AudioClipDataset(root, "train", cfg.length, fields["quantization"], fields["sample_rate"],
                                    random_crop=True, seed=cfg.seed)
        if len(train_ds) < cfg.batch * world:
            raise ValueError(f"{root} has {len(train_ds)} training clips, fewer than one batch "
                             f"({cfg.batch} x {world} processes)")
        try:
            val_ds = AudioClipDataset(root, "valid", cfg.length, fields["quantization"], fields["sample_rate"],
                                      random_crop=False)
        except ValueError as exc:
            val_ds = None
            log.warning("no validation: %s", exc)
        torch.manual_seed(cfg.seed)
        model = build_model(architecture, fields, f"--preset {cfg.preset}").to(device)
        if cfg.checkpoint_activations:
            if not hasattr(getattr(model, "backbone", None), "checkpoint_activations"):
                raise ValueError(f"--checkpoint-activations supports SaShiMi models, not {architecture}")
            model.backbone.checkpoint_activations = True
        if cfg.init_from and state_dir is None:
            warm_start(model, cfg.init_from)
        opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(0.9, 0.999))
        ema = WeightAverage(model, cfg.ema) if cfg.ema else None
        if state_dir is not None:
            run = load_state(state_dir, model, opt, ema)
            log.info("resumed from %s at step %d", state_dir, run["step"])
        n_params = sum(p.numel() for p in model.parameters())
        hw = hardware(device, world)
        if main_proc:
            atomic_write_json(out / "train_config.json", dict(
                dataclasses.asdict(cfg), model={"architecture": architecture, "config": fields,
                                                "n_parameters": n_params},
                dataset_root=str(root), world_size=world, hardware=hw, torch_version=torch.__version__))
            runlog.status("running", f"resumed from step {run['step']}" if state_dir else "started", run["step"])
    except Exception as exc:
        runlog.status("failed", f"{type(exc).__name__}: {exc}")
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        raise
    ddp = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                     else None) if world > 1 else model)
    amp = cfg.amp and device.type == "cuda"
    train_amp = amp or (cfg.amp_cpu and device.type == "cpu")
    shown = ema.model if ema else model  # the weights validated, sampled and saved

    def checkpoint() -> None:  # rank 0 writes, every process waits
        if main_proc:
            run["wall_time_s"] = wall()
            run["metrics_offset"] = runlog.offset
            save_state(out, model, opt, run, ema)
            save_model(shown, out / "checkpoint", dataset=root.name, steps=run["step"],
                       samples_seen=run["samples_seen"], wall_time_s=round(run["wall_time_s"], 1), hardware=hw,
                       val_nll_bits=run["val_nll_bits"], preset=cfg.preset, batch=cfg.batch, length=cfg.length,
                       **({"ema_decay": cfg.ema} if ema else {}))
        if world > 1:
            dist.barrier()

    def validate(step: int) -> bool:  # False if interrupted by a stop signal
        res, raw = {"nll_bits": 0.0, "stopped": False}, None
        if main_proc:
            res = evaluate(shown, val_ds, cfg.batch, cfg.val_batches, device, amp,
                           stop=lambda: stop["signal"] is not None)
            if ema and not res["stopped"]:  # the trained weights too, to see what the average gains
                raw = evaluate(model, val_ds, cfg.batch, cfg.val_batches, device, amp,
                               stop=lambda: stop["signal"] is not None)
                res["stopped"] = raw["stopped"]
        if world > 1:  # every process needs the value for the plateau schedule
            v = torch.tensor([res["nll_bits"], float(res["stopped"])], dtype=torch.float64, device=device)
            dist.broadcast(v, 0)
            res = {"nll_bits": v[0].item(), "stopped": v[1].item() > 0}
        run["pending_val"] = step if res["stopped"] else None
        if res["stopped"]:
            return False
        run["val_nll_bits"] = res["nll_bits"]
        runlog.write("val", step=step, val_nll_bits=res["nll_bits"],
                     **({"val_nll_bits_raw": raw["nll_bits"]} if raw else {}))
        p = run["plateau"]
        if p["best"] is None or res["nll_bits"] < p["best"]:
            p.update(best=res["nll_bits"], bad=0)
        else:
            p["bad"] += 1
            if p["bad"] >= cfg.plateau_patience:  # like ReduceLROnPlateau(factor=0.2)
                p.update(scale=p["scale"] * 0.2, bad=0)
        return True

    wall_base = run["wall_time_s"]

    def wall() -> float:
        return wall_base + time.time() - t_start

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=run["step"], disable=not (main_proc and cfg.progress), unit="step",
               dynamic_ncols=True)
    stream = data_stream(train_ds, cfg, world, rank, run["epoch"], run["position"])
    t_window, n_window = time.time(), 0
    try:
        if run.get("pending_val") and not validate(run["pending_val"]):  # the saved state stays as it is
            runlog.status("stopped", f"stopped during validation at step {run['step']}; continue with --resume",
                          run["step"])
            return run
        ddp.train()
        for it in range(run["step"], cfg.steps):
            # ---- one optimizer step
            scale = lr_scale(it, cfg, run["plateau"]["scale"])
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
            tokens, epoch, position = next(stream)
            tokens = tokens.to(device, non_blocking=True)
            torch.manual_seed(cfg.seed * 1_000_003 + it * 1009 + rank)  # dropout: a function of (seed, step, rank)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=train_amp):
                loss = compute_loss(ddp, tokens)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else float("inf"))
            flags = torch.tensor([loss.item() / LN2, float(not (math.isfinite(loss.item())
                                  and math.isfinite(gnorm.item()))), float(stop["signal"] is not None)],
                                 dtype=torch.float64)
            if world > 1:  # mean loss across processes; any process failing or stopping stops all
                flags = flags.to(device)
                dist.all_reduce(flags)
                flags = flags.cpu()
                flags[0] /= world
            loss_bits, bad, stopping = flags[0].item(), flags[1].item() > 0, flags[2].item() > 0
            if bad:
                raise TrainingFailed(f"loss became {loss_bits} (or the gradient non-finite) at step {it + 1}; "
                                     f"lower the learning rate (--lr {cfg.lr}, --ssm-lr {cfg.ssm_lr}) or "
                                     f"--clip; the last good checkpoint is kept")
            opt.step()
            opt.zero_grad(set_to_none=True)
            step = it + 1
            if ema:
                ema.update(model, step)
            run.update(step=step, epoch=epoch, position=position,
                       samples_seen=run["samples_seen"] + tokens.numel() * world)
            run["window"]["loss_sum"] += loss_bits
            run["window"]["n"] += 1
            n_window += tokens.numel() * world
            bar.update(1)
            # ---- logging
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.time()
                w = run["window"]
                sps = n_window / max(now - t_window, 1e-9)
                runlog.write("train", step=step, loss_bits=w["loss_sum"] / w["n"], lr=cfg.lr * scale,
                             samples_per_s=sps, elapsed_s=wall(), total_steps=cfg.steps)
                bar.set_postfix(loss_bits=f"{w['loss_sum'] / w['n']:.3f}", samples_s=f"{sps:.0f}")
                run["window"] = {"loss_sum": 0.0, "n": 0}
                t_window, n_window = now, 0
            # ---- validation, samples (a stop signal interrupts both; an interrupted validation is redone first
            # thing on resume, so the plateau schedule sees the same values as an uninterrupted run)
            if val_ds is not None and cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
                stopping = not validate(step) or stopping
            if cfg.sample_every and step % cfg.sample_every == 0 and main_proc and not stopping:
                write_samples(shown, out, step, cfg, runlog, stop=lambda: stop["signal"] is not None)
            # ---- checkpoint
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                checkpoint()
            if stopping:
                bar.close()
                runlog.status("stopped", f"stopped by {stop['signal'] or 'another process'} at step {step}; "
                                         f"continue with --resume", step)
                return run
        bar.close()
        runlog.status("finished", f"{run['step']} steps in {wall():.0f} s", run["step"])
        return run
    except TrainingFailed as exc:
        runlog.status("failed", str(exc), run["step"])
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            msg = (f"disk full while writing to {out} at step {run['step']}: free some space and continue "
                   f"with --resume (the previous complete checkpoint is intact)")
            runlog.status("failed", msg, run["step"])
            raise TrainingFailed(msg) from exc
        runlog.status("failed", f"{type(exc).__name__}: {exc}", run["step"])
        raise
    except Exception as exc:
        runlog.status("failed", f"{type(exc).__name__}: {exc}", run["step"])
        raise
    finally:
        bar.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if main_proc:  # a half-written state (e.g. disk full)
            discard_partial_state(out)


def write_samples(model, out: Path, step: int, cfg: TrainConfig, runlog: RunLog, stop=None) -> None:
    """Generate cfg.sample_seconds of unconditional audio (seed cfg.seed); write WAV + PNG; log the line."""
    from sashimi_core.evaluate.spectrogram import write_sample
    from sashimi_core.generation.sampler import generate
    from sashimi_core.ops.quantize import decode

    n = max(1, int(cfg.sample_seconds * model.cfg.sample_rate))
    tokens, stats = generate(model, n, seed=cfg.seed, return_stats=True, stop=stop)
    if stats.stopped:
        return
    (out / "samples").mkdir(parents=True, exist_ok=True)
    wav, png = f"samples/step_{step:06d}_0.wav", f"samples/step_{step:06d}_0.png"
    audio = decode(tokens[0].cpu(), model.cfg.quantization).numpy()
    write_sample(audio, model.cfg.sample_rate, out / wav, out / png, title=f"step {step}")
    runlog.write("sample", step=step, wav=wav, png=png, nll_bits=stats.nll_bits[0])


# ------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sashimi_core.train", description=__doc__.split("\n\n")[0],
                                 argument_default=argparse.SUPPRESS)
    d = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("overrides", "amp", "amp_cpu", "progress", "resume", "checkpoint_activations"):
            continue
        kind = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
        ap.add_argument("--" + f.name.replace("_", "-"), type=kind, help=f"(default {getattr(d, f.name)!r})")
    ap.add_argument("--override", action="append", nargs="+", metavar="KEY=VALUE",
                    help="model config field, e.g. d_model=32 pool=[4,4] dropout=0.1")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    ap.add_argument("--amp-cpu", action="store_true",
                    help="bf16 autocast of the training step on CPU (faster on CPUs with AMX / AVX512-BF16, "
                         "docs/training.md; validation stays fp32)")
    ap.add_argument("--checkpoint-activations", action="store_true",
                    help="SaShiMi: recompute each residual block in backward instead of storing its activations "
                         "(for long clips, e.g. L=128000; ~1.3x the step time)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {}
    for item in (x for group in args.pop("override", []) for x in group):
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --override expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key.strip()] = value.strip()
    config_path = Path(args.get("out", "")) / "train_config.json"
    base = {}
    if args.get("resume") and config_path.is_file():  # start from the saved run, then apply what was given
        saved = json.loads(config_path.read_text())
        base = {f.name: saved[f.name] for f in dataclasses.fields(TrainConfig) if f.name in saved}
    base["overrides"] = {**base.get("overrides", {}), **overrides}
    cfg = TrainConfig(**{**base, **args})
    try:
        run = train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    val = f", val NLL {run['val_nll_bits']:.4f} bits" if run["val_nll_bits"] is not None else ""
    print(f"{cfg.out}: step {run['step']}, {run['samples_seen']:,} samples{val}")
    return 0

