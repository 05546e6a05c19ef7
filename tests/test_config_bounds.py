"""Model configs from untrusted JSON are checked (types, bounds, parameter count) before anything is built."""
import dataclasses
import json
import random
import time

import pytest
import torch

from sashimi_core import PRESETS, SaShiMi, load_model, save_model
from sashimi_core.checkpoint import MAX_PARAMETERS, build_model, validate_config
from sashimi_core.nn import sashimi
from sashimi_core.nn.registry import BASELINE_PRESETS, MODEL_CLASSES, SampleRNNConfig, WaveNetConfig
from sashimi_core.nn.sashimi import SaShiMiConfig
from sashimi_core.reference import backbone_from_reference
from sashimi_core.train.trainer import TrainConfig, model_fields

ALL_PRESETS = {**PRESETS, **BASELINE_PRESETS}
# The audit's configs (sashimi): each cost seconds to minutes, or GBs, before the refusal. field -> message part.
ATTACKS = [
    ({"d_state": 1024}, "d_state = 1024 is out of bounds: allowed 2..256"),
    ({"d_state": 4096}, "d_state = 4096 is out of bounds"),
    ({"d_model": 4096}, "d_model = 4096 is out of bounds: allowed 2..1024"),
    ({"n_layers": 100000}, "n_layers = 100000 is out of bounds: allowed 1..64"),
    ({"d_model": 1024, "n_layers": 64, "pool": [], "ff": 8}, r"parameters = 1,[\d,]+ exceeds the maximum 64,000,000"),
    ({"n_layers": 64, "pool": [2, 2]}, r"S4 layers \(n_layers x stages\) = 192 exceeds the maximum 64"),
    ({"n_layers": 64, "pool": [], "d_state": 256}, r"HiPPO setup work \(S4 layers x d_state\^3\) = 1,073,741,824 "),
    ({"pool": [4] * 5}, "pool has 5 items, at most 4"),
    ({"pool": [4, 1000]}, "pool = .* is out of bounds: allowed 1..16 for each item"),
    ({"expand": 64}, "expand = 64 is out of bounds"),
    ({"ff": 1000}, "ff = 1000 is out of bounds"),
    ({"n_tokens": 10**9}, "n_tokens = 1000000000 is out of bounds: allowed 2..65536"),
    ({"sample_rate": 10**12}, "sample_rate = 1000000000000 is out of bounds"),
]
WRONG_TYPES = [
    ({"d_model": "64"}, "d_model must be an integer, got '64' \\(str\\)"),
    ({"d_model": True}, "d_model must be an integer, got True \\(bool\\)"),
    ({"n_layers": [8]}, "n_layers must be an integer, got \\[8\\] \\(list\\)"),
    ({"d_state": float("nan")}, "d_state must be an integer, got nan \\(float\\)"),
    ({"d_state": 64.0}, "d_state must be an integer"),
    ({"d_model": None}, "d_model must be an integer, got None"),
    ({"d_model": -64}, "d_model = -64 is out of bounds"),
    ({"n_ssm": "all"}, "n_ssm must be an integer or null"),
    ({"pool": "44"}, "pool must be a list of integers"),
    ({"pool": [4, True]}, "pool must be a list of integers"),
    ({"unet": "yes"}, "unet must be true or false"),
    ({"dropout": float("inf")}, "dropout must be a finite number"),
    ({"dt_min": 10**400}, "dt_min must be a finite number"),
    ({"dt_max": -1.0}, "dt_max = -1.0 is out of bounds"),
    ({"mode": 3}, "mode must be a string"),
    ({"mode": "dense"}, "mode must be one of \\['nplr', 'diag'\\]"),
    ({"final_act": "relu"}, "final_act must be one of"),
    ({"quantization": "ulaw"}, "quantization must be one of"),
    ({"sample_rate": "abc"}, "sample_rate must be an integer"),
    ({"n_ssm": 3}, "n_ssm=3 must divide"),
    ({"d_state": 63}, "d_state must be a positive even number"),
]


def refused(fn, match):
    """fn() raises ValueError matching `match` in well under a second; returns the time taken."""
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        fn()
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, elapsed
    return elapsed


def json_fields(cfg) -> dict:
    fields = json.loads(json.dumps(dataclasses.asdict(cfg)))
    fields.pop("architecture")
    return fields


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "m"
    save_model(SaShiMi(PRESETS["sashimi-tiny"]), path)
    return path


@pytest.mark.parametrize("name", sorted(ALL_PRESETS))
def test_every_preset_passes_and_its_count_is_exact(name):
    cfg = ALL_PRESETS[name]
    assert validate_config(cfg.architecture, json_fields(cfg), name) == cfg
    assert cfg.n_parameters() <= MAX_PARAMETERS
    assert cfg.n_parameters() == sum(p.numel() for p in MODEL_CLASSES.get(cfg.architecture, SaShiMi)(cfg).parameters())


