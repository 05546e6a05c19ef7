"""docs/plot_training.py: the extrapolation behind the cards' stage plots, on curves whose answer is known."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plot_training", ROOT / "docs" / "plot_training.py")
plot_training = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_training)


def _rows(rate: float, stages: int = 4, start: float = 1e6, nll0: float = 5.0) -> list[dict]:
    """Stages at 1e6, 4e6, 16e6, ... samples on the exact line nll0 + rate * log2(samples / start)."""
    return [{"stage": k, "samples": start * 4 ** k, "test_nll_bits": nll0 + rate * 2 * k,
             "ci_low": 0.0, "ci_high": 9.0, "shipped": True} for k in range(stages)]


def test_rate_and_samples_to_target_on_an_exact_line():
    rows = _rows(-0.1)
    assert plot_training.doubling_rate(rows) == pytest.approx(-0.1)
    # last stage: 64e6 samples at 4.4 bits; 4.0 bits is 4 more doublings away
    assert plot_training.samples_to_target(rows, 4.0) == pytest.approx(64e6 * 16)
    assert plot_training.samples_to_target(rows, 4.9) == 64e6  # already met: the last stage's samples
    assert math.isinf(plot_training.samples_to_target(_rows(0.05), 4.0))  # a rising curve never gets there


def test_unshipped_stages_are_left_out_of_the_fit():
    rows = _rows(-0.1) + [{"stage": 9, "samples": 1e9, "test_nll_bits": 1.0, "shipped": False}]
    assert plot_training.doubling_rate(rows) == pytest.approx(-0.1)
    assert plot_training.doubling_rate(rows, last=2) == pytest.approx(-0.1)
    with pytest.raises(SystemExit, match="at least two shipped stages"):
        plot_training.doubling_rate(rows[:1])


def test_stages_cli_writes_a_png_and_prints_the_rate(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    curve = tmp_path / "toy-test.jsonl"
    curve.write_text("".join(json.dumps(r) + "\n" for r in _rows(-0.1)))
    out = tmp_path / "stages.png"
    assert plot_training.main(["stages", str(curve), "--targets", "4.0", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "toy-test: -0.1000 bits per doubling over the last 3 shipped stages; target 4.0 at 1.02e+09" in \
        capsys.readouterr().out
