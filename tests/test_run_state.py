"""Crash-safe resume state (sashimi_core.train.run_state): kills at every file operation of save_state, and the
folders such kills leave, always resume from a complete state."""
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sashimi_core.train import run_state


class Killed(BaseException):
    """A simulated SIGKILL: the process stops at this point."""


class KillSwitch:
    """Patches run_state's file operations so that the process dies after `ops` of them: a write dies leaving a
    half-written temp file, a rename before it happens, a tree removal after some files (data first, marker last:
    the worst order)."""

    def __init__(self, monkeypatch, ops: int):
        self.left = ops
        real_write = run_state.atomic_write_bytes

        def write(path, data):
            path = Path(path)
            self.tick(lambda: path.with_name(f".{path.name}.k.tmp").write_bytes(data[: len(data) // 2]))
            real_write(path, data)

        def replace(src, dst):
            self.tick()
            os.replace(src, dst)

        def rmtree(folder, ignore_errors=False):
            if not Path(folder).is_dir():
                return
            for path in sorted(Path(folder).iterdir(), key=lambda p: p.name == run_state.MARKER):
                self.tick()
                path.unlink()
            self.tick()
            Path(folder).rmdir()

        monkeypatch.setattr(run_state, "atomic_write_bytes", write)
        monkeypatch.setattr(run_state, "atomic_write_json",
                            lambda path, obj: write(path, json.dumps(obj, default=str).encode()))
        monkeypatch.setattr(run_state, "os", SimpleNamespace(replace=replace))
        monkeypatch.setattr(run_state, "shutil", SimpleNamespace(rmtree=rmtree))

    def tick(self, on_kill=None):
        self.left -= 1
        if self.left < 0:
            if on_kill:
                on_kill()
            raise Killed


def tiny_model_opt(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return model, opt


def save_at(out: Path, step: int, monkeypatch, kill_after: int = 10**6) -> int | None:
    """save_state for step `step` (weights filled with the step), killed after `kill_after` file operations;
    returns how many it made, None if killed."""
    model, opt = tiny_model_opt()
    with torch.no_grad():
        model.weight.fill_(step)
    with monkeypatch.context() as m:
        switch = KillSwitch(m, kill_after)
        try:
            run_state.save_state(out, model, opt, {"step": step, "metrics_offset": 0})
        except Killed:
            return None
    return kill_after - switch.left


def loaded_step(out: Path) -> int:
    """Step of the state find_state picks, after checking load_state restores it (weights == step)."""
    folder = run_state.find_state(out)
    assert folder is not None, sorted(p.name for p in out.rglob("*"))
    model, opt = tiny_model_opt(1)
    run = run_state.load_state(folder, model, opt)
    assert torch.all(model.weight == run["step"])
    return run["step"]


def test_kills_anywhere_in_save_state_leave_a_complete_state(tmp_path, monkeypatch):
    """Every single and double kill point of two saves: find_state/load_state always find a complete state, never
    an older one than before; a later uninterrupted save leaves just state/."""
    base = tmp_path / "base"
    save_at(base, 1, monkeypatch)
    save_at(base, 2, monkeypatch)
    n_ops = save_at(shutil.copytree(base, tmp_path / "probe"), 3, monkeypatch)
    assert n_ops >= 10
    for first in range(n_ops):
        for second in range(0, n_ops + 1, 3):
            out = shutil.copytree(base, tmp_path / f"k{first}-{second}")
            assert save_at(out, 3, monkeypatch, first) is None
            after_first = loaded_step(out)
            assert after_first in (2, 3)
            completed = save_at(out, 4, monkeypatch, second) is not None
            assert loaded_step(out) == 4 or not completed and loaded_step(out) >= after_first
            assert save_at(out, 5, monkeypatch)
            assert loaded_step(out) == 5 and sorted(p.name for p in out.iterdir()) == ["state"]
            assert sorted(p.name for p in (out / "state").iterdir()) == [
                "complete.json", "model.safetensors", "optimizer.safetensors", "state.json"]
            shutil.rmtree(out)


def damaged_layout(out: Path, s2: Path, s3: Path, name: str) -> None:
    """A run folder as a kill (or two) during save_state may leave it; s2/s3: complete states of steps 2/3."""
    def put(src, dst):
        shutil.copytree(src, out / dst)

    if name == "tmp-half-written":  # killed while writing state.tmp
        put(s2, "state")
        (out / "state.tmp").mkdir()
        (out / "state.tmp" / "model.safetensors").write_bytes((s3 / "model.safetensors").read_bytes())
    elif name == "renamed-away":  # killed between state -> state.old and state.tmp -> state
        put(s3, "state.tmp")
        put(s2, "state.old")
    elif name == "marker-without-weights":  # then killed again while removing state.tmp (the audit's case)
        put(s3, "state.tmp")
        (out / "state.tmp" / "model.safetensors").unlink()
        put(s2, "state.old")
    elif name == "truncated-weights":
        put(s3, "state")
        data = (out / "state" / "model.safetensors").read_bytes()
        (out / "state" / "model.safetensors").write_bytes(data[:-8])
        put(s2, "state.old")
    elif name == "missing-optimizer":
        put(s3, "state")
        (out / "state" / "optimizer.safetensors").unlink()
        put(s2, "state.old")
    elif name == "old-format-marker":  # complete.json written by an earlier version: {"step"} only
        put(s2, "state")
        (out / "state" / "complete.json").write_text(json.dumps({"step": 2}))
    elif name == "nothing-complete":
        put(s3, "state")
        (out / "state" / "state.json").unlink()


@pytest.mark.parametrize("name,expected", [
    ("tmp-half-written", "state"), ("renamed-away", "state.tmp"), ("marker-without-weights", "state.old"),
    ("truncated-weights", "state.old"), ("missing-optimizer", "state.old"), ("old-format-marker", "state"),
    ("nothing-complete", None)])
def test_find_state_picks_a_complete_state(tmp_path, monkeypatch, name, expected):
    save_at(tmp_path / "s2", 2, monkeypatch)
    save_at(tmp_path / "s3", 3, monkeypatch)
    out = tmp_path / "run"
    out.mkdir()
    damaged_layout(out, tmp_path / "s2" / "state", tmp_path / "s3" / "state", name)
    assert run_state.find_state(out) == (out / expected if expected else None)
    if expected:
        assert loaded_step(out) == (3 if expected == "state.tmp" else 2)
    assert save_at(out, 4, monkeypatch)
    assert loaded_step(out) == 4 and sorted(p.name for p in out.iterdir()) == ["state"]
