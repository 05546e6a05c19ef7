"""Which model classes exist: architecture names (config.json's "architecture") and preset names.

    from sashimi_core.nn.registry import ALL_PRESETS, build
    model = build("wavenet-1024")          # any preset: SaShiMi's and the baselines'
    cfg_cls, model_cls = architecture("samplernn")

The built-in architectures are listed here, below the checkpoint module that reads them, so nothing imports
upwards. Another model (e.g. the speech classifier) adds itself with ``register_architecture``.
"""
from __future__ import annotations

from sashimi_core.nn.samplernn import SAMPLERNN_PRESETS, SampleRNN, SampleRNNConfig
from sashimi_core.nn.sashimi import PRESETS, SaShiMi, SaShiMiConfig
from sashimi_core.nn.wavenet import WAVENET_PRESETS, WaveNet, WaveNetConfig

ARCHITECTURES: dict[str, tuple[type, type]] = {  # name -> (config class, model class)
    "sashimi": (SaShiMiConfig, SaShiMi),
    "wavenet": (WaveNetConfig, WaveNet),
    "samplernn": (SampleRNNConfig, SampleRNN),
}
BASELINE_PRESETS: dict = {**WAVENET_PRESETS, **SAMPLERNN_PRESETS}  # name -> WaveNetConfig | SampleRNNConfig
ALL_PRESETS: dict = {**BASELINE_PRESETS, **PRESETS}  # every preset name -> its config
MODEL_CLASSES: dict = {name: classes[1] for name, classes in ARCHITECTURES.items()}  # built-ins only
# The project's checkpoints that are not generative models (`evaluate.classifier.ARCHITECTURE`): listing
# checkpoints skips them quietly, also in a process that never imported (registered) them, as the app.
NON_GENERATIVE = {"sc09-classifier"}


def register_architecture(name: str, config_cls: type, model_cls: type) -> None:
    """Make ``load_model`` able to build ``model_cls(config_cls(**config))`` for config.json's architecture."""
    ARCHITECTURES[name] = (config_cls, model_cls)


def architecture(name: str) -> tuple[type, type]:
    """(config class, model class) of an architecture name; KeyError names the known ones."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build(name: str):
    """A fresh model for a preset name, e.g. build("wavenet-tiny") or build("sashimi-2")."""
    if name not in ALL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(ALL_PRESETS)}")
    cfg = ALL_PRESETS[name]
    return ARCHITECTURES[cfg.architecture][1](cfg)
