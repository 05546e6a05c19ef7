"""Background jobs: training runs and data set builds as separate processes, watched through their files.

A job is started with ``subprocess.Popen(..., start_new_session=True)`` so it outlives the app, and leaves
``job.json`` (pid, command, start time, log file) in its folder:

    runs/<name>/job.json, train.log    python -m sashimi_core.train --data D --preset P --out runs/<name> ...
    <data>/.builds/<name>/job.json, build.log   python -m sashimi_core.data build <name> --out <data>/<name>

A job is *running* iff its pid is alive (not a zombie) and that process's command line is the recorded
one, so a reused pid is never mistaken for our job and an app restart reattaches to jobs still running.
The trainer reports through ``runs/<name>/metrics.jsonl`` (one JSON object per line with "kind" and
"time": train / val / sample / status records); the parser skips a partial last line and bad lines.
Stop = SIGTERM (the trainer saves and writes status "stopped"); Resume = the same command + ``--resume``.

Run admin lives here too: deleting a user run (never a shipped checkpoint) and importing a reference backbone
into a new run folder.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from playground import processes
from playground.services import MODELS, NAME_RE, ROOT, ServiceError, Settings, find_model, list_models

JOB_FILE, METRICS_FILE, TRAIN_LOG, BUILD_LOG = "job.json", "metrics.jsonl", "train.log", "build.log"
BUILDERS = ("sc09-synth", "piano-synth")
MAX_PLOT_POINTS = 2000
FINAL_STATES = ("finished", "failed", "stopped")
EXTERNAL_FRESH_S = 120.0  # a run without job.json counts as running while metrics.jsonl changed this recently


# ------------------------------------------------------------------------------------------ folders
def run_folder(settings: Settings, name) -> Path:
    """The folder of run `name`: the one place a run name from a request becomes a path. The name must match
    NAME_RE and the folder must resolve to a direct child of the runs folder (no '..', no symlink out)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        shown = repr(name)[:40] if isinstance(name, str) else type(name).__name__
        raise ServiceError(f"{shown} is not a run name (1-64 letters, digits, '.', '_' or '-').")
    root = Path(settings.runs_dir).resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise ServiceError(f"Run {name!r} is not inside the runs folder.")
    return folder


