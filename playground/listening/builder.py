"""Build a listening test once: sample every model, cut real-data clips, make anchors and gold clips, write
them as 16-bit WAVs under opaque random ids, then the manifest (see catalog.py for the folder layout).

    folder = build_test(TestSpec(title="SC09 demo", kind="speech", models=["sashimi-sc09"],
                                 real_dir="data/sc09-synth", anchor="noise", clips_per_system=8,
                                 clip_seconds=1.0), root=Path("listening_tests"), progress=print)

Systems: each model (``generate(model, n_steps, n_samples=k, temperature, seed, progress)`` then
``decode(tokens, model.cfg.quantization)``), "Real data" (k files drawn from the folder, one window each, the
loudest of four random windows; optionally through the models' 8-bit quantiser so the comparison is about
modelling, not quantisation), and an optional low anchor (white noise, or the first model at temperature
2.0). Gold clips (white noise that must be rated <= 2, real clips that must be rated >= 3 on the first
scale) flag careless raters and are left out of the results. With a prompt file, every clip of every system
starts with the same prompt, so clips stay indistinguishable by their start; raters judge what follows.
All clips have exactly the same length.

Every clip, whatever its source, leaves through one chain (:func:`finish`), so neither loudness nor sample
statistics tell sources apart: (1) smear each sample uniformly over one step of the models' 8-bit mu-law
codec, which turns a clip that is already on the mu-law grid (models, quantised real data) and one that is
not (noise, unquantised real data) into alike continuous signals; (2) with `normalize`, gain to -20 dBFS
RMS and a soft-knee peak limiter above -3 dBFS (the prompt and the continuation are levelled separately, so
the shared prompt sounds the same in every clip); (3) re-encode through the 8-bit mu-law codec at the final
level; (4) TPDF dither of +-1 LSB and 16-bit PCM. Without (1), a model clip amplified by 40 dB keeps its ~30
distinct values while real clips have hundreds and white noise thousands.

:class:`BuildRegistry` runs builds in background threads with progress in status.json and a stop flag.
torch is imported only inside the functions that need it.
"""
from __future__ import annotations

import dataclasses
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playground.listening import catalog
from playground.listening.config import Limits, ListeningError, TestSpec
from playground.listening.store import RatingStore

log = logging.getLogger(__name__)
TARGET_RMS = 0.1  # -20 dBFS
KNEE = 10 ** (-3 / 20)  # -3 dBFS: the limiter leaves samples below this untouched
PEAK = 0.989  # -0.1 dBFS: the limiter's ceiling
MAX_GAIN = 1000.0  # +60 dB
SILENCE_RMS = 1e-6  # quieter clips are not amplified
LEVEL_TOLERANCE_DB = 0.01
NOISE_RMS = 0.1
PCM_SCALE = 32767.0  # float [-1, 1] -> 16-bit PCM
Progress = Callable[[float, str], None]


class BuildCancelled(Exception):
    """The teacher stopped the build."""


@dataclass
class Clip:
    """One clip before it is written: audio (samples,) float32 and what the manifest records about it."""

    audio: np.ndarray
    kind: str  # model | real | anchor | gold-noise | gold-real
    system: str | None  # display name of its system; None for gold clips
    meta: dict
    prompt: int = 0  # leading samples that are the shared prompt (levelled apart from the continuation)


def resolve_models(names: list[str], model_roots=None) -> list[dict]:
    """Checkpoint names (as listed by list_checkpoints) or checkpoint folders -> [{name, path}]."""
    known = {m["name"]: m for m in catalog.available_models(model_roots)}
    out = []
    for name in names:
        if name in known:
            out.append(known[name])
        elif (Path(name) / "config.json").is_file():
            out.append({"name": Path(name).name, "path": str(name)})
        else:
            raise ListeningError(f"Unknown model {name!r}. Available: {', '.join(sorted(known)) or 'none'}.")
    return out


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0


