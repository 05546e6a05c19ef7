"""Attacks on the running app (`python app.py` on 127.0.0.1, local and public mode) that must fail.

Each test is one finding of the security audit (issue 18), replayed end to end through Gradio's HTTP API the
way an anonymous client would: raw calls to /gradio_api/call/<name> (so no client-side checks help us),
uploads through Gradio's upload route, files planted where an attacker could put them. docs/security.md says
what public mode guarantees.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app_helpers import LaunchedApp, make_tiny_checkpoint
from playground import jobs, services
from playground.services import ServiceError

SECRET = "s3cret-teacher-pw-for-the-attack-tests"

# Every endpoint the app exposes, by what it may do on a public server. A new endpoint fails
# test_public_mode_refuses_every_writer until it is put in one of these sets (and, if it writes, gated).
READERS = {
    "list_models", "model_card", "model_readme", "model_quality", "sampling_defaults", "refresh_models",
    "load_models", "refresh", "refresh_1", "refresh_2", "refresh_3", "estimate", "estimate_1", "estimate_2",
    "estimate_3", "estimate_4", "warmup_tick", "render_results", "busy_note", "check_prompt", "check_prompt_1",
    "check_length", "check_samples",
    "datasets", "runs", "training_status", "poll_training", "load_example_input", "lambda",
    *(f"continue_result_{i}" for i in range(1, 9)),
    # teacher tools that only read (each refuses without the password anyway)
    "listen_unlock", "listen_unlock_enter", "listen_tests", "listen_test_info", "listen_test_info_after_results",
    "listen_results", "listen_results_live", "listen_build_status", "listen_live", "listen_custom_scales",
}
# Writes meant for anonymous visitors: temporary result files of their own, their own Stop, a rater's answers.
VISITOR_WRITERS = {"generate", "generate_from_page", "continue", "example", "stop", "rater_load", "join",
                   "join_enter", "played", "paused", "ended", "rate"}
# Writers that a public server must refuse, whatever the UI shows: name -> the refusal's wording.
GATED_WRITERS = {
    "start_training": "turned off on this public server", "stop_training": "turned off on this public server",
    "resume_training": "turned off on this public server", "build_dataset": "turned off on this public server",
    "delete_run": "turned off on this public server", "import_reference": "turned off on this public server",
    "listen_build": "Teacher tools are off", "listen_cancel_build": "Teacher tools are off",
    "listen_set_open": "Teacher tools are off", "listen_delete": "Teacher tools are off",
}


# ------------------------------------------------------------------------------------------------ helpers
def api_call(url: str, name: str, data: list, timeout: float = 60.0) -> tuple[str, object]:
    """POST /gradio_api/call/<name> and read the event stream: ("complete", data) or ("error", message)."""
    req = urllib.request.Request(f"{url}gradio_api/call/{name}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        event_id = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{name}/{event_id}", timeout=timeout) as r:
        text = r.read().decode()
    event, payload = "", None
    for line in text.splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            payload = json.loads(line[6:])
    if event == "error":
        return "error", (payload or {}).get("error") if isinstance(payload, dict) else payload
    return event, payload


def upload(url: str, path: Path) -> str:
    """Upload a file through Gradio's upload route as any visitor can; returns its path on the server."""
    boundary = "----sashimi-attack"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)[0]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


EMPTY_VALUES = {"checkboxgroup": [], "checkbox": False, "number": 0, "slider": 1, "dataframe": None,
                "textbox": "", "dropdown": None, "radio": None}


def endpoints(url: str) -> dict[str, list]:
    """{api_name: each input's initial value (or a placeholder)} of every callable endpoint, from the app's /config."""
    with urllib.request.urlopen(url + "config", timeout=30) as r:
        config = json.load(r)
    values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
    values = {c["id"]: EMPTY_VALUES.get(c.get("type")) if values[c["id"]] is None else values[c["id"]]
              for c in config["components"]}
    return {d["api_name"]: [values.get(i) for i in d["inputs"]] for d in config["dependencies"]
            if d.get("api_name") and d.get("api_visibility") != "private"}


