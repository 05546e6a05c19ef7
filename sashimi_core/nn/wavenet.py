"""WaveNet (van den Oord et al. 2016) as the SaShiMi paper's baseline, with Fast-WaveNet queues for sampling.

Architecture (the reference's ``src/models/baselines/wavenet.py`` + its training wrapper, see WaveNetConfig):

    tokens -> Embedding(V, E) -> 1x1 conv E->R (no bias)                       = "start conv"
           -> n_blocks x n_layers gated layers, dilations 1, 2, ..., 2^(n_layers-1) per block:
                  h = dilated causal conv R->2D (kernel k)      z = tanh(h[:D]) * sigmoid(h[D:])
                  skip += 1x1 conv D->S (z)                     x = x + 1x1 conv D->R (z)
           -> ReLU -> 1x1 conv S->end -> ReLU -> 1x1 conv end->O -> Linear(O, V) -> logits

Receptive field: the start conv is 1x1, so it is 1 + n_blocks * (k-1) * (2^n_layers - 1) = 4093 positions of the
(shifted) input for the paper's 4 x 10 layers, kernel 2 (the reference's own ``receptive_field``): logits[:, t]
depends on tokens[:, t-4093 : t] and nothing older.

Sampling ("Fast WaveNet", Paine et al. 2016): each dilated layer keeps a queue of its last d*(k-1) inputs in one
preallocated circular buffer (B, slots, R) shared by all layers; a step reads each layer's oldest entries with one
gather, runs the layers on a single time step, and writes the new inputs with one scatter. The buffer is updated in
place, so a state must not be reused after it has been stepped (copy it to branch).

Shapes: B batch, L length, R residual, D dilation, S skip channels, V = n_tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi_core.ops.metrics import nll_bits
from sashimi_core.ops.quantize import ZERO_TOKEN

# Bounds on configs built from untrusted JSON (checkpoint.validate_config). The sampling tables grow with
# 2^n_layers * n_blocks * n_layers * (kernel_size - 1), so those three stay near the paper's 4 x 10 x 2.
MAX_CHANNELS = 2048  # every width (presets: 8..1024)
MAX_BLOCKS = 8  # n_blocks (presets: 2, 4)
MAX_DILATION_LAYERS = 12  # n_layers per block, dilations up to 2^11 (presets: 4, 10)
MAX_KERNEL = 4  # kernel_size (presets: 2)


@dataclass(frozen=True)
class WaveNetConfig:
    residual_channels: int = 64  # R: width of the residual stream (reference: 64)
    dilation_channels: int = 64  # D: width of the gated activation (reference: 64)
    skip_channels: int = 1024  # S: width of the summed skip connections (paper: 512 / 1024 for WaveNet-512 / -1024)
    end_channels: int = 512  # width of the first output 1x1 conv (reference: 512)
    embed_channels: int = 256  # E: token embedding width (reference: its wrapper's Embedding(256, 256))
    out_channels: int = 256  # O: last 1x1 conv width, mapped to V by a Linear head (reference wrapper's decoder)
    n_blocks: int = 4  # stacks of dilated layers (reference: 4)
    n_layers: int = 10  # layers per block, dilations 1..2^(n_layers-1) (reference: 10, so 1..512)
    kernel_size: int = 2  # taps of each dilated conv (reference: 2)
    n_tokens: int = 256  # 8-bit audio
    quantization: str = "mu-law"  # "mu-law" or "linear"
    sample_rate: int = 16000
    architecture: str = field(default="wavenet", repr=False)

    # field -> (min, max) inclusive (see SaShiMiConfig.LIMITS)
    LIMITS: ClassVar[dict] = {
        **{name: (1, MAX_CHANNELS) for name in ("residual_channels", "dilation_channels", "skip_channels",
                                                "end_channels", "embed_channels", "out_channels")},
        "n_blocks": (1, MAX_BLOCKS), "n_layers": (1, MAX_DILATION_LAYERS), "kernel_size": (2, MAX_KERNEL)}

    def __post_init__(self):
        for name in ("residual_channels", "dilation_channels", "skip_channels", "end_channels", "embed_channels",
                     "out_channels", "n_blocks", "n_layers", "n_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {self.kernel_size}")
        if self.quantization not in ("mu-law", "linear"):
            raise ValueError(f"quantization must be 'mu-law' or 'linear', got {self.quantization!r}")

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2**i for _ in range(self.n_blocks) for i in range(self.n_layers))

    @property
    def receptive_field(self) -> int:
        """Input positions each output sees: 1 + sum of d*(k-1) (4093 for the paper's models)."""
        return 1 + sum(self.dilations) * (self.kernel_size - 1)

    def n_parameters(self) -> int:
        """Parameters of WaveNet(self), computed without building it."""
        R, D, S, E, O, V = (self.residual_channels, self.dilation_channels, self.skip_channels, self.embed_channels,
                            self.out_channels, self.n_tokens)
        n, end = self.n_blocks * self.n_layers, self.end_channels
        layers = n * (2 * D * R * self.kernel_size + R * D + S * D)  # dilated, residual, skip
        return V * E + E * R + layers + S * end + end + end * O + O + O * V + V


# Parameter counts: the paper's 2.67M / 4.24M are the reference WaveNet (4 x 10 layers, R = D = 64, no bias in the
# gated layers, end 512) plus its wrapper's Embedding(256, 256) and Linear(256, 256) decoder, with 512 / 1024 skip
# channels: 2,671,616 and 4,244,480 here, equal to the paper's figures to every printed digit.
WAVENET_PRESETS: dict[str, WaveNetConfig] = {
    "wavenet-512": WaveNetConfig(skip_channels=512),
    "wavenet-1024": WaveNetConfig(skip_channels=1024),
    # Small model for tests: 2 blocks x 4 layers, receptive field 31.
    "wavenet-tiny": WaveNetConfig(residual_channels=8, dilation_channels=8, skip_channels=16, end_channels=16,
                                  embed_channels=8, out_channels=16, n_blocks=2, n_layers=4),
}


def _uniform(shape, fan_in: int) -> nn.Parameter:
    """PyTorch's default conv/linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class WaveNet(nn.Module):
    """Token model: tokens (B, L) int64 -> logits (B, L, V). The input is shifted right by one inside (the first
    input is the quantiser's zero token, 128), so logits[:, t] predicts tokens[:, t]."""

    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        self.cfg = cfg
        R, D, S, k = cfg.residual_channels, cfg.dilation_channels, cfg.skip_channels, cfg.kernel_size
        self.dilations = cfg.dilations
        n = len(self.dilations)
        self.embedding = nn.Embedding(cfg.n_tokens, cfg.embed_channels)
        self.start_conv = nn.Conv1d(cfg.embed_channels, R, 1, bias=False)
        # The gated layers' weights are stacked over layers (one tensor each), which keeps the step cheap.
        self.dilated_weight = _uniform((n, 2 * D, R, k), R * k)  # filter conv (first D outputs) and gate conv
        self.residual_weight = _uniform((n, R, D), D)  # 1x1 D -> R
        self.skip_weight = _uniform((n, S, D), D)  # 1x1 D -> S
        self.end_conv_1 = nn.Conv1d(S, cfg.end_channels, 1)
        self.end_conv_2 = nn.Conv1d(cfg.end_channels, cfg.out_channels, 1)
        self.head = nn.Linear(cfg.out_channels, cfg.n_tokens)

        # Circular buffers: layer i owns slots [offset_i, offset_i + d_i*(k-1)); the input of time tau goes to slot
        # offset_i + tau % size_i. Read/write slots repeat with period lcm(sizes), so they are tabulated once.
        sizes = [d * (k - 1) for d in self.dilations]
        offsets = [sum(sizes[:i]) for i in range(n)]
        self.n_slots, period = sum(sizes), math.lcm(*sizes)
        tau = torch.arange(period)[:, None, None]  # (P, 1, 1)
        size = torch.tensor(sizes)[None, :, None]
        lag = torch.tensor(self.dilations)[None, :, None] * torch.arange(k - 1, 0, -1)  # (1, n, k-1): tap j, (k-1-j)d
        read = torch.tensor(offsets)[None, :, None] + (tau - lag) % size  # (P, n, k-1)
        write = torch.tensor(offsets)[None, :] + tau[:, :, 0] % size[:, :, 0]  # (P, n)
        self.register_buffer("_read_slots", read.reshape(period, -1), persistent=False)
        self.register_buffer("_write_slots", write, persistent=False)
        self._cache_key, self._cache = None, None

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def receptive_field(self) -> int:
        return self.cfg.receptive_field

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- convolution mode -------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64 -> logits (B, L, V)."""
        start = torch.full_like(tokens[:, :1], ZERO_TOKEN)
        return self._convolve(torch.cat([start, tokens[:, :-1]], 1))[0]  # input shifted right by one

    def _convolve(self, inputs: torch.Tensor, keep_inputs: bool = False):
        """Input tokens (B, L) (already shifted) -> (logits (B, L, V), each layer's input (B, R, L) if keep_inputs)."""
        D, k = self.cfg.dilation_channels, self.cfg.kernel_size
        x = self.start_conv(self.embedding(inputs).transpose(1, 2))  # (B, R, L)
        skip, layer_inputs = 0, []
        for i, d in enumerate(self.dilations):
            if keep_inputs:
                layer_inputs.append(x)
            h = F.conv1d(F.pad(x, (d * (k - 1), 0)), self.dilated_weight[i], dilation=d)  # (B, 2D, L), causal
            z = torch.tanh(h[:, :D]) * torch.sigmoid(h[:, D:])  # (B, D, L)
            skip = skip + F.conv1d(z, self.skip_weight[i, :, :, None])  # (B, S, L)
            if i < len(self.dilations) - 1:  # the last layer's residual output feeds nothing
                x = x + F.conv1d(z, self.residual_weight[i, :, :, None])  # (B, R, L)
        y = self.end_conv_2(F.relu(self.end_conv_1(F.relu(skip))))  # (B, O, L)
        return self.head(y.transpose(1, 2)), layer_inputs

    def prefill(self, prompt: torch.Tensor, return_nll: bool = False, progress=None):
        """Read a prompt (B, T) in convolution mode: (logits for token T (B, V), state), the same as `start`
        followed by T calls to `step`, in one parallel pass that also fills every layer's queue.
        return_nll=True also returns the prompt's mean NLL in bits per row (B,). progress(T, T) when read."""
        start = torch.full_like(prompt[:, :1], ZERO_TOKEN)
        logits, xs = self._convolve(torch.cat([start, prompt], 1), keep_inputs=True)
        n_in = prompt.shape[1] + 1  # inputs consumed: start token + prompt
        buf = self._new_buffer(prompt.shape[0])
        k = self.cfg.kernel_size
        for x, d, slots in zip(xs, self.dilations, self._write_slots.unbind(1), strict=True):
            size = d * (k - 1)
            last = F.pad(x[:, :, max(0, n_in - size):], (max(0, size - n_in), 0))  # (B, R, size): times n_in-size..
            times = torch.arange(n_in - size, n_in, device=buf.device) % slots.numel()
            buf[:, slots[times]] = last.transpose(1, 2)  # slot of time tau is slots[tau % period]
        if progress is not None:
            progress(prompt.shape[1], prompt.shape[1])
        if return_nll:
            return logits[:, -1], (n_in, buf), nll_bits(logits[:, :-1], prompt, "none").mean(-1)
        return logits[:, -1], (n_in, buf)

    # ---- recurrent mode ---------------------------------------------------------------------------
    def _new_buffer(self, batch_size: int) -> torch.Tensor:
        w = self.dilated_weight
        return w.new_zeros(batch_size, self.n_slots, self.cfg.residual_channels)  # zeros = the conv's left padding

    def start(self, batch_size: int) -> tuple[torch.Tensor, tuple]:
        """Consume the start token: returns (logits for token 0 (B, V), state)."""
        tokens = torch.full((batch_size,), ZERO_TOKEN, dtype=torch.long, device=self.dilated_weight.device)
        return self.step(tokens, (0, self._new_buffer(batch_size)))

    def init_state(self, batch_size: int) -> tuple:
        """State ready to consume token 0 (start token consumed): (inputs consumed, buffer (B, slots, R))."""
        return self.start(batch_size)[1]

    def step(self, tokens_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """tokens_t (B,) = token t -> (logits for token t+1 (B, V), state). Equals forward(tokens)[:, t+1].

        The state's buffer is advanced in place (the returned state shares it)."""
        t, buf = state
        w = self._step_weights()
        B, n, D = tokens_t.shape[0], len(self.dilations), self.cfg.dilation_channels
        past = buf.index_select(1, self._read_slots[t % self._read_slots.shape[0]])  # (B, n*(k-1), R) oldest inputs
        pre = torch.bmm(past.view(B, n, -1).transpose(0, 1), w["past"]).unbind(0)  # n x (B, 2D): taps on the past
        x, xs, zs = w["embed"][tokens_t], [], []  # (B, R): embedding and 1x1 start conv fused
        for i in range(n):
            xs.append(x)
            h = torch.tanh(torch.addmm(pre[i], x, w["now"][i]))  # (B, 2D); gate half pre-scaled by 1/2
            zs.append(torch.addcmul(h[:, :D], h[:, :D], h[:, D:]))  # tanh(a) (1 + tanh(b/2)) = 2 tanh(a) sigmoid(b)
            if i < n - 1:
                x = torch.addmm(x, zs[i], w["residual"][i])  # (B, R); residual weight halved
        buf[:, self._write_slots[t % self._write_slots.shape[0]]] = torch.stack(xs, 1)  # push the newest inputs
        skip = F.relu(torch.cat(zs, 1) @ w["skip"])  # (B, S): all skip convs in one matmul over (B, n*D)
        y = F.relu(torch.addmm(w["end_b"], skip, w["end"]))
        return torch.addmm(w["out_b"], y, w["out"]), (t + 1, buf)

    def _step_weights(self) -> dict:
        """Weights rearranged for `step`. Cached while no gradient is recorded; the cache is keyed on every
        parameter's storage and version counter, so optimiser steps, load_state_dict and .to() refresh it."""
        if torch.is_grad_enabled():
            return self._fuse_weights()
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if key != self._cache_key:
            self._cache, self._cache_key = self._fuse_weights(), key
        return self._cache

    def _fuse_weights(self) -> dict:
        """Step layouts. sigmoid(b) = (1 + tanh(b/2)) / 2, so the gate rows are halved and one tanh serves both
        halves; the gated output then comes out doubled, which the halved residual and skip weights undo."""
        n, k, D = len(self.dilations), self.cfg.kernel_size, self.cfg.dilation_channels
        scale = torch.ones(2 * D, 1, 1, device=self.dilated_weight.device)
        scale[D:] = 0.5
        W = self.dilated_weight * scale  # (n, 2D, R, k)
        head = self.head.weight.T  # (O, V)
        return {
            "embed": self.embedding.weight @ self.start_conv.weight[:, :, 0].T,  # (V, R)
            "past": W[..., : k - 1].permute(0, 3, 2, 1).reshape(n, -1, 2 * D).contiguous(),  # (n, (k-1)R, 2D)
            "now": W[..., k - 1].transpose(1, 2).contiguous().unbind(0),  # n x (R, 2D)
            "residual": (0.5 * self.residual_weight).transpose(1, 2).contiguous().unbind(0),  # n x (D, R)
            "skip": (0.5 * self.skip_weight).permute(0, 2, 1).reshape(n * D, -1),  # (n*D, S)
            "end": self.end_conv_1.weight[:, :, 0].T.contiguous(), "end_b": self.end_conv_1.bias,  # (S, end)
            "out": self.end_conv_2.weight[:, :, 0].T @ head,  # (end, V): end_conv_2 and head fused
            "out_b": self.end_conv_2.bias @ head + self.head.bias,
        }
