"""Service layer of the playground (playground.services, audio_io, jobs, plots) without a browser: real audio
files written by soundfile, a real tiny checkpoint (untrained sashimi-tiny), real processes for job checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app_helpers import make_tiny_checkpoint, write_audio
from playground import audio_io, jobs, plots, processes, services
from playground.audio_io import AudioInputError
from playground.services import ServiceError

SECONDS = 0.01  # 160 samples at 16 kHz: generation stays cheap on CPU


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    make_tiny_checkpoint(root / "runs" / "tiny")
    make_tiny_checkpoint(root / "runs" / "trained" / "checkpoint", steps=10, val_nll_bits=7.5)
    make_tiny_checkpoint(root / "shipped" / "tiny-shipped", test_nll_bits=7.9)
    return root


@pytest.fixture
def settings(dirs, monkeypatch):
    monkeypatch.setenv("SASHIMI_RUNS", str(dirs / "runs"))
    return services.Settings.create(public=False, checkpoints_dir=dirs / "shipped", runs_dir=dirs / "runs",
                                    data_dir=dirs / "data", output_dir=dirs / "out")


# ---------------------------------------------------------------------------------------------- settings
def test_public_mode_from_space_id(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/sashimi")
    monkeypatch.delenv("SASHIMI_PUBLIC_TRAINING", raising=False)
    s = services.Settings.create()
    assert s.public and not s.training
    assert s.max_seconds <= 2 and s.max_samples <= 2 and s.max_upload_mb <= 5 and s.concurrency == 1
    monkeypatch.delenv("SPACE_ID")
    assert not services.Settings.create().public


def test_public_limits_enforced(settings):
    public = services.Settings.create(public=True, checkpoints_dir=settings.checkpoints_dir,
                                      runs_dir=settings.runs_dir)
    with pytest.raises(ServiceError, match="between 0 and 2 s"):
        services.check_generation_request(public, 1.0, 1.0, 5.0, 1, None)
    with pytest.raises(ServiceError, match="from 1 to 2"):
        services.check_generation_request(public, 1.0, 1.0, 1.0, 4, None)
    with pytest.raises(ServiceError, match="turned off"):
        jobs.start_training(public, "x", "data", "sashimi-tiny", 10, 1, 1e-3)


# ---------------------------------------------------------------------------------------------- registry
def test_list_models_cards(settings):
    cards = {c["id"]: c for c in services.list_models(settings)}
    assert set(cards) == {"tiny-shipped", "tiny", "trained"}
    assert cards["tiny-shipped"]["shipped"] and not cards["tiny"]["shipped"]
    assert cards["trained"]["checkpoint"].endswith("trained/checkpoint")
    assert cards["trained"]["run_dir"].endswith("runs/trained")
    assert cards["trained"]["nll_bits"] == 7.5 and cards["tiny-shipped"]["nll_bits"] == 7.9
    c = cards["tiny"]
    assert c["sample_rate"] == 16000 and c["quantization"] == "mu-law" and c["n_parameters"] > 1000
    md = services.describe_model(c)
    assert "16000 Hz" in md and "mu-law" in md and "parameters" in md
    assert "tiny" in services.model_label(c)
    rows = services.model_table(settings)
    assert len(rows) == 3 and len(rows[0]) == len(services.TABLE_HEADERS)


def test_public_mode_shows_no_server_folders(settings):
    """Model lists, the table, cards, result JSON and messages name folders relative to where they live."""
    public = services.Settings.create(public=True, checkpoints_dir=settings.checkpoints_dir,
                                      runs_dir=settings.runs_dir, output_dir=settings.output_dir)
    secret = [str(Path(d).resolve()) for d in (settings.checkpoints_dir, settings.runs_dir, settings.output_dir)]
    shown = json.dumps([services.client_cards(public), services.model_table(public),
                        [services.describe_model(c) for c in services.list_models(public)]])
    assert not [d for d in secret if d in shown]
    assert "runs/trained/checkpoint" in shown and "checkpoints/tiny-shipped" in shown
    result = services.generate_clips(public, "trained", seconds=0.01, seed=1)
    assert result["model_path"] == "runs/trained/checkpoint"
    message = f"cannot read {Path(settings.runs_dir).resolve() / 'x' / 'config.json'}"
    assert services.redact(public, message) == "cannot read runs/x/config.json"
    assert services.redact(settings, message) == message  # locally: unchanged
    assert Path(services.list_models(settings)[0]["folder"]).is_absolute()


def test_non_generative_checkpoints_are_not_listed(settings, tmp_path):
    classifier = pytest.importorskip("sashimi_core.evaluate.classifier")
    from sashimi_core import save_model

    save_model(classifier.DigitClassifier(classifier.ClassifierConfig()), tmp_path / "shipped" / "digits")
    mixed = services.Settings(checkpoints_dir=tmp_path / "shipped", runs_dir=settings.runs_dir)
    ids = [c["id"] for c in services.list_models(mixed)]
    assert "digits" not in ids and "tiny" in ids


def test_unknown_model_is_named(settings):
    with pytest.raises(ServiceError, match="Unknown model 'nope'.*tiny"):
        services.find_model(settings, "nope")
    with pytest.raises(ServiceError, match="No model selected"):
        services.generate_clips(settings, "", None, seconds=SECONDS)


# ---------------------------------------------------------------------------------------------- audio in
@pytest.mark.parametrize("sr,channels,fmt,subtype", [
    (44100, 2, "WAV", "PCM_16"), (192000, 1, "WAV", "PCM_24"), (48000, 8, "WAV", "FLOAT"),
    (22050, 1, "FLAC", "PCM_16"), (16000, 2, "OGG", "VORBIS"), (44100, 1, "MP3", "MPEG_LAYER_III"),
    (8000, 1, "WAV", "PCM_U8"),
])
def test_prompt_any_rate_channels_format(tmp_path, sr, channels, fmt, subtype):
    path = write_audio(tmp_path / f"a.{fmt.lower()}", seconds=0.4, sr=sr, channels=channels, fmt=fmt,
                       subtype=subtype)
    p = audio_io.prepare_prompt(path, 16000)
    assert p.audio.ndim == 1 and p.audio.dtype == np.float32 and p.sample_rate == 16000
    assert abs(p.seconds - 0.4) < 0.06  # MP3 pads a little
    assert 0.2 < np.abs(p.audio).max() <= 1.0
    assert p.source_rate == sr and p.source_channels == channels
    assert any("Mixed" in w for w in p.warnings) == (channels > 1)
    assert any("Resampled" in w for w in p.warnings) == (sr != 16000)


def test_prompt_from_gradio_numpy_and_trim():
    sr = 8000
    data = (np.sin(np.arange(sr) / 5) * 16000).astype(np.int16)  # 1 s int16, as gr.Audio(type="numpy")
    p = audio_io.prepare_prompt((sr, data), 16000, trim_start=0.25, trim_end=0.75)
    assert abs(p.seconds - 0.5) < 1e-3 and np.abs(p.audio).max() < 0.6
    with pytest.raises(AudioInputError, match="before the end"):
        audio_io.prepare_prompt((sr, data), 16000, trim_start=2.0)
    with pytest.raises(AudioInputError, match="non-negative"):
        audio_io.prepare_prompt((sr, data), 16000, trim_start=-1)


def test_prompt_nan_silent_and_clipping(tmp_path):
    x = np.full(8000, 0.25, np.float32)
    x[100:200] = np.nan
    p = audio_io.prepare_prompt((16000, x), 16000)
    assert np.isfinite(p.audio).all() and any("NaN" in w for w in p.warnings)
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    assert any("NaN" in w for w in audio_io.prepare_prompt(path, 16000).warnings)
    with pytest.raises(AudioInputError, match="NaN or infinite"):
        audio_io.prepare_prompt((16000, np.full(100, np.nan, np.float32)), 16000)
    silent = audio_io.prepare_prompt((16000, np.zeros(4000, np.float32)), 16000)
    assert any("silent" in w for w in silent.warnings)
    loud = audio_io.prepare_prompt((16000, np.full(4000, 3.0, np.float32)), 16000)
    assert np.abs(loud.audio).max() <= 1.0 and any("clipped" in w for w in loud.warnings)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"), (b"hello, this is not audio\n" * 20, "not an audio file.*text"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(range(256)) * 4,
     "not an audio file|could not be decoded"),
    (b"\x80\x04\x95" + os.urandom(300), "not an audio file.*pickle"),
], ids=["empty", "text", "corrupt-wav", "pickle"])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "upload.wav"
    path.write_bytes(content)
    with pytest.raises(AudioInputError, match=match):
        audio_io.prepare_prompt(path, 16000)


def test_too_short_and_too_long(tmp_path):
    with pytest.raises(AudioInputError, match="only 5.0 ms"):
        audio_io.prepare_prompt(write_audio(tmp_path / "short.wav", seconds=0.005), 16000)
    long = write_audio(tmp_path / "long.wav", seconds=12, sr=1000)
    with pytest.raises(AudioInputError, match="12.0 s long; the limit here is 10 s"):
        audio_io.prepare_prompt(long, 16000, max_seconds=10)
    huge = write_audio(tmp_path / "huge.wav", seconds=100, sr=1000)
    with pytest.raises(AudioInputError, match="Cut it down"):
        audio_io.prepare_prompt(huge, 16000, max_seconds=10)
    with pytest.raises(AudioInputError, match="Sample rate 200 Hz"):
        audio_io.prepare_prompt((200, np.zeros(100, np.float32)), 16000)
    with pytest.raises(AudioInputError, match="no samples"):
        audio_io.prepare_prompt((16000, np.zeros(0, np.float32)), 16000)


# -------------------------------------------------------------------------------------------- generation
def test_generate_writes_pcm16_wavs_and_params(settings, tmp_path):
    prompt = write_audio(tmp_path / "p.wav", seconds=0.25, sr=44100, channels=2, amplitude=0.1)
    fractions, messages = [], []
    r = services.generate_clips(settings, "tiny", str(prompt), temperature=0.9, top_p=0.95, seconds=SECONDS,
                                n_samples=2, seed=123, progress=lambda f, m: fractions.append(f) or messages.append(m))
    assert r["seed"] == 123 and len(r["samples"]) == 2 and len(r["files"]) == 4
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert "reading the prompt: 0.2 of 0.2 s" in messages  # the read reports itself (one pass here)
    assert abs(r["prompt_seconds"] - 0.25) < 1e-3 and r["prompt_nll_bits"] > 0
    assert any("Resampled" in w for w in r["warnings"])
    for s in r["samples"]:
        info = sf.info(s["wav"])
        assert info.subtype == "PCM_16" and info.samplerate == 16000 and info.channels == 1
        assert info.frames == 4000 + 160
        audio, _ = sf.read(s["wav"])
        assert 0.05 < np.abs(audio[:4000]).max() < 0.2  # the prompt keeps its level: not peak-normalised
        params = json.loads(Path(s["params"]).read_text())
        for key in ("model", "seed", "temperature", "top_p", "prompt_sha256", "commit", "nll_bits"):
            assert key in params
        assert params["model"] == "tiny" and params["temperature"] == 0.9 and params["top_p"] == 0.95
        assert len(params["prompt_sha256"]) == 64 and np.isfinite(s["nll_bits"])


def test_same_seed_same_audio_and_random_seed_reported(settings):
    a = services.generate_clips(settings, "tiny", None, seconds=SECONDS, seed=7)
    b = services.generate_clips(settings, "tiny", None, seconds=SECONDS, seed=7)
    assert sf.read(a["samples"][0]["wav"])[0].tolist() == sf.read(b["samples"][0]["wav"])[0].tolist()
    c = services.generate_clips(settings, "tiny", None, seconds=SECONDS, seed=-1)
    assert isinstance(c["seed"], int) and c["seed"] >= 0 and c["prompt_seconds"] == 0
    services.generate_clips(settings, "tiny", None, seconds=0.04, seed=1)  # 640 steps: two progress calls
    assert services.estimate_seconds(settings, "tiny", 1.0, 1) > 0


def test_stop_returns_partial_result(settings):
    r = services.generate_clips(settings, "trained", None, seconds=2.0, seed=1, stop=lambda: True)
    assert r["stopped"] and 0 < r["generated_seconds"] < 2.0
    assert any("Stopped" in w for w in r["warnings"])


def test_session_guard_and_request_stop(settings):
    flag = services.SESSIONS.begin("s1")
    try:
        with pytest.raises(ServiceError, match="already running"):
            services.generate_clips(settings, "tiny", None, seconds=SECONDS, session="s1")
        assert services.request_stop("s1") and flag.is_set()
    finally:
        services.SESSIONS.end("s1")
    assert not services.request_stop("s1")
    services.generate_clips(settings, "tiny", None, seconds=SECONDS, session="s1")  # free again


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": -1}, "Temperature"), ({"top_p": 0}, "Top-p"), ({"seconds": 0}, "Length"),
    ({"seconds": 1000}, "Length"), ({"n_samples": 9}, "Number of samples"), ({"n_samples": 1.5}, "whole"),
    ({"seed": 1.5}, "Seed"), ({"temperature": float("nan")}, "number"),
])
def test_bad_generation_numbers(settings, kwargs, match):
    with pytest.raises(ServiceError, match=match):
        services.generate_clips(settings, "tiny", None, **{"seconds": SECONDS, **kwargs})


def test_continue_needs_clip_and_result_as_prompt(settings, tmp_path):
    with pytest.raises(ServiceError, match="Continue needs a clip"):
        services.continue_clip(settings, "tiny", None, seconds=SECONDS)
    r = services.continue_clip(settings, "tiny", str(write_audio(tmp_path / "c.wav", seconds=0.1)),
                               seconds=SECONDS, seed=3)
    path = services.result_as_prompt(r, 0, r["files"])
    assert path == r["samples"][0]["wav"]
    with pytest.raises(ServiceError, match="no result 2"):
        services.result_as_prompt(r, 1, r["files"])
    with pytest.raises(ServiceError, match="no longer available"):
        services.result_as_prompt(r, 0, [])
    again = services.continue_clip(settings, "tiny", path, seconds=SECONDS, seed=3)
    assert abs(again["prompt_seconds"] - (0.1 + SECONDS)) < 1e-3


def test_cleanup_outputs(settings):
    folder = services.new_output_dir(settings)
    (folder / "x.wav").write_bytes(b"0")
    old = time.time() - 2 * settings.output_max_age_s
    os.utime(folder, (old, old))
    assert services.cleanup_outputs(settings) >= 1 and not folder.exists()


def test_spectrogram_and_training_figures():
    audio = np.sin(np.arange(16000) / 3).astype(np.float32) * 0.5
    fig = plots.spectrogram_figure(audio, 16000, boundary_s=0.5, title="x")
    heat = fig.data[0]
    assert heat.zmin == plots.DB_MIN and heat.zmax == 0.0  # one absolute colour scale for every plot
    assert any(s["type"] == "line" and s["x0"] == 0.5 for s in fig.layout.shapes)
    plots.spectrogram_figure(audio[:50], 16000)  # shorter than one FFT frame
    tf = plots.training_figure([{"step": 1, "loss_bits": 8.0}], [{"step": 1, "val_nll_bits": 7.9}])
    assert len(tf.data) == 2


# ------------------------------------------------------------------------------------------------- jobs
def test_read_metrics_is_defensive(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "status", "status": "running", "time": 1},
             {"kind": "train", "step": 10, "loss_bits": 7.0, "samples_per_s": 100.0, "elapsed_s": 10.0,
              "total_steps": 100, "lr": 1e-3, "time": 2},
             {"kind": "val", "step": 10, "val_nll_bits": 6.9, "time": 3}]
    text = "".join(json.dumps(x) + "\n" for x in lines) + "not json\n[1, 2]\n\n" + '{"kind": "train", "st'
    path.write_text(text)
    m = jobs.read_metrics(path)
    assert len(m["train"]) == 1 and len(m["val"]) == 1 and m["bad_lines"] == 2
    assert m["status"]["status"] == "running"
    assert jobs.read_metrics(tmp_path / "missing.jsonl")["train"] == []
    big = "".join(json.dumps({"kind": "train", "step": i, "loss_bits": 1.0}) + "\n" for i in range(5001))
    path.write_text(big)
    thin = jobs.read_metrics(path)["train"]
    assert len(thin) <= jobs.MAX_PLOT_POINTS + 1 and thin[-1]["step"] == 5000


def _sleeper(seconds=60):
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def _write_job(folder: Path, proc, command):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / jobs.JOB_FILE).write_text(json.dumps({"pid": proc.pid, "command": command, "started": 0,
                                                    "log": jobs.TRAIN_LOG}))


def test_job_running_only_for_this_folders_trainer(tmp_path, fake_trainer):
    """A job is running iff a `python -m sashimi_core.train --out <that folder>` process lives: a job.json
    naming another process (here a sleeper's pid) neither counts nor gets signalled."""
    sleeper = _sleeper()
    try:
        _write_job(tmp_path / "b", sleeper, [sys.executable, "-c", "import time; time.sleep(60)"])
        assert not jobs.folder_running(tmp_path / "b")
        assert not processes.terminate("train", tmp_path / "b") and sleeper.poll() is None
        proc = fake_trainer(tmp_path / "a")
        assert jobs.folder_running(tmp_path / "a") and not jobs.folder_running(tmp_path / "b")
        assert processes.running_pid("train", tmp_path / "a") == proc.pid
        assert processes.terminate("train", tmp_path / "a")
        proc.wait(timeout=10)
        time.sleep(processes._SCAN_TTL_S + 0.1)
        assert not jobs.folder_running(tmp_path / "a")
        assert not processes.terminate("train", tmp_path / "a")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_run_status_states(tmp_path, fake_trainer):
    run = tmp_path / "run"
    assert jobs.run_status(run)["state"] == "idle"
    run.mkdir()
    proc = fake_trainer(run)
    try:
        _write_job(run, proc, proc.args)
        (run / "samples").mkdir()
        sf.write(run / "samples" / "s.wav", np.zeros(1600, np.float32), 16000, subtype="PCM_16")
        recs = [{"kind": "status", "status": "running"},
                {"kind": "train", "step": 50, "loss_bits": 6.0, "samples_per_s": 1234.0, "elapsed_s": 50.0,
                 "total_steps": 100},
                {"kind": "sample", "step": 50, "wav": "samples/s.wav", "nll_bits": 6.1},
                {"kind": "sample", "step": 50, "wav": "../../etc/passwd"}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        st = jobs.run_status(run)
        assert st["state"] == "running" and st["eta_s"] == pytest.approx(50.0) and len(st["samples"]) == 1
        text = jobs.describe_status(st)
        assert "step 50/100 (50%)" in text and "1,234 samples/s" in text and "ETA" in text
    finally:
        proc.kill()
        proc.wait()
    time.sleep(processes._SCAN_TTL_S + 0.1)
    assert jobs.run_status(run)["state"] == "died"
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "status", "status": "stopped", "message": "stopped by SIGTERM"}) + "\n")
    st = jobs.run_status(run)
    assert st["state"] == "stopped" and "SIGTERM" in jobs.describe_status(st)
    assert jobs.list_runs(services.Settings(runs_dir=tmp_path)) == ["run"]
    (run / jobs.JOB_FILE).unlink()  # a run started from the command line has no job.json
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert jobs.run_status(run)["state"] == "running (started outside the app)"
    os.utime(run / "metrics.jsonl", (time.time() - 1000, time.time() - 1000))
    assert jobs.run_status(run)["state"].startswith("no recent progress")