def _launch(tmp: Path, *args, env: dict | None = None) -> LaunchedApp:
    make_tiny_checkpoint(tmp / "runs" / "tiny")
    make_tiny_checkpoint(tmp / "shipped" / "tiny-shipped")
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        app = LaunchedApp(tmp, tmp / "runs", tmp / "shipped", extra_args=args)
    finally:
        os.environ.clear()
        os.environ.update(old)
    app.tmp = tmp
    return app


@pytest.fixture(scope="module")
def local_app(tmp_path_factory):
    app = _launch(tmp_path_factory.mktemp("sec-local"), env={"SASHIMI_TEACHER_PASSWORD": SECRET,
                                                            "SASHIMI_NO_WARMUP": "1"})
    yield app
    app.stop()


@pytest.fixture(scope="module")
def public_app(tmp_path_factory):
    app = _launch(tmp_path_factory.mktemp("sec-public"), "--public", env={"SASHIMI_NO_WARMUP": "1"})
    yield app
    app.stop()


def _evil_job(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / jobs.JOB_FILE).write_text(json.dumps({"pid": os.getpid(), "command": ["python"], "started": 0,
                                                    "kind": "train", "log": "/proc/self/environ", **fields}))
    return folder


# ------------------------------------------------------------------------ 1-3: run names, job.json, pids
def test_run_names_resolve_only_inside_the_runs_folder(tmp_path):
    settings = services.Settings(runs_dir=tmp_path / "runs")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "out").symlink_to(tmp_path)
    assert jobs.run_folder(settings, "my-run.2") == (tmp_path / "runs" / "my-run.2").resolve()
    for name in ("../runs", "/etc", "a/b", ".", "..", "", " x", "out", "x" * 65, None, 3, ["a"]):
        with pytest.raises(ServiceError):
            jobs.run_folder(settings, name)


def test_uploaded_job_json_reads_no_file(local_app, tmp_path):
    """Audit 1: a job.json uploaded through Gradio's upload route, pointing its log at /proc/self/environ,
    must not make /poll_training or /training_status return the file (which holds the teacher password)."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"pid": 1, "command": ["python"], "log": "/proc/self/environ"}))
    server_path = Path(upload(local_app.url, job))
    folder = server_path.parent
    runs = (local_app.tmp / "runs").resolve()
    names = [str(folder), os.path.relpath(folder, runs), "../" * 12 + str(folder).lstrip("/"), "/etc", "/proc/self"]
    for name in names:
        event, payload = api_call(local_app.url, "training_status", [name])
        assert event == "error" and "not a run name" in payload and SECRET not in json.dumps(payload)
        event, payload = api_call(local_app.url, "poll_training", [name, None, {}])
        assert SECRET not in json.dumps(payload)


def test_planted_job_json_log_is_never_followed(local_app):
    """Even a job.json inside the runs folder cannot point the log box at another file."""
    _evil_job(local_app.tmp / "runs" / "planted-log")
    event, payload = api_call(local_app.url, "poll_training", ["planted-log", None, {}])
    assert event == "complete" and SECRET not in json.dumps(payload)
    event, payload = api_call(local_app.url, "training_status", ["planted-log"])
    assert event == "complete" and SECRET not in json.dumps(payload) and payload[0]["pid"] is None


def test_job_json_command_is_never_run(local_app, tmp_path):
    """Audit 2: /resume_training must not run a command read from a job.json (uploaded or planted)."""
    marker = tmp_path / "pwned"
    evil = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')"]
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"pid": 1, "command": evil}))
    folder = Path(upload(local_app.url, job)).parent
    runs = (local_app.tmp / "runs").resolve()
    for name in (str(folder), os.path.relpath(folder, runs)):
        event, payload = api_call(local_app.url, "resume_training", [name])
        assert event == "error" and "not a run name" in payload
    _evil_job(local_app.tmp / "runs" / "planted-cmd", command=evil)
    event, payload = api_call(local_app.url, "resume_training", ["planted-cmd"])
    assert event == "error" and "no saved training run" in payload
    time.sleep(2.0)
    assert not marker.exists()


def test_job_json_pid_is_never_signalled(local_app):
    """Audit 3: /stop_training signals only this run's trainer, never a pid from a job.json (here a sleeper
    with its real command line, and the app itself)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _evil_job(local_app.tmp / "runs" / "victim", pid=sleeper.pid,
                  command=[sys.executable, "-c", "import time; time.sleep(60)"])
        _evil_job(local_app.tmp / "runs" / "suicide", pid=local_app.proc.pid,
                  command=[sys.executable, "app.py"])
        for name in ("victim", "suicide"):
            event, payload = api_call(local_app.url, "stop_training", [name])
            assert event == "error" and "is not running" in payload
        time.sleep(0.5)
        assert sleeper.poll() is None and local_app.proc.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


