"""Listening tests without the UI.

    python -m playground.listening create --title "SC09 demo" --kind speech --model sashimi-sc09 \\
        --real data/sc09-synth --anchor noise --clips 8 --seconds 1 --gold-noise 1
    python -m playground.listening list
    python -m playground.listening summarize listening_tests/<test_id> [--csv summary.csv]
        [--ratings-csv ratings.csv] [--markdown] [--ci t|bootstrap] [--json] [--exclude-flagged]
    python -m playground.listening close|open listening_tests/<test_id>
    SASHIMI_TEACHER_PASSWORD=secret python -m playground.listening serve --host 0.0.0.0   # listening-only app
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from playground.listening import catalog
from playground.listening.config import ANCHORS, Limits, ListeningError, Scale, TestSpec, default_root


def parse_scale(text: str) -> Scale:
    """'id|Label|Question' or 'id|Label|Question|a1,a2,a3,a4,a5' -> Scale."""
    parts = text.split("|")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError("a scale is 'id|Label|Question[|anchor1,...,anchor5]'")
    anchors = tuple(a.strip() for a in parts[3].split(",")) if len(parts) == 4 else ANCHORS
    return Scale(parts[0].strip(), parts[1].strip(), parts[2].strip(), anchors)


def cmd_create(args) -> int:
    from playground.listening.builder import build_test

    spec = TestSpec(title=args.title, kind="custom" if args.scale else args.kind, models=args.model or [],
                    real_dir=args.real, anchor=args.anchor, anchor_temperature=args.anchor_temperature,
                    clips_per_system=args.clips, clip_seconds=args.seconds, prompt_file=args.prompt,
                    prompt_seconds=args.prompt_seconds, temperature=args.temperature, top_p=args.top_p,
                    scales=args.scale or [], gold_noise=args.gold_noise, gold_real=args.gold_real,
                    gold_tolerance=args.gold_tolerance, seed=args.seed, quantize_real=not args.no_quantize_real,
                    normalize=not args.no_normalize, instructions=args.instructions, max_raters=args.max_raters,
                    joins_per_host=args.joins_per_host)
    roots = [(Path(p), True) for p in args.checkpoints] if args.checkpoints else None
    last = [-1]

    def progress(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if pct != last[0]:
            last[0] = pct
            print(f"\r{pct:3d}% {message:<60}", end="", file=sys.stderr, flush=True)

    folder = build_test(spec, Path(args.root), model_roots=roots, progress=progress)
    manifest = catalog.read_manifest(folder)
    print(file=sys.stderr)
    print(json.dumps({"test_dir": str(folder), "code": manifest["code"], "clips": len(manifest["clips"]),
                      "rater_link": f"http://<this computer>:7860/rate?code={manifest['code']}"}, indent=2))
    return 0


def cmd_list(args) -> int:
    for t in catalog.list_tests(Path(args.root)):
        print(f"{t['id']}  {t['code'] or '------'}  {t['state']:<9}  {t['n_clips']:3d} clips  {t['title']}")
    return 0


def cmd_summarize(args) -> int:
    from playground.listening import results

    folder = Path(args.test_dir)
    summary = results.summarize(folder, n_boot=args.boot, seed=args.seed, exclude_flagged=args.exclude_flagged)
    if args.csv:
        Path(args.csv).write_text(results.summary_csv(summary))
    if args.ratings_csv:
        Path(args.ratings_csv).write_text(results.ratings_csv(folder, args.exclude_flagged))
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    if args.markdown:
        print(results.markdown(summary, args.ci), end="")
        return 0
    print(_text_table(results.SUMMARY_HEADERS, results.summary_rows(summary)))
    print()
    print(_text_table(results.PAIRWISE_HEADERS, results.pairwise_rows(summary)))
    r = summary["raters"]
    print(f"\n{results.counted(summary['n_ratings'], 'rating')}, {results.counted(r['joined'], 'rater')} joined, "
          f"{r['finished']} finished, "
          f"{len(r['excluded'])} excluded by gold checks (tolerance {r['gold_tolerance']}), "
          f"{results.flag_note(summary)}.")
    print(results.flagged_list(summary), end="")
    return 0


def _text_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_open(args, is_open: bool) -> int:
    from playground.listening.store import RatingStore

    folder = Path(args.test_dir)
    catalog.read_manifest(folder)
    RatingStore(folder / catalog.DB).set_open(is_open)
    print(f"{folder.name}: {'open' if is_open else 'closed'}")
    return 0


def cmd_serve(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playground import ui_listen
    from playground.listening.config import ListenSettings, read_password_file

    password = read_password_file(args.teacher_password_file) if args.teacher_password_file else None
    settings = ListenSettings.create(password=password, root=args.root, public=args.public or None)
    demo = ui_listen.build_rater_app(settings)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m playground.listening", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(default_root()), help="listening tests folder (env SASHIMI_LISTENING_DIR)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="build a test (generates every clip once)")
    c.add_argument("--title", required=True)
    c.add_argument("--kind", choices=["music", "speech"], default="music", help="scale preset")
    c.add_argument("--model", action="append", help="checkpoint name or folder (repeat for several)")
    c.add_argument("--checkpoints", action="append", help="extra checkpoint root folders to search")
    c.add_argument("--real", help="folder of real audio files (the 'Real data' system)")
    c.add_argument("--anchor", choices=["none", "noise", "temperature"], default="none")
    c.add_argument("--anchor-temperature", type=float, default=2.0)
    c.add_argument("--clips", type=int, default=6, help="clips per system")
    c.add_argument("--seconds", type=float, default=2.0, help="clip length (after the prompt)")
    c.add_argument("--prompt", help="audio file every clip starts with (models continue it)")
    c.add_argument("--prompt-seconds", type=float, default=1.0)
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--scale", action="append", type=parse_scale, help="custom scale 'id|Label|Question[|a1,..,a5]'")
    c.add_argument("--gold-noise", type=int, default=0)
    c.add_argument("--gold-real", type=int, default=0)
    c.add_argument("--gold-tolerance", type=int, default=0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-quantize-real", action="store_true")
    c.add_argument("--no-normalize", action="store_true")
    c.add_argument("--instructions", default="")
    c.add_argument("--max-raters", type=int, default=0, help=f"most raters who may join (0: {Limits().max_raters})")
    c.add_argument("--joins-per-host", type=int, default=0,
                   help=f"new raters per client address and hour (0: {Limits().joins_per_host}); raise it "
                        "when a class shares one address")
    sub.add_parser("list", help="list tests with their codes")
    s = sub.add_parser("summarize", help="MOS ± 95%% CI, pairwise tests, exclusions")
    s.add_argument("test_dir")
    s.add_argument("--csv", help="write the summary table as CSV")
    s.add_argument("--ratings-csv", help="write every raw rating as CSV")
    s.add_argument("--markdown", action="store_true", help="print the paper-style markdown table")
    s.add_argument("--ci", choices=["t", "bootstrap"], default="t", help="interval in the markdown table")
    s.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    s.add_argument("--boot", type=int, default=2000, help="bootstrap replicates")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    s.add_argument("--exclude-flagged", action="store_true", help="leave raters flagged as suspicious out")
    for name in ("open", "close"):
        o = sub.add_parser(name, help=f"{name} a test for ratings")
        o.add_argument("test_dir")
    v = sub.add_parser("serve", help="serve only the listening pages (teacher page + /rate)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=7860)
    v.add_argument("--teacher-password-file", default=None, metavar="FILE",
                   help="file whose first line is the teacher password (or env SASHIMI_TEACHER_PASSWORD)")
    v.add_argument("--public", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd in ("open", "close"):
            return cmd_open(args, args.cmd == "open")
        return {"create": cmd_create, "list": cmd_list, "summarize": cmd_summarize, "serve": cmd_serve}[args.cmd](args)
    except ListeningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
