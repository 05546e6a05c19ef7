import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def reference_fixture():
    """The reference implementation's tiny Sashimi: config, weights (fresh and after a forward), io."""
    import json

    from safetensors.torch import load_file

    tensors = load_file(str(DATA / "reference" / "sashimi_tiny.safetensors"))
    meta = json.loads((DATA / "reference" / "sashimi_tiny.json").read_text())
    config = {k: v for k, v in meta["constructor"].items() if k != "cls"}
    fresh = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    after = dict(fresh)
    after.update({k.removeprefix("after_forward.model."): v for k, v in tensors.items()
                  if k.startswith("after_forward.")})
    return {"config": config, "fresh": fresh, "after": after, "input": tensors["input"],
            "output_conv": tensors["output_conv"], "output_step": tensors["output_step"],
            "output_conv_f64": tensors["output_conv_f64"]}


def run_steps(module, x):
    """Teacher-forced step mode over x (B, L, H) -> (B, L, H)."""
    state = module.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = module.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1)


@pytest.fixture
def fake_trainer(tmp_path_factory):
    """start(folder, kind="train"): a process whose command line is exactly the app's trainer's,
    ``python -m sashimi_core.train --out <folder>`` (kind "data": the builder's,
    ``python -m sashimi_core.data build <folder name> --out <folder>``), but which only sleeps (a package
    named sashimi_core in a temp folder shadows ours for it). Killed at teardown."""
    import subprocess
    import time

    pkg = tmp_path_factory.mktemp("fake-trainer")
    (pkg / "sashimi_core").mkdir()
    (pkg / "sashimi_core" / "__init__.py").write_text("")
    (pkg / "sashimi_core" / "train.py").write_text("import time\ntime.sleep(120)\n")
    (pkg / "sashimi_core" / "data").mkdir()
    (pkg / "sashimi_core" / "data" / "__init__.py").write_text("")
    (pkg / "sashimi_core" / "data" / "__main__.py").write_text("import time\ntime.sleep(120)\n")
    started = []

    def start(folder, kind="train"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        module = ["sashimi_core.train"] if kind == "train" else ["sashimi_core.data", "build", Path(folder).name]
        command = [sys.executable, "-m", *module, "--out", str(Path(folder).resolve())]
        proc = subprocess.Popen(command, cwd=pkg, env=dict(os.environ, PYTHONPATH=str(pkg)))
        started.append(proc)
        time.sleep(1.2)  # past the app's 1 s cache of the process scan
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