# -------------------------------------------------------------------------------------- 4: public mode
def test_public_mode_refuses_every_writer(public_app):
    """Every endpoint is classified; each writer is refused by the server (not just hidden) and leaves the
    runs folder as it was."""
    found = endpoints(public_app.url)
    unknown = set(found) - READERS - VISITOR_WRITERS - set(GATED_WRITERS)
    assert not unknown, f"classify these endpoints in tests/test_security.py (and gate writers): {unknown}"
    assert set(GATED_WRITERS) <= set(found)
    runs = public_app.tmp / "runs"
    before = sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))
    plausible = {"start_training": ["evil", "data", "sashimi-tiny", 10, 1, 1e-3], "stop_training": ["tiny"],
                 "resume_training": ["tiny"], "build_dataset": ["sc09-synth", True], "delete_run": ["tiny", True]}
    for name, wording in GATED_WRITERS.items():
        args = plausible.get(name, found[name])
        event, payload = api_call(public_app.url, name, args)
        assert event == "error" and wording in str(payload), (name, payload)
    assert sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) == before


def test_public_limited_training_still_refuses_the_rest(tmp_path, monkeypatch, fake_trainer):
    """With SASHIMI_PUBLIC_TRAINING=1 a visitor may start a short sashimi-tiny run on a named data set, and
    nothing else: no stop or resume of anyone's run, no builds, no deletes, no data paths, no big batches."""
    monkeypatch.setenv("SASHIMI_PUBLIC_TRAINING", "1")
    settings = services.Settings.create(public=True, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    make_tiny_checkpoint(tmp_path / "runs" / "someone")
    (tmp_path / "data" / "tones").mkdir(parents=True)
    proc = fake_trainer(tmp_path / "runs" / "someone")
    for call in (lambda: jobs.stop_training(settings, "someone"), lambda: jobs.resume_training(settings, "someone"),
                 lambda: jobs.start_build(settings, "sc09-synth", True),
                 lambda: jobs.delete_run(settings, "someone"),
                 lambda: jobs.import_reference(settings, None, "{}", "imp")):
        with pytest.raises(ServiceError, match="turned off on this public server"):
            call()
    assert proc.poll() is None
    with pytest.raises(ServiceError, match="choose one of the listed names"):
        jobs.start_training(settings, "r", str(tmp_path / "data" / "tones"), "sashimi-tiny", 10, 1, 1e-3)
    with pytest.raises(ServiceError, match="Batch must be between 1 and 8"):
        jobs.start_training(settings, "r", "tones", "sashimi-tiny", 10, 64, 1e-3)
    with pytest.raises(ServiceError, match="preset"):
        jobs.start_training(settings, "r", "tones", "sashimi-8", 10, 1, 1e-3)


# ------------------------------------------------------------------------------- 8, 10: odds and ends
def test_runs_folder_is_never_served(local_app):
    """Nothing under runs/ (configs, job.json, logs, resume state) is downloadable; results are."""
    for f in ("tiny/config.json", "tiny/model.safetensors", "planted-log/job.json"):
        path = (local_app.tmp / "runs" / f).resolve()
        if path.exists():
            assert http_status(f"{local_app.url}gradio_api/file={path}") in (403, 404), f
    event, payload = api_call(local_app.url, "generate", ["tiny", None, 0, 0, 1.0, 1.0, 0.01, 1, 3])
    assert event == "complete"
    wav = payload[0][0]
    assert http_status(wav["url"]) == 200


def test_malformed_run_configs_break_nothing(local_app):
    """Audit 8: bad run folders are skipped; the shipped model is listed and generates."""
    runs = local_app.tmp / "runs"
    bad = {"bad-rate": {"sample_rate": "abc"}, "bad-meta": {"metadata": [1, 2]}, "bad-config": {"config": "x"}}
    good = json.loads((runs / "tiny" / "config.json").read_text())
    for name, patch in bad.items():
        make_tiny_checkpoint(runs / name)
        cfg = json.loads(json.dumps(good))
        for key, value in patch.items():
            (cfg["config"] if key == "sample_rate" else cfg)[key] = value
        (runs / name / "config.json").write_text(json.dumps(cfg))
    (runs / "not-json").mkdir(exist_ok=True)
    (runs / "not-json" / "config.json").write_text("{oops")
    try:
        event, (models,) = api_call(local_app.url, "list_models", [])
        assert event == "complete"
        ids = {m["id"] for m in models}
        assert {"tiny", "tiny-shipped"} <= ids and not ids & set(bad)
        event, payload = api_call(local_app.url, "generate", ["tiny-shipped", None, 0, 0, 1.0, 1.0, 0.01, 1, 1])
        assert event == "complete" and payload[1]["model"] == "tiny-shipped"
    finally:
        import shutil

        for name in [*bad, "not-json"]:
            shutil.rmtree(runs / name, ignore_errors=True)


def test_huge_seed_is_a_clear_error_and_logs_no_traceback(local_app):
    """Audit 10: seed 2**70 gets the seed message (not 'Something went wrong'); a refused request writes one
    log line, not two tracebacks."""
    before = local_app.log_path.read_text(errors="replace").count("Traceback")
    event, payload = api_call(local_app.url, "generate", ["tiny", None, 0, 0, 1.0, 1.0, 0.01, 1, 2**70])
    assert event == "error" and payload.startswith("Seed must be a whole number")
    event, payload = api_call(local_app.url, "training_status", ["../etc"])
    assert event == "error"
    time.sleep(0.5)
    assert local_app.log_path.read_text(errors="replace").count("Traceback") == before


def test_teacher_password_is_not_on_the_command_line():
    """Audit 10: the password comes from the environment or a file, so `ps` never shows it."""
    out = subprocess.run([sys.executable, "app.py", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert "--teacher-password-file" in out.stdout and "--teacher-password " not in out.stdout


def test_oversized_reference_import_is_refused_before_building(local_app, reference_fixture, tmp_path):
    """Audit 5: a config asking for d_state 4096 (HiPPO setup O(N^3), minutes of CPU) or d_model 4096 is
    refused by /import_reference at once, before any model is built."""
    from gradio_client import Client, handle_file
    from safetensors.torch import save_file

    weights = tmp_path / "reference.safetensors"
    save_file({k: v.contiguous() for k, v in reference_fixture["fresh"].items()}, str(weights))
    client = Client(local_app.url, verbose=False)
    for field, value in (("d_state", 4096), ("d_model", 4096), ("n_layers", 100000)):
        config = dict(reference_fixture["config"], **{field: value})
        t0 = time.monotonic()
        with pytest.raises(Exception, match=f"{field} = .* out of bounds|{field}.*(maximum|allowed)"):
            client.predict(handle_file(str(weights)), None, json.dumps(config), f"big-{field}", "mu-law", 16000,
                           api_name="/import_reference")
        assert time.monotonic() - t0 < 5.0
    assert not any((local_app.tmp / "runs").glob("big-*"))
