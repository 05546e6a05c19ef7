"""`python -m bench table`: the paper's model comparison, re-measured under one wall-clock training budget.

    python -m bench table --data piano-synth --quick                     # CPU smoke version, < 20 min
    python -m bench table --data sc09-synth --budget-minutes 60 --device cuda

Each system (a preset of ``sashimi.PRESETS`` or ``baselines.BASELINE_PRESETS``) is trained with the same budget,
data, clip length, batch and seed into ``<runs>/<data>/<system>`` and then scored: parameters, test NLL (bits per
sample, 95% t-interval over clips, ``sashimi_core.evaluate``), training samples/s (steady rate from the run's
metrics.jsonl, first step excluded), generation samples/s at batch 1 and 16 (``generate(engine="auto")``, a short
timed run after a warm-up) and, for SC09-like data, FID/IS/mIS/AM of generated 1-s clips against real test clips
(``audio_metrics.evaluate_audio``). Results: bench/results/table_<data>.json and .md (``--out`` to change).

Budget: the trainer only knows ``--steps``, so each system trains in a subprocess (``python -m sashimi_core.train``
with an unreachable step count, constant lr after a short warm-up, no validation or sampling) that is sent SIGTERM
once ``budget`` seconds have passed since it reported status "running" (model built, data scanned); the trainer
finishes the step in flight, checkpoints and writes status "stopped". The clock includes the first step (and so
any JIT compilation). A step still in flight after ``--grace-seconds`` is killed: the row then says that no step
completed. Picking a step count from a measured steps/s was rejected: on a shared machine the rate drifts.

Resumable: a finished system leaves ``table_train.json`` (and ``table_score.json``) in its run folder and is not
retrained (nor rescored with the same scoring settings); a run folder without it (interrupted) is trained afresh.
Learning rates: SaShiMi/S4 4e-3 (SSM parameters 1e-3), WaveNet and SampleRNN 1e-3 (the reference's AdamW default).
SampleRNN trains on whole clips with gradient-norm clipping (the reference: TBPTT over 1024-sample chunks, batch
128, clipping by value).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench import common
from sashimi_core.ops.cauchy import set_threads

NAME = "table"
ALL_SYSTEMS = ("sashimi-2", "sashimi-4", "sashimi-6", "sashimi-8", "s4-isotropic-4", "s4-isotropic-8",
               "wavenet-512", "wavenet-1024", "samplernn-2tier", "samplernn-3tier")
QUICK_SYSTEMS = ("sashimi-2", "sashimi-4", "sashimi-8", "s4-isotropic-4", "wavenet-512", "samplernn-3tier")
LR = {"sashimi": 4e-3, "wavenet": 1e-3, "samplernn": 1e-3}
# Defaults per mode; piano (YouTubeMix-like) full mode uses the paper's 8-s clips at batch 1.
QUICK = dict(budget_s=60.0, length=4000, batch=2, warmup=2, eval_clips=32, gen_seconds=3.0, sc09_clips=16,
             real_clips=200, clip_cap_s=120.0, runs="runs/table-quick")
FULL = dict(budget_s=3600.0, length=None, batch=None, warmup=100, eval_clips=0, gen_seconds=10.0, sc09_clips=256,
            real_clips=500, clip_cap_s=0.0, runs="runs/table")
SC09_METRICS = ("fid", "is", "mis", "am")

# Goel et al. 2022 ("It's Raw! Audio Generation with State-Space Models"): YouTubeMix test NLL (bits) and params.
PAPER_YOUTUBEMIX = {
    "samplernn-2tier": (1.762, 51.85e6), "samplernn-3tier": (1.723, 35.03e6),
    "wavenet-512": (1.467, 2.67e6), "wavenet-1024": (1.449, 4.24e6),
    "sashimi-2": (1.446, 1.29e6), "sashimi-4": (1.341, 2.21e6), "sashimi-6": (1.315, 3.13e6),
    "sashimi-8": (1.294, 4.05e6), "s4-isotropic-4": (1.429, 2.83e6), "s4-isotropic-8": (1.524, 5.53e6),
}
# SC09 (unconditional): test NLL bits and classifier metrics (the paper's SC09 classifier, not ours).
PAPER_SC09 = {"sashimi": {"nll_bits": 1.891, "fid": 1.99, "is": 4.12, "mis": 24.57, "am": 0.90},
              "wavenet": {"nll_bits": 1.925}, "samplernn": {"nll_bits": 2.042}}


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return out


def clean(x):
    """JSON-safe copy: nan/inf -> None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    return x


