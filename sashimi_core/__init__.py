"""sashimi_core: SaShiMi ("It's Raw! Audio Generation with State-Space Models", Goel et al. 2022) in PyTorch.

    from sashimi_core import SaShiMi, PRESETS, generate, save_model, load_model
    model = SaShiMi(PRESETS["sashimi-tiny"])
    tokens = generate(model, 16000, seed=0)          # (1, 16000) int64 8-bit tokens
    audio = decode(tokens, model.cfg.quantization)  # float32 waveform in [-1, 1]
"""
from sashimi_core.checkpoint import list_checkpoints, load_model, save_model
from sashimi_core.quantize import (
    decode,
    encode,
    linear_decode,
    linear_encode,
    mu_law_decode,
    mu_law_encode,
)
from sashimi_core.sampler import GenerationStats, generate
from sashimi_core.sashimi import PRESETS, Backbone, SaShiMi, SaShiMiConfig

__all__ = [
    "PRESETS", "Backbone", "GenerationStats", "SaShiMi", "SaShiMiConfig", "decode", "encode", "generate",
    "linear_decode", "linear_encode", "list_checkpoints", "load_model", "mu_law_decode", "mu_law_encode",
    "save_model",
]
__version__ = "0.1.0"
