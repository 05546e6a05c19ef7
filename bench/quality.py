"""`python -m bench quality <model dir> --data <data set>`: a quality report for any model.

Generates N unconditional clips and N continuations of test-split prompts, draws N real test clips of the
same length, and measures each set with the proxies of `sashimi_core.evaluate.quality` (spectral flatness, pitched
share, silent share, onset rate, loudness); continuations are measured on their generated part only. Adds
the model's test NLL in bits with its 95% t-interval (`sashimi_core.evaluate`), and for speech models (data
set name with "sc09", or --speech) the digit-classifier metrics (IS, mIS, AM, FID) and the pocketsphinx
share of clips decoded as digits (`sashimi_core.evaluate.audio_metrics`).

Real clips and prompts are fixed, non-overlapping segments of the test split's files, drawn at random
(seeded) from all segments, and passed through the model's 8-bit quantiser, as generated audio is. Defaults:
4-s unconditional clips and 2-s prompts + 4-s continuations (speech: 1 s and 0.5 s + 1 s).

Writes bench/results/quality-<model>-<UTC time>.json (or --out), the markdown table next to it (.md, also
printed) and a PNG grid of log-mel spectrograms, generated next to real (.png).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench import common
from sashimi_core.ops.cauchy import set_threads

NAME = "quality"
SETS = ("unconditional", "continuation", "real")


# ------------------------------------------------------------------------------------------------ data
def segments(root: Path, length: int, n: int, seed: int, model, full: bool = True) -> dict:
    """n seeded-random fixed segments of ``length`` samples from the test split (with replacement only when
    there are fewer than n): {"tokens": (n, length) int64, "audio": (n, length) float32 (quantised and
    decoded), "sources": [{"file", "start_s"}], "labels": (n,) digit index from the folder name or -1}.
    ``full``: only segments lying wholly inside a file (else SC09-style zero-padded tails count too)."""
    from sashimi_core import decode
    from sashimi_core.data.loaders import AudioClipDataset
    from sashimi_core.evaluate.classifier import DIGITS

    cfg = model.cfg
    data = AudioClipDataset(root, "test", length, cfg.quantization, cfg.sample_rate, random_crop=False,
                            min_length=length if full else None)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data), n, replace=len(data) < n)
    tokens = torch.stack([data[int(i)] for i in picks])  # (n, length)
    sources, labels = [], []
    for i in picks:
        fi, start = data.items[int(i)]
        path = data.files[fi]
        sources.append({"file": path.relative_to(root).as_posix(), "start_s": start / cfg.sample_rate})
        labels.append(DIGITS.index(path.parent.name) if path.parent.name in DIGITS else -1)
    return {"tokens": tokens, "audio": decode(tokens, cfg.quantization).numpy(), "sources": sources,
            "labels": np.array(labels)}


def nll_on_test(model, root: Path, length: int, n_clips: int, batch: int) -> dict:
    """Test NLL (bits/sample, 95% t-interval over clips) on n_clips evenly spaced fixed segments of the test
    split (`sashimi_core.evaluate.evaluate`)."""
    from sashimi_core.data.loaders import AudioClipDataset
    from sashimi_core.evaluate.nll import evaluate

    cfg = model.cfg
    data = AudioClipDataset(root, "test", length, cfg.quantization, cfg.sample_rate, random_crop=False)
    idx = np.unique(np.linspace(0, len(data) - 1, min(n_clips, len(data))).round().astype(int))
    res = evaluate(model, [data[int(i)] for i in idx], batch_size=batch)
    res.pop("per_clip_nll_bits")
    res.pop("per_clip_sounding_nll_bits", None)
    res.update(length=length, of_clips=len(data))
    return res


# ------------------------------------------------------------------------------------------------ metrics
def measure(sets: dict, sample_rate: int, pitch: bool, pitch_seconds: float | None) -> dict:
    """{set: {"summary": {metric: {mean, ci_low, ci_high, n}}, "per_clip": [proxies]}} for audio (N, T)."""
    from sashimi_core.evaluate.quality import clip_proxies, summarize

    out = {}
    for name, audio in sets.items():
        rows = [clip_proxies(clip, sample_rate, pitch=pitch, pitch_seconds=pitch_seconds) for clip in audio]
        out[name] = {"summary": summarize(rows), "per_clip": rows}
    return out


def speech_metrics(sets: dict, labels: np.ndarray, classifier: str | None) -> dict:
    """Classifier metrics (IS, mIS, AM, FID against the real set) of each generated set, the real set's own
    IS/mIS/AM (and accuracy when every clip has a digit label), and the pocketsphinx recogniser share."""
    from sashimi_core.evaluate.audio_metrics import evaluate_audio, recogniser_available, recogniser_share
    from sashimi_core.evaluate.classifier import DEFAULT_PATH, load_classifier

    real = sets["real"]
    if len(real) < 2:
        return {"skipped": "the classifier metrics need at least 2 clips per set (--n 2)"}
    clf = load_classifier(classifier or DEFAULT_PATH)
    lab = labels if (labels >= 0).all() else None
    out: dict = {"classifier": str(classifier or DEFAULT_PATH)}
    for name in ("unconditional", "continuation"):
        m = evaluate_audio(sets[name], real, clf, real_labels=lab)
        out[name] = {k: m[k] for k in ("is", "mis", "am", "fid", "generated_class_histogram")}
        out["real"] = dict(m["reference"])
    if not recogniser_available():
        out["recogniser"] = "pocketsphinx is not installed"
        return out
    for name in SETS:
        out[name]["recogniser"] = recogniser_share(sets[name], lab if name == "real" else None)
    return out


# ------------------------------------------------------------------------------------------------ output
def finite_json(x):
    """NaN and infinities -> None (JSON has no NaN), recursively through dicts, lists and numpy scalars."""
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def model_name(ckpt: Path) -> str:
    return ckpt.parent.name if ckpt.name == "checkpoint" else ckpt.name


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__.split("\n")[0])
    p.add_argument("model", help="checkpoint folder (config.json + model.safetensors) or a run folder")
    p.add_argument("--data", required=True, help="data set folder (or name under --data-root) with a test split")
    p.add_argument("--data-root", default="data", help="where named data sets live (default data/)")
    p.add_argument("--n", type=int, default=16, help="clips per set (default 16)")
    p.add_argument("--seconds", type=float, default=None,
                   help="unconditional clip and continuation length (default 4; speech 1)")
    p.add_argument("--prompt-seconds", type=float, default=None, help="prompt length (default 2; speech 0.5)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seeds generation and the choice of clips")
    p.add_argument("--nll-clips", type=int, default=32, help="test clips for the NLL (0 = skip; default 32)")
    p.add_argument("--nll-seconds", type=float, default=1.0, help="length of each NLL clip (default 1 s)")
    p.add_argument("--nll-batch", type=int, default=8)
    p.add_argument("--no-pitch", action="store_true", help="skip pYIN (the slowest proxy)")
    p.add_argument("--pitch-seconds", type=float, default=None, help="run pYIN on each clip's first seconds only")
    p.add_argument("--speech", action="store_true", help="add the SC09 classifier and recogniser metrics")
    p.add_argument("--classifier", default=None, help="digit classifier folder (default checkpoints/sc09-classifier)")
    p.add_argument("--engine", default="auto", choices=("auto", "fast", "graph", "torch"))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--grid-rows", type=int, default=4, help="clips per column in the spectrogram PNG")
    p.add_argument("--out", help="JSON path (default bench/results/quality-<model>-<time>.json)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    if any(x is not None and x <= 0 for x in (args.seconds, args.prompt_seconds, args.nll_seconds)):
        p.error("--seconds, --prompt-seconds and --nll-seconds must be > 0")
    return args


def main(argv=None) -> int:
    from bench import quality_report
    from sashimi_core import decode, generate, load_model
    from sashimi_core.data.loaders import resolve_dataset
    from sashimi_core.evaluate.nll import _checkpoint_dir

    args = parse(argv)
    set_threads(args.threads)
    try:
        ckpt = _checkpoint_dir(Path(args.model))
        model = load_model(ckpt).eval()
        root = resolve_dataset(args.data, args.data_root)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    speech = args.speech or "sc09" in root.resolve().name.lower() or "sc09" in str(args.data).lower()
    seconds = args.seconds or (1.0 if speech else 4.0)
    prompt_seconds = args.prompt_seconds or (0.5 if speech else 2.0)
    sr, n = model.cfg.sample_rate, args.n
    n_gen, n_prompt = round(seconds * sr), round(prompt_seconds * sr)
    timings, t0 = {}, time.perf_counter()
    try:
        real = segments(root, n_gen, n, args.seed, model, full=not speech)
        prompts = segments(root, n_prompt, n, args.seed + 1, model)
    except ValueError as exc:
        print(f"error: {exc} (need test files of at least {seconds} s; try a smaller --seconds)", file=sys.stderr)
        return 2
    timings["load_data_s"] = time.perf_counter() - t0

    def log(msg):
        print(f"[quality {time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    gen_args = dict(n_samples=n, temperature=args.temperature, top_p=args.top_p, engine=args.engine,
                    threads=args.threads)
    log(f"generating {n} unconditional clips of {seconds} s")
    t = time.perf_counter()
    uncond = generate(model, n_gen, seed=args.seed, **gen_args)
    timings["generate_unconditional_s"] = time.perf_counter() - t
    log(f"generating {n} continuations of {seconds} s after {prompt_seconds} s prompts")
    t = time.perf_counter()
    cont = generate(model, n_gen, prompt=prompts["tokens"], seed=args.seed + 1, **gen_args)
    timings["generate_continuation_s"] = time.perf_counter() - t  # includes reading the prompts (prefill)
    q = model.cfg.quantization
    cont_full = decode(cont, q).numpy()  # (n, n_prompt + n_gen)
    sets = {"unconditional": decode(uncond, q).numpy(), "continuation": cont_full[:, n_prompt:],
            "real": real["audio"]}
    log("measuring proxies")
    t = time.perf_counter()
    measured = measure(sets, sr, pitch=not args.no_pitch, pitch_seconds=args.pitch_seconds)
    timings["proxies_s"] = time.perf_counter() - t
    nll = None
    if args.nll_clips > 0:
        log(f"test NLL on {args.nll_clips} clips of {args.nll_seconds} s")
        t = time.perf_counter()
        nll = nll_on_test(model, root, round(args.nll_seconds * sr), args.nll_clips, args.nll_batch)
        timings["nll_s"] = time.perf_counter() - t
    speech_res = None
    if speech:
        log("speech metrics (classifier, pocketsphinx)")
        t = time.perf_counter()
        speech_res = speech_metrics(sets, real["labels"], args.classifier)
        timings["speech_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else common.RESULTS_DIR / f"quality-{model_name(ckpt)}-{stamp}.json"
    paths = {"json": out, "markdown": out.with_suffix(".md"), "png": out.with_suffix(".png")}
    result = {
        "benchmark": NAME, "env": common.env_record(),
        "model": {"path": str(ckpt), "name": model_name(ckpt), "architecture": model.cfg.architecture,
                  "n_parameters": model.checkpoint.get("n_parameters"),
                  "dataset": model.checkpoint["metadata"].get("dataset"),
                  "card_test_nll_bits": model.checkpoint["metadata"].get("test_nll_bits")},
        "data": str(root), "speech": speech,
        "settings": {"n": n, "seconds": seconds, "prompt_seconds": prompt_seconds, "temperature": args.temperature,
                     "top_p": args.top_p, "seed": args.seed, "engine": args.engine, "sample_rate": sr,
                     "pitch": "off" if args.no_pitch else {"resampled_to_hz": 8000,
                                                           "first_seconds": args.pitch_seconds}},
        "sets": measured, "nll": nll, "speech_metrics": speech_res, "timings_s": timings,
        "sources": {"prompts": prompts["sources"], "real": real["sources"]},
        "files": {k: str(v) for k, v in paths.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    result["files"]["png_backend"] = quality_report.spectrogram_grid(
        sets, cont_full, n_prompt, sr, paths["png"], rows=args.grid_rows)
    common.write_json(NAME, finite_json(result), out)
    table = quality_report.markdown(result)
    paths["markdown"].write_text(table + "\n")
    print(table)
    print(f"\nwrote {paths['json']}, {paths['markdown'].name}, {paths['png'].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
