"""`python -m bench <command> [options]`.

Each command is a module ``bench/<module>.py`` with ``main(argv) -> int``; adding one is one line in
COMMANDS. Results go to bench/results/<command>.json (``--out`` to change) and a markdown table on stdout.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {  # command -> (module, one-line help)
    "kernel": ("bench.kernel", "S4 kernel: chunked vs naive Cauchy backends, time and peak memory"),
    "generate": ("bench.generate", "generation speed: the fast step engine vs the plain torch step loop"),
    "train": ("bench.train", "training throughput and peak memory of one optimiser step"),
    "table": ("bench.table", "paper table: every system trained for one wall-clock budget, then scored"),
    "quality": ("bench.quality", "quality report of a model: proxies of generated vs real clips, test NLL"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}s}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: python -m bench <command> [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
