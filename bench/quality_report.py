"""The human-readable side of `python -m bench quality`: the markdown table and the spectrogram grid PNG.

    markdown(result)                                   # result: the JSON dict of bench/quality.py -> str
    spectrogram_grid(sets, cont_full, n_prompt, sr, path, rows=4)   # writes the PNG, returns the backend

The PNG is drawn with matplotlib (Agg) when it is installed; otherwise the log-mel tiles are laid out in
one plain image (`sashimi_core.evaluate.spectrogram.png_bytes_plain`, zlib only), so no plotting package is needed.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from sashimi_core.evaluate.quality import SILENCE_DB

ROWS = (  # (metric key of sashimi_core.evaluate.quality, label, decimals)
    ("spectral_flatness", "spectral flatness (median, non-silent frames)", 4),
    ("pitched_share", "pitched share of non-silent frames (pYIN)", 3),
    ("silent_share", "silent share of frames (< -50 dBFS)", 3),
    ("sounding", "share of clips with any sound (a frame >= -50 dBFS)", 2),
    ("onset_rate", "onsets per second", 2),
    ("rms_dbfs_mean", "frame RMS dBFS, mean", 1),
    ("rms_dbfs_median", "frame RMS dBFS, median", 1),
    ("peak_dbfs", "peak dBFS", 1),
)
SET_TITLES = {"unconditional": "unconditional", "continuation": "continuation (generated part)",
              "real": "real (test)"}
DB_RANGE = (-80.0, 0.0)  # colour range of every tile, dB re full scale


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def cell(stat: dict, n_clips: int, decimals: int) -> str:
    """{"mean", "ci_low", "ci_high", "n"} -> "mean ± half-width" (+ "(k/N clips)" when some are undefined)."""
    if not _finite(stat.get("mean")):
        return f"n/a (0/{n_clips} clips)"
    text = f"{stat['mean']:.{decimals}f}"
    if _finite(stat.get("ci_high")):
        text += f" ± {(stat['ci_high'] - stat['ci_low']) / 2:.{decimals}f}"
    return text + (f" ({stat['n']}/{n_clips} clips)" if stat["n"] < n_clips else "")


def _num(x, decimals: int = 3) -> str:
    return f"{x:.{decimals}f}" if _finite(x) else "n/a"


def speech_table(sm: dict) -> list[str]:
    """Markdown lines for the classifier and recogniser metrics of bench/quality.py's speech_metrics."""
    if "skipped" in sm:
        return [f"Speech metrics skipped: {sm['skipped']}."]
    sets = ("unconditional", "continuation", "real")
    lines = ["| speech metric | " + " | ".join(SET_TITLES[s] for s in sets) + " |", "|---|---|---|---|"]
    for key, label in (("is", "IS (higher better, max 10)"), ("mis", "mIS (higher better)"),
                       ("am", "AM (lower better)"), ("fid", "FID vs real (lower better)")):
        lines.append(f"| {label} | " + " | ".join(_num(sm[s].get(key)) for s in sets) + " |")
    if "accuracy" in sm["real"]:
        lines.append("| classifier accuracy | | | " + _num(sm["real"]["accuracy"]) + " |")
    if isinstance(sm.get("recogniser"), str):
        lines.append(f"\nRecogniser: {sm['recogniser']}.")
        return lines
    lines.append("| pocketsphinx: share decoded as a digit | "
                 + " | ".join(_num(sm[s]["recogniser"]["share"]) for s in sets) + " |")
    acc = sm["real"]["recogniser"].get("accuracy")
    if acc is not None:
        lines.append(f"| pocketsphinx: share decoded as the right digit | | | {_num(acc)} |")
    lines.append(f"\nClassifier: {Path(sm['classifier']).name}. Generated clips have no intended digit, so only "
                 "the real set has a recogniser accuracy.")
    return lines