def test_build_status_from_log(settings, fake_trainer):
    folder = jobs.build_folder(settings, "sc09-synth")
    folder.mkdir(parents=True)
    proc = fake_trainer(settings.data_dir / "sc09-synth", "data")
    try:
        _write_job(folder, proc, proc.args)
        (folder / jobs.BUILD_LOG).write_text("$ python -m ...\nclips:  10%|#  | 30/300 [00:01<00:09]\r"
                                             "clips:  20%|## | 60/300 [00:02<00:08]")
        st = jobs.build_status(settings, "sc09-synth")
        assert st["state"] == "running" and st["fraction"] == pytest.approx(0.2)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(processes._SCAN_TTL_S + 0.1)
    with open(folder / jobs.BUILD_LOG, "a") as f:
        f.write("\nbuilt sc09-synth in data/sc09-synth (3.0 s)\n")
    assert jobs.build_status(settings, "sc09-synth")["state"] == "finished"
    assert "sc09-synth" in jobs.list_datasets(settings)


@pytest.mark.parametrize("args,match", [
    (("bad name", "d", "sashimi-tiny", 10, 1, 1e-3), "Name the run"),
    (("ok", "d", "nope", 10, 1, 1e-3), "preset"),
    (("ok", "d", "sashimi-tiny", 0, 1, 1e-3), "Steps"),
    (("ok", "d", "sashimi-tiny", 10, 0, 1e-3), "Batch"),
    (("ok", "d", "sashimi-tiny", 10, 1, 0), "Learning rate"),
    (("ok", "nowhere", "sashimi-tiny", 10, 1, 1e-3), "not found"),
    (("tiny", str(Path(__file__).parent), "sashimi-tiny", 10, 1, 1e-3), "already exists"),
])
def test_start_training_validation(settings, args, match):
    with pytest.raises(ServiceError, match=match):
        jobs.start_training(settings, *args)


