"""Start a new run from a checkpoint's weights (`--init-from`): the same model, or a deeper SaShiMi.

Growing depth keeps the function: a SaShiMi with n_layers = r * n (r a whole number) gets the trained model's
(S4, FF) pairs in each stage at positions 0, r, 2r, ..., and the pairs between them start as identities (their
residual branch's last linear layer is zero), so step 0 of the deeper model computes exactly what the trained
one did and the new pairs only add what training finds. The new pairs' S4 kernels keep their fresh init.
"""
from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn as nn

log = logging.getLogger("sashimi_core.train")


def warm_start(model: nn.Module, directory: str) -> None:
    """Copy the weights of checkpoint `directory` into model (a new run's step 0). The configs must agree, or
    differ only in a SaShiMi's n_layers, deeper by a whole factor (`grow_depth`)."""
    from sashimi_core.checkpoint import load_model

    source = load_model(directory)
    if source.cfg.architecture != model.cfg.architecture:
        raise ValueError(f"--init-from {directory}: it holds a {source.cfg.architecture} model, this run trains "
                         f"{model.cfg.architecture}")
    differ = [f.name for f in dataclasses.fields(model.cfg)
              if getattr(source.cfg, f.name) != getattr(model.cfg, f.name)]
    if differ == ["n_layers"] and model.cfg.architecture == "sashimi":
        grow_depth(source, model, directory)
        log.info("warm start from %s, grown from %d to %d layers per stage", directory, source.cfg.n_layers,
                 model.cfg.n_layers)
        return
    if differ:
        raise ValueError(f"--init-from {directory}: its model config differs from this run's in {differ}; "
                         f"pick the preset/overrides it was trained with (only n_layers may grow)")
    model.load_state_dict(source.state_dict())
    log.info("warm start from %s", directory)


def stages(backbone: nn.Module) -> tuple[list[list[nn.Module]], list[nn.Module]]:
    """(the residual blocks of each stage in order, the pooling layers in order) of a SaShiMi backbone."""
    pools = list(backbone.d_layers)  # (no blocks there: U-Net models do not grow)
    blocks = [list(backbone.c_layers)]
    for tier in backbone.u_layers:
        pools.append(tier[0])
        blocks.append(list(tier[1:]))
    return blocks, pools


def zero_residual(block: nn.Module) -> None:
    """Make a residual block an identity: zero the last linear layer of its branch (S4 output or FF)."""
    layer = block.layer
    last = layer.ff[-1] if hasattr(layer, "ff") else layer.output_linear[0]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def grow_depth(source: nn.Module, model: nn.Module, directory: str = "source") -> None:
    """Load SaShiMi `source` into the deeper SaShiMi `model` (n_layers a multiple of the source's), keeping the
    function: old pairs at every r-th position of each stage, identity pairs between them."""
    n, m = source.cfg.n_layers, model.cfg.n_layers
    if m % n != 0:
        raise ValueError(f"--init-from {directory}: a {n}-layer model can grow only to a multiple of {n} layers "
                         f"per stage, not {m}")
    if source.cfg.unet:
        raise ValueError(f"--init-from {directory}: a U-Net SaShiMi cannot grow: its skips pair each block of the "
                         f"down path with one of the up path, so a new block would change what the model computes")
    if source.cfg.final_act is None:
        raise ValueError(f"--init-from {directory}: growing needs S4 layers with an output linear layer "
                         f"(final_act 'id' or 'glu'), this one has none")
    r, per_pair = m // n, 2 if model.cfg.ff > 0 else 1
    model.embedding.load_state_dict(source.embedding.state_dict())
    model.head.load_state_dict(source.head.state_dict())
    model.backbone.norm.load_state_dict(source.backbone.norm.state_dict())
    (old_stages, old_pools), (new_stages, new_pools) = stages(source.backbone), stages(model.backbone)
    for old, new in zip(old_pools, new_pools, strict=True):
        new.load_state_dict(old.state_dict())
    for old, new in zip(old_stages, new_stages, strict=True):
        for j in range(len(new) // per_pair):
            pair = new[j * per_pair:(j + 1) * per_pair]
            if j % r == 0:
                i = j // r
                for dst, src in zip(pair, old[i * per_pair:(i + 1) * per_pair], strict=True):
                    dst.load_state_dict(src.state_dict())
            else:
                for block in pair:
                    zero_residual(block)
