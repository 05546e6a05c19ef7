"""SampleRNN (Mehri et al. 2017) as the SaShiMi paper's baseline: GRU frame tiers over a sample-level MLP.

Numerically this follows the reference (state-spaces/s4 ``src/models/baselines/samplernn.py`` with
``reproduce=True``, itself from deepsound-project/samplernn-pytorch); the parameter layout and counts are the
same. Tiers are listed bottom-up: ``frame_sizes=(16, 4)`` has a tier over 16-sample frames and one over
16 * 4 = 64-sample frames, and the MLP sees the last 16 samples (the paper's "2-tier" model, 51.85M params).

- Frame tier k (frames of n_k = prod(frame_sizes[:k+1]) samples): at the start of each of its frames it reads the
  previous n_k samples, dequantised (x2, as SampleRNN), through a weight-normed Linear(n_k -> H), adds the
  conditioning of the tier above for this frame, runs one GRU step, and upsamples the output with a learned
  per-position linear map (ConvTranspose1d with kernel = stride = frame_sizes[k], bias per position) into
  frame_sizes[k] conditioning vectors: one per frame of the tier below, or per sample for the lowest tier.
- Sample-level MLP: embeddings of the previous frame_sizes[0] samples -> conv (kernel frame_sizes[0], no bias)
  + conditioning -> ReLU -> Linear(H, H) -> ReLU -> Linear(H, V). All linear maps are weight-normed.

Causality: logits[:, t] predicts tokens[:, t] from tokens < t; the history before the first token is padded with
the zero token (128). Step and forward share one state, (t, window, hs, conds): t tokens consumed, window (B, F)
the last F = prod(frame_sizes) tokens, hs each tier's GRU state (n_rnn, B, H), conds each tier's current
conditioning (B, frame_sizes[k], H). Truncated BPTT: ``forward(chunk, state, return_state=True)`` continues a
previous chunk exactly when the state sits on a top-frame boundary (t % F == 0, e.g. 1024-sample chunks);
detach the state between chunks with ``SampleRNN.detach_state``.

Shapes: B batch, L length, H = d_hidden, F = prod(frame_sizes), V = n_tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi_core.ops.metrics import nll_bits
from sashimi_core.ops.quantize import ZERO_TOKEN, linear_decode, mu_law_decode

# Bounds on configs built from untrusted JSON (checkpoint.validate_config); the parameter count is capped there.
MAX_TIERS = 4  # len(frame_sizes) (presets: 2, 3)
MAX_FRAME = 64  # each frame size (presets: 2..16)
MAX_LOOKBACK = 4096  # prod(frame_sizes), samples per top frame (presets: 16..64)
MAX_HIDDEN = 2048  # d_hidden (presets: 32, 1024)
MAX_EMBED = 1024  # d_model (presets: 16, 256)
MAX_RNN = 8  # n_rnn (presets: 1, 2)


@dataclass(frozen=True)
class SampleRNNConfig:
    frame_sizes: tuple[int, ...] = (16, 4)  # bottom-up; [0] = MLP context, [k] = tier k-1 frames per tier-k frame
    n_rnn: int = 2  # GRU layers per frame tier (reference: 2 for 2-tier, 1 for 3-tier)
    d_hidden: int = 1024  # H: GRU, upsampling and MLP width (reference: 1024)
    d_model: int = 256  # sample embedding width in the MLP (reference: 256)
    learn_h0: bool = True  # learned initial GRU state per tier (reference: True)
    weight_norm: bool = True  # weight-normalise every linear map outside the GRUs (reference: True)
    n_tokens: int = 256  # 8-bit audio
    quantization: str = "mu-law"  # "mu-law" or "linear"; also how frame tiers dequantise their input
    sample_rate: int = 16000
    architecture: str = field(default="samplernn", repr=False)

    # field -> (min, max) inclusive (for a tuple: of each item, then its max length; see SaShiMiConfig.LIMITS)
    LIMITS: ClassVar[dict] = {"frame_sizes": (1, MAX_FRAME, MAX_TIERS), "n_rnn": (1, MAX_RNN),
                              "d_hidden": (1, MAX_HIDDEN), "d_model": (1, MAX_EMBED)}

    def __post_init__(self):
        object.__setattr__(self, "frame_sizes", tuple(int(f) for f in self.frame_sizes))
        if not self.frame_sizes or min(self.frame_sizes) < 1:
            raise ValueError(f"frame_sizes must be a non-empty tuple of positive ints, got {self.frame_sizes}")
        for name in ("n_rnn", "d_hidden", "d_model", "n_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.quantization not in ("mu-law", "linear"):
            raise ValueError(f"quantization must be 'mu-law' or 'linear', got {self.quantization!r}")

    @property
    def frame_samples(self) -> tuple[int, ...]:
        """Samples per frame of each tier, bottom-up: (16, 4) -> (16, 64)."""
        return tuple(math.prod(self.frame_sizes[: k + 1]) for k in range(len(self.frame_sizes)))

    @property
    def lookback(self) -> int:
        """F: samples per top-tier frame; the history the model keeps."""
        return math.prod(self.frame_sizes)

    def n_parameters(self) -> int:
        """Parameters of SampleRNN(self), computed without building it."""
        H, V, g = self.d_hidden, self.n_tokens, int(self.weight_norm)  # g: weight-norm gains, one per output row
        n = 0
        for f, samples in zip(self.frame_sizes, self.frame_samples, strict=True):
            n += H * samples + g * H + H  # expand (+ gain) and its bias
            n += self.n_rnn * (6 * H * H + 6 * H) + (self.n_rnn * H if self.learn_h0 else 0)  # GRU, h0
            n += H * H * f + g * H + H * f  # upsample (+ gain) and its per-position bias
        n += V * self.d_model + H * self.d_model * self.frame_sizes[0] + g * H  # embedding, mlp_in
        return n + H * H + g * H + H + V * H + g * V + V  # mlp_hidden, mlp_out (+ gains, biases)

    def size_limits(self) -> list[tuple[str, int, int]]:
        """(quantity, value, maximum) for derived sizes checked before building (see checkpoint.validate_config)."""
        return [("lookback prod(frame_sizes)", self.lookback, MAX_LOOKBACK)]


# Parameter counts equal the paper's to every printed digit: 51,848,704 (51.85M, 2-tier) and 35,034,624 (35.03M,
# 3-tier), the reference's SampleRNN with the frame sizes and GRU depths of its YouTubeMix configs.
SAMPLERNN_PRESETS: dict[str, SampleRNNConfig] = {
    "samplernn-2tier": SampleRNNConfig(frame_sizes=(16, 4), n_rnn=2),
    "samplernn-3tier": SampleRNNConfig(frame_sizes=(8, 2, 2), n_rnn=1),
    # Small model for tests: three tiers (frames of 4, 8, 16 samples) with two GRU layers each.
    "samplernn-tiny": SampleRNNConfig(frame_sizes=(4, 2, 2), n_rnn=2, d_hidden=32, d_model=16),
}


def _lecun_uniform(w: torch.Tensor) -> None:
    bound = math.sqrt(3.0 / nn.init._calculate_correct_fan(w, "fan_in"))
    nn.init.uniform_(w, -bound, bound)


class Weight(nn.Module):
    """A weight tensor, optionally weight-normalised (Salimans & Kingma 2016): w = g * v / |v|, the norm taken over
    all dims but the first (torch.nn.utils.weight_norm with dim=0, as the reference). Call it to get w."""

    def __init__(self, w: torch.Tensor, weight_norm: bool):
        super().__init__()
        self.v = nn.Parameter(w)
        self.g = nn.Parameter(self._norm(w).detach().clone()) if weight_norm else None  # starts at w itself

    @staticmethod
    def _norm(v):
        return v.flatten(1).norm(dim=1).view(-1, *[1] * (v.dim() - 1))

    def forward(self) -> torch.Tensor:
        return self.v if self.g is None else self.v * (self.g / self._norm(self.v))


class FrameTier(nn.Module):
    """Parameters of one frame-level tier; SampleRNN runs it (both modes share `_weights`)."""

    def __init__(self, frame_size: int, frame_samples: int, cfg: SampleRNNConfig):
        super().__init__()
        H = cfg.d_hidden
        expand = torch.empty(H, frame_samples)
        nn.init.kaiming_uniform_(expand)
        self.expand = Weight(expand, cfg.weight_norm)  # Linear(n_k -> H) on the dequantised frame
        self.expand_bias = nn.Parameter(torch.zeros(H))
        self.rnn = nn.GRU(H, H, cfg.n_rnn, batch_first=True)
        for i in range(cfg.n_rnn):  # the reference: LeCun uniform, orthogonal for the candidate's recurrent matrix
            for name in ("weight_ih", "weight_hh"):
                for j, chunk in enumerate(getattr(self.rnn, f"{name}_l{i}").data.chunk(3)):
                    (nn.init.orthogonal_ if (name, j) == ("weight_hh", 2) else _lecun_uniform)(chunk)
            for name in ("bias_ih", "bias_hh"):
                nn.init.zeros_(getattr(self.rnn, f"{name}_l{i}"))
        h0 = torch.zeros(cfg.n_rnn, 1, H)
        if cfg.learn_h0:
            self.h0 = nn.Parameter(h0)
        else:
            self.register_buffer("h0", h0, persistent=False)
        up = torch.empty(H, H, frame_size).uniform_(-math.sqrt(6 / H), math.sqrt(6 / H))  # ConvTranspose1d layout
        self.upsample = Weight(up, cfg.weight_norm)  # (H_in, H_out, f)
        self.upsample_bias = nn.Parameter(torch.zeros(H, frame_size))  # one bias per output position


class SampleRNN(nn.Module):
    """Token model: tokens (B, L) int64 -> logits (B, L, V); logits[:, t] predicts tokens[:, t] from tokens < t."""

    def __init__(self, cfg: SampleRNNConfig):
        super().__init__()
        self.cfg = cfg
        H, d, f0 = cfg.d_hidden, cfg.d_model, cfg.frame_sizes[0]
        tiers = zip(cfg.frame_sizes, cfg.frame_samples, strict=True)
        self.tiers = nn.ModuleList(FrameTier(f, n, cfg) for f, n in tiers)  # bottom-up
        self.embedding = nn.Embedding(cfg.n_tokens, d)
        w_in, w_hidden, w_out = torch.empty(H, d, f0), torch.empty(H, H), torch.empty(cfg.n_tokens, H)
        nn.init.kaiming_uniform_(w_in)
        nn.init.kaiming_uniform_(w_hidden)
        _lecun_uniform(w_out)
        self.mlp_in = Weight(w_in, cfg.weight_norm)  # conv over the last f0 embeddings, no bias
        self.mlp_hidden = Weight(w_hidden, cfg.weight_norm)
        self.mlp_hidden_bias = nn.Parameter(torch.zeros(H))
        self.mlp_out = Weight(w_out, cfg.weight_norm)
        self.mlp_out_bias = nn.Parameter(torch.zeros(cfg.n_tokens))
        levels = torch.arange(cfg.n_tokens)
        levels = (mu_law_decode(levels, cfg.n_tokens - 1) if cfg.quantization == "mu-law"
                  else linear_decode(levels, cfg.n_tokens))
        self.register_buffer("levels", 2 * levels, persistent=False)  # token -> frame-tier input, in [-2, 2]
        self._cache_key, self._cache = None, None

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- convolution (sequence) mode --------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, state: tuple | None = None, return_state: bool = False):
        """tokens (B, L) int64 -> logits (B, L, V) [, state after consuming them].

        state: continue from a previous chunk's returned state (truncated BPTT); it must sit on a top-frame
        boundary (state[0] % prod(frame_sizes) == 0). None starts from the zero-token history and h0."""
        if state is None:
            state = self._initial_state(tokens.shape[0])
        logits, state = self._run(tokens, state)
        return (logits[:, :-1], state) if return_state else logits[:, :-1]

    def prefill(self, prompt: torch.Tensor, return_nll: bool = False, progress=None):
        """Read a prompt (B, T) in sequence mode: (logits for token T (B, V), state), the same as `start` followed
        by T calls to `step`, with every tier's GRU run over its frames in one call. return_nll=True also
        returns the prompt's mean NLL in bits per row (B,). progress(T, T) is called once it is read."""
        logits, state = self._run(prompt, self._initial_state(prompt.shape[0]))
        if progress is not None:
            progress(prompt.shape[1], prompt.shape[1])
        if return_nll:
            return logits[:, -1], state, nll_bits(logits[:, :-1], prompt, "none").mean(-1)
        return logits[:, -1], state

    def _run(self, tokens, state):
        """tokens (B, L) after `state` -> (logits for targets t0..t0+L (B, L+1, V), state after the L tokens)."""
        t0, window, hs, conds = state
        P, f0 = self.cfg.lookback, self.cfg.frame_sizes[0]
        if t0 % P:
            raise ValueError(f"sequence mode must start on a top-frame boundary (t % {P} == 0), got t = {t0}")
        w = self._weights()
        B, L = tokens.shape
        seq = torch.cat([window, tokens], 1)  # (B, P + L): history, then the chunk
        new_hs, new_conds, above = list(hs), list(conds), None
        for k in reversed(range(len(self.tiers))):  # top tier first
            n = self.cfg.frame_samples[k]
            M = L // n  # ticks after t0: tick j (1..M) starts frame t0 + j*n and reads chunk frame j-1
            C = conds[k][:, None]  # (B, 1, f, H): conditioning of the frame starting at t0 (ticked in `state`)
            if M:
                x = F.linear(self.levels[seq[:, P: P + M * n]].view(B, M, n), *w["expand"][k])  # (B, M, H)
                if above is not None:
                    x = x + above[:, 1: M + 1]  # tier above's conditioning for ticks 1..M
                out, new_hs[k] = self.tiers[k].rnn(x, hs[k])  # (B, M, H)
                C = torch.cat([C, self._upsample(out, w["upsample"][k])], 1)  # (B, M+1, f, H)
            new_conds[k] = C[:, -1]
            above = C.flatten(1, 2)  # (B, (M+1)*f, H): index i = i-th frame (or sample) of the tier below
        emb = self.embedding(seq[:, P - f0:])  # (B, f0 + L, d)
        x = F.conv1d(emb.transpose(1, 2), w["mlp_in"]).transpose(1, 2)  # (B, L+1, H): last f0 samples per target
        logits = self._mlp_tail(x + above[:, : L + 1], w)  # (B, L+1, V)
        return logits, (t0 + L, seq[:, -P:], tuple(new_hs), tuple(new_conds))

    # ---- recurrent mode ---------------------------------------------------------------------------
    def _initial_state(self, batch_size: int) -> tuple:
        """State for target 0: zero-token history, h0, and every tier ticked once (all start a frame at t = 0)."""
        p = self.mlp_hidden_bias
        window = torch.full((batch_size, self.cfg.lookback), ZERO_TOKEN, dtype=torch.long, device=p.device)
        hs = tuple(tier.h0.expand(-1, batch_size, -1).contiguous() for tier in self.tiers)  # (n_rnn, B, H)
        conds = tuple(p.new_zeros(batch_size, f, self.cfg.d_hidden) for f in self.cfg.frame_sizes)  # replaced
        return (0, window) + self._tick(0, window, hs, conds, self._weights())

    def start(self, batch_size: int) -> tuple[torch.Tensor, tuple]:
        """Returns (logits for token 0 (B, V), state)."""
        state = self._initial_state(batch_size)
        return self._predict(state, self._weights()), state

    def init_state(self, batch_size: int) -> tuple:
        """State ready to consume token 0 (its logits already computed by `start`)."""
        return self._initial_state(batch_size)

    def step(self, tokens_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """tokens_t (B,) = token t -> (logits for token t+1 (B, V), state). Equals forward(tokens)[:, t+1]."""
        t, window, hs, conds = state
        w = self._weights()
        window = torch.cat([window[:, 1:], tokens_t[:, None].to(window.dtype)], 1)  # (B, F)
        state = (t + 1, window) + self._tick(t + 1, window, hs, conds, w)
        return self._predict(state, w), state

    def _tick(self, t: int, window, hs, conds, w) -> tuple[tuple, tuple]:
        """Run the tiers whose frame starts at target t (top first): -> (hs, conds)."""
        hs, conds = list(hs), list(conds)
        for k in reversed(range(len(self.tiers))):
            n = self.cfg.frame_samples[k]
            if t % n:
                continue
            x = F.linear(self.levels[window[:, -n:]], *w["expand"][k])  # (B, H) from the previous n samples
            if k < len(self.tiers) - 1:
                x = x + conds[k + 1][:, (t // n) % self.cfg.frame_sizes[k + 1]]
            out, hs[k] = self.tiers[k].rnn(x[:, None], hs[k])  # (B, 1, H)
            conds[k] = self._upsample(out, w["upsample"][k])[:, 0]  # (B, f, H)
        return tuple(hs), tuple(conds)

    def _predict(self, state, w) -> torch.Tensor:
        """Sample-level MLP for target t of `state` -> logits (B, V)."""
        t, window, _, conds = state
        f0 = self.cfg.frame_sizes[0]
        if "mlp_table" in w:  # (f0, V, H): one gathered row per previous sample instead of the conv
            x = w["mlp_table"][torch.arange(f0, device=window.device), window[:, -f0:]].sum(1)  # (B, H)
        else:
            x = torch.einsum("bkd,hdk->bh", self.embedding(window[:, -f0:]), w["mlp_in"])
        return self._mlp_tail(x + conds[0][:, t % f0], w)

    # ---- shared pieces ----------------------------------------------------------------------------
    @staticmethod
    def _upsample(out, up):
        """(B, M, H) -> (B, M, f, H): the learned per-position linear upsampling."""
        weight, bias = up  # (H, f*H), (f*H,)
        y = torch.addmm(bias, out.flatten(0, 1), weight)  # (B*M, f*H)
        return y.view(out.shape[0], out.shape[1], -1, out.shape[2])

    @staticmethod
    def _mlp_tail(x, w):
        """Conditioned MLP input (..., H) -> logits (..., V)."""
        x = F.relu(F.linear(F.relu(x), w["mlp_hidden"], w["mlp_hidden_bias"]))
        return F.linear(x, w["mlp_out"], w["mlp_out_bias"])

    def _weights(self) -> dict:
        """Effective weights (weight norm applied), in the layouts both modes use. Cached while no gradient is
        recorded (sampling), keyed on every parameter's storage and version counter so that optimiser steps,
        load_state_dict and .to() refresh it; the cache also holds the MLP's per-token input table."""
        if torch.is_grad_enabled():
            return self._compute_weights(table=False)
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if key != self._cache_key:
            self._cache, self._cache_key = self._compute_weights(table=True), key
        return self._cache

    def _compute_weights(self, table: bool) -> dict:
        w = {"expand": [], "upsample": []}
        for tier in self.tiers:
            w["expand"].append((tier.expand(), tier.expand_bias))
            up = tier.upsample()  # (H_in, H_out, f)
            w["upsample"].append((up.permute(0, 2, 1).reshape(up.shape[0], -1),  # (H, f*H) ordered (f, H_out)
                                  tier.upsample_bias.T.reshape(-1)))
        w["mlp_in"] = self.mlp_in()  # (H, d, f0)
        w["mlp_hidden"], w["mlp_hidden_bias"] = self.mlp_hidden(), self.mlp_hidden_bias
        w["mlp_out"], w["mlp_out_bias"] = self.mlp_out(), self.mlp_out_bias
        if table:
            w["mlp_table"] = torch.einsum("vd,hdk->kvh", self.embedding.weight, w["mlp_in"]).contiguous()
        return w

    @staticmethod
    def detach_state(state: tuple) -> tuple:
        """The state cut from the autograd graph (between truncated-BPTT chunks)."""
        t, window, hs, conds = state
        return t, window, tuple(h.detach() for h in hs), tuple(c.detach() for c in conds)
