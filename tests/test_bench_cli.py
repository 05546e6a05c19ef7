"""`python -m bench` dispatches every benchmark module (each bench/<name>.py with a NAME and a main)."""
import subprocess
import sys
from pathlib import Path

from bench.__main__ import COMMANDS

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_module_is_a_command():
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")
               if "\nNAME = " in p.read_text() and "\ndef main(" in p.read_text()}
    assert modules == {"kernel", "generate", "train", "table", "quality"}
    assert {m.split(".")[1] for m, _ in COMMANDS.values()} == modules
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and all(f"  {name}" in out.stdout for name in modules)
    bad = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr


def test_env_record_names_the_microarchitecture():
    """VMs all say "AMD EPYC"; the record must tell a Zen 3 from a Zen 5 (timings differ 2-3x between them)."""
    from bench import common

    env = common.env_record()
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    assert env["cpu_arch"] and env["cpu_arch"] != "generic"
    assert env["simd"] == ("avx512f" if " avx512f" in flags else "avx2" if " avx2" in flags else env["simd"])
    assert env["caches_cpu0"] and all(size[:-1].isdigit() for size in env["caches_cpu0"].values())
    line = common.machine_line(env)
    assert env["cpu_arch"] in line and f"{env['cpu_count']} CPUs" in line