def read_job(folder) -> dict | None:
    """The app's note of how it started folder's job (shown to the user, never executed or signalled)."""
    try:
        job = json.loads((Path(folder) / JOB_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return job if isinstance(job, dict) else None


def folder_running(folder, kind: str = "train") -> bool:
    return processes.running_pid(kind, folder) is not None


def spawn(command: list[str], folder: Path, log_name: str, kind: str) -> dict:
    """Start a trainer / builder command, output to folder/log_name; write folder/job.json for the record."""
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    proc = processes.spawn(command, folder / log_name, env, os.getcwd())
    job = {"pid": proc.pid, "command": command, "started": time.time(), "kind": kind}
    tmp = folder / f".{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(job, indent=2) + "\n")
    os.replace(tmp, folder / JOB_FILE)
    return job


def log_tail(path, n_bytes: int = 4000) -> str:
    """Last n_bytes of a log, with tqdm's carriage-return redraws collapsed to their final state."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(line.split("\r")[-1] for line in text.split("\n"))


# ---------------------------------------------------------------------------------------------- metrics
def read_metrics(path) -> dict:
    """Parse metrics.jsonl defensively: {"train", "val", "samples": [records], "status": last status record
    or None, "bad_lines": count}. A last line without its newline (being written) is ignored."""
    out = {"train": [], "val": [], "samples": [], "status": None, "bad_lines": 0}
    try:
        data = Path(path).read_bytes()
    except OSError:
        return out
    lines = data.split(b"\n")
    for raw in lines[:-1]:  # the piece after the last newline is partial (or empty)
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            out["bad_lines"] += 1
            continue
        if not isinstance(rec, dict):
            out["bad_lines"] += 1
            continue
        kind = rec.get("kind")
        if kind == "train" and isinstance(rec.get("step"), (int, float)):
            out["train"].append(rec)
        elif kind == "val" and isinstance(rec.get("step"), (int, float)):
            out["val"].append(rec)
        elif kind == "sample" and isinstance(rec.get("wav"), str):
            out["samples"].append(rec)
        elif kind == "status":
            out["status"] = rec
    train = out["train"]
    if len(train) > MAX_PLOT_POINTS:  # thin for plotting, always keeping the latest record
        out["train"] = train[::math.ceil(len(train) / MAX_PLOT_POINTS)]
        if out["train"][-1] is not train[-1]:
            out["train"].append(train[-1])
    return out


def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def run_status(run_dir) -> dict:
    """Everything the Train tab shows about one run, from job.json, metrics.jsonl and the log."""
    run_dir = Path(run_dir)
    job = read_job(run_dir)
    pid = processes.running_pid("train", run_dir)
    running = pid is not None
    m = read_metrics(run_dir / METRICS_FILE)
    last = m["train"][-1] if m["train"] else {}
    status = m["status"] or {}
    if running:
        state = "running" if m["train"] else "starting"
    elif status.get("status") in FINAL_STATES:
        state = status["status"]
    elif job is not None:
        state = "died"  # the process is gone without a final status (killed, crashed before writing it)
    elif m["train"] or m["status"]:  # started outside the app (CLI): judge by how fresh the metrics are
        fresh = time.time() - _mtime(run_dir / METRICS_FILE) < EXTERNAL_FRESH_S
        state = "running (started outside the app)" if fresh else "no recent progress (started outside the app)"
    else:
        state = "idle"
    step, total = _num(last.get("step")), _num(last.get("total_steps"))
    elapsed = _num(last.get("elapsed_s"))
    eta = None
    if state.startswith("running") and step and total and elapsed and total > step:
        eta = elapsed / step * (total - step)
    samples = []
    for rec in m["samples"][-2:][::-1]:
        wav = (run_dir / rec["wav"]).resolve()
        if wav.is_relative_to(run_dir.resolve()) and wav.is_file():
            samples.append({"wav": str(wav), "step": rec.get("step"), "nll_bits": _num(rec.get("nll_bits"))})
    return {
        "name": run_dir.name, "run_dir": str(run_dir), "state": state, "running": running,
        "pid": pid, "command": job.get("command") if job and running else None, "started_by_app": job is not None,
        "step": step, "total_steps": total, "loss_bits": _num(last.get("loss_bits")),
        "samples_per_s": _num(last.get("samples_per_s")), "elapsed_s": elapsed, "eta_s": eta,
        "val_nll_bits": _num(m["val"][-1].get("val_nll_bits")) if m["val"] else None,
        "message": status.get("message") or "", "train": m["train"], "val": m["val"], "samples": samples,
        "has_checkpoint": (run_dir / "checkpoint" / "model.safetensors").is_file(),
        "log_tail": log_tail(run_dir / TRAIN_LOG, 3000),
        "metrics_mtime": _mtime(run_dir / METRICS_FILE), "bad_lines": m["bad_lines"],
    }


def _mtime(path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def _duration(s) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def describe_status(st: dict) -> str:
    """One markdown paragraph for a run's status."""
    if st["state"] == "idle":
        return f"**{st['name']}**: no training job recorded."
    parts = [f"**{st['name']}**: {st['state']}"]
    if st["step"] is not None:
        total = f"/{int(st['total_steps']):,}" if st["total_steps"] else ""
        pct = f" ({100 * st['step'] / st['total_steps']:.0f}%)" if st["total_steps"] else ""
        parts.append(f"step {int(st['step']):,}{total}{pct}")
    if st["loss_bits"] is not None:
        parts.append(f"loss {st['loss_bits']:.3f} bits")
    if st["val_nll_bits"] is not None:
        parts.append(f"val NLL {st['val_nll_bits']:.3f} bits")
    if st["samples_per_s"] is not None:
        parts.append(f"{st['samples_per_s']:,.0f} samples/s")
    if st["elapsed_s"] is not None:
        parts.append(f"elapsed {_duration(st['elapsed_s'])}")
    if st["eta_s"] is not None:
        parts.append(f"ETA {_duration(st['eta_s'])}")
    text = " · ".join(parts)
    if st["message"]:
        text += f"\n\n*Trainer: {st['message']}*"
    if st["state"] == "died":
        text += "\n\nThe training process exited without reporting a final status; see the log below."
    return text


# ---------------------------------------------------------------------------------------------- training
def list_runs(settings: Settings) -> list[str]:
    """Run folders (with a job, metrics or config), running ones first, then most recently changed."""
    root = Path(settings.runs_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and any((p / f).exists() for f in (
        JOB_FILE, METRICS_FILE, "train_config.json"))]
    runs.sort(key=lambda p: (not folder_running(p), -max(_mtime(p / METRICS_FILE), _mtime(p / JOB_FILE))))
    return [p.name for p in runs]


def running_runs(settings: Settings) -> list[str]:
    return [name for name in list_runs(settings) if folder_running(Path(settings.runs_dir) / name)]


def list_datasets(settings: Settings) -> list[str]:
    """Data set folders under the data folder, plus the buildable names not built yet."""
    root = Path(settings.data_dir)
    built = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []
    return built + [b for b in BUILDERS if b not in built]


def trainer_available() -> bool:
    return importlib.util.find_spec("sashimi_core.train") is not None


def train_command(data: str, preset: str, out: Path, steps: int, batch: int, lr: float) -> list[str]:
    """The trainer's command line; validation, samples and checkpoints are spaced to suit short runs too."""
    every = {"--log-every": max(1, min(10, steps // 50)), "--val-every": max(10, steps // 10),
             "--sample-every": max(20, min(100, steps // 5)),  # a first sample within minutes
             "--checkpoint-every": max(10, min(100, steps // 5))}
    return [sys.executable, "-m", "sashimi_core.train", "--data", data, "--preset", preset, "--out", str(out),
            "--steps", str(int(steps)), "--batch", str(int(batch)), "--lr", repr(float(lr)),
            *(x for k, v in every.items() for x in (k, str(v))), "--no-progress"]


PUBLIC_MAX_BATCH = 8


def _check_writer(settings: Settings, what: str) -> None:
    """Refuse a request that writes, deletes, imports or stops on a public server (whatever the UI shows)."""
    if settings.public:
        raise ServiceError(f"{what} is turned off on this public server; run the app locally "
                           "(python app.py) to do it.")


def _check_can_train(settings: Settings) -> None:
    if not settings.training:
        raise ServiceError("Training is turned off on this public server; run the app locally to train.")
    if not trainer_available():
        raise ServiceError("The trainer (sashimi_core.train) is not installed in this checkout yet.")
    busy = running_runs(settings)
    if busy:
        raise ServiceError(f"Run {busy[0]!r} is already training; stop it before starting another.")


def _resolve_data(settings: Settings, data: str) -> Path:
    if not data:
        raise ServiceError("Choose a data set (build one first if the list shows only builders).")
    if not isinstance(data, str):
        raise ServiceError("The data set must be given by its name.")
    p = Path(data)
    if settings.public:  # a public server trains only on its own data sets, named, never on a path
        if not NAME_RE.match(data):
            raise ServiceError(f"Data set {data[:40]!r}: on this public server choose one of the listed names.")
        p = Path(settings.data_dir) / data
    folder = p if p.is_dir() else Path(settings.data_dir) / data
    if not folder.is_dir():
        hint = " Build it first (Build data set)." if data in BUILDERS else ""
        raise ServiceError(f"Data set {data!r} was not found at {folder}.{hint}")
    return folder.resolve()


def training_presets(settings: Settings) -> tuple[str, ...]:
    """The SaShiMi preset names a run may use here (all of them, or the public server's short list)."""
    from sashimi_core import PRESETS

    return tuple(settings.train_presets or PRESETS)


def start_training(settings: Settings, name: str, data: str, preset: str, steps, batch, lr) -> dict:
    """Validate and start `python -m sashimi_core.train` for a new run. Returns the job dict."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ServiceError("Name the run with 1-64 letters, digits, '.', '_' or '-' (no spaces).")
    allowed = training_presets(settings)
    if preset not in allowed:
        raise ServiceError(f"Unknown or disallowed preset {preset!r}; choose one of {', '.join(allowed)}.")
    try:
        steps, batch, lr = int(steps), int(batch), float(lr)
    except (TypeError, ValueError) as exc:
        raise ServiceError("Steps and batch must be whole numbers and the learning rate a number.") from exc
    cap = settings.max_train_steps or 10_000_000
    if not 1 <= steps <= cap:
        raise ServiceError(f"Steps must be between 1 and {cap:,}, got {steps}.")
    max_batch = PUBLIC_MAX_BATCH if settings.public else 1024
    if not 1 <= batch <= max_batch:
        raise ServiceError(f"Batch must be between 1 and {max_batch} here, got {batch}.")
    if not (math.isfinite(lr) and 0 < lr <= 1):
        raise ServiceError(f"Learning rate must be in (0, 1], got {lr}.")
    _check_can_train(settings)
    folder = _resolve_data(settings, data)
    out = run_folder(settings, name)
    if out.exists() and any(out.iterdir()):
        raise ServiceError(f"Run {name!r} already exists; press Resume to continue it or pick a new name.")
    command = train_command(str(folder), preset, out, steps, batch, lr)
    return spawn(command, out, TRAIN_LOG, "train")


def resume_training(settings: Settings, name) -> dict:
    """Continue a stopped run: ``python -m sashimi_core.train --out <run folder> --resume``. Everything else
    comes from the run's own train_config.json (written by the trainer); no command is read from disk."""
    _check_writer(settings, "Resuming training")
    out = run_folder(settings, name)
    if not (out / "train_config.json").is_file():
        raise ServiceError(f"Run {name!r} has no saved training run to resume; start a new run instead.")
    if folder_running(out):
        raise ServiceError(f"Run {name!r} is already running.")
    _check_can_train(settings)
    command = [sys.executable, "-m", "sashimi_core.train", "--out", str(out), "--resume", "--no-progress"]
    return spawn(command, out, TRAIN_LOG, "train")


def stop_training(settings: Settings, name) -> str:
    """SIGTERM the run's trainer (only a ``sashimi_core.train --out <that run>`` process is ever signalled)."""
    _check_writer(settings, "Stopping training")
    if not processes.terminate("train", run_folder(settings, name)):
        raise ServiceError(f"Run {name!r} is not running.")
    return f"Sent stop to {name!r}; it saves a checkpoint and exits."


# -------------------------------------------------------------------------------------------- data builds
def build_folder(settings: Settings, name: str) -> Path:
    return Path(settings.data_dir) / ".builds" / name


def start_build(settings: Settings, name: str, small: bool) -> dict:
    """Start `python -m sashimi_core.data build <name> --out <data>/<name> [--small]`."""
    if name not in BUILDERS:
        raise ServiceError(f"There is no builder for {name!r}; builders: {', '.join(BUILDERS)}.")
    _check_writer(settings, "Building data sets")
    folder, out = build_folder(settings, name), (Path(settings.data_dir) / name).resolve()
    if folder_running(out, "data"):
        raise ServiceError(f"{name} is already being built.")
    command = [sys.executable, "-m", "sashimi_core.data", "build", name, "--out", str(out)]
    return spawn(command + (["--small"] if small else []), folder, BUILD_LOG, "data")


def build_status(settings: Settings, name: str) -> dict:
    """{"state": idle|running|finished|failed, "fraction", "text"} parsed from the build log (tqdm)."""
    if name not in BUILDERS:
        return {"state": "idle", "fraction": 0.0, "text": ""}
    folder = build_folder(settings, name)
    job = read_job(folder)
    if job is None:
        built = (Path(settings.data_dir) / name).is_dir()
        return {"state": "finished" if built else "idle", "fraction": 1.0 if built else 0.0,
                "text": f"{name}: ready" if built else f"{name}: not built"}
    tail = log_tail(folder / BUILD_LOG, 6000).split("\n$ ")[-1]  # this build's part of the log
    counts = re.findall(r"(\d+)/(\d+) \[", tail)
    fraction = (int(counts[-1][0]) / max(1, int(counts[-1][1]))) if counts else 0.0
    if folder_running(Path(settings.data_dir) / name, "data"):
        desc = f"{counts[-1][0]}/{counts[-1][1]}" if counts else "starting"
        return {"state": "running", "fraction": fraction, "text": f"building {name}: {desc} ({fraction:.0%})"}
    ok = "built " in tail and "error" not in tail.lower().split("built ")[-1]
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return {"state": "finished" if ok else "failed", "fraction": 1.0 if ok else fraction,
            "text": f"{name}: {'ready' if ok else 'build failed: ' + last}"}


# ------------------------------------------------------------------------------------------- run admin
def delete_run(settings: Settings, model_id: str) -> str:
    """Delete a user run folder (never a shipped checkpoint, never a run that is training)."""
    _check_writer(settings, "Deleting runs")
    card = find_model(settings, model_id)
    if card["shipped"]:
        raise ServiceError(f"{card['id']!r} is a shipped model (in {settings.checkpoints_dir}); shipped "
                           "models cannot be deleted from the app.")
    run_dir, runs = Path(card["run_dir"]).resolve(), Path(settings.runs_dir).resolve()
    if not run_dir.is_relative_to(runs) or run_dir == runs:
        raise ServiceError(f"{run_dir} is not inside the runs folder {runs}; refusing to delete.")
    if folder_running(run_dir):
        raise ServiceError(f"Run {card['name']!r} is still training; stop it in the Train tab first.")
    MODELS.forget(card["checkpoint"])
    shutil.rmtree(run_dir)
    return f"Deleted run {card['name']!r} ({run_dir})."


def _read_reference_config(config) -> dict:
    if config is None or (isinstance(config, str) and not config.strip()):
        raise ServiceError("A reference config (JSON with d_model, n_layers, pool, ...) is required.")
    if isinstance(config, dict):
        obj = config
    else:
        text = config
        if isinstance(config, os.PathLike):  # an uploaded file (a plain string is always JSON text)
            text = Path(config).read_text(errors="replace")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"The reference config is not valid JSON ({exc.msg}, line {exc.lineno})."
            raise ServiceError(msg) from exc
    if isinstance(obj, dict) and isinstance(obj.get("constructor"), dict):  # our reference fixture's format
        obj = obj["constructor"]
    if not isinstance(obj, dict):
        raise ServiceError("The reference config must be a JSON object such as "
                           '{"d_model": 64, "n_layers": 8, "pool": [4, 4]}.')
    return {k: v for k, v in obj.items() if k not in ("cls", "_target_", "_name_")}


def import_reference(settings: Settings, weights_path, config, name: str, quantization: str = "mu-law",
                     sample_rate: int = 16000) -> dict:
    """Import a reference-format (state-spaces/s4 ``Sashimi``) backbone from .safetensors + JSON config.

    Reference backbones have no token embedding or output head, so the saved SaShiMi gets freshly
    initialised ones: the result is for fine-tuning or inspection, not for listening. Never unpickles.
    Returns the new model's card."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sashimi_core import SaShiMi, save_model
    from sashimi_core.reference import backbone_from_reference

    _check_writer(settings, "Importing models")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ServiceError("Name the imported model with 1-64 letters, digits, '.', '_' or '-'.")
    out = run_folder(settings, name)
    if out.exists() or any(c["id"] == name for c in list_models(settings)):
        raise ServiceError(f"A model or run called {name!r} already exists; choose another name.")
    if quantization not in ("mu-law", "linear"):
        raise ServiceError(f"Quantisation must be 'mu-law' or 'linear', got {quantization!r}.")
    if not isinstance(sample_rate, (int, float)) or not 1000 <= int(sample_rate) <= 192000:
        raise ServiceError(f"Sample rate must be between 1000 and 192000 Hz, got {sample_rate!r}.")
    if not weights_path or not Path(weights_path).is_file():
        raise ServiceError("Upload the reference weights as a .safetensors file.")
    with open(weights_path, "rb") as f:
        head = f.read(16)
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise ServiceError("That file is a pickle / torch.save checkpoint. The app never unpickles uploads: "
                           "convert it to safetensors first (safetensors.torch.save_file(state_dict, ...)).")
    ref_config = _read_reference_config(config)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ServiceError(f"The weights file is not a valid .safetensors file ({exc}).") from exc
    try:
        backbone = backbone_from_reference(ref_config, state)
        cfg = replace(backbone.cfg, quantization=quantization, sample_rate=int(sample_rate))
        model = SaShiMi(cfg)
        model.backbone.load_state_dict(backbone.state_dict())
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ServiceError(f"Could not import the reference backbone: {exc}") from exc
    card = _import_card(name, Path(str(weights_path)).name, ref_config, model.num_parameters(), cfg)
    save_model(model, out, card=card, dataset=None, source="reference import",
               imported_file=Path(str(weights_path)).name, reference_config=ref_config,
               fresh_embedding_and_head=True)
    return find_model(settings, name)


def _import_card(name, filename, ref_config, n_params, cfg) -> str:
    return (f"---\nlicense: mit\ntags:\n- audio\n- sashimi\n- s4\n---\n\n# {name}\n\n"
            f"A backbone imported from a reference-format (state-spaces/s4) checkpoint `{filename}`, config "
            f"`{json.dumps(ref_config, sort_keys=True)}`; {n_params:,} parameters, {cfg.sample_rate} Hz, "
            f"8-bit {cfg.quantization}.\n\n## Limitations\n\nReference backbones carry no token embedding "
            "or output head, so these two layers are freshly initialised: samples are noise until the model "
            "is fine-tuned. Use it for fine-tuning or for inspecting the backbone.\n")