def soft_limit(audio: np.ndarray) -> np.ndarray:
    """Peak limiter without look-ahead: samples (n,) float64 with |x| <= KNEE pass unchanged; above, a tanh
    knee that starts with slope 1 at KNEE and approaches PEAK, so nothing exceeds PEAK (-0.1 dBFS)."""
    out = np.array(audio, dtype=np.float64)
    mag = np.abs(out)
    over = mag > KNEE
    span = PEAK - KNEE
    out[over] = np.sign(out[over]) * (KNEE + span * np.tanh((mag[over] - KNEE) / span))
    return out


def level(audio: np.ndarray, normalize: bool) -> tuple[np.ndarray, float]:
    """Gain to TARGET_RMS measured after the peak limiter (when normalize; else only clipped to +-PEAK).
    audio (n,) float -> (audio (n,) float64, gain in dB). Silence stays silence; the gain is at most MAX_GAIN."""
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float64))
    if not normalize:
        return np.clip(audio, -PEAK, PEAK), 0.0
    if rms(audio) < SILENCE_RMS:
        return audio, 0.0
    gain = TARGET_RMS / rms(audio)
    for _ in range(40):  # the limiter takes some level off: raise the gain until the RMS is on target
        got = rms(soft_limit(audio * min(gain, MAX_GAIN)))
        if gain >= MAX_GAIN or abs(20 * np.log10(got / TARGET_RMS)) < LEVEL_TOLERANCE_DB:
            break
        gain *= TARGET_RMS / got  # rms(limit(g x)) grows slower than g: this approaches from below
    gain = min(gain, MAX_GAIN)
    return soft_limit(audio * gain), float(20 * np.log10(gain))


