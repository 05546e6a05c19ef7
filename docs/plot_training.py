"""The learning-curve plots of docs/training.md, from the validation records kept in docs/curves/.

    python docs/plot_training.py extract runs/<run>/metrics.jsonl > docs/curves/<model>-stage<k>.jsonl
    python docs/plot_training.py plot docs/curves/piano-synth-stage3.jsonl docs/curves/piano-synth-stage4.jsonl \
        --title "piano-synth sashimi-2" --out docs/training_piano.png
    python docs/plot_training.py plot docs/curves/efficiency-*.jsonl --overlay \
        --title "piano-synth from scratch, 10 min each" --out docs/training_efficiency.png
    python docs/plot_training.py stages docs/curves/piano-synth-test.jsonl docs/curves/sc09-synth-test.jsonl \
        --targets 3.98 2.97 --out docs/training_stages.png

A curve file holds one JSON object per validation: step, samples (seen in that stage), val_nll_bits, and where
the run logged them elapsed_s (wall-clock since the stage started) and val_nll_bits_raw (the trained weights
when the run kept a weight average). Stages are drawn one after the other on the samples axis; the wall-clock
panel shows the stages that recorded it.

A stages file (``<model>-test.jsonl``, written by hand from the cards) holds one object per training stage:
stage, samples (seen by the model in all, to the stage's end), test_nll_bits with ci_low/ci_high (the card's
`sashimi_core.evaluate` result), preset and shipped. `stages` draws them against log samples with the target and
the extrapolation that the last shipped stages' rate (least squares over them, bits per doubling) gives.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-empty line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shipped(rows: list[dict]) -> list[dict]:
    """The stages whose weights were shipped (rows without the flag count as shipped)."""
    return [r for r in rows if r.get("shipped", True)]


def extract(metrics: Path) -> list[dict]:
    """A trainer's metrics.jsonl -> its validation records, with samples and wall-clock at each."""
    records = read_jsonl(metrics)
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        raise SystemExit(f"{metrics}: no training records")
    start = train[0]["time"] - train[0]["elapsed_s"]
    per_step = json.loads((metrics.parent / "train_config.json").read_text())
    samples_per_step = per_step["batch"] * per_step["length"]
    out = []
    for r in records:
        if r.get("kind") != "val":
            continue
        row = {"step": r["step"], "samples": r["step"] * samples_per_step,
               "elapsed_s": round(r["time"] - start, 1), "val_nll_bits": round(r["val_nll_bits"], 4)}
        if r.get("val_nll_bits_raw") is not None:
            row["val_nll_bits_raw"] = round(r["val_nll_bits_raw"], 4)
        out.append(row)
    return out


