"""sashimi_core: SaShiMi ("It's Raw! Audio Generation with State-Space Models", Goel et al. 2022) in PyTorch.

    from sashimi_core import SaShiMi, PRESETS, generate, save_model, load_model
    model = SaShiMi(PRESETS["sashimi-tiny"])
    tokens = generate(model, 16000, seed=0)          # (1, 16000) int64 8-bit tokens
    audio = decode(tokens, model.cfg.quantization)  # float32 waveform in [-1, 1]

Every public name is exported here, so no user code depends on a module path. The layers (imports point down):
ops -> nn -> checkpoint / reference -> generation -> evaluate -> train, with data beside (see
docs/architecture.md).
"""
from sashimi_core.checkpoint import list_checkpoints, load_model, save_model
from sashimi_core.generation.sampler import GenerationStats, generate
from sashimi_core.nn.registry import ALL_PRESETS, BASELINE_PRESETS, build
from sashimi_core.nn.s4 import S4Block, S4Kernel
from sashimi_core.nn.samplernn import SampleRNN, SampleRNNConfig
from sashimi_core.nn.sashimi import PRESETS, Backbone, SaShiMi, SaShiMiConfig
from sashimi_core.nn.wavenet import WaveNet, WaveNetConfig
from sashimi_core.ops.cauchy import cauchy
from sashimi_core.ops.quantize import (
    decode,
    encode,
    linear_decode,
    linear_encode,
    mu_law_decode,
    mu_law_encode,
)
from sashimi_core.reference import backbone_from_reference

__all__ = [
    "ALL_PRESETS", "BASELINE_PRESETS", "PRESETS", "Backbone", "GenerationStats", "S4Block", "S4Kernel", "SaShiMi",
    "SaShiMiConfig", "SampleRNN", "SampleRNNConfig", "WaveNet", "WaveNetConfig", "backbone_from_reference",
    "build", "cauchy", "decode", "encode", "generate", "linear_decode", "linear_encode", "list_checkpoints",
    "load_model", "mu_law_decode", "mu_law_encode", "save_model",
]
__version__ = "0.1.0"
