"""SaShiMi (Goel, Gu, Donahue, Ré 2022): a multi-scale S4 backbone for raw audio, plus the token model.

Numerically this is the reference's standalone ``Sashimi`` (state-spaces/s4, models/sashimi/sashimi.py), with
module names kept so reference weights map one to one (``sashimi_core.reference``). Layout is (B, L, H)
everywhere (the reference works transposed, (B, H, L)).

Shapes: B batch, L length, H width, P pool factor, V = n_tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from sashimi_core.nn.s4 import S4Block, reading
from sashimi_core.ops.metrics import nll_bits
from sashimi_core.ops.quantize import ZERO_TOKEN

# Bounds on configs built from untrusted JSON (checkpoint.validate_config checks them before anything is built).
# Generous for the presets and paper-sized models. HiPPO setup costs O(d_state^3) per S4 layer (~50 ms at
# d_state 256 on one core), so MAX_S4_SETUP keeps the largest allowed build to seconds.
MAX_D_MODEL = 1024  # width at full resolution (presets: 16..358)
MAX_D_STATE = 256  # N (presets: 64)
MAX_LAYERS = 64  # n_layers: (S4, FF) pairs per stage (presets: 2..8)
MAX_S4_LAYERS = 64  # S4 layers in the whole model, over all stages (presets: 4..24)
MAX_S4_SETUP = 32 * 256**3  # S4 layers x d_state^3: e.g. sashimi-8 (24 layers) at d_state 256, 64 layers at 200
MAX_TIERS = 4  # len(pool) (presets: 0 or 2)
MAX_POOL = 16  # each pool factor (presets: 4)
MAX_EXPAND = 4  # width multiplier per tier (presets: 2)
MAX_FF = 8  # FF expansion (presets: 2)
PREFILL_SEGMENT = 1 << 14  # prompt steps per pass of `SaShiMi.prefill` at inference (rounded up to the hop)


@dataclass(frozen=True)
class SaShiMiConfig:
    d_model: int = 64  # H at full resolution (paper: 64)
    n_layers: int = 8  # (S4, FF) residual pairs per stage (paper ablation: 2/4/6/8)
    pool: tuple[int, ...] = (4, 4)  # pooling factor of each tier; () gives isotropic S4
    expand: int = 2  # width multiplier at each DownPool (paper: 2)
    ff: int = 2  # FF block expansion; 0 disables the FF blocks
    final_act: str | None = "id"  # after the S4 conv: "glu" (Linear H->2H + GLU), "id" (Linear H->H), None
    n_ssm: int | None = 1  # copies of (Λ, B, P) shared across channels; None = one per channel
    unet: bool = False  # True adds n_layers pairs before each DownPool (paper default: False)
    d_state: int = 64  # N, stored as N/2 complex modes
    dropout: float = 0.0
    mode: str = "nplr"  # "nplr" (S4) or "diag" (S4D, diagonal A)
    dt_min: float = 1e-3  # log dt ~ U[log dt_min, log dt_max] per channel
    dt_max: float = 1e-1
    n_tokens: int = 256  # 8-bit audio
    quantization: str = "mu-law"  # "mu-law" or "linear"
    sample_rate: int = 16000
    architecture: str = field(default="sashimi", repr=False)

    # field -> (min, max) inclusive (for a tuple: of each item, then its max length), or the allowed values
    LIMITS: ClassVar[dict] = {
        "d_model": (2, MAX_D_MODEL), "n_layers": (1, MAX_LAYERS), "pool": (1, MAX_POOL, MAX_TIERS),
        "expand": (1, MAX_EXPAND), "ff": (0, MAX_FF), "final_act": ("glu", "id", None), "n_ssm": (1, MAX_D_MODEL),
        "d_state": (2, MAX_D_STATE), "dropout": (0.0, 1.0), "mode": ("nplr", "diag"), "dt_min": (1e-7, 10.0),
        "dt_max": (1e-7, 10.0)}

    def __post_init__(self):
        object.__setattr__(self, "pool", tuple(int(p) for p in self.pool))
        if self.d_model % 2 or self.d_model <= 0:
            raise ValueError(f"d_model must be a positive even number, got {self.d_model}")
        if self.d_state % 2 or self.d_state <= 0:
            raise ValueError(f"d_state must be a positive even number, got {self.d_state}")
        for p in self.pool:
            if p < 1:
                raise ValueError(f"pool factors must be >= 1, got {self.pool}")
        if self.n_ssm is not None and (self.n_ssm < 1 or any(h % self.n_ssm for h in self.widths)):
            raise ValueError(f"n_ssm={self.n_ssm} must divide the width of every tier {self.widths}")
        if self.quantization not in ("mu-law", "linear"):
            raise ValueError(f"quantization must be 'mu-law' or 'linear', got {self.quantization!r}")

    @property
    def hop(self) -> int:
        """Product of pool factors: inputs must be a multiple of it (forward pads otherwise)."""
        return math.prod(self.pool)

    @property
    def widths(self) -> tuple[int, ...]:
        """Width of each tier, full resolution first."""
        return tuple(self.d_model * self.expand**i for i in range(len(self.pool) + 1))

    def n_s4_layers(self) -> int:
        """S4 layers in the model: n_layers per stage (centre, each up tier, each down tier if unet)."""
        return self.n_layers * (1 + len(self.pool) * (2 if self.unet else 1))

    def n_parameters(self) -> int:
        """Parameters of SaShiMi(self), computed without building it."""
        def pairs(h):
            n2, s = self.d_state // 2, h if self.n_ssm is None else self.n_ssm
            kernel = h + s * n2 * (2 + 2 + (2 if self.mode == "nplr" else 0)) + h * n2 * 2  # dt, A, B, P, C
            out = {"glu": 2 * h * h + 2 * h, "id": h * h + h, None: 0}[self.final_act]
            s4 = kernel + h + out + 2 * h  # + D, output linear, LayerNorm
            ff = 2 * self.ff * h * h + self.ff * h + h + 2 * h if self.ff > 0 else 0
            return self.n_layers * (s4 + ff)

        widths, n = self.widths, 0
        for p, h in zip(self.pool, widths, strict=False):
            n += pairs(h) * (2 if self.unet else 1)
            n += h * p * h * self.expand + h * self.expand  # DownPool
            n += h * self.expand * h * p + h * p  # UpPool
        n += pairs(widths[-1]) + 2 * self.d_model  # centre, final LayerNorm
        return n + 2 * self.n_tokens * self.d_model + self.n_tokens  # embedding, head

    def size_limits(self) -> list[tuple[str, int, int]]:
        """(quantity, value, maximum) for derived sizes checked before building (see checkpoint.validate_config)."""
        return [("S4 layers (n_layers x stages)", self.n_s4_layers(), MAX_S4_LAYERS),
                ("HiPPO setup work (S4 layers x d_state^3)", self.n_s4_layers() * self.d_state**3, MAX_S4_SETUP)]


PRESETS: dict[str, SaShiMiConfig] = {
    # YouTubeMix ablation (paper Table 5): no GLU after S4, Λ/B/P shared by all channels of a layer.
    "sashimi-2": SaShiMiConfig(n_layers=2),
    "sashimi-4": SaShiMiConfig(n_layers=4),
    "sashimi-6": SaShiMiConfig(n_layers=6),
    "sashimi-8": SaShiMiConfig(n_layers=8),
    # The reference's SC09 training config (experiment/audio/sashimi-sc09.yaml): GLU after S4, 4.76M params.
    "sashimi-sc09": SaShiMiConfig(n_layers=8, final_act="glu"),
    # Isotropic S4: no pooling. Width 358 is the d_model closest to both 2.83M and 5.53M (paper Table 5):
    # 2,854,284 (+0.9%) and 5,524,300 (-0.1%); the paper does not state the width.
    "s4-isotropic-4": SaShiMiConfig(d_model=358, n_layers=4, pool=()),
    "s4-isotropic-8": SaShiMiConfig(d_model=358, n_layers=8, pool=()),
    # Small model for tests and quick experiments (the shape of the reference fixture).
    "sashimi-tiny": SaShiMiConfig(d_model=16, n_layers=2, final_act="glu"),
}


class DownPool(nn.Module):
    """(B, L, H) -> (B, L/P, H*expand): stack P consecutive steps, then Linear(H*P -> H*expand)."""

    def __init__(self, d_input: int, expand: int, pool: int):
        super().__init__()
        self.pool, self.d_output = pool, d_input * expand
        self.linear = nn.Linear(d_input * pool, self.d_output)

    def forward(self, x):
        B, L, H = x.shape
        x = x.reshape(B, L // self.pool, self.pool, H).transpose(2, 3)  # (B, L/P, H, P)
        return self.linear(x.reshape(B, L // self.pool, H * self.pool))  # features ordered (h, s)

    def init_state(self, batch_size):
        w = self.linear.weight
        return w.new_zeros(batch_size, self.pool, w.shape[1] // self.pool)  # (B, P, H) input buffer

    def state_after(self, x, n: int, before=None):
        """Step-mode state after consuming x[:, :n] (x (B, L, H)): the inputs of the unfinished block. (`before`
        is not needed: a pass starts on a block boundary, where the buffer holds nothing pending.)"""
        state = self.init_state(x.shape[0])
        start = n - n % self.pool
        state[:, : n - start] = x[:, start:n]
        return state

    def step(self, x_t, state, phase: int):
        """x_t (B, H) at position `phase` (mod P) of the block -> (B, H*expand) on the last one, else None."""
        state = state.clone()
        state[:, phase] = x_t
        if phase < self.pool - 1:
            return None, state
        return self.linear(state.transpose(1, 2).reshape(state.shape[0], -1)), state


class UpPool(nn.Module):
    """(B, L, H) -> (B, L*P, H/expand): Linear(H -> H/expand*P), shifted right one coarse step (causal)."""

    def __init__(self, d_input: int, expand: int, pool: int):
        super().__init__()
        self.pool, self.d_output = pool, d_input // expand
        self.linear = nn.Linear(d_input, self.d_output * pool)

    def _unfold(self, y):
        """(..., H_out*P) with features ordered (h, s) -> (..., P, H_out)."""
        return y.unflatten(-1, (self.d_output, self.pool)).transpose(-1, -2)

    def forward(self, x, pending: torch.Tensor | None = None):
        """x (B, L, H) -> (B, L*P, H_out). pending: the step-mode state (B, P, H_out) before x, the first
        block's outputs (None: zeros, as at the start)."""
        B, L, _ = x.shape
        y = self._unfold(self.linear(x))  # (B, L, P, H_out)
        first = y.new_zeros(B, 1, *y.shape[2:]) if pending is None else pending.unsqueeze(1).to(y.dtype)
        y = torch.cat([first, y], 1)[:, :L]  # shift by one coarse step: output block j uses input j-1
        return y.reshape(B, L * self.pool, self.d_output)

    def init_state(self, batch_size):
        w = self.linear.weight
        return w.new_zeros(batch_size, self.pool, self.d_output)  # (B, P, H_out) pending outputs

    def state_after(self, x, n: int, before=None):
        """Step-mode state after consuming x[:, :n] (x (B, L, H) coarse): the outputs pending from step n-1
        (from before x when n = 0: `before`, or zeros at the start)."""
        if n == 0:
            return self.init_state(x.shape[0]) if before is None else before
        return self._unfold(self.linear(x[:, n - 1]))

    def step(self, x_coarse, state, phase: int):
        """Emit pending output `phase`; on the last phase refill from the new coarse input x_coarse (B, H)."""
        y = state[:, phase]
        if phase == self.pool - 1:
            state = self._unfold(self.linear(x_coarse))
        return y, state


