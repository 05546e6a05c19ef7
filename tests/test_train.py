"""Training loop, run folder, exact resume (real SIGKILL/SIGTERM), evaluation CLI, DDP on CPU."""
import errno
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from test_run_state import damaged_layout

from sashimi_core import PRESETS, SaShiMi, load_model
from sashimi_core.train import run_state
from sashimi_core.train import trainer as train_mod
from sashimi_core.train.trainer import TrainConfig, TrainingFailed, lr_scale, main, param_groups, train

ROOT = Path(__file__).resolve().parent.parent
# sashimi-tiny on short clips: a step takes well under a second on one core.
FAST = dict(preset="sashimi-tiny", batch=2, length=512, warmup=2, val_batches=1, sample_seconds=0.02, threads=1,
            progress=False)
FAST_CLI = ["--preset", "sashimi-tiny", "--batch", "2", "--length", "512", "--warmup", "2", "--val-batches", "1",
            "--sample-seconds", "0.02", "--threads", "1", "--no-progress"]


def build(name: str, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "sashimi_core.data", "build", name, "--out", str(out), "--small",
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    return out


@pytest.fixture(scope="session")
def sc09(tmp_path_factory):
    return build("sc09-synth", tmp_path_factory.mktemp("data") / "sc09-synth")


@pytest.fixture(scope="session")
def piano(tmp_path_factory):
    return build("piano-synth", tmp_path_factory.mktemp("data") / "piano-synth")


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> dict[int, float]:
    return {m["step"]: m["loss_bits"] for m in read_metrics(out) if m["kind"] == "train"}


def cli(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sashimi_core.train", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(scope="module")
def trained(sc09, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    torch.set_num_threads(2)
    cfg = TrainConfig(data=str(sc09), out=str(out), steps=12, lr=1e-2, log_every=1, val_every=6,
                      sample_every=12, checkpoint_every=6, **{**FAST, "threads": 2})
    t0 = time.time()
    run = train(cfg)
    print(f"12 steps in {time.time() - t0:.1f} s")
    return out, run


def test_training_lowers_loss_and_writes_run_folder(trained):
    out, run = trained
    assert run["step"] == 12 and run["samples_seen"] == 12 * 2 * 512
    metrics = read_metrics(out)
    assert all("kind" in m and isinstance(m["time"], float) for m in metrics)
    assert metrics[0] == {**metrics[0], "kind": "status", "status": "running"}
    assert metrics[-1]["kind"] == "status" and metrics[-1]["status"] == "finished"
    train_lines = [m for m in metrics if m["kind"] == "train"]
    assert [m["step"] for m in train_lines] == list(range(1, 13))
    for m in train_lines:
        assert {"loss_bits", "lr", "samples_per_s", "elapsed_s", "total_steps"} <= set(m)
        assert m["total_steps"] == 12 and m["samples_per_s"] > 0
    first, last = [m["loss_bits"] for m in train_lines[:3]], [m["loss_bits"] for m in train_lines[-3:]]
    print("first", first, "last", last)
    assert sum(last) / 3 < sum(first) / 3 - 0.2
    vals = [m for m in metrics if m["kind"] == "val"]
    assert [v["step"] for v in vals] == [6, 12] and all(0 < v["val_nll_bits"] < 9 for v in vals)
    (sample,) = [m for m in metrics if m["kind"] == "sample"]
    assert sample["wav"] == "samples/step_000012_0.wav" and sample["png"] == "samples/step_000012_0.png"
    audio, sr = sf.read(out / sample["wav"])
    assert sr == 16000 and len(audio) == 320 and math.isfinite(sample["nll_bits"])
    assert (out / sample["png"]).read_bytes()[:4] == b"\x89PNG"
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["preset"] == "sashimi-tiny" and cfg["model"]["architecture"] == "sashimi"
    assert cfg["model"]["config"]["d_model"] == 16 and cfg["world_size"] == 1
    assert json.loads((out / "state" / "complete.json").read_text())["step"] == 12
    assert {p.name for p in (out / "state").iterdir()} == {"complete.json", "model.safetensors",
                                                          "optimizer.safetensors", "state.json"}
    assert not (out / "state.tmp").exists() and not (out / "state.old").exists()
    model = load_model(out / "checkpoint")
    meta = model.checkpoint["metadata"]
    assert meta["steps"] == 12 and meta["preset"] == "sashimi-tiny" and meta["samples_seen"] == 12 * 2 * 512
    assert meta["val_nll_bits"] == pytest.approx(vals[-1]["val_nll_bits"])
    from sashimi_core.checkpoint import list_checkpoints

    assert [c["name"] for c in list_checkpoints([(out.parent, False)])] == ["tiny"]


def test_parameter_groups_from_tags():
    model = SaShiMi(PRESETS["sashimi-tiny"])
    cfg = TrainConfig(lr=4e-3, ssm_lr=1e-3, weight_decay=0.1)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    ssm_ids = {id(p) for p in groups["ssm"]["params"]}
    tagged = {id(p) for p in model.parameters() if getattr(p, "_ssm", False)}
    names = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if id(p) in ssm_ids}
    assert ssm_ids == tagged and names == {"log_dt", "A_real", "A_imag", "B", "P"}
    assert groups["ssm"]["lr"] == 1e-3 and groups["ssm"]["weight_decay"] == 0.0
    assert groups["base"]["lr"] == 4e-3 and groups["base"]["weight_decay"] == 0.1
    assert len(ssm_ids) + len(groups["base"]["params"]) == len(list(model.parameters()))
    opt = torch.optim.AdamW(param_groups(model, cfg))
    assert [g["lr"] for g in opt.param_groups] == [4e-3, 1e-3]
    sched = TrainConfig(steps=110, warmup=10)
    assert lr_scale(0, sched) == pytest.approx(0.1) and lr_scale(9, sched) == 1.0
    assert lr_scale(60, sched) == pytest.approx(0.5) and lr_scale(109, sched) > 0
    assert lr_scale(50, TrainConfig(steps=110, warmup=10, schedule="plateau"), 0.2) == 0.2


def test_evaluate_cli(trained, sc09, tmp_path):
    out, _ = trained
    res = subprocess.run([sys.executable, "-m", "sashimi_core.evaluate", str(out), "--data", str(sc09),
                          "--length", "512", "--batch", "4", "--batches", "3", "--threads", "2",
                          "--json", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True)
    print(res.stdout, res.stderr)
    assert res.returncode == 0
    m = re.search(r"test NLL: ([\d.]+) bits/sample, 95% CI \[([\d.]+), ([\d.]+)\] \(t-interval over (\d+) clips",
                  res.stdout)
    mean, lo, hi, n = float(m[1]), float(m[2]), float(m[3]), int(m[4])
    assert lo < mean < hi and n == 12 and 0 < mean < 9
    split = re.search(r"in silent 10-ms blocks \(< -50 dBFS, ([\d.]+)% of samples\): ([\d.]+); in sounding ones: "
                      r"([\d.]+)", res.stdout)
    share, silent, sounding = float(split[1]) / 100, float(split[2]), float(split[3])
    assert share * silent + (1 - share) * sounding == pytest.approx(mean, abs=2e-3)  # printed to 0.1% and 1e-4
    ent = float(re.search(r"unigram entropy of the test tokens: ([\d.]+) bits", res.stdout)[1])
    assert 0 < ent <= 8
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["n_clips"] == 12 and saved["nll_bits"] == pytest.approx(mean, abs=1e-4)
    assert len(saved["per_clip_sounding_nll_bits"]) == 12 and saved["silent_share"] == pytest.approx(share, abs=1e-3)
    bad = subprocess.run([sys.executable, "-m", "sashimi_core.evaluate", str(out), "--data", "sc09-synth",
                          "--data-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "python -m sashimi_core.data build sc09-synth" in bad.stderr


def test_clear_errors(sc09, trained, tmp_path, capsys):
    base = ["--data", str(sc09), "--steps", "2"]
    assert main([*base, "--preset", "nope", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "sashimi-tiny" in err
    assert read_metrics(tmp_path / "a")[-1]["status"] == "failed"
    assert main(["--data", "sc09-synth", "--data-root", str(tmp_path), "--preset", "sashimi-tiny",
                 "--out", str(tmp_path / "b")]) == 2
    assert "python -m sashimi_core.data build sc09-synth" in capsys.readouterr().err
    assert main([*base, "--preset", "sashimi-tiny", "--out", str(trained[0])]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--preset", "sashimi-tiny", "--out", str(trained[0]), "--resume", "--lr", "1"]) == 2
    assert "cannot change lr" in capsys.readouterr().err
    assert main([*base, "--preset", "sashimi-tiny", "--out", str(tmp_path / "c"), "--override", "nope=1"]) == 2
    assert "no field 'nope'" in capsys.readouterr().err


def test_init_from_warm_starts_a_new_run(sc09, trained, tmp_path, capsys):
    out, _ = trained
    warm = tmp_path / "warm"
    cfg = TrainConfig(data=str(sc09), out=str(warm), steps=1, lr=1e-12, ssm_lr=1e-12, val_every=0, sample_every=0,
                      init_from=str(out / "checkpoint"), **FAST)
    train(cfg)
    before, after = load_model(out / "checkpoint").state_dict(), load_model(warm / "checkpoint").state_dict()
    assert before.keys() == after.keys()
    for k in before:  # one step at lr 1e-12 moves nothing measurably: the run started from those weights
        assert torch.allclose(before[k].float(), after[k].float(), atol=1e-6), k
    # a fresh init is far from them, and a model of another shape is refused with a clear message
    fresh = SaShiMi(PRESETS["sashimi-tiny"]).state_dict()
    assert any(not torch.allclose(fresh[k].float(), before[k].float(), atol=1e-3) for k in before)
    assert main(["--data", str(sc09), "--steps", "1", "--preset", "sashimi-tiny", "--out", str(tmp_path / "x"),
                 "--init-from", str(out / "checkpoint"), "--override", "d_model=32", "--no-progress"]) == 2
    assert "model config differs from this run's in ['d_model']" in capsys.readouterr().err
    # a deeper model (n_layers a multiple) starts from the same function: one step at lr 1e-12 keeps it
    deep = tmp_path / "deep"
    assert main(["--data", str(sc09), "--steps", "1", "--out", str(deep), "--init-from", str(out / "checkpoint"),
                 "--override", "n_layers=4", "--lr", "1e-12", "--ssm-lr", "1e-12", "--val-every", "0",
                 "--sample-every", "0", *FAST_CLI]) == 0
    shallow, grown = load_model(out / "checkpoint").eval(), load_model(deep / "checkpoint").eval()
    assert grown.cfg.n_layers == 4 and grown.num_parameters() > shallow.num_parameters()
    tokens = torch.randint(0, 256, (1, 256))
    with torch.no_grad():
        assert torch.allclose(grown(tokens), shallow(tokens), atol=1e-4)


def three_step_args(sc09) -> list[str]:
    return ["--data", str(sc09), "--steps", "3", "--log-every", "1", "--val-every", "0", "--sample-every", "0",
            *FAST_CLI]


def losses_without_and_with(flag: str, sc09, tmp_path) -> dict[bool, dict[int, float]]:
    """{False: losses of a 3-step run, True: the same run with ``flag``}; checks train_config records it."""
    runs = {}
    for extra in ([], [flag]):
        out = tmp_path / ("with" if extra else "without")
        assert main([*three_step_args(sc09), "--out", str(out), *extra]) == 0
        runs[bool(extra)] = losses(out)
        assert json.loads((out / "train_config.json").read_text())[flag[2:].replace("-", "_")] is bool(extra)
    assert runs[True].keys() == runs[False].keys() == {1, 2, 3}
    return runs


def test_checkpoint_activations_trains_the_same(sc09, tmp_path, capsys):
    runs = losses_without_and_with("--checkpoint-activations", sc09, tmp_path)
    for step, loss in runs[False].items():  # same gradients, so the same trajectory up to rounding
        assert abs(runs[True][step] - loss) < 1e-4, (step, runs[True][step], loss)
    assert main([*three_step_args(sc09), "--preset", "wavenet-tiny", "--out", str(tmp_path / "w"),
                 "--checkpoint-activations"]) == 2
    assert "--checkpoint-activations supports SaShiMi models, not wavenet" in capsys.readouterr().err


def test_amp_cpu_trains_close_to_float32(sc09, tmp_path):
    """--amp-cpu: the training step runs under bf16 autocast on CPU; its losses follow float32's closely."""
    runs = losses_without_and_with("--amp-cpu", sc09, tmp_path)
    assert runs[True] != runs[False]  # bf16 really ran
    for step, loss in runs[False].items():
        assert abs(runs[True][step] - loss) < 0.05, (step, runs[True][step], loss)


def test_threads_also_bound_the_numba_kernels(sc09, tmp_path):
    """--threads 1 leaves the numba Cauchy kernel one thread too (its pool defaults to every core: two
    1-thread runs on 2 cores then ran 6 threads and each slowed ~4x)."""
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert main(["--data", str(sc09), "--steps", "1", "--val-every", "0", "--sample-every", "0", *FAST_CLI,
                     "--out", str(tmp_path / "run")]) == 0
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


def test_nan_loss_fails_and_keeps_checkpoint(sc09, tmp_path, monkeypatch):
    real = train_mod.compute_loss
    calls = {"n": 0}

    def flaky(model, tokens):
        calls["n"] += 1
        loss = real(model, tokens)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_mod, "compute_loss", flaky)
    out = tmp_path / "nan"
    cfg = TrainConfig(data=str(sc09), out=str(out), steps=5, checkpoint_every=2, val_every=0, sample_every=0,
                      **FAST)
    with pytest.raises(TrainingFailed, match="lower the learning rate"):
        train(cfg)
    status = read_metrics(out)[-1]
    assert status["status"] == "failed" and "lower the learning rate" in status["message"]
    assert load_model(out / "checkpoint").checkpoint["metadata"]["steps"] == 2


def test_disk_full_fails_cleanly_and_resumes(sc09, tmp_path, monkeypatch):
    real = run_state.atomic_write_bytes
    writes = {"n": 0}

    def full(path, data):
        if Path(path).name == "optimizer.safetensors":
            writes["n"] += 1
            if writes["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(run_state, "atomic_write_bytes", full)
    out = tmp_path / "full"
    cfg = TrainConfig(data=str(sc09), out=str(out), steps=4, checkpoint_every=2, val_every=0, sample_every=0,
                      log_every=1, **FAST)
    with pytest.raises(TrainingFailed, match="disk full"):
        train(cfg)
    status = read_metrics(out)[-1]
    assert status["status"] == "failed" and "disk full" in status["message"] and "--resume" in status["message"]
    assert json.loads((out / "state" / "complete.json").read_text())["step"] == 2
    assert not (out / "state.tmp").exists()
    monkeypatch.setattr(run_state, "atomic_write_bytes", real)
    run = train(TrainConfig(**{**cfg.__dict__, "resume": True}))
    assert run["step"] == 4 and sorted(losses(out)) == [1, 2, 3, 4]


def test_stop_during_validation_redoes_it_on_resume(sc09, tmp_path, monkeypatch):
    real = train_mod.evaluate

    def interrupted(*args, **kwargs):
        if not calls:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while validating: evaluate stops at once
        calls.append(1)
        return real(*args, **kwargs)

    calls = []
    monkeypatch.setattr(train_mod, "evaluate", interrupted)
    cfg = TrainConfig(data=str(sc09), out=str(tmp_path / "v"), steps=3, log_every=1, val_every=2, sample_every=0,
                      **FAST)
    assert train(cfg)["step"] == 2
    assert read_metrics(tmp_path / "v")[-1]["status"] == "stopped"
    assert json.loads((tmp_path / "v" / "state" / "state.json").read_text())["pending_val"] == 2
    train(TrainConfig(**{**cfg.__dict__, "resume": True}))
    metrics = read_metrics(tmp_path / "v")
    assert [(m["kind"], m["step"]) for m in metrics if m["kind"] in ("train", "val")] == [
        ("train", 1), ("train", 2), ("val", 2), ("train", 3), ("val", 3)]


def test_resume_after_sigkill_and_sigterm_is_exact(sc09, tmp_path):
    """Three real processes: uninterrupted; SIGKILLed after a checkpoint then resumed; SIGTERMed (graceful
    stop) then resumed. Every step's loss and the final weights must equal the uninterrupted run's."""
    common = ["--data", sc09, *FAST_CLI, "--steps", 8, "--log-every", 1, "--checkpoint-every", 2,
              "--val-every", 4, "--sample-every", 5, "--override", "dropout=0.1"]
    runs = {k: tmp_path / k for k in ("full", "killed", "termed")}
    procs = {k: cli(*common, "--out", p) for k, p in runs.items()}

    def wait_for(name, cond, timeout=240):
        t0 = time.time()
        while not cond():
            assert procs[name].poll() is None, procs[name].communicate()
            assert time.time() - t0 < timeout
            time.sleep(0.05)

    def checkpoint_step(name):
        try:
            return json.loads((runs[name] / "state" / "complete.json").read_text())["step"]
        except (OSError, ValueError):
            return 0

    wait_for("killed", lambda: checkpoint_step("killed") >= 4)
    procs["killed"].send_signal(signal.SIGKILL)
    procs["killed"].wait()
    wait_for("termed", lambda: (runs["termed"] / "metrics.jsonl").exists() and len(losses(runs["termed"])) >= 3)
    procs["termed"].send_signal(signal.SIGTERM)
    out, err = procs["termed"].communicate(timeout=120)
    assert procs["termed"].returncode == 0, err
    status = read_metrics(runs["termed"])[-1]
    assert status["status"] == "stopped" and "SIGTERM" in status["message"], status
    stopped_at = status["step"]
    assert checkpoint_step("termed") == stopped_at
    assert load_model(runs["termed"] / "checkpoint").checkpoint["metadata"]["steps"] == stopped_at
    killed_at = checkpoint_step("killed")
    assert max(losses(runs["killed"]), default=0) < 8, "the run finished before it was killed"
    for k in ("killed", "termed"):
        procs[k] = cli(*common, "--out", runs[k], "--resume")
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, (k, err[-3000:])
    print("killed at checkpoint", killed_at, "stopped at", stopped_at)
    ref = losses(runs["full"])
    assert sorted(ref) == list(range(1, 9))
    for k in ("killed", "termed"):
        got = losses(runs[k])
        assert sorted(got) == list(range(1, 9)), (k, sorted(got))  # no step logged twice
        diff = max(abs(got[s] - ref[s]) for s in ref)
        print(k, "max loss diff", diff)
        assert diff <= 1e-6
        a, b = load_model(runs["full"] / "checkpoint"), load_model(runs[k] / "checkpoint")
        wdiff = max((pa - pb).abs().max().item() for pa, pb in zip(a.state_dict().values(),
                                                                  b.state_dict().values(), strict=True))
        print(k, "max weight diff", wdiff)
        assert wdiff <= 1e-6
        vals = [m["step"] for m in read_metrics(runs[k]) if m["kind"] == "val"]
        assert vals == [4, 8]
        statuses = [m["status"] for m in read_metrics(runs[k]) if m["kind"] == "status"]
        assert statuses[-1] == "finished" and statuses.count("finished") == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(sc09, tmp_path):
    """torchrun, 2 CPU processes (gloo) x batch 1 == one process x batch 2 (same global batches)."""
    args = ["--data", sc09, *FAST_CLI, "--steps", 3, "--log-every", 1, "--checkpoint-every", 3,
            "--val-every", 3, "--sample-every", 3]
    single = cli(*args, "--out", tmp_path / "single")
    ddp = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                            "--master_port", str(free_port()), "-m", "sashimi_core.train",
                            *map(str, args), "--batch", "1", "--out", str(tmp_path / "ddp")],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    for p in (single, ddp):
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
    a, b = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    print("single", a, "ddp", b)
    assert sorted(b) == [1, 2, 3]  # rank 0 only writes
    assert all(abs(a[s] - b[s]) < 1e-4 for s in a)
    cfg = json.loads((tmp_path / "ddp" / "train_config.json").read_text())
    assert cfg["world_size"] == 2
    ma, mb = load_model(tmp_path / "single" / "checkpoint"), load_model(tmp_path / "ddp" / "checkpoint")
    wdiff = max((x - y).abs().max().item() for x, y in zip(ma.state_dict().values(), mb.state_dict().values(),
                                                           strict=True))
    print("max weight diff", wdiff)
    assert wdiff < 1e-4
    assert len([m for m in read_metrics(tmp_path / "ddp") if m["kind"] == "sample"]) == 1


@pytest.mark.slow
def test_piano_synth_trains(piano, tmp_path):
    run = train(TrainConfig(data=str(piano), out=str(tmp_path / "piano"), steps=3, val_every=3, sample_every=0,
                            **{**FAST, "length": 2048}))
    assert run["step"] == 3 and run["val_nll_bits"] is not None


def test_resume_after_a_kill_while_removing_state_tmp(sc09, tmp_path):
    """The audit's case: state.tmp keeps complete.json but lost its weights, state.old is intact; --resume continues
    from state.old and reproduces the losses of the steps it redoes."""
    out = tmp_path / "r"
    cfg = TrainConfig(data=str(sc09), out=str(out), steps=2, checkpoint_every=2, val_every=0, sample_every=0,
                      log_every=1, **FAST)
    train(cfg)
    shutil.copytree(out / "state", tmp_path / "s2")
    train(TrainConfig(**{**cfg.__dict__, "steps": 4, "resume": True}))
    first = losses(out)
    damaged_layout(out, tmp_path / "s2", out / "state", "marker-without-weights")
    shutil.rmtree(out / "state")
    assert run_state.find_state(out) == out / "state.old"
    run = train(TrainConfig(**{**cfg.__dict__, "steps": 6, "resume": True}))
    assert run["step"] == 6
    assert [m["step"] for m in read_metrics(out) if m["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    again = losses(out)
    assert all(again[s] == first[s] for s in (1, 2, 3, 4)), (first, again)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("state")) == ["state"]
    assert load_model(out / "checkpoint").checkpoint["metadata"]["steps"] == 6


# ---------------------------------------------------------------------------------------------- weight average
def test_weight_average_follows_its_formula_and_restarts_when_buffers_change():
    from sashimi_core.train.ema import WeightAverage

    torch.manual_seed(0)
    model = SaShiMi(PRESETS["sashimi-tiny"])
    with torch.no_grad():
        model(torch.randint(0, 256, (1, 64)))  # sets C̃ for length 64 (a buffer change)
    ema = WeightAverage(model, 0.9)
    start = {k: v.clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=100)  # d = min(0.9, 101 / 110) = 0.9
    for k, p in ema.model.named_parameters():
        torch.testing.assert_close(p, 0.9 * start[k] + 0.1 * (start[k] + 1.0))
    ema.update(model, step=1)  # warm-up: d = 2 / 11
    with torch.no_grad():
        model(torch.randint(0, 256, (1, 300)))  # C̃ re-expressed for a longer kernel: the average restarts
    ema.update(model, step=101)
    for (k, a), b in zip(ema.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="--ema"):
        WeightAverage(model, 1.0)


def test_ema_run_saves_the_average_and_resumes_exactly(sc09, tmp_path):
    """--ema: the checkpoint holds the averaged weights (the resume state the trained ones), validation logs
    both, and a run stopped at step 3 and resumed ends with the weights of an uninterrupted run."""
    common = dict(data=str(sc09), lr=1e-2, log_every=1, val_every=3, sample_every=0, checkpoint_every=3,
                  schedule="constant", ema=0.8, **FAST)
    full = train(TrainConfig(out=str(tmp_path / "full"), steps=6, **common))
    train(TrainConfig(out=str(tmp_path / "cut"), steps=3, **common))
    cut = train(TrainConfig(out=str(tmp_path / "cut"), steps=6, resume=True, **common))
    assert full["step"] == cut["step"] == 6
    a, b = load_model(tmp_path / "full" / "checkpoint"), load_model(tmp_path / "cut" / "checkpoint")
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert (pa - pb).abs().max() <= 1e-6, k
    assert a.checkpoint["metadata"]["ema_decay"] == 0.8
    trained_weights = run_state.load_file(str(tmp_path / "full" / "state" / "model.safetensors"))
    assert any(not torch.equal(trained_weights[k], v) for k, v in a.state_dict().items())  # the average differs
    vals = [m for m in read_metrics(tmp_path / "full") if m["kind"] == "val"]
    assert [m["step"] for m in vals] == [3, 6] and all("val_nll_bits_raw" in m for m in vals)