def test_delete_run(settings, dirs, fake_trainer):
    with pytest.raises(ServiceError, match="shipped model"):
        jobs.delete_run(settings, "tiny-shipped")
    make_tiny_checkpoint(dirs / "runs" / "doomed")
    proc = fake_trainer(dirs / "runs" / "doomed")
    try:
        with pytest.raises(ServiceError, match="still training"):
            jobs.delete_run(settings, "doomed")
    finally:
        proc.kill()
        proc.wait()
    time.sleep(processes._SCAN_TTL_S + 0.1)
    assert "Deleted" in jobs.delete_run(settings, "doomed")
    assert not (dirs / "runs" / "doomed").exists() and (dirs / "shipped" / "tiny-shipped").exists()


def test_import_reference(settings, reference_fixture, tmp_path):
    import torch
    from safetensors.torch import save_file

    from sashimi_core import load_model

    weights = tmp_path / "ref.safetensors"
    save_file({f"model.{k}": v.contiguous() for k, v in reference_fixture["fresh"].items()}, str(weights))
    card = jobs.import_reference(settings, weights, json.dumps(reference_fixture["config"]), "imported")
    assert card["id"] == "imported" and "freshly initialised" in card["card"]
    model = load_model(card["checkpoint"])
    assert torch.equal(model.backbone.state_dict()["norm.weight"], reference_fixture["fresh"]["norm.weight"])
    with pytest.raises(ServiceError, match="already exists"):
        jobs.import_reference(settings, weights, reference_fixture["config"], "imported")
    pickle = tmp_path / "ref.ckpt"
    torch.save({"x": torch.zeros(1)}, pickle)
    with pytest.raises(ServiceError, match="never unpickles"):
        jobs.import_reference(settings, pickle, reference_fixture["config"], "other")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(ServiceError, match="not a valid .safetensors"):
        jobs.import_reference(settings, garbage, reference_fixture["config"], "other")
    with pytest.raises(ServiceError, match="not valid JSON"):
        jobs.import_reference(settings, weights, "{d_model: 16", "other")
    with pytest.raises(ServiceError, match="Could not import"):
        jobs.import_reference(settings, weights, {"d_model": 32, "n_layers": 2}, "other")
    jobs.delete_run(settings, "imported")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