def markdown(result: dict) -> str:
    """The report of one `python -m bench quality` result dict (its JSON) as markdown."""
    s, model = result["settings"], result["model"]
    n = s["n"]
    lines = [f"## Quality report: {model['name']} ({model['architecture']}, {model['n_parameters']:,} parameters)",
             "",
             f"Data: {Path(result['data']).name} (test split). {n} clips per set; unconditional {s['seconds']} s; "
             f"continuation {s['seconds']} s after a {s['prompt_seconds']} s prompt (measured on the "
             f"generated part); temperature {s['temperature']}, top-p {s['top_p']}, seed {s['seed']}. "
             "Cells: mean over clips ± half-width of the 95% t-interval.",
             "",
             "| proxy | " + " | ".join(SET_TITLES[k] for k in SET_TITLES) + " |",
             "|---|---|---|---|"]
    for key, label, dec in ROWS:
        cells = [cell(result["sets"][name]["summary"][key], n, dec) for name in SET_TITLES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    pitch = s["pitch"]
    note = ("pYIN skipped (--no-pitch)" if pitch == "off" else
            "pYIN (50-2000 Hz) runs on the clips resampled to 8 kHz, 128-ms frames every 64 ms"
            + (f", first {pitch['first_seconds']} s of each clip" if pitch.get("first_seconds") else ""))
    lines += ["", f"{note}; real clips pass through the model's 8-bit quantiser, as generated audio does."]
    nll = result.get("nll")
    if nll:
        lines += ["", f"Test NLL: **{_num(nll['nll_bits'], 4)} bits/sample**, 95% CI [{_num(nll['ci_low'], 4)}, "
                      f"{_num(nll['ci_high'], 4)}] over {nll['n_clips']} clips of {nll['length']} samples "
                      f"(of {nll['of_clips']}); unigram entropy of those tokens "
                      f"{_num(nll['unigram_entropy_bits'], 4)} bits."
                      + (f" The model card says {model['card_test_nll_bits']} bits (its own clips and length)."
                         if _finite(model.get("card_test_nll_bits")) else "")
                      + (f" Split by 10-ms blocks: {_num(nll['nll_silent_bits'])} bits in the silent ones "
                         f"(< {SILENCE_DB:g} dBFS, {_num(100 * nll['silent_share'], 1)}% of samples), "
                         f"{_num(nll['nll_sounding_bits'])} in the sounding ones."
                         if _finite(nll.get("nll_sounding_bits")) else "")]
    if result.get("speech_metrics"):
        lines += ["", *speech_table(result["speech_metrics"])]
    t = result["timings_s"]
    lines += ["", "Time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items()) + "."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ PNG
def _tiles(sets: dict, cont_full: np.ndarray, sample_rate: int, rows: int) -> list[list[np.ndarray]]:
    """rows x 3 log-mel arrays (n_mels, frames): unconditional, prompt + continuation, real."""
    from sashimi_core.ops.metrics import log_mel

    k = min(rows, len(cont_full))
    return [[log_mel(sets["unconditional"][i], sample_rate), log_mel(cont_full[i], sample_rate),
             log_mel(sets["real"][i], sample_rate)] for i in range(k)]


def _plain_png(tiles: list[list[np.ndarray]]) -> bytes:
    """The tiles in one image, separated by lines of the lowest level (no axes, no text)."""
    from sashimi_core.evaluate.spectrogram import png_bytes_plain

    width = max(t.shape[1] for row in tiles for t in row)
    n_mels, gap = tiles[0][0].shape[0], 4
    lo = DB_RANGE[0]
    canvas_rows = []
    for row in tiles:
        cells = [np.pad(np.maximum(t, lo), ((0, 0), (0, width - t.shape[1])), constant_values=lo) for t in row]
        sep = np.full((n_mels, gap), lo)
        canvas_rows.append(np.concatenate([c for cell_ in cells for c in (cell_, sep)][:-1], axis=1))
    sep = np.full((gap, canvas_rows[0].shape[1]), lo)
    canvas = np.concatenate([r for row in canvas_rows for r in (row, sep)][:-1], axis=0)
    return png_bytes_plain(canvas, scale=1)


def spectrogram_grid(sets: dict, cont_full: np.ndarray, n_prompt: int, sample_rate: int, path,
                     rows: int = 4) -> str:
    """Write a PNG grid of log-mel spectrograms (dB re full scale, one colour range): one row per clip,
    columns unconditional (N, T), prompt + continuation (N, n_prompt + T) with a line where the prompt ends,
    and real (N, T). Returns the backend used: "matplotlib" or "plain"."""
    from sashimi_core.checkpoint import atomic_write_bytes
    from sashimi_core.evaluate.spectrogram import HOP

    tiles = _tiles(sets, cont_full, sample_rate, rows)
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        atomic_write_bytes(Path(path), _plain_png(tiles))
        return "plain"
    widths = [t.shape[1] for t in tiles[0]]
    fig = Figure(figsize=(3 + 0.9 * sum(widths) * HOP / sample_rate, 1.0 + 1.5 * len(tiles)), dpi=90,
                 layout="constrained")
    axes = fig.subplots(len(tiles), 3, squeeze=False, gridspec_kw={"width_ratios": widths})
    titles = ["unconditional", "prompt | continuation", "real (test)"]
    for r, row in enumerate(tiles):
        for c, mel in enumerate(row):
            ax = axes[r][c]
            seconds = mel.shape[1] * HOP / sample_rate
            im = ax.imshow(mel, origin="lower", aspect="auto", cmap="viridis", vmin=DB_RANGE[0], vmax=DB_RANGE[1],
                           extent=(0, seconds, 0, mel.shape[0]))
            if c == 1:
                ax.axvline(n_prompt / sample_rate, color="white", linewidth=1.5)
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if r == len(tiles) - 1:
                ax.set_xlabel("time (s)", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"clip {r}\nmel bin", fontsize=8)
            else:
                ax.tick_params(labelleft=False)
            ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=axes, label="dB", shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return "matplotlib"
