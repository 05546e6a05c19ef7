"""The learning-curve plots of docs/training.md, from the validation records kept in docs/curves/.

    python docs/plot_training.py extract runs/<run>/metrics.jsonl > docs/curves/<model>-stage<k>.jsonl
    python docs/plot_training.py plot docs/curves/piano-synth-stage3.jsonl docs/curves/piano-synth-stage4.jsonl \
        --title "piano-synth sashimi-2" --out docs/training_piano.png
    python docs/plot_training.py plot docs/curves/efficiency-*.jsonl --overlay \
        --title "piano-synth from scratch, 10 min each" --out docs/training_efficiency.png

A curve file holds one JSON object per validation: step, samples (seen in that stage), val_nll_bits, and where
the run logged them elapsed_s (wall-clock since the stage started) and val_nll_bits_raw (the trained weights
when the run kept a weight average). Stages are drawn one after the other on the samples axis; the wall-clock
panel shows the stages that recorded it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def extract(metrics: Path) -> list[dict]:
    """A trainer's metrics.jsonl -> its validation records, with samples and wall-clock at each."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
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
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
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
    args = p.parse_args(argv)
    if args.cmd == "extract":
        for row in extract(args.metrics):
            print(json.dumps(row))
    else:
        plot(args.curves, args.title, args.out, args.overlay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