def test_real_training_start_stop_resume(settings, tmp_path):
    """The real trainer (python -m sashimi_core.train) on a folder of WAVs: start, watch, stop, resume."""
    data = tmp_path / "tones"
    for i in range(12):
        write_audio(data / f"tone_{i:02d}.wav", seconds=1.0, freq=200 + 50 * i)
    jobs.start_training(settings, "real", str(data), "sashimi-tiny", 100000, 1, 1e-3)
    run = settings.runs_dir / "real"
    try:
        first = _wait(lambda: (s := jobs.run_status(run))["state"] == "running" and (s["step"] or 0) >= 2 and s,
                      300, "the run to train a few steps")
        assert first["running"] and first["total_steps"] == 100000 and first["eta_s"] > 0
        assert "real" in jobs.running_runs(settings)
        with pytest.raises(ServiceError, match="already training"):
            jobs.start_training(settings, "second", str(data), "sashimi-tiny", 10, 1, 1e-3)
        assert "Sent stop" in jobs.stop_training(settings, "real")
        stopped = _wait(lambda: (s := jobs.run_status(run))["state"] == "stopped" and s, 180, "status stopped")
        assert not stopped["running"] and stopped["has_checkpoint"]
        with pytest.raises(ServiceError, match="not running"):
            jobs.stop_training(settings, "real")
        r = services.generate_clips(settings, "real", None, seconds=SECONDS, seed=0)  # its checkpoint is listed
        assert r["model"] == "real"
        jobs.resume_training(settings, "real")
        assert "--resume" in jobs.read_job(run)["command"] and jobs.folder_running(run)
        _wait(lambda: (s := jobs.run_status(run))["running"] and (s["step"] or 0) > stopped["step"], 300,
              "the resumed run to pass its old step")
        jobs.stop_training(settings, "real")
        _wait(lambda: jobs.run_status(run)["state"] == "stopped", 180, "status stopped after resume")
    finally:
        processes.terminate("train", run)  # never leave a trainer running after a failure


