"""Run-folder state for the trainer: metrics.jsonl writer and the pickle-free resume state.

    state/  model.safetensors, optimizer.safetensors (AdamW tensors "state.<param index>.<key>" + RNG byte
            tensors), state.json (step, data position, schedule, python/numpy RNG, ...), complete.json (marker)

`save_state` writes state.tmp/ and swaps it in, so a kill at any moment leaves one complete state; `find_state`
picks the newest complete one. Nothing is pickled: tensors go to safetensors, everything else to JSON.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from sashimi_core.checkpoint import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


class RunLog:
    """Appends JSON lines to metrics.jsonl (rank 0 only), flushed per line; tracks the byte offset."""

    def __init__(self, path: Path, enabled: bool, truncate_to: int | None = None, fresh: bool = False):
        self.path, self.enabled, self.offset = path, enabled, 0
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.write_text("")
        elif truncate_to is not None and path.exists() and path.stat().st_size > truncate_to:
            with open(path, "r+b") as f:  # drop lines written after the checkpoint we resume from
                f.truncate(truncate_to)
        self.offset = path.stat().st_size if path.exists() else 0

    def write(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        line = json.dumps({"kind": kind, "time": time.time(), **fields}) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
        self.offset += len(line.encode())

    def status(self, status: str, message: str = "", step: int | None = None) -> None:
        try:
            self.write("status", status=status, message=message, step=step)
        except OSError as exc:  # disk full: nothing more we can record
            log.error("could not write status %s: %s", status, exc)


def find_state(out: Path) -> Path | None:
    """The newest complete resume state among out/state, out/state.tmp, out/state.old (None if none)."""
    best, best_step = None, -1
    for name in ("state", "state.tmp", "state.old"):
        try:
            step = json.loads((out / name / "complete.json").read_text())["step"]
        except (OSError, ValueError, KeyError):
            continue
        if step > best_step:
            best, best_step = out / name, step
    return best


def save_state(out: Path, model, opt, run: dict) -> None:
    """Write the resume state to out/state.tmp, then swap it in: a kill at any point leaves one complete state."""
    tmp, cur, old = out / "state.tmp", out / "state", out / "state.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_write_bytes(tmp / "model.safetensors", save({k: v.detach().cpu().contiguous().clone()
                                                        for k, v in model.state_dict().items()}))
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous().clone()
               for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for d, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.torch_cuda.{d}"] = s
    atomic_write_bytes(tmp / "optimizer.safetensors", save(tensors))
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = dict(run, param_groups=sd["param_groups"],
                 scalars={f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()
                          if not torch.is_tensor(v)},
                 rng={"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                      "python": [py_state[0], list(py_state[1]), py_state[2]]})
    atomic_write_json(tmp / "state.json", state)
    atomic_write_json(tmp / "complete.json", {"step": run["step"]})
    if cur.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(cur, old)
    os.replace(tmp, cur)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path, model, opt) -> dict:
    """Restore model, optimizer and RNG from a folder written by save_state; returns the run dict."""
    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    opt_state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, i, k = key.split(".", 2)
            opt_state.setdefault(int(i), {})[k] = v
    for key, v in state.pop("scalars").items():
        i, k = key.split(".", 1)
        opt_state.setdefault(int(i), {})[k] = v
    groups = state.pop("param_groups")
    for g in groups:
        g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": opt_state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.torch_cuda."))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    rng = state.pop("rng")
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    return state
