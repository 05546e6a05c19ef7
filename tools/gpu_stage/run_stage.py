"""A time-boxed warm-start training stage on a GPU machine: cosine schedules sized to the seconds left.

    OUT=results BUDGET=530 INIT=checkpoints/piano-synth python tools/gpu_stage/run_stage.py PACK_DIR

1. unpacks the token pack (pack.py) to $DATA; on CUDA starts the CUDA tests beside it (unless TESTS=0);
2. a PROBE_STEPS-step (40) probe run measures samples/s at batch B x length L;
3. rounds of `python -m sashimi_core.train --init-from ...` (a deeper PRESET grows the model:
   sashimi_core/train/warm_start.py), each a cosine schedule (1/15 warm-up) whose step count fills the time left
   at SAFETY (0.95) x the rate measured so far, with a weight average of decay 1 - 5/steps (0.99..0.999), 6
   validations and 10 checkpoints. Round k + 1 starts from round k's checkpoint at a third of its learning
   rate, sized by the rate round k really had, while MIN_ROUND (150) seconds are left;
4. leaves OUT/stage.tar (checkpoint/ of the last round with the average; runK-metrics.jsonl and
   runK-train_config.json of every round; with RAW=1 raw.safetensors, the trained weights) and the logs.
   Env: B (32), L (16000), LR (3e-3), PRESET (sashimi-2), DEV (cuda), DATA (/tmp/data). Two stages can share
   one GPU: run two of these at once, each with its own OUT and DATA, TESTS=0 in one (tools/gpu_stage/README.md).
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

T0 = time.time()
BUDGET = float(os.environ.get("BUDGET", 540))
OUT = os.environ.get("OUT", "/tmp/out")
DEV = os.environ.get("DEV", "cuda")
INIT = os.environ.get("INIT", "checkpoints/piano-synth")
PRESET = os.environ.get("PRESET", "sashimi-2")
B, L, LR = int(os.environ.get("B", 32)), int(os.environ.get("L", 16000)), float(os.environ.get("LR", 3e-3))
PROBE_STEPS = int(os.environ.get("PROBE_STEPS", 40))
MIN_ROUND = float(os.environ.get("MIN_ROUND", 150))  # seconds left that still start another run
MIN_STEPS = int(os.environ.get("MIN_STEPS", 50))  # the shortest run worth starting
RESERVE = float(os.environ.get("RESERVE", 40))  # seconds kept for a run's final validation, checkpoint, packing
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("DATA", "/tmp/data")
TESTS = os.environ.get("TESTS", "1") == "1"
SAFETY = float(os.environ.get("SAFETY", 0.95))
RAW = os.environ.get("RAW", "0") == "1"
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def say(*args) -> None:
    line = " ".join(str(a) for a in (f"[{time.time() - T0:6.1f}s]", *args))
    print(line, flush=True)
    with open(f"{OUT}/driver.log", "a") as f:
        print(line, file=f)


def left() -> float:
    return BUDGET - (time.time() - T0)


def sh(cmd: list[str], timeout: float, name: str):
    """Run cmd, appending its output to OUT/all.log; returns the exit code or "timeout"."""
    say("run", name, " ".join(cmd), f"(timeout {timeout:.0f}s)")
    with open(f"{OUT}/all.log", "a") as f:
        f.write(f"\n===== {name}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=ENV).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    say(name, "rc", rc)
    return rc


def train_cmd(out: str, steps: int, init: str, lr: float, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sashimi_core.train", "--data", DATA, "--init-from", init, "--preset", PRESET,
            "--batch", str(B), "--length", str(L), "--sample-every", "0", "--no-progress", "--device", DEV,
            "--log-every", "10", "--out", out, "--steps", str(steps), "--lr", f"{lr:g}", *extra]


def overall_rate(metrics: str) -> float | None:
    """Samples/s of a run from its train records' steps and clock, validations and checkpoints included
    (the first window, with start-up and compilation, left out); None with fewer than two windows after it."""
    with open(metrics) as f:
        train = [r for r in map(json.loads, f) if r.get("kind") == "train"][1:]
    if len(train) < 2 or train[-1]["time"] <= train[0]["time"]:
        return None
    return (train[-1]["step"] - train[0]["step"]) * B * L / (train[-1]["time"] - train[0]["time"])


def cosine_run(name: str, init: str, lr: float, rate: float) -> str | None:
    """One warm-start run whose cosine schedule fills the time left at `rate` samples/s; its folder, or None
    when fewer than MIN_STEPS steps fit."""
    train_s = left() - RESERVE
    steps = int(train_s * rate / (B * L) * SAFETY)
    if steps < MIN_STEPS:
        return None
    ema = min(0.999, max(0.99, 1 - 5.0 / steps))
    say(f"{name}: {rate:.0f} samples/s -> {steps} steps at lr {lr:g} in ~{train_s:.0f}s, ema {ema:.4f}")
    run = f"{DATA}-{name}"
    shutil.rmtree(run, ignore_errors=True)
    sh(train_cmd(run, steps, init, lr, "--warmup", str(max(20, steps // 15)), "--schedule", "cosine", "--ema",
                 f"{ema:.4f}", "--val-every", str(max(25, steps // 6)), "--checkpoint-every",
                 str(max(25, steps // 10))), left() - RESERVE / 2, name)
    return run


def main(pack_dir: str) -> None:
    os.makedirs(OUT, exist_ok=True)
    if not os.path.isdir(f"{DATA}/train"):
        sh([sys.executable, f"{HERE}/unpack.py", pack_dir, DATA], 120, "unpack")
    tests = None
    if DEV == "cuda" and TESTS:
        tests = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
                                  "tests/test_graph_step.py"], stdout=open(f"{OUT}/cuda_tests.log", "w"),
                                 stderr=subprocess.STDOUT, env=ENV)

    probe = f"{DATA}-probe"
    shutil.rmtree(probe, ignore_errors=True)
    sh(train_cmd(probe, PROBE_STEPS, INIT, LR, "--val-every", "0", "--checkpoint-every", "100000", "--warmup",
                 "10"), min(150, left() - RESERVE - 20), "probe")
    if tests is not None:
        try:
            say("cuda tests rc", tests.wait(timeout=30))
        except subprocess.TimeoutExpired:
            tests.kill()
            say("cuda tests timeout")
    rate = overall_rate(f"{probe}/metrics.jsonl")
    if rate is None:
        raise SystemExit(f"the probe logged too few windows to measure a rate: see {OUT}/all.log")

    # Rounds: each a cosine run from the last one's checkpoint at a third of its learning rate, sized by the
    # rate the last run really had (two stages sharing a GPU make any probe misjudge), while MIN_ROUND s are left.
    runs, init, lr = [], INIT, LR
    while not runs or left() > MIN_ROUND:
        run = cosine_run(f"run{len(runs) + 1}", init, lr, rate)
        if run is None or not os.path.isdir(f"{run}/checkpoint"):
            break
        runs.append(run)
        rate = overall_rate(f"{run}/metrics.jsonl") or rate
        init, lr = f"{run}-init", lr / 3
        shutil.rmtree(init, ignore_errors=True)
        shutil.copytree(f"{run}/checkpoint", init)  # the next run's --init-from (a run clears its own folder)
    with tarfile.open(f"{OUT}/stage.tar", "w") as t:  # few files: a lease returns at most 8
        for k, run in enumerate(runs, 1):
            for name in ("metrics.jsonl", "train_config.json"):
                if os.path.exists(f"{run}/{name}"):
                    t.add(f"{run}/{name}", arcname=f"run{k}-{name}")
        if runs:
            t.add(f"{runs[-1]}/checkpoint", arcname="checkpoint")
            if RAW and os.path.exists(f"{runs[-1]}/state/model.safetensors"):
                t.add(f"{runs[-1]}/state/model.safetensors", arcname="raw.safetensors")
    say("done", len(runs), "runs", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main(sys.argv[1])
