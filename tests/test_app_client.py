"""The launched app (`python app.py` on a free 127.0.0.1 port) driven through gradio_client: generate,
continue an uploaded WAV, bad uploads, concurrent clicks, Stop, model admin. Real tiny checkpoints."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from app_helpers import LaunchedApp, make_tiny_checkpoint, write_audio

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

SECONDS = 0.01  # generated length per request: 160 samples


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    make_tiny_checkpoint(tmp / "runs" / "tiny")
    make_tiny_checkpoint(tmp / "shipped" / "tiny-shipped")
    launched = LaunchedApp(tmp, tmp / "runs", tmp / "shipped")
    launched.tmp = tmp
    yield launched
    launched.stop()


@pytest.fixture
def client(app):
    return Client(app.url, verbose=False)


def _generate(client, prompt=None, model="tiny", trim=(0.0, 0.0), seconds=SECONDS, n=1, seed=5):
    return client.predict(model, None if prompt is None else handle_file(str(prompt)), trim[0], trim[1], 1.0, 1.0,
                          seconds, n, seed, api_name="/generate")


def test_endpoints_are_named(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/generate", "/continue", "/stop", "/list_models", "/delete_run", "/import_reference",
                 "/start_training", "/stop_training", "/resume_training", "/training_status", "/build_dataset"):
        assert name in api, name


def test_list_models(client):
    models = {m["id"]: m for m in client.predict(api_name="/list_models")}
    assert models["tiny-shipped"]["shipped"] and not models["tiny"]["shipped"]
    assert models["tiny"]["sample_rate"] == 16000 and models["tiny"]["quantization"] == "mu-law"


def test_generate_unconditional(client):
    files, result = _generate(client, n=2, seed=11)
    assert result["seed"] == 11 and result["prompt_seconds"] == 0 and len(result["samples"]) == 2
    wavs = sorted(f for f in files if f.endswith(".wav"))
    params = sorted(f for f in files if f.endswith(".json"))
    assert len(wavs) == 2 and len(params) == 2
    info = sf.info(wavs[0])
    assert info.frames == 160 and info.subtype == "PCM_16" and info.samplerate == 16000
    meta = json.loads(open(params[0]).read())
    assert meta["seed"] == 11 and meta["model"] == "tiny" and "commit" in meta
    again = _generate(client, n=2, seed=11)[0]
    assert sf.read(sorted(f for f in again if f.endswith(".wav"))[0])[0].tolist() == sf.read(wavs[0])[0].tolist()


def test_continue_uploaded_wav(client, tmp_path):
    prompt = write_audio(tmp_path / "clip.wav", seconds=0.2, sr=44100, channels=2)
    files, result = client.predict("tiny", handle_file(str(prompt)), 1.0, 1.0, SECONDS, 1, 3, api_name="/continue")
    assert abs(result["prompt_seconds"] - 0.2) < 1e-3 and result["prompt_nll_bits"] > 0
    assert any("Resampled" in w for w in result["warnings"]) and any("Mixed 2" in w for w in result["warnings"])
    wav = next(f for f in files if f.endswith(".wav"))
    assert sf.info(wav).frames == 3200 + 160
    with pytest.raises(Exception, match="Continue needs a clip"):
        client.predict("tiny", None, 1.0, 1.0, SECONDS, 1, 3, api_name="/continue")


def test_generate_with_trimmed_prompt(client, tmp_path):
    prompt = write_audio(tmp_path / "p.flac", seconds=0.3, sr=22050, fmt="FLAC")
    _, result = _generate(client, prompt, trim=(0.1, 0.2))
    assert abs(result["prompt_seconds"] - 0.1) < 1e-3 and result["trim_start"] == 0.1


def _bad(tmp_path, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p = tmp_path / "notes.txt"
        p.write_text("definitely not audio\n" * 50)
    elif kind == "corrupt":
        p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    elif kind == "short":
        write_audio(p, seconds=0.004)
    elif kind == "long":
        write_audio(p, seconds=65, sr=1000)
    elif kind == "8ch":
        write_audio(p, seconds=0.05, sr=16000, channels=8, subtype="FLOAT")
    elif kind == "192k":
        write_audio(p, seconds=0.05, sr=192000, subtype="PCM_24")
    elif kind == "nan":
        x = np.full(800, 0.2, np.float32)
        x[10:20] = np.nan
        sf.write(p, x, 16000, subtype="FLOAT")
    elif kind == "silent":
        sf.write(p, np.zeros(800, np.float32), 16000, subtype="PCM_16")
    return p


@pytest.mark.parametrize("kind,error", [
    ("empty", "empty"), ("text", "not an audio file"), ("corrupt", "not an audio file|could not be decoded"),
    ("short", "only 4.0 ms"), ("long", "65.0 s long; the limit here is 60 s"),
])
def test_bad_uploads_give_clear_errors(client, tmp_path, kind, error):
    with pytest.raises(Exception, match=error):
        _generate(client, _bad(tmp_path, kind))


@pytest.mark.parametrize("kind,warning", [
    ("8ch", "Mixed 8 channels"), ("192k", "Resampled the prompt from 192000 Hz"), ("nan", "10 NaN"),
    ("silent", "silent"),
])
def test_odd_uploads_work_with_warnings(client, tmp_path, kind, warning):
    _, result = _generate(client, _bad(tmp_path, kind))
    assert any(warning in w for w in result["warnings"]), result["warnings"]
    assert result["samples"][0]["nll_bits"] > 0


@pytest.mark.parametrize("kwargs,error", [
    ({"model": "no-such-model"}, "Unknown model 'no-such-model'"),
    ({"seconds": 999}, "greater than maximum value 30|Length must be"),
    ({"n": 9}, "greater than maximum value 8|Number of samples"),
])
def test_bad_requests(client, kwargs, error):
    with pytest.raises(Exception, match=error):
        _generate(client, **kwargs)


def test_concurrent_clicks_same_session(client):
    """A second Generate from the same session while one runs is refused with a clear message."""
    first = client.submit("tiny", None, 0, 0, 1.0, 1.0, 30.0, 1, 1, api_name="/generate")
    deadline = time.monotonic() + 120
    while not first.status().progress_data and time.monotonic() < deadline:  # progress: it is registered
        time.sleep(0.1)
    with pytest.raises(Exception, match="already running for this session"):
        _generate(client, seed=2)
    client.predict(api_name="/stop")
    _, result = first.result(timeout=120)
    assert result["seed"] == 1 and result["stopped"]
    assert _generate(client)[1]["seed"] == 5  # and the app keeps working


def test_stop_returns_partial_audio(client):
    job = client.submit("tiny", None, 0, 0, 1.0, 1.0, 20.0, 1, 9, api_name="/generate")
    deadline = time.monotonic() + 120
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.5)
        client.predict(api_name="/stop")
    files, result = job.result(timeout=60)
    assert result["stopped"] and result["generated_seconds"] < 20.0
    assert sf.info(next(f for f in files if f.endswith(".wav"))).frames == int(result["generated_seconds"] * 16000)


def test_model_admin(client, app, reference_fixture, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(Exception, match="shipped model"):
        client.predict("tiny-shipped", True, api_name="/delete_run")
    weights = tmp_path / "reference.safetensors"
    save_file({k: v.contiguous() for k, v in reference_fixture["fresh"].items()}, str(weights))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(reference_fixture["config"]))
    msg = client.predict(handle_file(str(weights)), handle_file(str(config)), "", "imported-ref", "mu-law", 16000,
                         api_name="/import_reference")
    assert "Imported **imported-ref**" in msg and "fresh" in msg
    assert "imported-ref" in [m["id"] for m in client.predict(api_name="/list_models")]
    with pytest.raises(Exception, match="never unpickles"):
        pickled = tmp_path / "model.safetensors"
        pickled.write_bytes(b"\x80\x04\x95" + bytes(100))
        client.predict(handle_file(str(pickled)), None, json.dumps(reference_fixture["config"]), "p", "mu-law",
                       16000, api_name="/import_reference")
    assert "Deleted" in client.predict("imported-ref", True, api_name="/delete_run")
    assert not (app.tmp / "runs" / "imported-ref").exists()
    assert client.predict("no-run", api_name="/training_status")["state"] in ("idle", "none")


def test_examples_are_cached_lazily(client, app):
    """With a shipped model, clicking an example prompt shows its continuation, generated once then cached."""
    t0 = time.monotonic()
    files, result, picked = client.predict(0, api_name="/example")  # example index 0: the spoken 'seven'
    first = time.monotonic() - t0
    assert result["model"] == picked == "tiny-shipped" and result["seed"] == 0 and result["prompt_seconds"] > 0.3
    t0 = time.monotonic()
    files2, result2, _ = client.predict(0, api_name="/example")
    assert result2["created"] == result["created"]  # served from the cache, not generated again
    assert time.monotonic() - t0 < first
    assert any((app.tmp / "examples-cache").rglob("*.wav"))


def test_public_mode_limits(tmp_path_factory):
    """`python app.py --public` (what SPACE_ID turns on): shorter clips, fewer samples, no training."""
    tmp = tmp_path_factory.mktemp("public")
    make_tiny_checkpoint(tmp / "runs" / "tiny")
    public = LaunchedApp(tmp, tmp / "runs", tmp / "shipped", extra_args=("--public",))
    try:
        client = Client(public.url, verbose=False)
        assert _generate(client, seconds=0.01)[1]["model"] == "tiny"
        with pytest.raises(Exception, match="greater than maximum value 2|between 0 and 2 s"):
            _generate(client, seconds=5.0)
        with pytest.raises(Exception, match="greater than maximum value 2|from 1 to 2"):
            _generate(client, n=4)
        with pytest.raises(Exception, match="turned off on this public server"):
            client.predict("run", "sc09-synth", "sashimi-tiny", 10, 1, 0.001, api_name="/start_training")
        long_prompt = write_audio(tmp / "long.wav", seconds=11, sr=8000)
        with pytest.raises(Exception, match="limit here is 10 s"):
            _generate(client, long_prompt)
    finally:
        public.stop()


@pytest.mark.skipif(not __import__("shutil").which("ffmpeg"), reason="Gradio's stream encoder needs ffmpeg")
def test_generate_button_streams_audio_before_the_result(client):
    """The page's Generate endpoint yields live audio chunks (an HLS playlist) while it samples, then the
    files and the results; the first chunk comes long before the end."""
    t0 = time.monotonic()
    job = client.submit("tiny", None, 0, 0, 1.0, 1.0, 8.0, 1, 21, False, False, api_name="/generate_from_page")
    first_chunk = None
    while not job.done() and time.monotonic() - t0 < 240:
        outs = job.outputs()
        if first_chunk is None and outs and str(outs[0][-1]).endswith(".m3u8"):
            first_chunk = time.monotonic() - t0
        time.sleep(0.02)
    outs = job.outputs()
    total = time.monotonic() - t0
    streamed = [o for o in outs if str(o[-1]).endswith(".m3u8")]
    files, result = outs[-1][0], outs[-1][1]
    print(f"first live chunk after {first_chunk:.2f} s, result after {total:.2f} s, {len(streamed)} chunks")
    assert first_chunk is not None and len(streamed) >= 4  # 8 s of audio in 0.5-s chunks (some may merge)
    assert first_chunk < total / 2
    assert result["seed"] == 21 and abs(result["generated_seconds"] - 8.0) < 1e-6 and len(files) == 2