def dataset_name(root: Path) -> str:
    try:
        return json.loads((root / "dataset.json").read_text())["name"]
    except (OSError, ValueError, KeyError):
        return root.name


# ------------------------------------------------------------------------------------------ training
def train_settings(args, system: str, architecture: str) -> dict:
    """What defines a system's budget run; a finished run with other settings is not reused."""
    return {"system": system, "data": str(args.root.resolve()), "budget_s": args.budget_s, "length": args.length,
            "batch": args.batch, "seed": args.seed, "lr": LR.get(architecture, 1e-3), "warmup": args.warmup,
            "device": args.device, "threads": args.threads}


def train_budget(args, system: str, architecture: str, run: Path) -> dict:
    """Train `system` for the budget in a subprocess (SIGTERM at the end), or reuse a finished run."""
    want = train_settings(args, system, architecture)
    marker = run / "table_train.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["settings"] == want:
            return {**done, "reused": True}
        diff = {k: (done["settings"].get(k), v) for k, v in want.items() if done["settings"].get(k) != v}
        raise ValueError(f"{run} holds a table run with other settings {diff}; pass --retrain or another --runs")
    shutil.rmtree(run, ignore_errors=True)  # interrupted before its budget ran out: train it afresh
    run.mkdir(parents=True)
    cmd = [sys.executable, "-m", "sashimi_core.train", "--data", str(args.root), "--preset", system, "--out", str(run),
           "--steps", str(10**9), "--batch", str(args.batch), "--length", str(args.length), "--lr", str(want["lr"]),
           "--schedule", "constant", "--warmup", str(args.warmup), "--val-every", "0", "--sample-every", "0",
           "--checkpoint-every", str(10**9), "--log-every", "1", "--seed", str(args.seed), "--threads",
           str(args.threads), "--device", args.device, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(common.ROOT), os.environ.get("PYTHONPATH")]))}
    metrics = run / "metrics.jsonl"
    with open(run / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=common.ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        killed = sent_term = False
        try:
            t0 = time.time()
            while not any(m.get("status") == "running" for m in read_jsonl(metrics)):
                if proc.poll() is not None or time.time() - t0 > args.startup_timeout:
                    tail = (run / "train.log").read_text()[-1500:]
                    raise RuntimeError(f"training did not start (exit {proc.poll()}): {tail}")
                time.sleep(0.2)
            t_run = next(m["time"] for m in read_jsonl(metrics) if m.get("status") == "running")
            while proc.poll() is None and time.time() < t_run + args.budget_s:
                time.sleep(0.2)
            load = round(os.getloadavg()[0], 2)  # other work on the machine takes steps from this budget
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                sent_term = True
                try:
                    proc.wait(timeout=args.grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    killed = True
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    lines = read_jsonl(metrics)
    status = [m for m in lines if m["kind"] == "status"][-1]
    steps = [m for m in lines if m["kind"] == "train"]
    n = args.batch * args.length
    rate = ((steps[-1]["step"] - steps[0]["step"]) * n / max(steps[-1]["time"] - steps[0]["time"], 1e-9)
            if len(steps) >= 2 else (steps[0]["samples_per_s"] if steps else None))
    checkpointed = (run / "checkpoint" / "config.json").is_file() and status["status"] == "stopped"
    end = status["time"] if status["status"] != "running" else time.time()
    done = {"settings": want, "status": "killed" if killed else status["status"], "message": status.get("message"),
            "returncode": proc.returncode, "steps": status.get("step") if checkpointed else 0,
            "steps_logged": steps[-1]["step"] if steps else 0, "train_wall_s": round(end - t_run, 1),
            "first_step_s": round(steps[0]["time"] - t_run, 2) if steps else None,
            "train_samples_per_s": rate, "checkpoint": checkpointed, "stopped_by_budget": sent_term,
            "loadavg_1m_end": load}
    done["samples_seen"] = done["steps"] * n
    common.write_json("", done, marker)
    return done


# ------------------------------------------------------------------------------------------ scoring
class Spread:
    """`n` evenly spaced items of a fixed-segment test set (all when n is 0 or too large), so a short evaluation
    still covers every part of the split rather than its first files."""

    def __init__(self, dataset, n: int):
        self.dataset = dataset
        m = len(dataset)
        self.index = list(range(m)) if not n or n >= m else np.unique(np.linspace(0, m - 1, n).round()).tolist()

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        return self.dataset[int(self.index[i])]


def gen_rate(model, batch: int, seconds: float, seed: int) -> float:
    """Aggregate samples/s of generate(engine="auto") at this batch: warm-up, then `seconds` of sampling."""
    from sashimi_core.generation.sampler import generate

    generate(model, 32, n_samples=batch, seed=seed)  # JIT compile / caches
    t0 = time.perf_counter()
    n_max = int(seconds * 400_000 / batch) + 256  # upper bound; the stop callback ends it first
    _, stats = generate(model, n_max, n_samples=batch, seed=seed, return_stats=True,
                        stop=lambda: time.perf_counter() - t0 >= seconds)
    return batch * stats.steps / (time.perf_counter() - t0)


def sc09_metrics(model, args, run: Path) -> dict:
    """FID/IS/mIS/AM of args.sc09_clips generated clips (batches of 16) against real test clips."""
    import soundfile as sf

    from sashimi_core.evaluate.audio_metrics import evaluate_audio, real_clips
    from sashimi_core.generation.sampler import generate
    from sashimi_core.ops.quantize import decode

    t0, clips = time.perf_counter(), []
    cap = args.clip_cap_s or math.inf
    for start in range(0, args.sc09_clips, 16):
        tokens, stats = generate(model, args.gen_clip_samples, n_samples=min(16, args.sc09_clips - start),
                                 seed=args.seed + start, return_stats=True,
                                 stop=lambda: time.perf_counter() - t0 > cap)
        if stats.stopped:
            return {"sc09_note": f"generating {args.sc09_clips} clips takes longer than the {cap:.0f} s cap: "
                                 f"no FID/IS/mIS/AM"}
        clips.append(decode(tokens.cpu(), model.cfg.quantization).numpy())
    gen_s = time.perf_counter() - t0
    generated = np.concatenate(clips)
    (run / "table_samples").mkdir(exist_ok=True)
    for i, clip in enumerate(generated[:4]):
        sf.write(run / "table_samples" / f"clip_{i}.wav", clip, model.cfg.sample_rate)
    real, labels = real_clips(args.root, "test", args.real_clips or None, args.seed)
    res = evaluate_audio(generated, real, real_labels=labels if (labels >= 0).all() else None)
    return {**{k: res[k] for k in SC09_METRICS}, "n_generated": res["n_generated"], "n_real": res["n_real"],
            "real_reference": res["reference"], "class_histogram": res["generated_class_histogram"],
            "clip_generation_s": round(gen_s, 1)}


def score_settings(args, train: dict) -> dict:
    return {"eval_clips": args.eval_clips, "eval_batch": args.eval_batch, "length": args.length,
            "gen_seconds": args.gen_seconds, "sc09": args.sc09, "sc09_clips": args.sc09_clips,
            "real_clips": args.real_clips, "gen_clip_samples": args.gen_clip_samples, "seed": args.seed,
            "clip_cap_s": args.clip_cap_s,
            "device": args.device, "steps": train["steps"]}


def score(args, run: Path, train: dict) -> dict:
    """Test NLL, generation speed and (SC09) classifier metrics of the run's checkpoint; cached per settings."""
    want = score_settings(args, train)
    cache = run / "table_score.json"
    if cache.is_file() and not args.rescore:
        saved = json.loads(cache.read_text())
        if saved["settings"] == want:
            return saved["result"]
    import sashimi_core.nn.registry  # noqa: F401 - registers wavenet/samplernn with load_model
    from sashimi_core.checkpoint import load_model
    from sashimi_core.data.loaders import AudioClipDataset
    from sashimi_core.evaluate.nll import evaluate

    model = load_model(run / "checkpoint", map_location=args.device)
    test = AudioClipDataset(args.root, "test", args.length, model.cfg.quantization, model.cfg.sample_rate,
                            random_crop=False)
    t0 = time.perf_counter()
    ev = evaluate(model, Spread(test, args.eval_clips), args.eval_batch, device=args.device)
    out = {k: ev[k] for k in ("nll_bits", "ci_low", "ci_high", "n_clips", "unigram_entropy_bits")}
    out["eval_s"] = round(time.perf_counter() - t0, 1)
    out["params"] = sum(p.numel() for p in model.parameters())
    out["gen_b1_samples_per_s"] = gen_rate(model, 1, args.gen_seconds, args.seed)
    out["gen_b16_samples_per_s"] = gen_rate(model, 16, args.gen_seconds, args.seed)
    if args.sc09:
        out.update(sc09_metrics(model, args, run))
    common.write_json("", clean({"settings": want, "result": out}), cache)
    return out


# ------------------------------------------------------------------------------------------ table
def run_system(args, system: str) -> dict:
    from sashimi_core import ALL_PRESETS as presets

    if system not in presets:
        return {"system": system, "error": f"unknown preset; choose from {sorted(presets)}"}
    arch = presets[system].architecture
    row = {"system": system, "architecture": arch}
    if not args.sc09 and system in PAPER_YOUTUBEMIX:
        row["paper_nll_bits"], row["paper_params"] = PAPER_YOUTUBEMIX[system]
    run = args.runs / system
    try:
        tr = train_budget(args, system, arch, run)
        keys = ("steps", "samples_seen", "train_wall_s", "first_step_s", "train_samples_per_s", "status",
                "loadavg_1m_end")
        row.update({k: tr.get(k) for k in keys}, reused_training=tr.get("reused", False))
        notes = []
        if arch == "samplernn":
            notes.append("whole-clip BPTT (no TBPTT)")
        if not tr["checkpoint"] and tr["status"] == "failed":
            notes.append(f"training failed: {tr['message']}")
        elif not tr["checkpoint"]:
            notes.append(f"no optimizer step completed in the {args.budget_s:.0f} s budget "
                         f"(+{args.grace_s:.0f} s grace); trainer status {tr['status']}: {tr['message']}")
        elif not tr.get("stopped_by_budget", True):
            notes.append(f"stopped after {tr['train_wall_s']:.0f} s, before the budget, by a signal not sent here "
                         f"({tr['message']}); rerun after deleting {run}")
        elif tr["train_wall_s"] > args.budget_s + 10:
            notes.append(f"the last step overran the budget: trained {tr['train_wall_s']:.0f} s")
        if tr["checkpoint"]:
            row.update(score(args, run, tr))
        if row.get("sc09_note"):
            notes.append(row.pop("sc09_note"))
        row["note"] = "; ".join(notes) or None
    except Exception as exc:  # noqa: BLE001 - one system failing must not lose the others' rows
        row["error"] = f"{type(exc).__name__}: {exc}"[:800]
    return row


def markdown(data: dict) -> str:
    """The results as markdown: our table, then the paper's."""
    s = data["settings"]
    head = (f"# {data['data']}: {len(data['rows'])} systems, {s['budget_s']:.0f} s training budget each "
            f"({'quick' if data['quick'] else 'full'} mode)\n\n"
            f"L={s['length']}, batch {s['batch']}, seed {s['seed']}, device {s['device']}, {s['threads']} threads, "
            f"test NLL over {s['eval_clips'] or 'all'} clips; {data['env']['cpu_model']}, load average at start "
            f"{data['env']['loadavg_1m_at_start']}; total {data['total_wall_s']:.0f} s; commit "
            f"{data['env']['git_commit']}\n\n")
    rows = []
    for r in data["rows"]:
        m = dict(r)
        if r.get("nll_bits") is not None:
            half = (r["ci_high"] - r["ci_low"]) / 2 if r.get("ci_high") is not None else float("nan")
            m["test NLL bits (95% CI)"] = f"{r['nll_bits']:.3f} ± {half:.3f}"
        if r.get("paper_nll_bits"):
            m["paper NLL (params)"] = f"{r['paper_nll_bits']:.3f} ({r['paper_params'] / 1e6:.2f}M)"
        for k in ("params",):
            m[k] = f"{r[k] / 1e6:.2f}M" if r.get(k) else None
        for k in ("train_samples_per_s", "gen_b1_samples_per_s", "gen_b16_samples_per_s"):
            m[k] = f"{r[k]:,.0f}" if r.get(k) else None
        for k in SC09_METRICS:
            m[k] = f"{r[k]:.2f}" if r.get(k) is not None else None
        m["note"] = "; ".join(x for x in (r.get("note"), r.get("error")) if x) or None
        rows.append(m)
    cols = ["system", "params", "steps", "train_samples_per_s", "test NLL bits (95% CI)"]
    cols += [*SC09_METRICS] if data["sc09"] else ["paper NLL (params)"]
    cols += ["gen_b1_samples_per_s", "gen_b16_samples_per_s", "loadavg_1m_end", "note"]
    text = head + common.markdown_table(rows, cols)
    text += ("\n\nsamples/s: training (steady, first step excluded) and generation at batch 1 / 16 (aggregate); "
             "loadavg_1m_end: the machine's 1-min load average when the budget ended (other work there takes "
             "steps from the budget).")
    if data["sc09"]:
        paper = [{"model": k, **{m: v.get(m) for m in ("nll_bits", *SC09_METRICS)}} for k, v in PAPER_SC09.items()]
        text += "\n\nPaper (SC09; its own classifier, so FID/IS/mIS/AM are not comparable with ours):\n\n"
        text += common.markdown_table(paper, ["model", "nll_bits", *SC09_METRICS])
    else:
        paper = [{"model": k, "params": f"{p / 1e6:.2f}M", "nll_bits": f"{v:.3f}"}
                 for k, (v, p) in PAPER_YOUTUBEMIX.items()]
        text += "\n\nPaper (YouTubeMix, fully trained):\n\n"
        text += common.markdown_table(paper, ["model", "params", "nll_bits"])
    return text + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench table", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="data set name (piano-synth, sc09-synth) or folder")
    p.add_argument("--data-root", default="data")
    p.add_argument("--systems", help=f"comma list of presets (default all: {','.join(ALL_SYSTEMS)}; "
                                     f"--quick: {','.join(QUICK_SYSTEMS)})")
    p.add_argument("--quick", action="store_true", help="CPU smoke version: 60 s budget, L=4000, batch 2, "
                                                         "32 test clips, 16 SC09 clips, 6 systems")
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--budget-seconds", type=float)
    p.add_argument("--length", type=int, help="clip length (default: piano 131072, sc09 16000; quick 4000)")
    p.add_argument("--batch", type=int, help="clips per step (default: piano 1, sc09 8; quick 2)")
    p.add_argument("--warmup", type=int, help="lr warm-up steps (default 100, quick 10)")
    p.add_argument("--seed", type=int, default=0, help="the same seed for every system (init, data, sampling)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--eval-clips", type=int, help="test clips, evenly spaced (0 = all; quick 32)")
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--gen-seconds", type=float, help="timed generation per batch size (default 10, quick 3)")
    p.add_argument("--sc09-clips", type=int, help="generated clips for FID/IS/mIS/AM (default 256, quick 16)")
    p.add_argument("--real-clips", type=int, help="real test clips for the metrics (default 500, quick 200)")
    p.add_argument("--clip-cap-s", type=float, help="give up the SC09 metrics of a system whose clip generation "
                                                    "takes longer (0 = no cap; quick 120)")
    p.add_argument("--gen-clip-samples", type=int, default=16000, help="generated clip length (16000 = 1 s; "
                   "shorter clips are zero-padded by the classifier: smoke tests only)")
    p.add_argument("--no-sc09-metrics", action="store_true", help="skip FID/IS/mIS/AM on SC09-like data")
    p.add_argument("--grace-seconds", type=float, help="wait this long after SIGTERM for the step in flight "
                                                       "(default max(60, budget))")
    p.add_argument("--startup-timeout", type=float, default=900.0)
    p.add_argument("--runs", help="run folders root (default runs/table, quick runs/table-quick)")
    p.add_argument("--retrain", action="store_true", help="delete and retrain the chosen systems' runs")
    p.add_argument("--rescore", action="store_true", help="recompute scores even when cached")
    p.add_argument("--out", help="JSON path (default bench/results/table_<data>.json); .md written next to it")
    args = p.parse_args(argv)
    from sashimi_core.data.loaders import resolve_dataset

    t_start = time.time()
    mode = QUICK if args.quick else FULL
    args.root = resolve_dataset(args.data, args.data_root)
    name = dataset_name(args.root)
    args.sc09 = name.startswith("sc09") and not args.no_sc09_metrics
    budgets = (args.budget_seconds, args.budget_minutes and args.budget_minutes * 60, mode["budget_s"])
    args.budget_s = float(next(b for b in budgets if b is not None))
    args.length = args.length or mode["length"] or (16000 if name.startswith("sc09") else 131072)
    args.batch = args.batch or mode["batch"] or (8 if name.startswith("sc09") else 1)
    for k in ("warmup", "eval_clips", "gen_seconds", "sc09_clips", "real_clips", "clip_cap_s"):
        if getattr(args, k) is None:
            setattr(args, k, mode[k])
    args.eval_batch = args.eval_batch or (8 if args.length <= 16000 else 1)
    args.grace_s = args.grace_seconds if args.grace_seconds is not None else max(60.0, args.budget_s)
    args.runs = Path(args.runs or mode["runs"]) / name
    systems = args.systems.split(",") if args.systems else list(QUICK_SYSTEMS if args.quick else ALL_SYSTEMS)
    set_threads(args.threads)
    out = Path(args.out) if args.out else common.RESULTS_DIR / f"table_{name}.json"
    data = {"benchmark": NAME, "data": name, "data_root": str(args.root), "quick": args.quick, "sc09": args.sc09,
            "env": common.env_record(args.device), "systems": systems,
            "settings": {k: getattr(args, k) for k in ("budget_s", "length", "batch", "warmup", "seed", "device",
                                                        "threads", "eval_clips", "eval_batch", "gen_seconds",
                                                        "sc09_clips", "real_clips", "gen_clip_samples", "clip_cap_s",
                                                        "grace_s")},
            "lr": LR, "runs": str(args.runs), "rows": [], "total_wall_s": 0.0,
            "paper": {"youtubemix": {k: {"nll_bits": v, "params": n} for k, (v, n) in PAPER_YOUTUBEMIX.items()},
                      "sc09": PAPER_SC09},
            "command": "python -m bench table " + " ".join(argv if argv is not None else sys.argv[1:])}
    def on_term(signum, frame):  # SIGTERM here: unwind, so train_budget kills its trainer subprocess
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        for system in systems:
            if args.retrain:
                shutil.rmtree(args.runs / system, ignore_errors=True)
            t0 = time.time()
            row = run_system(args, system)
            row["system_wall_s"] = round(time.time() - t0, 1)
            data["rows"].append(row)
            data["total_wall_s"] = time.time() - t_start
            print({k: v for k, v in row.items() if k not in ("real_reference", "class_histogram")},
                  file=sys.stderr, flush=True)
            common.write_json(NAME, clean(data), out)
            out.with_suffix(".md").write_text(markdown(data))
    finally:
        signal.signal(signal.SIGTERM, previous)
    text = markdown(data)
    print(text)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if all("error" not in r for r in data["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