def plot(curves: list[Path], title: str, out: Path, overlay: bool = False) -> None:
    """Stages one after the other on the samples axis, or (overlay) each run from 0: runs to compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_samples, by_time) = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    offset = 0.0
    for path in curves:
        rows = read_jsonl(path)
        label = path.stem
        x = [(offset + r["samples"]) / 1e6 for r in rows]
        by_samples.plot(x, [r["val_nll_bits"] for r in rows], "o-", ms=3, label=label)
        raw = [r for r in rows if "val_nll_bits_raw" in r]
        if raw:
            by_samples.plot([(offset + r["samples"]) / 1e6 for r in raw], [r["val_nll_bits_raw"] for r in raw],
                            ".--", ms=2, alpha=0.6, label=f"{label} (trained weights, no average)")
        timed = [r for r in rows if "elapsed_s" in r]
        if timed:
            by_time.plot([r["elapsed_s"] / 60 for r in timed], [r["val_nll_bits"] for r in timed], "o-", ms=3,
                         label=label)
        if raw and timed:
            by_time.plot([r["elapsed_s"] / 60 for r in raw], [r["val_nll_bits_raw"] for r in raw], ".--", ms=2,
                         alpha=0.6, label=f"{label} (no average)")
        offset += 0.0 if overlay else rows[-1]["samples"]
    by_samples.set_xlabel("training samples (M)" if overlay else "training samples, all stages (M)")
    by_samples.set_ylabel("validation NLL (bits)")
    by_time.set_xlabel("wall-clock of the stage (min, 2 vCPUs)")
    for ax in (by_samples, by_time):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def doubling_rate(rows: list[dict], last: int = 3) -> float:
    """Bits of test NLL per doubling of samples: least-squares slope over the last `last` shipped stages."""
    import numpy as np

    fit = shipped(rows)[-last:]
    if len(fit) < 2:
        raise SystemExit("the extrapolation needs at least two shipped stages")
    x = np.log2([r["samples"] for r in fit])
    return float(np.polyfit(x, [r["test_nll_bits"] for r in fit], 1)[0])


def samples_to_target(rows: list[dict], target: float, last: int = 3) -> float:
    """Samples at which the last shipped stage, going on at `doubling_rate`, reaches target (inf if it never
    does at that rate)."""
    rate = doubling_rate(rows, last)
    end = shipped(rows)[-1]
    if end["test_nll_bits"] <= target:
        return float(end["samples"])
    return float("inf") if rate >= 0 else end["samples"] * 2.0 ** ((end["test_nll_bits"] - target) / -rate)


def plot_stages(files: list[Path], targets: list[float], out: Path, last: int = 3) -> None:
    """Test NLL per stage against samples seen (log axis), each model's target, and the extrapolation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for k, (path, target) in enumerate(zip(files, targets, strict=True)):
        rows = read_jsonl(path)
        name = path.stem.removesuffix("-test")
        x = [r["samples"] for r in rows]
        y = [r["test_nll_bits"] for r in rows]
        err = [[r["test_nll_bits"] - r["ci_low"] for r in rows], [r["ci_high"] - r["test_nll_bits"] for r in rows]]
        line = ax.errorbar(x, y, yerr=err, fmt="o-", ms=4, capsize=2, label=f"{name} (test NLL, 95% CI)")[0]
        for r in rows:  # stage numbers above the first model's points, below the second's
            ax.annotate(f"{r['stage']}{'' if r.get('shipped', True) else ' (not shipped)'}",
                        (r["samples"], r["test_nll_bits"]), textcoords="offset points",
                        xytext=(4, 4 if k % 2 == 0 else -10), fontsize=7)
        rate, end = doubling_rate(rows, last), shipped(rows)[-1]
        reach = samples_to_target(rows, target, last)
        x_end = min(reach, end["samples"] * 2.0 ** 12)
        met = end["test_nll_bits"] <= target
        ax.plot([end["samples"], x_end], [end["test_nll_bits"], end["test_nll_bits"] + rate * math.log2(
            x_end / end["samples"])], ":", color=line.get_color(), label=f"{name}: {rate:+.3f} bits per doubling "
                f"(last {last} shipped stages)" + (", target met" if met else f" -> target at {reach:.2g} samples"))
        ax.axhline(target, color=line.get_color(), lw=0.8, alpha=0.5)
        ax.annotate(f"{name} target {target}", (x[0], target), textcoords="offset points", xytext=(0, 3),
                    fontsize=7, color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training samples seen, all stages (log scale)")
    ax.set_ylabel("test NLL (bits/sample)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("metrics", type=Path)
    q = sub.add_parser("plot")
    q.add_argument("curves", type=Path, nargs="+")
    q.add_argument("--title", default="")
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--overlay", action="store_true", help="each curve from 0 samples (runs compared)")
    st = sub.add_parser("stages")
    st.add_argument("files", type=Path, nargs="+")
    st.add_argument("--targets", type=float, nargs="+", required=True, help="one test-NLL target per file")
    st.add_argument("--last", type=int, default=3, help="shipped stages the extrapolation's rate is fitted to")
    st.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "stages":
        plot_stages(args.files, args.targets, args.out, args.last)
        for path, target in zip(args.files, args.targets, strict=True):
            rows = read_jsonl(path)
            print(f"{path.stem}: {doubling_rate(rows, args.last):+.4f} bits per doubling over the last "
                  f"{args.last} shipped stages; target {target} at {samples_to_target(rows, target, args.last):.3g}"
                  " samples")
    elif args.cmd == "extract":
        for row in extract(args.metrics):
            print(json.dumps(row))
    else:
        plot(args.curves, args.title, args.out, args.overlay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
