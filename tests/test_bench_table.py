"""`python -m bench table` end to end on a --small sc09-synth build with tiny systems and a 5-s budget."""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import table

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = "sashimi-tiny,wavenet-tiny,samplernn-tiny"


@pytest.fixture(scope="module")
def sc09(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "sc09-synth"
    subprocess.run([sys.executable, "-m", "sashimi_core.data", "build", "sc09-synth", "--out", str(out), "--small",
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    return out


def args(data, runs, out, systems=SYSTEMS, budget="5", *extra):
    return ["--data", str(data), "--systems", systems, "--budget-seconds", budget, "--length", "1000", "--batch",
            "2", "--warmup", "2", "--eval-clips", "8", "--gen-seconds", "0.1", "--sc09-clips", "2", "--real-clips",
            "8", "--gen-clip-samples", "256", "--threads", "2", "--runs", str(runs), "--out", str(out), *extra]


def test_table_end_to_end_and_resume(sc09, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "table.json"
    assert table.main(args(sc09, runs, out)) == 0
    data = json.loads(out.read_text())
    assert data["data"] == "sc09-synth" and data["sc09"] and data["settings"]["budget_s"] == 5.0
    assert [r["system"] for r in data["rows"]] == SYSTEMS.split(",")
    assert set(data["paper"]) == {"youtubemix", "sc09"} and data["paper"]["sc09"]["sashimi"]["fid"] == 1.99
    for r in data["rows"]:
        assert "error" not in r, r
        assert r["params"] > 0 and r["steps"] >= 1 and r["train_samples_per_s"] > 0, r
        assert math.isfinite(r["nll_bits"]) and r["ci_low"] <= r["nll_bits"] <= r["ci_high"], r
        assert r["n_clips"] == 8 and r["gen_b1_samples_per_s"] > 0 and r["gen_b16_samples_per_s"] > 0
        assert all(math.isfinite(r[k]) for k in ("fid", "is", "mis", "am")) and r["n_generated"] == 2
        assert (runs / "sc09-synth" / r["system"] / "table_train.json").is_file()
    md = out.with_suffix(".md").read_text()
    assert "| system | params | steps |" in md and "test NLL bits (95% CI)" in md and "Paper (SC09" in md
    assert all(f"| {s} |" in md for s in SYSTEMS.split(","))

    # Re-running skips the finished systems: no training, cached scores, same numbers.
    metrics = {s: (runs / "sc09-synth" / s / "metrics.jsonl").read_bytes() for s in SYSTEMS.split(",")}
    t0 = time.time()
    assert table.main(args(sc09, runs, out)) == 0
    assert time.time() - t0 < 10
    again = json.loads(out.read_text())
    assert all(r["reused_training"] for r in again["rows"])
    assert [r["nll_bits"] for r in again["rows"]] == [r["nll_bits"] for r in data["rows"]]
    assert all((runs / "sc09-synth" / s / "metrics.jsonl").read_bytes() == m for s, m in metrics.items())

    # Other settings on a finished run: an error row, never a silent reuse.
    assert table.main(args(sc09, runs, out, "sashimi-tiny", "6")) == 1
    assert "--retrain" in json.loads(out.read_text())["rows"][0]["error"]


def test_no_step_in_budget_is_reported(sc09, tmp_path):
    """A system whose first step cannot finish in budget + grace gets a note, not a number."""
    out = tmp_path / "t.json"
    assert table.main(args(sc09, tmp_path / "runs", out, "samplernn-tiny", "0", "--grace-seconds", "0")) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["steps"] == 0 and "nll_bits" not in row and "no optimizer step completed" in row["note"]
    assert "no optimizer step completed" in out.with_suffix(".md").read_text()


def test_spread_covers_the_split():
    s = table.Spread(list(range(100)), 5)
    assert [s[i] for i in range(len(s))] == [0, 25, 50, 74, 99]
    assert len(table.Spread(list(range(3)), 0)) == 3 and len(table.Spread(list(range(3)), 10)) == 3


def test_sigterm_stops_the_trainer_too(sc09, tmp_path):
    """Stopping the table mid-budget leaves no trainer running; the unfinished system is trained afresh later."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "table",
                             *args(sc09, runs, tmp_path / "t.json", "sashimi-tiny", "120")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = runs / "sc09-synth" / "sashimi-tiny" / "metrics.jsonl"
    t0 = time.time()
    while not (metrics.is_file() and "running" in metrics.read_text()):
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.2)
    proc.terminate()
    assert proc.wait(timeout=60) != 0
    time.sleep(0.5)
    alive = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).find(str(runs)) >= 0]
    assert not alive, [_cmdline(p) for p in alive]
    assert not (metrics.parent / "table_train.json").exists()


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