def test_parameter_counts_are_exact_for_varied_configs():
    """The analytic count that bounds the size is the built model's, for all three architectures."""
    rng = random.Random(0)
    for _ in range(12):
        configs = [
            SaShiMiConfig(d_model=rng.choice([4, 8, 12]), n_layers=rng.randint(1, 2), expand=rng.randint(1, 3),
                          pool=tuple(rng.choice([2, 3]) for _ in range(rng.randint(0, 3))), ff=rng.randint(0, 3),
                          final_act=rng.choice(["glu", "id", None]), n_ssm=rng.choice([None, 1, 2]),
                          unet=rng.random() < 0.5, d_state=rng.choice([2, 4]), mode=rng.choice(["nplr", "diag"]),
                          n_tokens=rng.randint(2, 300)),
            WaveNetConfig(residual_channels=rng.randint(1, 8), dilation_channels=rng.randint(1, 8),
                          skip_channels=rng.randint(1, 8), end_channels=rng.randint(1, 8),
                          embed_channels=rng.randint(1, 8), out_channels=rng.randint(1, 8),
                          n_blocks=rng.randint(1, 2), n_layers=rng.randint(1, 3), kernel_size=rng.randint(2, 4)),
            SampleRNNConfig(frame_sizes=tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3))),
                            n_rnn=rng.randint(1, 2), d_hidden=rng.randint(1, 8), d_model=rng.randint(1, 8),
                            learn_h0=rng.random() < 0.5, weight_norm=rng.random() < 0.5),
        ]
        for cfg in configs:
            model = MODEL_CLASSES.get(cfg.architecture, SaShiMi)(cfg)
            assert cfg.n_parameters() == sum(p.numel() for p in model.parameters()), cfg


@pytest.mark.parametrize("fields,match", ATTACKS + WRONG_TYPES)
def test_bad_configs_are_refused_quickly_everywhere(fields, match, saved, tmp_path):
    """build_model, load_model, the reference import and the trainer's config path all refuse before building."""
    refused(lambda: build_model("sashimi", fields), match)

    folder = tmp_path / "attack"
    folder.mkdir()
    config = json.loads((saved / "config.json").read_text())
    config["config"].update(fields)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    refused(lambda: load_model(folder), match)

    ref = {k: v for k, v in fields.items() if k in ("d_model", "n_layers", "pool", "expand", "ff", "d_state")}
    if ref:
        state = {"c_layers.0.layer.layer.kernel.B": torch.zeros(1, 1, 32, 2),
                 "c_layers.0.layer.layer.kernel.C": torch.zeros(1, 64, 32, 2)}
        refused(lambda: backbone_from_reference(ref, state), match)

    overrides = {k: json.dumps(v) for k, v in fields.items()}
    refused(lambda: model_fields(TrainConfig(preset="sashimi-8", overrides=overrides)), match)


@pytest.mark.parametrize("architecture,fields,match", [
    ("wavenet", {"n_layers": 30}, "n_layers = 30 is out of bounds: allowed 1..12"),
    ("wavenet", {"kernel_size": 64}, "kernel_size = 64 is out of bounds"),
    ("wavenet", {"skip_channels": 10**6}, "skip_channels = 1000000 is out of bounds"),
    ("wavenet", {"residual_channels": 2048, "dilation_channels": 2048}, "parameters = .* exceeds the maximum"),
    ("wavenet", {"n_blocks": "4"}, "n_blocks must be an integer"),
    ("samplernn", {"d_hidden": 4096}, "d_hidden = 4096 is out of bounds: allowed 1..2048"),
    ("samplernn", {"frame_sizes": [64, 64, 4], "d_hidden": 32},
     r"lookback prod\(frame_sizes\) = 16,384 exceeds the maximum 4,096"),
    ("samplernn", {"d_hidden": 2048, "n_rnn": 8}, "parameters = .* exceeds the maximum 64,000,000"),
    ("samplernn", {"frame_sizes": [16, -4]}, "frame_sizes = .* is out of bounds"),
    ("samplernn", {"learn_h0": 1}, "learn_h0 must be true or false"),
    ("transformer", {}, "unknown architecture 'transformer'"),
    (["sashimi"], {}, "unknown architecture"),
    ("sashimi", "d_model=64", "must be a JSON object"),
    ("sashimi", {"pool": 4}, "pool must be a list of integers"),  # the trainer's --override pool=4 means (4,)
])
def test_baseline_and_structural_errors(architecture, fields, match):
    refused(lambda: build_model(architecture, fields), match)


def test_bounds_admit_paper_sized_models():
    """The bounds (module constants) admit their maxima; one past them is refused."""
    ok = {"d_model": sashimi.MAX_D_MODEL, "d_state": sashimi.MAX_D_STATE, "n_layers": 2, "pool": []}
    assert validate_config("sashimi", ok).n_parameters() < MAX_PARAMETERS
    assert validate_config("sashimi", {"n_tokens": 65536, "sample_rate": 192000}).n_tokens == 65536
    assert validate_config("sashimi", {"n_layers": sashimi.MAX_LAYERS, "pool": []}).n_s4_layers() == 64
    assert validate_config("sashimi", {"n_layers": 8, "unet": True}).n_s4_layers() == 40
    assert validate_config("sashimi", {"n_layers": 8, "d_state": 256}).n_s4_layers() == 24  # sashimi-8 at N=256
    refused(lambda: validate_config("sashimi", {**ok, "d_state": sashimi.MAX_D_STATE + 2}), "d_state")
    refused(lambda: validate_config("sashimi", {**ok, "d_model": sashimi.MAX_D_MODEL + 2}), "d_model")
    refused(lambda: validate_config("sashimi", {"n_tokens": 65537}), "n_tokens")


@pytest.mark.slow
def test_largest_allowed_sashimi_builds_in_seconds():
    """HiPPO setup is O(d_state^3) per S4 layer: the most setup work allowed must still build quickly."""
    t0 = time.perf_counter()
    model = build_model("sashimi", {"d_model": 64, "n_layers": 16, "pool": [4], "d_state": 256})
    assert model.cfg.n_s4_layers() * 256**3 == sashimi.MAX_S4_SETUP
    assert time.perf_counter() - t0 < 60