def mu_law_smear(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move each sample uniformly within +-half a step of the 8-bit mu-law codec, in its compressed domain:
    (n,) float -> (n,) float64. A clip on the codec's grid becomes continuous, and a gain then moves it onto
    the final grid as densely as any other clip; the added noise equals the codec's own quantisation noise."""
    from sashimi_core.ops.quantize import LEVELS, ZERO_TOKEN, mu_law_decode

    x = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    mu = LEVELS - 1
    # the continuous inverse of mu_law_decode: token position t with x = sign(y)/mu * expm1(|y| ln(mu+1))
    tokens = ZERO_TOKEN + ZERO_TOKEN * np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    tokens = np.clip(tokens + rng.uniform(-0.5, 0.5, len(x)), 0, mu)
    return mu_law_decode(tokens).numpy().astype(np.float64)


def to_pcm16(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The final codec: (n,) float -> 8-bit mu-law -> (n,) int16 with TPDF dither of +-1 LSB."""
    import torch

    from sashimi_core.ops.quantize import mu_law_decode, mu_law_encode

    coded = mu_law_decode(mu_law_encode(torch.from_numpy(np.asarray(audio, dtype=np.float64)))).numpy()
    tpdf = rng.uniform(-0.5, 0.5, len(coded)) + rng.uniform(-0.5, 0.5, len(coded))
    return np.clip(np.round(coded.astype(np.float64) * PCM_SCALE + tpdf), -32768, 32767).astype(np.int16)


def finish(clip: Clip, normalize: bool, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """The chain every clip leaves through (module docstring): smear, level prompt and continuation
    separately, 8-bit mu-law, dither. Returns (int16 samples (n,), gains in dB of [prompt,] continuation)."""
    audio = np.nan_to_num(np.asarray(clip.audio, dtype=np.float64))
    smeared = mu_law_smear(audio, rng)
    parts, gains = [], []
    for part in [slice(0, clip.prompt), slice(clip.prompt, None)] if clip.prompt else [slice(None)]:
        silent = rms(audio[part]) < SILENCE_RMS  # judged before the smear, which adds noise at about -86 dBFS
        leveled, gain_db = level(smeared[part], normalize and not silent)
        parts.append(leveled)
        gains.append(gain_db)
    return to_pcm16(np.concatenate(parts), rng), gains


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.normal(0.0, NOISE_RMS, n), -1.0, 1.0).astype(np.float32)


def real_windows(folder: str, count: int, n: int, sample_rate: int, rng: np.random.Generator,
                 exclude: set[str] = frozenset()) -> list[tuple[np.ndarray, str]]:
    """`count` windows of n samples from distinct files of folder (searched recursively), with each file's
    path relative to the folder. Shorter files are padded with silence at the end."""
    from sashimi_core.data.common import load_audio
    from sashimi_core.data.loaders import list_audio

    root = Path(folder)
    files = [f for f in list_audio(root) if str(f.relative_to(root)) not in exclude]
    if len(files) < count:
        raise ListeningError(f"The real-data folder {folder} has {len(files)} usable audio files; "
                             f"this test needs {count}.")
    out = []
    for i in rng.permutation(len(files))[:count]:
        audio = load_audio(files[i], sample_rate)
        if len(audio) > n:
            starts = rng.integers(0, len(audio) - n + 1, size=4)
            start = max(starts, key=lambda s: float(np.mean(audio[s:s + n] ** 2)))
            audio = audio[start:start + n]
        out.append((np.pad(audio, (0, n - len(audio))).astype(np.float32), str(files[i].relative_to(root))))
    return out


class _Steps:
    """Overall progress across several generate() calls, forwarded as (fraction, message)."""

    def __init__(self, total: int, progress: Progress | None, stop: Callable[[], bool] | None):
        self.total, self.done, self.progress, self.stop = max(total, 1), 0, progress, stop

    def report(self, done_here: int, message: str) -> None:
        if self.progress is not None:
            self.progress(0.02 + 0.9 * (self.done + done_here) / self.total, message)

    def check(self) -> None:
        if self.stop is not None and self.stop():
            raise BuildCancelled("cancelled")


def make_clips(spec: TestSpec, model_roots=None, progress: Progress | None = None,
               stop: Callable[[], bool] | None = None) -> tuple[list[Clip], list[dict], int]:
    """Generate and collect every clip of a test: (clips, systems, sample_rate)."""
    import torch

    from sashimi_core import decode, encode, generate, load_model

    models = resolve_models(spec.models, model_roots)
    loaded = [load_model(m["path"]) for m in models]
    rates = {int(m.cfg.sample_rate) for m in loaded}
    if len(rates) > 1:
        raise ListeningError(f"The selected models use different sample rates {sorted(rates)}; pick models "
                             "trained at one rate.")
    sr = rates.pop() if rates else 16000
    quant = loaded[0].cfg.quantization if loaded else "mu-law"
    n = max(1, int(round(spec.clip_seconds * sr)))
    prompt = None
    if spec.prompt_file:
        from sashimi_core.data.common import load_audio

        if not Path(spec.prompt_file).is_file():
            raise ListeningError(f"The prompt file {spec.prompt_file} does not exist.")
        prompt = load_audio(spec.prompt_file, sr)[: int(round(spec.prompt_seconds * sr))]
        if len(prompt) == 0:
            raise ListeningError("The prompt file is empty.")
    p_len = 0 if prompt is None else len(prompt)
    k = spec.clips_per_system
    jobs = [(m, card, spec.temperature, m_i) for m_i, (m, card) in enumerate(zip(loaded, models, strict=True))]
    if spec.anchor == "temperature":
        jobs.append((loaded[0], models[0], spec.anchor_temperature, len(jobs)))
    steps = _Steps(len(jobs) * n, progress, stop)
    clips, systems = [], []
    rng = np.random.default_rng(spec.seed)

    if prompt is not None:  # the prompt as the models hear and reproduce it: through their codec
        prompt = decode(encode(torch.from_numpy(prompt), quant), quant).numpy()

    def with_prompt(audio: np.ndarray) -> np.ndarray:
        return audio if prompt is None else np.concatenate([prompt, audio]).astype(np.float32)

    for j, (model, card, temperature, idx) in enumerate(jobs):
        anchor = j >= len(loaded)
        name = f"Anchor: {card['name']} at T={temperature:g}" if anchor else card["name"]
        seed = spec.seed * 1000 + idx + 1
        label = f"generating {'the anchor' if anchor else f'system {j + 1} of {len(loaded)}'}"
        tokens = None if prompt is None else encode(torch.from_numpy(prompt), model.cfg.quantization)

        def on_progress(done: int, total: int, label: str = label) -> None:
            steps.report(done, f"{label}: {done:,}/{total:,} samples")

        out, stats = generate(model, n, prompt=tokens, n_samples=k, temperature=float(temperature),
                              top_p=float(spec.top_p), seed=seed, return_stats=True, stop=stop,
                              progress=on_progress)
        steps.check()
        steps.done += n
        audio = decode(out, model.cfg.quantization).numpy()  # (k, p_len + n)
        systems.append({"name": name, "kind": "anchor" if anchor else "model", "path": card["path"],
                        "temperature": float(temperature), "seed": seed})
        for i in range(k):
            clips.append(Clip(audio[i], "anchor" if anchor else "model", name,
                              {"seed": seed, "index": i, "nll_bits": round(float(stats.nll_bits[i]), 4)}, p_len))
    if spec.real_dir:
        steps.report(0, "cutting real-data clips")
        windows = real_windows(spec.real_dir, k + spec.gold_real, n, sr, rng)
        if spec.quantize_real:
            windows = [(decode(encode(torch.from_numpy(a), quant), quant).numpy(), f) for a, f in windows]
        systems.append({"name": "Real data", "kind": "real", "path": str(spec.real_dir)})
        for i, (audio, source) in enumerate(windows[:k]):
            clips.append(Clip(with_prompt(audio), "real", "Real data", {"source": source, "index": i}, p_len))
        for i, (audio, source) in enumerate(windows[k:]):
            clips.append(Clip(with_prompt(audio), "gold-real", None, {"source": source, "index": i}, p_len))
    if spec.anchor == "noise":
        systems.append({"name": "Anchor: white noise", "kind": "anchor"})
        for i in range(k):
            clips.append(Clip(with_prompt(white_noise(n, rng)), "anchor", "Anchor: white noise", {"index": i},
                              p_len))
    for i in range(spec.gold_noise):
        clips.append(Clip(with_prompt(white_noise(n, rng)), "gold-noise", None, {"index": i}, p_len))
    steps.check()
    assert all(len(c.audio) == p_len + n for c in clips), "every clip must have the same length"
    return clips, systems, sr


def gold_rule(kind: str, first_scale: str) -> dict | None:
    """The expected answer of a gold clip on the first scale."""
    if kind == "gold-noise":
        return {"scale": first_scale, "max": 2}
    if kind == "gold-real":
        return {"scale": first_scale, "min": 3}
    return None


def write_test(folder: Path, spec: TestSpec, clips: list[Clip], systems: list[dict], sample_rate: int,
               code: str) -> dict:
    """Write clips (each through :func:`finish`) under opaque ids, the manifest and an empty ratings
    database; returns the manifest. The spec's max_raters / joins_per_host should be resolved (with_limits)."""
    import soundfile as sf

    scales = spec.resolved_scales()
    clip_dir = folder / catalog.CLIPS
    clip_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([spec.seed, 1])  # smear and dither noise, reproducible per seed
    entries, used = [], set()
    for clip in clips:
        clip_id = secrets.token_hex(6)
        while clip_id in used:
            clip_id = secrets.token_hex(6)
        used.add(clip_id)
        audio, gains = finish(clip, spec.normalize, rng)
        path = clip_dir / f"{clip_id}.wav"
        sf.write(str(path), audio, sample_rate, subtype="PCM_16", format="WAV")
        extra = {"prompt_gain_db": round(gains[0], 2)} if clip.prompt else {}
        entries.append({"id": clip_id, "file": f"{catalog.CLIPS}/{clip_id}.wav", "kind": clip.kind,
                        "system": clip.system, "samples": len(audio), "seconds": round(len(audio) / sample_rate, 6),
                        "gain_db": round(gains[-1], 2), **extra, "gold": gold_rule(clip.kind, scales[0].id),
                        **clip.meta})
    manifest = {"format_version": catalog.FORMAT_VERSION, "test_id": folder.name, "code": code,
                "title": spec.title, "kind": spec.kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "sample_rate": sample_rate, "scales": spec.to_dict()["scales"], "systems": systems,
                "clips": entries, "spec": spec.to_dict(), "instructions": spec.instructions,
                "min_listen_fraction": spec.min_listen_fraction, "gold_tolerance": spec.gold_tolerance,
                "max_raters": spec.max_raters or Limits().max_raters,
                "joins_per_host": spec.joins_per_host or Limits().joins_per_host}
    RatingStore(folder / catalog.DB).init()
    catalog.write_manifest(folder, manifest)
    return manifest


def build_test(spec: TestSpec, root: Path, *, model_roots=None, limits: Limits | None = None,
               progress: Progress | None = None, stop: Callable[[], bool] | None = None,
               test_id: str | None = None, code: str | None = None) -> Path:
    """Build a whole test under root/<test_id>/ (status.json tracks progress). Returns the folder.
    Raises ListeningError for bad settings, BuildCancelled when stop() turned true."""
    spec.check(limits)
    spec = spec.with_limits(limits)
    root = Path(root)
    test_id = test_id or catalog.new_test_id()
    folder = catalog.test_dir(root, test_id)
    if (folder / catalog.MANIFEST).exists():
        raise ListeningError(f"The test {test_id} exists already.")
    folder.mkdir(parents=True, exist_ok=True)  # BuildRegistry.start may have created it to reserve the code
    code = code or catalog.new_code(root)
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or fraction >= 1.0:  # status.json at most 4x per second
            last[0] = now
            catalog.write_status(folder, "building", fraction, message, title=spec.title, code=code)
        if progress is not None:
            progress(fraction, message)

    catalog.write_status(folder, "building", 0.0, "loading models", title=spec.title, code=code)
    try:
        if spec.prompt_file:  # keep the prompt with the test (an uploaded file may be cleaned up later)
            if not Path(spec.prompt_file).is_file():
                raise ListeningError(f"The prompt file {spec.prompt_file} does not exist.")
            kept = folder / f"prompt{Path(spec.prompt_file).suffix.lower()}"
            shutil.copyfile(spec.prompt_file, kept)
            spec = dataclasses.replace(spec, prompt_file=str(kept))
        clips, systems, sr = make_clips(spec, model_roots, report, stop)
        report(0.95, f"writing {len(clips)} clips")
        manifest = write_test(folder, spec, clips, systems, sr, code)
    except BuildCancelled:
        catalog.write_status(folder, "cancelled", last[0], "Build stopped.", title=spec.title, code=code)
        raise
    except Exception as exc:
        catalog.write_status(folder, "failed", 0.0, f"Build failed: {exc}", title=spec.title, code=code)
        raise
    catalog.write_status(folder, "ready", 1.0, f"Ready: {len(manifest['clips'])} clips.", title=spec.title,
                         code=code)
    return folder


class BuildRegistry:
    """Background builds of one app: each runs build_test in a daemon thread with its own stop flag."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}

    def start(self, spec: TestSpec, root: Path, *, model_roots=None, limits: Limits | None = None) -> dict:
        """Check the spec, reserve an id and a join code, start the thread; returns {test_id, code, dir}."""
        spec.check(limits)
        root = Path(root)
        with self._lock:  # two builds never draw the same code
            test_id, code = catalog.new_test_id(), catalog.new_code(root)
            folder = catalog.test_dir(root, test_id)
            folder.mkdir(parents=True, exist_ok=False)
            catalog.write_status(folder, "building", 0.0, "queued", title=spec.title, code=code)
            stop = self._stops[test_id] = threading.Event()

        def run():
            try:
                build_test(spec, root, model_roots=model_roots, limits=limits, stop=stop.is_set,
                           test_id=test_id, code=code)
            except BuildCancelled:
                log.info("listening test %s: build cancelled", test_id)
            except Exception:  # noqa: BLE001 - the failure is in status.json for the teacher
                log.exception("listening test %s: build failed", test_id)
            finally:
                with self._lock:
                    self._stops.pop(test_id, None)

        threading.Thread(target=run, name=f"listening-build-{test_id}", daemon=True).start()
        return {"test_id": test_id, "code": code, "dir": str(folder)}

    def cancel(self, test_id: str) -> bool:
        """Ask a running build to stop; False when it is not running."""
        with self._lock:
            event = self._stops.get(test_id)
        if event is None:
            return False
        event.set()
        return True

    def running(self) -> list[str]:
        with self._lock:
            return list(self._stops)