class FFBlock(nn.Module):
    """Linear(H -> ff*H), GELU, dropout, Linear(ff*H -> H). Works on (..., H)."""

    def __init__(self, d_model: int, expand: int = 2, dropout: float = 0.0):
        super().__init__()
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(d_model, d_model * expand), nn.GELU()),
                                nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                                nn.Linear(d_model * expand, d_model))

    def forward(self, x):
        return self.ff(x)

    def init_state(self, batch_size):
        return None

    def state_after(self, x, n, before=None):
        return None

    def step(self, x_t, state):
        return self.ff(x_t), state


class ResidualBlock(nn.Module):
    """Pre-norm residual: x + Dropout(layer(LayerNorm(x)))."""

    def __init__(self, d_model: int, layer: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.layer = layer
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        return x + self.dropout(self.layer(self.norm(x)))

    def init_state(self, batch_size):
        return self.layer.init_state(batch_size)

    def step(self, x_t, state):
        y, state = self.layer.step(self.norm(x_t), state)
        return x_t + y, state

    def forward_with_state(self, x, n: int, state=None):
        """(forward(x), the step-mode state after consuming x[:, :n] (None for stateless layers)), x (B, L, H):
        an S4 layer gives its state from the same pass, and starts from `state` when one is given."""
        h = self.norm(x)
        if isinstance(self.layer, S4Block):
            y, state = self.layer.forward_with_state(h, n, state)
        else:
            y, state = self.layer(h), None
        return x + self.dropout(y), state


def flatten_state(tree, leaves: list):
    """A `Backbone` state's nested tuples/lists of tensors and None -> the same structure holding leaf
    indices; the tensors are appended to leaves in order."""
    if isinstance(tree, (tuple, list)):
        return tuple(flatten_state(x, leaves) for x in tree)
    if tree is None:
        return None
    leaves.append(tree)
    return len(leaves) - 1


def unflatten_state(spec, leaves: list):
    """Inverse of `flatten_state` (lists come back as tuples)."""
    if isinstance(spec, tuple):
        return tuple(unflatten_state(x, leaves) for x in spec)
    return None if spec is None else leaves[spec]


class Backbone(nn.Module):
    """The SaShiMi backbone (the reference's ``Sashimi``): (B, L, H) -> (B, L, H).

    Down path: DownPools (with n_layers (S4, FF) pairs before each if unet); centre: n_layers pairs at the
    coarsest rate; up path: per tier UpPool, skip add, n_layers pairs, skip add; final LayerNorm.
    """

    def __init__(self, cfg: SaShiMiConfig):
        super().__init__()
        self.cfg = cfg
        H = cfg.d_model

        def pairs(dim):
            out = []
            for _ in range(cfg.n_layers):
                s4 = S4Block(dim, cfg.d_state, cfg.n_ssm, cfg.final_act, cfg.dropout, cfg.mode,
                             cfg.dt_min, cfg.dt_max)
                out.append(ResidualBlock(dim, s4, cfg.dropout))
                if cfg.ff > 0:
                    out.append(ResidualBlock(dim, FFBlock(dim, cfg.ff, cfg.dropout), cfg.dropout))
            return out

        d_layers = []
        for p in cfg.pool:
            if cfg.unet:
                d_layers += pairs(H)
            d_layers.append(DownPool(H, cfg.expand, p))
            H *= cfg.expand
        self.c_layers = nn.ModuleList(pairs(H))
        u_layers = []
        for p in cfg.pool[::-1]:
            H //= cfg.expand
            u_layers.append(nn.ModuleList([UpPool(H * cfg.expand, cfg.expand, p)] + pairs(H)))
        self.d_layers, self.u_layers = nn.ModuleList(d_layers), nn.ModuleList(u_layers)
        self.norm = nn.LayerNorm(H)
        # Training-time memory switch, not part of the architecture: recompute each residual block's
        # activations in backward instead of keeping them (the trainer's --checkpoint-activations).
        self.checkpoint_activations = False

    def forward(self, x: torch.Tensor, return_state: bool = False, state: tuple | None = None):
        """x (B, L, H) -> (B, L, H). L is padded to a multiple of the total pooling factor, then cropped.

        return_state=True also returns the step-mode state after consuming all L inputs (exactly what L
        calls to `step` from `init_state` leave), so a long prompt can be read in convolution mode.
        state: a step-mode state to continue from (inference only), after a multiple of `cfg.hop` steps, so a
        long prompt can be read in several passes."""
        L = x.shape[1]
        pad = -L % self.cfg.hop
        if pad:
            x = F.pad(x, (0, 0, 0, pad))  # causal model: right padding never affects positions < L
        t0, d0, c0, u0 = state if state is not None else (0, None, None, None)
        if t0 % self.cfg.hop:
            raise ValueError(f"a pass can continue only from a state after a multiple of {self.cfg.hop} steps, "
                             f"not {t0}")
        d, c, u = [], [], []
        rate = 1  # pooling between the input and the current tier

        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()

        def run(layer, x, states, before=None):  # before: this layer's step-mode state before x, or None
            if return_state and isinstance(layer, ResidualBlock):  # steps consumed at this tier: L // rate
                x, after = layer.forward_with_state(x, L // rate, before)
                states.append(after)
                return x
            if return_state:
                states.append(layer.state_after(x, L // rate, before))
            if isinstance(layer, UpPool):
                return layer(x, before)
            if before is not None and isinstance(layer, ResidualBlock):
                return layer.forward_with_state(x, None, before)[0]
            if recompute and isinstance(layer, ResidualBlock):
                return torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            return layer(x)

        outputs = [x]
        for i, layer in enumerate(self.d_layers):
            x = run(layer, x, d, d0 and d0[i])
            rate *= layer.pool if isinstance(layer, DownPool) else 1
            outputs.append(x)
        for i, layer in enumerate(self.c_layers):
            x = run(layer, x, c, c0 and c0[i])
        x = x + outputs.pop()
        for j, block in enumerate(self.u_layers):
            u.append([])
            x_up = run(block[0], x, u[-1], u0 and u0[j][0])
            rate //= block[0].pool
            x = x_up + outputs.pop()  # UpPool, then the skip from the down path
            skip = x
            for k, layer in enumerate(block[1:], start=1):
                x = run(layer, x, u[-1], u0 and u0[j][k])
                if self.cfg.unet:
                    x = x + outputs.pop()
            if not self.cfg.unet:
                x = x + skip
        y = self.norm(x)[:, :L]
        if not return_state:
            return y
        return y, (t0 + L, tuple(d), tuple(c), tuple(tuple(b) for b in u))

    # ---- recurrent mode ---------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> tuple:
        """(t, d_states, c_states, u_states): t counts consumed steps; the rest mirror the module lists."""
        d = tuple(layer.init_state(batch_size) for layer in self.d_layers)
        c = tuple(layer.init_state(batch_size) for layer in self.c_layers)
        u = tuple(tuple(layer.init_state(batch_size) for layer in block) for block in self.u_layers)
        return (0, d, c, u)

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """x_t (B, H) -> (y_t (B, H), state). Equals forward(x)[:, t] after t earlier steps (exact recurrence).

        A tier with total pooling R only runs on steps where (t + 1) % R == 0 (its block just completed)."""
        t, d_state, c_state, u_state = state
        d_state, c_state, u_state = list(d_state), list(c_state), [list(s) for s in u_state]
        rate = 1  # pooling between the input and the current tier
        outputs, depth = [], 0
        x = x_t
        for i, layer in enumerate(self.d_layers):
            outputs.append(x)
            if isinstance(layer, DownPool):
                x, d_state[i] = layer.step(x, d_state[i], (t // rate) % layer.pool)
                rate *= layer.pool
                if x is None:
                    break
                depth += 1
            else:  # unet: pairs before each DownPool
                x, d_state[i] = layer.step(x, d_state[i])
        if x is not None:  # every tier completed a block: run the centre
            skip = x
            for i, layer in enumerate(self.c_layers):
                x, c_state[i] = layer.step(x, c_state[i])
            x = x + skip
        n_up = len(self.u_layers)
        for j, block in enumerate(self.u_layers):
            level = n_up - 1 - j  # tier this block outputs to (0 = full rate)
            if level > depth:  # this tier did not tick on this step
                continue
            up_rate = math.prod(self.cfg.pool[:level])
            up = block[0]
            y, u_state[j][0] = up.step(x, u_state[j][0], (t // up_rate) % up.pool)
            x = y + outputs.pop()  # skip from the down path
            if self.cfg.unet:
                for k, layer in enumerate(block[1:], start=1):
                    x, u_state[j][k] = layer.step(x, u_state[j][k])
                    x = x + outputs.pop()
            else:
                skip = x
                for k, layer in enumerate(block[1:], start=1):
                    x, u_state[j][k] = layer.step(x, u_state[j][k])
                x = x + skip
        state = (t + 1, tuple(d_state), tuple(c_state), tuple(tuple(s) for s in u_state))
        return self.norm(x), state


class SaShiMi(nn.Module):
    """Token model: tokens (B, L) int64 -> logits (B, L, V). The input is shifted right by one inside
    (the first input is the quantiser's zero token, 128), so logits[:, t] predicts tokens[:, t]."""

    def __init__(self, cfg: SaShiMiConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.n_tokens, cfg.d_model)
        self.backbone = Backbone(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.n_tokens)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64 -> logits (B, L, V)."""
        start = torch.full_like(tokens[:, :1], ZERO_TOKEN)
        shifted = torch.cat([start, tokens[:, :-1]], dim=1)  # (B, L)
        return self.head(self.backbone(self.embedding(shifted)))

    def start(self, batch_size: int) -> tuple[torch.Tensor, tuple]:
        """Consume the start token: returns (logits for token 0 (B, V), state)."""
        state = self.backbone.init_state(batch_size)
        start = torch.full((batch_size,), ZERO_TOKEN, dtype=torch.long, device=self.head.weight.device)
        return self._step(start, state)

    def prefill(self, prompt: torch.Tensor, return_nll: bool = False, progress=None):
        """Read a prompt (B, T) in convolution mode: (logits for token T (B, V), state), the same as
        `start` followed by T calls to `step`. return_nll=True also returns the prompt's own NLL, mean
        -log2 p(prompt token) per row (B,), from the same pass.

        At inference a long prompt is read in passes of PREFILL_SEGMENT steps, each continuing from the state
        the last one left: activations stay a few MB (reused, cache-warm) instead of hundreds. progress(done, T)
        is called after each pass with the prompt tokens read so far."""
        tokens = torch.cat([torch.full_like(prompt[:, :1], ZERO_TOKEN), prompt], 1)  # y[:, t] predicts prompt[:, t]
        hop = self.cfg.hop
        segment = -(-PREFILL_SEGMENT // hop) * hop if not torch.is_grad_enabled() else tokens.shape[1]
        state, bits = None, torch.zeros(prompt.shape[0], device=prompt.device)
        with reading(self):
            for s in range(0, tokens.shape[1], segment):
                y, state = self.backbone(self.embedding(tokens[:, s: s + segment]), return_state=True, state=state)
                targets = prompt[:, s: s + segment]
                if return_nll and targets.shape[1]:
                    bits = bits + nll_bits(self.head(y[:, : targets.shape[1]]), targets, "none").sum(-1)
                if progress is not None:
                    progress(s + targets.shape[1], prompt.shape[1])
        logits = self.head(y[:, -1])
        if not return_nll:
            return logits, state
        return logits, state, bits / max(prompt.shape[1], 1)

    @staticmethod
    def repeat_state(state, n: int):
        """A state of batch 1 -> the same state for n rows (every state tensor is batch-first)."""
        if isinstance(state, torch.Tensor):
            return state.expand(n, *state.shape[1:]).contiguous()
        if isinstance(state, (tuple, list)):
            return type(state)(SaShiMi.repeat_state(s, n) for s in state)
        return state

    def init_state(self, batch_size: int) -> tuple:
        """State ready to consume token 0 (the start token already consumed)."""
        return self.start(batch_size)[1]

    def step(self, tokens_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """tokens_t (B,) = token t -> (logits for token t+1 (B, V), state). Equals forward(tokens)[:, t+1]."""
        return self._step(tokens_t, state)

    def _step(self, tokens_t, state):
        y, state = self.backbone.step(self.embedding(tokens_t), state)
        return self.head(y), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def with_overrides(cfg: SaShiMiConfig, **overrides) -> SaShiMiConfig:
    """A copy of cfg with some fields changed (validated)."""
    return replace(cfg, **overrides)
