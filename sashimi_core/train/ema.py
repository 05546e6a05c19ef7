"""An exponential moving average of a model's weights, for validation, samples and the saved checkpoint.

    ema = WeightAverage(model, decay=0.999)
    ...  opt.step(); ema.update(model, step)
    evaluate(ema.model, ...); save_model(ema.model, ...)

After each optimizer step, m <- d m + (1 - d) w for every parameter, with d = min(decay, (1 + t) / (10 + t)) so
the first steps (or the first steps after a warm start) are not averaged with far-off weights. Buffers are not
averaged: when one changes (an S4 layer re-expressing C as C̃ for a longer kernel), the average restarts from
the current weights, because the old and new parameters are then in different forms.
"""
from __future__ import annotations

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1) (e.g. 0.999), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Average in the weights of `model` after optimizer step `step` (1-based)."""
        if any(not torch.equal(a, b) for a, b in zip(self.model.buffers(), model.buffers(), strict=True)):
            self.model.load_state_dict(model.state_dict())
            return
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
