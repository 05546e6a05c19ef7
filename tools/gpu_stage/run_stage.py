"""A time-boxed warm-start training stage on a GPU machine: size a cosine schedule to the seconds left.

    OUT=results BUDGET=530 INIT=checkpoints/piano-synth python tools/gpu_stage/run_stage.py PACK_DIR

1. unpacks the token pack (pack.py) to $DATA; on CUDA starts the CUDA tests beside it (unless TESTS=0);
2. a 30-step probe run measures samples/s at batch B x length L;
3. one run of `python -m sashimi_core.train --init-from INIT` (a deeper PRESET grows the model:
   sashimi_core/train/warm_start.py) whose step count fills the time left (SAFETY, 0.95, x the measured rate), cosine learning rate with a 1/15 warm-up, a weight average with decay
   1 - 5/steps (0.99..0.999), 6 validations and 10 checkpoints;
4. leaves OUT/stage.tar (checkpoint/ with the average, metrics.jsonl, train_config.json, and with RAW=1
   raw.safetensors, the trained weights) and the logs. Env: B (32), L (16000), LR (3e-3), PRESET (sashimi-2),
   DEV (cuda), DATA (/tmp/data). Two stages can share one GPU: run two of these at once, each with its own
   OUT and DATA, TESTS=0 in one and a lower SAFETY (tools/gpu_stage/README.md).
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
B, L, LR = int(os.environ.get("B", 32)), int(os.environ.get("L", 16000)), os.environ.get("LR", "3e-3")
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


def train_cmd(out: str, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sashimi_core.train", "--data", DATA, "--init-from", INIT, "--preset", PRESET,
            "--batch", str(B), "--length", str(L), "--sample-every", "0", "--no-progress", "--device", DEV,
            "--log-every", "10", "--out", out, "--steps", str(steps), "--lr", LR, *extra]


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
    sh(train_cmd(probe, 30, "--val-every", "0", "--checkpoint-every", "100000", "--warmup", "10"),
       min(150, left() - 60), "probe")
    if tests is not None:
        try:
            say("cuda tests rc", tests.wait(timeout=30))
        except subprocess.TimeoutExpired:
            tests.kill()
            say("cuda tests timeout")
    with open(f"{probe}/metrics.jsonl") as f:
        rates = [r["samples_per_s"] for r in map(json.loads, f) if r.get("kind") == "train"]
    rate = rates[-1]  # the first window includes start-up and compilation
    train_s = left() - 40  # final validation, checkpoint, packing
    steps = max(50, int(train_s * rate / (B * L) * SAFETY))
    ema = min(0.999, max(0.99, 1 - 5.0 / steps))
    say(f"probe rates {rates}: {rate:.0f} samples/s -> {steps} steps in ~{train_s:.0f}s, ema {ema:.4f}")

    run = f"{DATA}-run"
    shutil.rmtree(run, ignore_errors=True)
    sh(train_cmd(run, steps, "--warmup", str(max(20, steps // 15)), "--schedule", "cosine", "--ema", f"{ema:.4f}",
                 "--val-every", str(max(25, steps // 6)), "--checkpoint-every", str(max(25, steps // 10))),
       left() - 25, "train")
    with tarfile.open(f"{OUT}/stage.tar", "w") as t:  # few files: a lease returns at most 8
        for name, arcname in (("checkpoint", "checkpoint"), ("metrics.jsonl", "metrics.jsonl"),
                              ("train_config.json", "train_config.json"),
                              ("state/model.safetensors", "raw.safetensors" if RAW else None)):
            if arcname and os.path.exists(f"{run}/{name}"):
                t.add(f"{run}/{name}", arcname=arcname)
    say("done", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main(sys.argv[1])
