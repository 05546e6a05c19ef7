"""Warm starts that grow a SaShiMi's depth keep its function exactly (sashimi_core/train/warm_start.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sashimi_core import PRESETS, SaShiMi
from sashimi_core.train.warm_start import grow_depth, stages


def trained_like(cfg, seed=0) -> SaShiMi:
    """A model whose every weight is random (a fresh init has zero biases and could hide a wrong copy)."""
    torch.manual_seed(seed)
    model = SaShiMi(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("changes, deeper", [
    ({}, 4),  # sashimi-tiny: GLU outputs, FF blocks, two tiers
    ({"ff": 0, "final_act": "id"}, 3),
    ({"pool": (2,)}, 2),
])
def test_grown_model_computes_what_the_trained_one_did(changes, deeper):
    cfg = dataclasses.replace(PRESETS["sashimi-tiny"], n_layers=1, **changes)
    source = trained_like(cfg)
    grown = trained_like(dataclasses.replace(cfg, n_layers=deeper), seed=1)
    grow_depth(source, grown)
    tokens = torch.randint(0, 256, (2, 300))
    with torch.no_grad():
        want, got = source(tokens), grown(tokens)
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
        state_a, state_b = source.init_state(2), grown.init_state(2)
        for t in range(8):  # the recurrent step mode too
            ya, state_a = source.step(tokens[:, t], state_a)
            yb, state_b = grown.step(tokens[:, t], state_b)
            assert torch.allclose(yb, ya, atol=1e-5)
    # every stage holds `deeper` pairs; a new S4 block is an identity with a kernel of its own to train
    per_pair = 2 if cfg.ff else 1
    for old, new in zip(stages(source.backbone)[0], stages(grown.backbone)[0], strict=True):
        assert len(old) == per_pair and len(new) == deeper * per_pair
        s4 = new[per_pair].layer
        assert s4.output_linear[0].weight.abs().sum() == 0 and s4.kernel.C.abs().sum() > 0


def test_growth_needs_a_whole_factor_an_output_layer_and_no_unet():
    cfg = dataclasses.replace(PRESETS["sashimi-tiny"], n_layers=2)
    with pytest.raises(ValueError, match="multiple of 2 layers per stage, not 3"):
        grow_depth(SaShiMi(cfg), SaShiMi(dataclasses.replace(cfg, n_layers=3)))
    plain = dataclasses.replace(cfg, final_act=None)
    with pytest.raises(ValueError, match="output linear layer"):
        grow_depth(SaShiMi(plain), SaShiMi(dataclasses.replace(plain, n_layers=4)))
    unet = dataclasses.replace(cfg, unet=True)
    with pytest.raises(ValueError, match="U-Net"):
        grow_depth(SaShiMi(unet), SaShiMi(dataclasses.replace(unet, n_layers=4)))
