"""Run-folder state for the trainer: metrics.jsonl writer and the pickle-free resume state.

    state/  model.safetensors, optimizer.safetensors (AdamW tensors "state.<param index>.<key>" + RNG byte
            tensors), state.json (step, data position, schedule, python/numpy RNG, ...), complete.json (marker:
            {"step", "files": {name: size in bytes}}, written last)

Crash safety: `save_state` writes state.tmp/, marker last, then renames state -> state.old and state.tmp -> state.
A folder is deleted marker first, so a half-deleted folder never looks complete. A folder counts only if its marker
is there and every file it lists has the recorded size (`state_step`), so at every instant of a save at least
one complete state exists, and `find_state` picks the newest of them. Nothing is pickled: tensors go to
safetensors, everything else to JSON.
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

from sashimi_core.checkpoint import atomic_write_bytes, atomic_write_json, check_safetensors_file

log = logging.getLogger(__name__)

MARKER = "complete.json"
STATE_FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


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


def state_step(folder: Path) -> int | None:
    """The step of the resume state in folder if it is complete, else None.

    Complete: the marker is there, every state file is listed in it (markers without a file list, from older
    versions, stand for the three state files) and present with the recorded size, and the safetensors headers
    are sound."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        step, files = marker["step"], marker.get("files") or dict.fromkeys(STATE_FILES)
        if not isinstance(step, int) or not set(STATE_FILES) <= set(files):
            return None
        for name, size in files.items():
            path = folder / name
            if Path(name).name != name or not path.is_file() or size not in (None, path.stat().st_size):
                return None
            if name.endswith(".safetensors"):
                check_safetensors_file(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return step


def find_state(out: Path) -> Path | None:
    """The newest complete resume state among out/state, out/state.tmp, out/state.old (None if none)."""
    best, best_step = None, -1
    for name in ("state", "state.tmp", "state.old"):
        step = state_step(out / name)
        if step is not None and step > best_step:
            best, best_step = out / name, step
    return best


def discard_state(folder: Path) -> None:
    """Delete a state folder, marker first: a kill half-way leaves a folder that no longer looks complete."""
    (folder / MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def discard_partial_state(out: Path) -> None:
    """Delete out/state.tmp unless it holds the newest complete state (e.g. after a write failed half-way)."""
    if find_state(out) != out / "state.tmp":
        discard_state(out / "state.tmp")


def save_state(out: Path, model, opt, run: dict, ema=None) -> None:
    """Write the resume state to out/state.tmp, then swap it in. Each step below leaves at least one complete
    state (state, state.tmp or state.old), so a kill at any point, even a second one, loses at most this save."""
    tmp, cur, old = out / "state.tmp", out / "state", out / "state.old"
    if find_state(out) == tmp:  # a kill left the newest state in state.tmp: make it the current one first
        discard_state(cur)
        os.replace(tmp, cur)
    discard_state(tmp)
    tmp.mkdir(parents=True)
    _write_state_files(tmp, model, opt, run, ema)
    files = {name: (tmp / name).stat().st_size for name in STATE_FILES}
    atomic_write_json(tmp / MARKER, {"step": run["step"], "files": files})
    if cur.exists():
        discard_state(old)  # state.tmp is complete now
        os.replace(cur, old)
    os.replace(tmp, cur)
    discard_state(old)


def _write_state_files(folder: Path, model, opt, run: dict, ema=None) -> None:
    """model.safetensors, optimizer.safetensors (with the RNG states and the weight average, "ema.<name>") and
    state.json into folder."""
    atomic_write_bytes(folder / "model.safetensors", save({k: v.detach().cpu().contiguous().clone()
                                                           for k, v in model.state_dict().items()}))
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous().clone()
               for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous().clone() for k, v in ema.state_dict().items()})
    if torch.cuda.is_available():
        for d, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.torch_cuda.{d}"] = s
    atomic_write_bytes(folder / "optimizer.safetensors", save(tensors))
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = dict(run, param_groups=sd["param_groups"],
                 scalars={f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()
                          if not torch.is_tensor(v)},
                 rng={"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                      "python": [py_state[0], list(py_state[1]), py_state[2]]})
    atomic_write_json(folder / "state.json", state)


def load_state(folder: Path, model, opt, ema=None) -> dict:
    """Restore model, optimizer, RNG (and the weight average, or start it from the model when the state has
    none) from a folder written by save_state; returns the run dict."""
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
    if ema is not None:
        averaged = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(averaged or model.state_dict())
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.torch_cuda."))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    rng = state.pop("rng")
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    return state
