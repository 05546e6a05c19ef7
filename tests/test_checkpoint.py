import json
import pickle

import pytest
import torch

from sashimi_core import PRESETS, SaShiMi, list_checkpoints, load_model, save_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = SaShiMi(PRESETS["sashimi-tiny"]).eval()
    model(torch.randint(0, 256, (1, 64)))  # sets C̃ / l_kernel, which must survive the round trip
    save_model(model, tmp_path / "m", dataset="unit-test", steps=3)
    return model, tmp_path / "m"


def test_round_trip_identical_logits(saved):
    model, path = saved
    loaded = load_model(path)
    tokens = torch.randint(0, 256, (2, 96))
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architecture"] == "sashimi" and cfg["metadata"]["dataset"] == "unit-test"
    assert (path / "README.md").read_text().startswith("---")
    assert loaded.checkpoint["metadata"]["steps"] == 3


def test_rejects_pickle(saved, tmp_path):
    _, path = saved
    (path / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match="pickle"):
        load_model(path)
    only_pt = tmp_path / "pt"
    only_pt.mkdir()
    torch.save({"w": torch.zeros(1)}, only_pt / "model.pt")
    with pytest.raises(ValueError, match="pickled checkpoints are not loaded"):
        load_model(only_pt)


def test_rejects_weights_outside_folder(saved, tmp_path):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["weights"] = "../elsewhere/model.safetensors"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        load_model(path)


@pytest.mark.parametrize("damage", ["truncate", "json", "architecture", "nan"])
def test_corrupted_checkpoints_fail_clearly(saved, damage):
    model, path = saved
    if damage == "truncate":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
        match = "corrupted"
    elif damage == "json":
        (path / "config.json").write_text("{not json")
        match = "not valid JSON"
    elif damage == "architecture":
        cfg = json.loads((path / "config.json").read_text())
        cfg["architecture"] = "transformer"
        (path / "config.json").write_text(json.dumps(cfg))
        match = "unknown architecture"
    else:
        with torch.no_grad():
            model.head.weight[0, 0] = float("nan")
        save_model(model, path)
        match = "NaN"
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_unknown_config_keys_warn(saved, caplog):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["future_field"] = 1
    (path / "config.json").write_text(json.dumps(cfg))
    load_model(path)
    assert "future_field" in caplog.text


def test_list_checkpoints(saved, tmp_path):
    _, path = saved
    found = list_checkpoints([(tmp_path, False)])
    assert [c["name"] for c in found] == ["m"] and found[0]["metadata"]["dataset"] == "unit-test"


def test_safetensors_header_starting_with_0x80_is_not_a_pickle(tmp_path):
    """A safetensors header length whose low byte is 0x80 must not be mistaken for a pickle."""
    from safetensors.torch import save_file

    from sashimi_core.checkpoint import check_safetensors_file

    path = tmp_path / "w.safetensors"
    for pad in range(0, 1024):
        save_file({"w": torch.zeros(3)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    check_safetensors_file(path)  # no error
    path.write_bytes(pickle.dumps({"w": [0.0] * 3}))
    with pytest.raises(ValueError, match="pickle"):
        check_safetensors_file(path)


BAD_CONFIGS = {  # folder -> what is wrong with its config.json
    "rate-abc": lambda c: c["config"].update(sample_rate="abc"),
    "rate-huge": lambda c: c["config"].update(sample_rate=10**12),
    "quant-ulaw": lambda c: c["config"].update(quantization="ulaw"),
    "tokens-neg": lambda c: c["config"].update(n_tokens=-1),
    "meta-list": lambda c: c.update(metadata=[1, 2]),
    "config-str": lambda c: c.update(config="d_model=64"),
    "arch-unknown": lambda c: c.update(architecture="transformer"),
    "arch-list": lambda c: c.update(architecture=["sashimi"]),
    "params-str": lambda c: c.update(n_parameters="many"),
    "d-state-huge": lambda c: c["config"].update(d_state=4096),
}
BAD_FILES = {"invalid-json": "{not json", "top-list": "[1, 2, 3]", "top-null": "null", "deep": "[" * 100000,
             "binary": b"\xff\xfe\x00"}


def test_list_checkpoints_skips_malformed_folders(saved, tmp_path, caplog):
    """One bad runs/*/config.json must never hide the others: each is skipped with a warning."""
    _, good = saved
    runs = tmp_path / "runs"
    (runs / "good" / "checkpoint").mkdir(parents=True)
    for f in good.iterdir():
        (runs / "good" / "checkpoint" / f.name).write_bytes(f.read_bytes())
    config = json.loads((good / "config.json").read_text())
    for name, damage in BAD_CONFIGS.items():
        bad = json.loads(json.dumps(config))
        damage(bad)
        (runs / name).mkdir()
        (runs / name / "config.json").write_text(json.dumps(bad))
    for name, text in BAD_FILES.items():
        (runs / name / "checkpoint").mkdir(parents=True)
        path = runs / name / "checkpoint" / "config.json"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    found = list_checkpoints([(runs, False)])
    assert [c["name"] for c in found] == ["good"]
    entry = found[0]
    assert isinstance(entry["config"], dict) and isinstance(entry["metadata"], dict)
    assert entry["config"]["sample_rate"] == 16000 and entry["n_parameters"] > 0
    skipped = {str(r.args[0]) for r in caplog.records if r.levelname == "WARNING" and r.msg.startswith("skipping")}
    assert skipped == {str(runs / n) for n in BAD_CONFIGS} | {str(runs / n / "checkpoint") for n in BAD_FILES}


def test_save_model_leaves_no_temp_files_and_clears_stale_ones(saved):
    """A kill during a write leaves .<name>.*.tmp files; the next save removes them, readers ignore them."""
    model, path = saved
    assert not list(path.glob(".*.tmp")) and sorted(p.name for p in path.iterdir()) == [
        "README.md", "config.json", "model.safetensors"]
    stale = [path / ".model.k1ll3d.tmp", path / ".config.json.abc123.tmp", path / ".README.md.x.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    load_model(path)
    assert [c["name"] for c in list_checkpoints([(path.parent, False)])] == ["m"]
    save_model(model, path, steps=4)
    assert not list(path.glob(".*.tmp"))
    assert load_model(path).checkpoint["metadata"]["steps"] == 4


def test_shipped_checkpoints_list_quietly_where_the_classifier_was_never_imported():
    """The app lists checkpoints without importing the speech classifier: its shipped folder is skipped
    without a warning (it used to log 'unknown architecture' on every listing), the generative ones listed."""
    import subprocess
    import sys

    from sashimi_core.evaluate import classifier
    from sashimi_core.nn.registry import NON_GENERATIVE

    assert classifier.ARCHITECTURE in NON_GENERATIVE
    code = ("import logging, sys; logging.basicConfig(level=logging.WARNING); "
            "from sashimi_core.checkpoint import list_checkpoints; "
            "assert 'sashimi_core.evaluate.classifier' not in sys.modules; "
            "print(sorted(c['name'] for c in list_checkpoints() if c['shipped']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipping" not in out.stderr and "sc09-classifier" not in out.stdout
    assert "piano-synth" in out.stdout and "sc09-synth" in out.stdout