# ---------------------------------------------------------------------------------------------- warm-up
def test_warmup_loads_and_compiles_once_in_the_background(settings, monkeypatch):
    monkeypatch.delenv("SASHIMI_NO_WARMUP", raising=False)
    monkeypatch.setattr(services, "_WARMED", set())
    cards = [c for c in services.list_models(settings) if c["architecture"] == "sashimi"][:services.WARMUP_MODELS]
    for card in cards:
        services.MODELS.forget(card["checkpoint"])
    thread = services.start_warmup(settings)
    assert thread is not None and thread.daemon
    thread.join(300)
    assert not thread.is_alive() and services.WARMUP["state"] == "ready"
    for card in cards:  # each SaShiMi model (up to WARMUP_MODELS) is loaded and cached
        weights = Path(card["checkpoint"]) / "model.safetensors"
        assert any(k[0] == str(Path(card["checkpoint"]).resolve()) and k[2] == weights.stat().st_mtime_ns
                   for k in services.MODELS._models), card["id"]
    assert services.start_warmup(settings) is None  # once per process
    monkeypatch.setattr(services, "_WARMED", set())
    monkeypatch.setenv("SASHIMI_NO_WARMUP", "1")
    assert services.start_warmup(settings) is None


def test_quality_report_and_recommended_sampling(settings, dirs):
    """A checkpoint with `bench quality`'s files and a recommended_sampling in its metadata: the Models tab
    gets the report and a served copy of the grid; the Generate tab gets the sampling settings."""
    folder = dirs / "runs" / "reported"
    make_tiny_checkpoint(folder, recommended_sampling={"temperature": 0.9, "top_p": 0.95})
    assert services.model_quality(settings, "reported") == ("", None)
    (folder / "quality.md").write_text("| measure | unconditional | real |\n")
    png = folder / "quality.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    text, served = services.model_quality(settings, "reported")
    assert text.startswith("| measure") and served.read_bytes() == png.read_bytes()
    assert served.resolve().is_relative_to(Path(settings.output_dir).resolve())
    assert services.find_model(settings, "reported")["sampling"] == {"temperature": 0.9, "top_p": 0.95}
    make_tiny_checkpoint(dirs / "runs" / "odd-sampling", recommended_sampling={"temperature": "hot", "top_p": 2})
    assert services.find_model(settings, "odd-sampling")["sampling"] is None


def test_each_example_is_continued_by_the_model_of_its_kind(tmp_path):
    """Example prompts go to the shipped model trained on their data set (a spoken digit to the speech model,
    the piano phrase to the piano model), not to whichever model is listed first."""
    from playground.ui_generate import ASSETS, GenerateHandlers

    make_tiny_checkpoint(tmp_path / "shipped" / "a-piano", dataset="piano-synth")
    make_tiny_checkpoint(tmp_path / "shipped" / "b-digits", dataset="sc09-synth")
    st = services.Settings.create(public=False, checkpoints_dir=tmp_path / "shipped", runs_dir=tmp_path / "runs",
                                  output_dir=tmp_path / "out")
    h = GenerateHandlers(st)
    quiet = lambda *a, **k: None  # noqa: E731 - stands in for gr.Progress
    for name, want in (("digit_seven.wav", "b-digits"), ("piano_phrase.wav", "a-piano")):
        _, result, picked = h.example(str(ASSETS / name), 0.0, 0.0, progress=quiet)
        assert picked == want and result["model"] == want and result["seed"] == 0
