"""CLI: build the offline data sets and inspect data folders.

    python -m sashimi_core.data build sc09-synth --out data/sc09-synth [--clips N] [--small] [--seed S] \
        [--workers W]
    python -m sashimi_core.data build piano-synth --out data/piano-synth [--hours H] [--small] [--seed S] \
        [--workers W]
    python -m sashimi_core.data info data/sc09-synth

Re-running a build with the same options resumes it (finished clips/pieces are kept); WAVs in the split
folders that are not part of the requested build are removed so manifest.csv always matches the files.
Exit status 2 with a one-line message when a system tool (espeak-ng, flite, fluidsynth) or the soundfont is
missing.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from . import common


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sashimi_core.data", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build an offline data set")
    b.add_argument("name", choices=("sc09-synth", "piano-synth"))
    b.add_argument("--out", required=True, help="output folder (created; re-running resumes)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--small", action="store_true", help="a tiny set for tests/smoke runs (< 1 min to build)")
    b.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    b.add_argument("--clips", type=int, default=None,
                   help="sc09-synth: number of clips (default 20000, small 300)")
    b.add_argument("--tools", default="espeak-ng,flite", help="sc09-synth: comma-separated TTS tools to use")
    b.add_argument("--hours", type=float, default=None,
                   help="piano-synth: target hours (default 2, small ~2.5 min)")
    b.add_argument("--soundfont", default=None, help="piano-synth: .sf2 file (default Debian FluidR3_GM.sf2)")
    b.add_argument("--max-chunks-per-piece", type=int, default=None,
                   help="piano-synth: keep at most this many chunks per piece (small: 3)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("-v", "--verbose", action="store_true")
    i = sub.add_parser("info", help="print files/durations per split of a data folder")
    i.add_argument("root")
    return ap


def _build(args) -> dict:
    if args.name == "sc09-synth":
        from . import sc09_synth

        tools = tuple(t.strip() for t in args.tools.split(",") if t.strip())
        bad = sorted(set(tools) - {"espeak-ng", "flite"})
        if bad or not tools:
            raise SystemExit(f"error: --tools must name espeak-ng and/or flite, got {args.tools!r}")
        return sc09_synth.build(args.out, clips=args.clips, seed=args.seed, workers=args.workers,
                                small=args.small, tools=tools, progress=not args.no_progress)
    from . import piano_synth

    return piano_synth.build(args.out, hours=args.hours, seed=args.seed, workers=args.workers,
                             small=args.small, soundfont=args.soundfont or piano_synth.SOUNDFONT,
                             max_chunks=args.max_chunks_per_piece, progress=not args.no_progress)


def _print_summary(splits: dict) -> None:
    print(f"{'split':<8}{'files':>8}{'hours':>10}{'seconds':>12}")
    for s, v in splits.items():
        print(f"{s:<8}{v['files']:>8}{v['seconds'] / 3600:>10.3f}{v['seconds']:>12.1f}")
    total_files = sum(v["files"] for v in splits.values())
    total_secs = sum(v["seconds"] for v in splits.values())
    print(f"{'total':<8}{total_files:>8}{total_secs / 3600:>10.3f}{total_secs:>12.1f}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        from .loaders import summarize

        try:
            info = summarize(args.root)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{args.root}: layout {info['layout']}")
        _print_summary(info["splits"])
        if info.get("missing_files"):
            print(f"warning: {info['missing_files']} files listed in manifest.csv are missing")
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    try:
        info = _build(args)
    except (common.MissingToolError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.time() - t0
    print(f"built {info['name']} in {args.out} ({elapsed:.1f} s)")
    _print_summary({s: {"files": info["counts"][s], "seconds": info["seconds"][s]} for s in info["counts"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
