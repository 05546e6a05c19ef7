"""Baselines from the SaShiMi paper, with the same token-in/logits-out interface as SaShiMi.

    from sashimi_core.baselines import BASELINE_PRESETS, WaveNet, SampleRNN
    model = WaveNet(BASELINE_PRESETS["wavenet-1024"])     # or SampleRNN(BASELINE_PRESETS["samplernn-3tier"])

Importing this package registers both architectures with ``sashimi_core.checkpoint`` ("wavenet", "samplernn"), so
``load_model`` rebuilds them from config.json.
"""
from sashimi_core.baselines.samplernn import SAMPLERNN_PRESETS, SampleRNN, SampleRNNConfig
from sashimi_core.baselines.wavenet import WAVENET_PRESETS, WaveNet, WaveNetConfig
from sashimi_core.checkpoint import register_architecture

register_architecture("wavenet", WaveNetConfig, WaveNet)
register_architecture("samplernn", SampleRNNConfig, SampleRNN)

BASELINE_PRESETS: dict = {**WAVENET_PRESETS, **SAMPLERNN_PRESETS}  # name -> WaveNetConfig | SampleRNNConfig
MODEL_CLASSES: dict = {"wavenet": WaveNet, "samplernn": SampleRNN}  # architecture -> model class


def build(name: str):
    """A fresh model for a baseline preset name, e.g. build("wavenet-tiny")."""
    if name not in BASELINE_PRESETS:
        raise ValueError(f"unknown baseline preset {name!r}; known: {sorted(BASELINE_PRESETS)}")
    cfg = BASELINE_PRESETS[name]
    return MODEL_CLASSES[cfg.architecture](cfg)


__all__ = ["BASELINE_PRESETS", "MODEL_CLASSES", "SAMPLERNN_PRESETS", "WAVENET_PRESETS", "SampleRNN",
           "SampleRNNConfig", "WaveNet", "WaveNetConfig", "build"]
