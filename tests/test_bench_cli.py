"""`python -m bench` dispatches every benchmark module (each bench/<name>.py with a NAME and a main)."""
import subprocess
import sys
from pathlib import Path

from bench.__main__ import COMMANDS

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_module_is_a_command():
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")
               if "\nNAME = " in p.read_text() and "\ndef main(" in p.read_text()}
    assert modules == {"kernel", "generate", "train", "table"}
    assert {m.split(".")[1] for m, _ in COMMANDS.values()} == modules
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and all(f"  {name}" in out.stdout for name in modules)
    bad = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr
