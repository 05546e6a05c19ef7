"""What the playground's UI calls: model registry and cards, generation, continuation, model management.

Plain values in and out ((sample_rate, ndarray) or file paths, dicts, strings); no Gradio import, so all of
it is testable without a browser. User mistakes raise :class:`ServiceError` (or audio_io's AudioInputError),
both ValueErrors whose message is meant for the user; the UI layer turns them into ``gr.Error``.

Process-wide state lives here and only here, each piece behind a lock: the model cache (loaded lazily,
reloaded when a checkpoint file changes), the per-session generation guard with its stop flags, measured
throughput per model, and the cleaner that deletes result WAVs after ``Settings.output_max_age_s``.
Training and data set jobs, deleting runs and importing reference backbones are in :mod:`playground.jobs`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from playground import audio_io
from playground.registry import (  # noqa: F401 - the service layer's model API, used by the UI and jobs
    TABLE_HEADERS,
    client_cards,
    describe_model,
    find_model,
    list_models,
    model_label,
    model_table,
    redact,
    shown_path,
)
from playground.settings import NAME_RE, ROOT, ServiceError, Settings, process_temp_dir  # noqa: F401

log = logging.getLogger(__name__)


QUALITY_FILES = ("quality.md", "quality.png")  # `python -m bench quality ... --out <checkpoint>/quality.json`


def model_quality(settings: Settings, model_id: str) -> tuple[str, Path | None]:
    """(markdown of the model's quality report, a servable copy of its spectrogram grid PNG) from the files
    `python -m bench quality` wrote into the checkpoint folder; ("", None) for a model without a report."""
    folder = Path(find_model(settings, model_id)["checkpoint"])
    md, png = (folder / name for name in QUALITY_FILES)
    text = md.read_text(errors="replace") if md.is_file() else ""
    return text, publish_file(settings, png) if png.is_file() else None



# ------------------------------------------------------------------------------------------- model cache
class ModelCache:
    """Loaded models keyed by (checkpoint path, device, weights mtime/size), least recently used dropped.

    A checkpoint rewritten by a running training job has a new mtime, so the next request loads the new
    weights. Loading happens under the lock, so two requests never load the same model twice."""

    def __init__(self, capacity: int = 3):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple, object] = OrderedDict()

    def get(self, path: str, device: str = "cpu"):
        from sashimi_core import load_model

        weights = Path(path) / "model.safetensors"
        try:
            st = weights.stat()
        except OSError as exc:
            raise ServiceError(f"The checkpoint {path} has no model.safetensors (was it deleted?).") from exc
        key = (str(Path(path).resolve()), device, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            for old in [k for k in self._models if k[:2] == key[:2]]:
                del self._models[old]  # an older version of the same checkpoint
            try:
                model = load_model(path, map_location=device)
            except ValueError as exc:
                raise ServiceError(f"Could not load the model at {path}: {exc}") from exc
            self._models[key] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return model

    def forget(self, path: str) -> None:
        with self._lock:
            for key in [k for k in self._models if k[0] == str(Path(path).resolve())]:
                del self._models[key]


class SessionGuard:
    """One generation at a time per browser session / API client, with a stop flag for each."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active: dict[str, threading.Event] = {}
        self._clicks: dict[str, int] = {}  # Generate clicks of a page not finished yet

    def click(self, session: str) -> bool:
        """Count a Generate click of a browser session; False (not counted) while its previous click has not
        finished: the browser drops that click (one pending event at a time), so the page says so instead."""
        with self._lock:
            if self._clicks.get(session, 0) > 0:
                return False
            self._clicks[session] = self._clicks.get(session, 0) + 1
            return True

    def click_done(self, session: str) -> None:
        with self._lock:
            n = self._clicks.pop(session, 0) - 1
            if n > 0:
                self._clicks[session] = n

    def begin(self, session: str) -> threading.Event:
        with self._lock:
            if session in self._active:
                raise ServiceError("A generation is already running for this session; wait for it to finish "
                                   "or press Stop.")
            event = self._active[session] = threading.Event()
            return event

    def end(self, session: str) -> None:
        with self._lock:
            self._active.pop(session, None)

    def stop(self, session: str) -> bool:
        with self._lock:
            event = self._active.get(session)
        if event is None:
            return False
        event.set()
        return True


MODELS = ModelCache()
SESSIONS = SessionGuard()
_THROUGHPUT: dict[str, float] = {}  # checkpoint folder -> last measured sampling speed (samples/s, all streams)
_PROMPT_RATE: dict[str, float] = {}  # checkpoint folder -> last prompt read speed (samples/s, load included)
_THROUGHPUT_LOCK = threading.Lock()
_STARTED_LOCK = threading.Lock()
_CLEANERS: set[str] = set()  # output folders with a cleaner thread
_WARMED: set[str] = set()  # checkpoints warmed up
WARMUP: dict = {"state": "off"}  # the start-up compile: off / compiling (since) / ready (seconds)
WARMUP_MODELS = 3  # SaShiMi models warmed up at start-up (`start_warmup`)


def warming_up() -> bool:
    """True while the start-up compile of the generation engine runs (the first request would wait for it)."""
    return WARMUP.get("state") == "compiling"


def check_prompt(settings: Settings, audio) -> str:
    """Read an uploaded prompt as generation will: a one-line description, or AudioInputError saying why it
    cannot be used (checked on upload, not first at Generate)."""
    prompt = audio_io.prepare_prompt(audio, 16000, max_seconds=settings.max_prompt_seconds)
    notes = " ".join(prompt.warnings)
    return f"Prompt: {prompt.seconds:.2f} s." + (f" {notes}" if notes else "")


def request_stop(session: str) -> bool:
    """Ask the session's running generation to stop after its current chunk. False if none is running."""
    return SESSIONS.stop(session)


def estimate_seconds(settings: Settings, model_id: str, seconds: float, n_samples: int,
                     prompt_seconds: float = 0.0) -> float | None:
    """Time of a request at this model's last measured speeds: sampling, plus reading a prompt of
    prompt_seconds once a prompt of a second or more has been read (None until sampling was measured)."""
    try:
        card = find_model(settings, model_id)
    except ServiceError:
        return None
    with _THROUGHPUT_LOCK:
        rate, prompt_rate = _THROUGHPUT.get(card["checkpoint"]), _PROMPT_RATE.get(card["checkpoint"])
    if not rate:
        return None
    prompt = prompt_seconds * card["sample_rate"] / prompt_rate if prompt_rate and prompt_seconds > 0 else 0.0
    return seconds * card["sample_rate"] * n_samples / rate + prompt


# ---------------------------------------------------------------------------------------------- outputs
def new_output_dir(settings: Settings) -> Path:
    folder = Path(settings.output_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def publish_file(settings: Settings, path) -> Path:
    """A copy of an app-made file (e.g. a training sample under runs/) in the output folder, which is what
    the server may hand out; the same source file (path, size, mtime) maps to the same copy."""
    src = Path(path)
    st = src.stat()
    digest = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = Path(settings.output_dir) / "published"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{digest}-{src.name}"
    if not dest.is_file():
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return dest


def cleanup_outputs(settings: Settings, max_age_s: float | None = None) -> int:
    """Delete result folders older than max_age_s (default settings.output_max_age_s). Returns the count."""
    root = Path(settings.output_dir)
    if not root.is_dir():
        return 0
    limit = time.time() - (settings.output_max_age_s if max_age_s is None else max_age_s)
    n = 0
    for folder in root.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
                n += 1
        except OSError:
            continue
    return n


def _first_time(started: set, key: str) -> bool:
    """True exactly once per key and registry (thread-safe): for background threads started once per process."""
    with _STARTED_LOCK:
        if key in started:
            return False
        started.add(key)
        return True


def start_cleaner(settings: Settings, interval_s: float = 300.0) -> None:
    """Start (once per output folder) a daemon thread that runs cleanup_outputs every interval_s."""
    key = str(Path(settings.output_dir).resolve())
    if not _first_time(_CLEANERS, key):
        return

    def loop():
        while True:
            try:
                cleanup_outputs(settings)
            except Exception:  # noqa: BLE001 - a cleaner must never die
                log.exception("cleaning %s failed", key)
            time.sleep(interval_s)

    threading.Thread(target=loop, name="sashimi-output-cleaner", daemon=True).start()


def start_warmup(settings: Settings) -> threading.Thread | None:
    """Compile the generation engine in the background (once per process): the numba step engine and the
    Cauchy kernels compile on first use (~25 s in a fresh checkout, cached on disk after), so without this the
    first Generate click of a new install would wait for it. Loads the SaShiMi models (the first WARMUP_MODELS)
    into the cache and reads a 2-s prompt + samples a few steps with each (a long read's first pass also makes
    each layer's weight-only tables and first-touch memory). Off with SASHIMI_NO_WARMUP=1."""
    if os.environ.get("SASHIMI_NO_WARMUP"):
        return None
    cards = [c for c in list_models(settings) if c["architecture"] == "sashimi"][:WARMUP_MODELS]
    cards = [c for c in cards if _first_time(_WARMED, c["checkpoint"])]
    if not cards:
        return None

    def warm():
        t0 = time.time()
        WARMUP.update(state="compiling", since=t0)
        try:
            for card in cards:
                silence = np.zeros(2 * card["sample_rate"], np.float32)
                _sample_impl(card["checkpoint"], 32, silence, 1, 1.0, 1.0, 0, None, None)
            log.info("generation engine ready (%s, %.1f s)", ", ".join(c["id"] for c in cards), time.time() - t0)
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first request compiles
            log.exception("warming up the generation engine failed")
        finally:
            WARMUP.update(state="ready", seconds=round(time.time() - t0, 1))

    thread = threading.Thread(target=warm, name="sashimi-warmup", daemon=True)
    thread.start()
    return thread


def result_file(results: dict | None, index: int, files, key: str = "wav") -> Path:
    """The file `key` ("wav" or "params") of sample `index` of a generate_clips answer, looked up by name
    in `files` (the answer's file list as the client holds it: our output folder, or Gradio's cache for
    cached examples). ServiceError when it is gone."""
    samples = (results or {}).get("samples") or []
    if not 0 <= int(index) < len(samples):
        raise ServiceError(f"There is no result {int(index) + 1}; generate first.")
    name = Path(str(samples[int(index)][key])).name
    for f in files or []:
        p = Path(str(f))
        if p.name == name and p.is_file():
            return p
    raise ServiceError(f"Result {int(index) + 1} is no longer available (results are deleted after a while); "
                       "generate it again.")


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of this checkout (env SASHIMI_COMMIT wins), or 'unknown'."""
    if os.environ.get("SASHIMI_COMMIT"):
        return os.environ["SASHIMI_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# -------------------------------------------------------------------------------------------- generation
def _gpu(fn):
    """spaces.GPU on Hugging Face ZeroGPU Spaces when the package is importable; otherwise fn unchanged."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(fn)


def _sample_impl(path: str, n_steps: int, prompt: np.ndarray | None, n_samples: int, temperature: float,
                 top_p: float, seed: int | None, progress, stop, on_audio=None, prompt_progress=None):
    """Load (cached) and sample: returns (audio (k, T+n) float32 numpy, stats, prompt NLL bits or None).
    on_audio(audio (k, m) float32) receives each block of generated audio as it is made; prompt_progress(done,
    total) follows the prompt's read."""
    import torch

    from sashimi_core import decode, encode, generate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = MODELS.get(path, device)
    q = model.cfg.quantization
    tokens = None if prompt is None else encode(torch.from_numpy(prompt), q).to(device)  # (T,) int64
    on_tokens = None if on_audio is None else (lambda block: on_audio(decode(block, q).numpy()))
    out, stats = generate(model, n_steps, prompt=tokens, n_samples=n_samples, temperature=temperature,
                          top_p=top_p, seed=seed, progress=progress, stop=stop, return_stats=True,
                          on_tokens=on_tokens, prompt_progress=prompt_progress)
    prompt_nll = stats.prompt_nll_bits[0] if stats.prompt_nll_bits else None  # from the prompt's one read
    return decode(out.cpu(), q).numpy(), stats, prompt_nll


_sample = _gpu(_sample_impl)


def check_generation_request(settings: Settings, temperature, top_p, seconds, n_samples, seed) -> None:
    """Validate the numbers of a request with messages that name the allowed range."""
    def number(x, name):
        try:
            ok = not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(float(x))
        except OverflowError:
            ok = False
        if not ok:
            raise ServiceError(f"{name} must be a number, got {str(x)[:40]!r}.")
        return float(x)

    if not 0.0 <= number(temperature, "Temperature") <= 5.0:
        raise ServiceError(f"Temperature must be between 0 (greedy) and 5, got {temperature}.")
    if not 0.0 < number(top_p, "Top-p") <= 1.0:
        raise ServiceError(f"Top-p must be in (0, 1], got {top_p}.")
    if not 0.0 < number(seconds, "Length") <= settings.max_seconds + 1e-9:
        raise ServiceError(f"Length must be between 0 and {settings.max_seconds:g} s here, got {seconds} s.")
    n = number(n_samples, "Number of samples")
    if n != int(n) or not 1 <= n <= settings.max_samples:
        raise ServiceError(f"Number of samples must be a whole number from 1 to {settings.max_samples}, "
                           f"got {n_samples}.")
    if seed is not None and (number(seed, "Seed") != int(seed) or not -1 <= seed < 2**31):
        raise ServiceError(f"Seed must be a whole number in [0, 2^31) (or -1 for random), got {str(seed)[:40]}.")


def generate_clips(settings: Settings, model_id: str, prompt=None, *, trim_start: float = 0.0,
                   trim_end: float = 0.0, temperature: float = 1.0, top_p: float = 1.0, seconds: float = 1.0,
                   n_samples: int = 1, seed: int | None = None, session: str = "",
                   progress: Callable[[float, str], None] | None = None,
                   stop: Callable[[], bool] | None = None,
                   on_audio: Callable[[np.ndarray], None] | None = None, until_stop: bool = False) -> dict:
    """Generate n_samples continuations of an optional prompt and write them as WAV + params JSON.

    prompt: None, a file path, or (sample_rate, samples); converted to the model's rate, mono, trimmed to
    [trim_start, trim_end or end]. seed None or -1 draws a random one (reported). progress(fraction,
    message) is called per chunk; stop() (or request_stop(session)) ends early with partial results;
    on_audio(audio (n_samples, m) float32 at the model's rate) gets each chunk of new audio (streaming).
    until_stop: generate until stopped, at most settings.max_open_seconds (seconds is then ignored).
    Returns a JSON-ready dict: model, seed, settings, prompt info, per-sample wav/params paths and NLL, the
    list of files, and warnings for the user."""
    if until_stop:
        seconds = settings.max_open_seconds
    check_generation_request(settings, temperature, top_p, min(float(seconds), settings.max_seconds) if until_stop
                             else seconds, n_samples, seed)
    card = find_model(settings, model_id)
    sr = card["sample_rate"]
    prompt_audio = None
    if prompt is not None and not (isinstance(prompt, str) and prompt == ""):
        prompt_audio = audio_io.prepare_prompt(prompt, sr, trim_start=trim_start, trim_end=trim_end,
                                               max_seconds=settings.max_prompt_seconds)
    n_steps = max(1, int(round(float(seconds) * sr)))
    seed = None if seed is None or int(seed) < 0 else int(seed)
    session = session or f"anon-{uuid.uuid4().hex}"
    flag = SESSIONS.begin(session)
    t0 = time.monotonic()
    reason = {"wall": False}
    first: list[tuple[float, int]] = []  # (time, done) of the first progress call: rate excludes loading
    rate_box: list[float] = []  # sampling rates measured between progress calls

    def on_progress(done: int, total: int) -> None:
        now = time.monotonic()
        if not first:
            first.append((now, done))
        t1, d1 = first[0]
        rate = (done - d1) / (now - t1) if done > d1 and now > t1 else None  # steps/s while sampling
        if rate:
            rate_box.append(rate)
        if progress is not None:
            eta = f", about {(total - done) / rate:.0f} s left" if rate else ""
            progress(done / total, f"{n_samples} × {done:,}/{total:,} samples{eta}")

    def on_prompt(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), f"reading the prompt: {done / sr:.1f} of {total / sr:.1f} s")

    def should_stop() -> bool:
        if settings.max_wall_s is not None and time.monotonic() - t0 > settings.max_wall_s:
            reason["wall"] = True
            return True
        return flag.is_set() or (stop is not None and stop())

    try:
        if progress is not None:
            progress(0.0, "waiting for the generation engine to compile (first start only, about 20 s)"
                     if warming_up() else "loading the model and reading the prompt")
        prompt_samples = None if prompt_audio is None else prompt_audio.audio
        audio, stats, prompt_nll = _sample(card["checkpoint"], n_steps, prompt_samples, int(n_samples),
                                           float(temperature), float(top_p), seed, on_progress, should_stop,
                                           on_audio, on_prompt)
    finally:
        SESSIONS.end(session)
    elapsed = time.monotonic() - t0
    with _THROUGHPUT_LOCK:
        if rate_box:  # sampling speed without loading and prompt, in samples/s over all streams
            _THROUGHPUT[card["checkpoint"]] = rate_box[-1] * int(n_samples)
        if first and prompt_audio is not None and prompt_audio.seconds >= 1.0:  # t0 -> first chunk: the read
            _PROMPT_RATE[card["checkpoint"]] = len(prompt_audio.audio) / max(first[0][0] - t0, 1e-3)
    return _write_results(settings, card, audio, stats, prompt_audio, prompt_nll, elapsed, reason["wall"],
                          dict(temperature=float(temperature), top_p=float(top_p), seconds=float(seconds),
                               n_samples=int(n_samples), trim_start=float(trim_start or 0),
                               trim_end=float(trim_end or 0)))


def _write_results(settings, card, audio, stats, prompt_audio, prompt_nll, elapsed, wall_stop, params):
    sr = card["sample_rate"]
    folder = new_output_dir(settings)
    prompt_s = 0.0 if prompt_audio is None else prompt_audio.seconds
    warnings = list(prompt_audio.warnings) if prompt_audio else []
    if stats.stopped:
        warnings.append(("Stopped at the time limit of this server" if wall_stop else "Stopped")
                        + f" after {stats.steps / sr:.2f} s of audio; showing what was generated.")
    common = {"model": card["id"], "model_path": card["folder"], "seed": stats.seed, **params,
              "sample_rate": sr, "quantization": card["quantization"],
              "prompt_sha256": None if prompt_audio is None else prompt_audio.sha256,
              "prompt_seconds": round(prompt_s, 6), "prompt_nll_bits": prompt_nll,
              "generated_seconds": round(stats.steps / sr, 6), "stopped": stats.stopped,
              "commit": code_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    samples, files = [], []
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", card["id"])
    for i in range(audio.shape[0]):
        wav = audio_io.write_wav(folder / f"{stem}-seed{stats.seed}-{i + 1}.wav", audio[i], sr)
        meta = {**common, "sample_index": i, "nll_bits": stats.nll_bits[i],
                "entropy_bits": stats.entropy_bits[i], "wav": wav.name}
        params_path = folder / f"{wav.stem}.json"
        params_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        samples.append({"index": i, "wav": str(wav), "params": str(params_path),
                        "nll_bits": stats.nll_bits[i], "entropy_bits": stats.entropy_bits[i]})
        files += [str(wav), str(params_path)]
    return {**common, "elapsed_s": round(elapsed, 3),
            "samples_per_s": round(stats.steps * audio.shape[0] / max(elapsed, 1e-9), 1),
            "samples": samples, "files": files, "warnings": warnings}


def continue_clip(settings: Settings, model_id: str, audio, **kwargs) -> dict:
    """generate_clips with a prompt that must be given (an uploaded clip or an earlier result)."""
    if audio is None or (isinstance(audio, str) and audio == ""):
        raise ServiceError("Continue needs a clip: upload or record one (or use a result's "
                           "'Continue this result').")
    return generate_clips(settings, model_id, audio, **kwargs)


def result_as_prompt(results: dict | None, index: int, files) -> str:
    """The WAV of result `index` of an earlier answer, to be used as the next prompt."""
    return str(result_file(results, index, files, "wav"))
