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
