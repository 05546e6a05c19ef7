"""Fast exact step mode for SaShiMi on CPU: the whole stack compiled with numba, sampling included.

The torch step path (`SaShiMi.step`) launches hundreds of small tensor ops per audio sample, so Python and
dispatch overhead dominate (~100 samples/s). Here the weights are packed once into a flat float32 array
(the discrete SSM quantities computed in float64 by `S4Kernel.step_params`, fused by `fused_step_params`)
and one numba function runs a chunk of steps: embedding, pooling tiers (a tier only runs when its block
completes), S4 recurrences (the Woodbury bilinear step of s4.py, algebraically fused into one pass over
the state), FF blocks, head, then temperature/top-p sampling
with a per-row counter-based RNG. Logits equal the torch step path to float32 rounding (tested to 1e-4).

numba ships LLVM in its wheel (it is already a librosa dependency), so no system compiler is needed.
Supported: SaShiMi with unet=False (pooled or isotropic), nplr or diag S4. Other models use the torch step.
"""
from __future__ import annotations

import numpy as np
import torch

from sashimi_core.nn.sashimi import flatten_state
from sashimi_core.ops.fast_kernels import (
    ACT,
    ACT_GLU,
    ACT_ID,
    ACT_NONE,
    FF_BLOCK,
    H_,
    HAVE_NUMBA,
    KIND,
    N2F,
    S4_BLOCK,
    T_DBUF,
    T_DOUT,
    T_H,
    T_POOL,
    T_UBUF,
    T_UPE,
    T_UPS,
    _sample_groups,
    _step,
    strip_pack,
    tile_channels,
)

if HAVE_NUMBA:
    import numba


def supports(model) -> bool:
    """True if the fast engine can run this model."""
    cfg = getattr(model, "cfg", None)
    return HAVE_NUMBA and cfg is not None and getattr(cfg, "architecture", "") == "sashimi" and not cfg.unet


class _Packer:
    """Collects float32 arrays into one flat buffer, returning offsets."""

    def __init__(self):
        self.parts, self.size = [], 0

    def addf(self, a) -> int:
        a = np.ascontiguousarray(a, dtype=np.float32).ravel()
        self.parts.append(a)
        self.size += a.size
        return self.size - a.size

    def add_linear(self, linear: torch.nn.Linear) -> tuple[int, int]:
        """Pack an nn.Linear for `_linear` (weight in strips, then bias) -> (weight offset, bias offset)."""
        return self.addf(strip_pack(_np(linear.weight))), self.addf(_np(linear.bias))

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


def fused_step_params(p: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`S4Kernel.step_params` (complex128) -> (planes (4, H, N/2) complex, beta (H,) real, scale (H, N/2) complex).

    The Woodbury step  t = E s + B2 u - P a,  a = 2Re<conj P, s>;  s' = Dinv (t - P r),  r = 2Re<R, t>
    has one left vector P for both rank-1 corrections, so  a + r = 2Re<w, s> + beta u  with
    w = (1 - rho) conj P + R E,  rho = 2Re<R, P>,  beta = 2Re<R, B2>:
        g = Re<W, s> + beta u,   s' = Ê s + B̂ u - P̂ g,   y = Re<dC2, s'>
    (W = 2w, Ê = Dinv E, B̂ = Dinv B2, P̂ = Dinv P). In the rescaled state sigma = s / B̂ (a diagonal change of
    basis, which leaves the outputs unchanged) the input enters with coefficient 1:
        g = Re<W B̂, sigma> + beta u,   sigma' = Ê sigma + u - (P̂ / B̂) g,   y = Re<dC2 B̂, sigma'>.
    planes = (W B̂, Ê, P̂ / B̂, dC2 B̂): the same exact step with 8 real planes (the three-pass form reads 16
    plane values per mode), in one pass over the state when Re<W B̂, sigma'> is summed during the update.
    |B̂| is floored at 1e-12 of the channel's largest, so a mode whose input weight vanishes keeps a finite
    basis (it then gets an input of relative size 1e-12)."""
    Dinv, E, B2 = p["Dinv"], p["E"], p["B2"]
    if "P" in p:
        P, R = p["P"], p["R"]
        rho = 2 * (R * P).sum(-1, keepdim=True).real
        W = 2 * ((1 - rho) * P.conj() + R * E)
        beta = 2 * (R * B2).sum(-1).real
        P_hat = Dinv * P
    else:  # diagonal S4: no low-rank correction
        W, P_hat = torch.zeros_like(E), torch.zeros_like(E)
        beta = torch.zeros(E.shape[0], dtype=torch.float64)
    scale = Dinv * B2
    floor = 1e-12 * scale.abs().amax(-1, keepdim=True).clamp_min(1e-300)
    scale = torch.where(scale.abs() < floor, floor.to(scale.dtype), scale)
    return torch.stack([W * scale, Dinv * E, P_hat / scale, p["dC2"] * scale]), beta, scale


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class FastSaShiMi:
    """Packed, numba-compiled step engine for one SaShiMi model (weights snapshot at construction)."""

    def __init__(self, model):
        if not supports(model):
            raise ValueError("the fast engine supports SaShiMi models with unet=False (and needs numba)")
        from sashimi_core.nn.s4 import S4Block
        from sashimi_core.nn.sashimi import FFBlock

        self.model = model
        cfg = model.cfg
        bb = model.backbone
        pk = _Packer()
        blocks, self._s4_layers = [], []
        n_state = 0

        def add_block(res):
            nonlocal n_state
            layer = res.layer
            H = res.norm.weight.numel()
            norm = pk.addf(np.stack([_np(res.norm.weight), _np(res.norm.bias)]))
            if isinstance(layer, S4Block):
                planes, beta, scale = fused_step_params(layer.kernel.step_params(torch.complex128))
                N2 = layer.kernel.N2
                # 8 float32 planes (re, im of each), each (N/2, H), in tiles of 16 channels: the step's vectors
                # run over channels with no horizontal sums (real arithmetic vectorises, complex does not)
                cplx = pk.addf(tile_channels(torch.stack([planes.real, planes.imag], 1).reshape(8, H, N2)
                                             .transpose(-1, -2).numpy()))
                lin = [m for m in layer.output_linear.modules() if isinstance(m, torch.nn.Linear)]
                act = ACT_NONE if not lin else (ACT_GLU if lin[0].out_features == 2 * H else ACT_ID)
                w, b = pk.add_linear(lin[0]) if lin else (-1, -1)
                row = [S4_BLOCK, H, act, norm, w, b, -1, -1, pk.addf(_np(layer.D)), cplx, n_state, N2,
                       pk.addf(beta.numpy())]
                # state basis sigma = s / scale; W B̂ gives the carried sum Re<W B̂, sigma> of `_ssm_step`
                self._s4_layers.append((scale.numpy(), planes[0].numpy(), n_state, H, N2))
                n_state += 2 * H * N2 + H  # (re, im) x (N/2, H), tiled; then the carried sum (H,)
            elif isinstance(layer, FFBlock):
                lin1, lin2 = layer.ff[0][0], layer.ff[2]
                row = [FF_BLOCK, H, 0, norm, *pk.add_linear(lin1), *pk.add_linear(lin2), -1, -1, -1,
                       lin1.out_features, -1]
            else:
                raise ValueError(f"unsupported block {type(layer).__name__}")
            blocks.append(row)

        center_start = 0
        for res in bb.c_layers:
            add_block(res)
        center_end = len(blocks)
        T = len(cfg.pool)
        tiers = np.full((max(T, 1), 11), -1, dtype=np.int64)
        n_dbuf = n_ubuf = 0
        for i in range(T):
            down = bb.d_layers[i]
            up = bb.u_layers[T - 1 - i]  # up block that outputs to tier i
            H = down.linear.in_features // down.pool
            start = len(blocks)
            for res in up[1:]:
                add_block(res)
            tiers[i] = [H, down.pool, *pk.add_linear(down.linear), *pk.add_linear(up[0].linear), start, len(blocks),
                        n_dbuf, n_ubuf, down.d_output]
            n_dbuf += down.pool * H
            n_ubuf += down.pool * H
        self.n_tiers = T
        self.tiers, self.blocks = tiers, np.array(blocks, dtype=np.int64).reshape(-1, 13)
        self.center = np.array([center_start, center_end], dtype=np.int64)
        self.n_state, self.n_dbuf, self.n_ubuf = n_state, max(n_dbuf, 1), max(n_ubuf, 1)
        self.embed = pk.addf(_np(model.embedding.weight))
        self.final_norm = pk.addf(np.stack([_np(bb.norm.weight), _np(bb.norm.bias)]))
        self.head_w, self.head_b = pk.add_linear(model.head)
        self.wf = pk.array()
        self.d_model, self.n_tokens = cfg.d_model, cfg.n_tokens
        self.meta = np.array([T, self.d_model, self.n_tokens, self.embed, self.final_norm, self.head_w,
                              self.head_b], dtype=np.int64)

    def cost(self) -> dict:
        """Work per generated sample, averaged over a pooling cycle: a block at tier i runs every prod(pool[:i])
        steps. flops: 2 per weight multiply-add plus 20 per S4 mode and channel (the fused step);
        weight_bytes: weights and planes read per step (shared by the batch rows of one thread);
        state_bytes: S4 state read and written per step and row."""
        rates = np.cumprod([1] + [int(p) for p in self.tiers[: self.n_tiers, T_POOL]])
        groups = [(range(self.center[0], self.center[1]), rates[-1])]
        groups += [(range(self.tiers[i, T_UPS], self.tiers[i, T_UPE]), rates[i]) for i in range(self.n_tiers)]
        macs = modes = 0.0
        for rows, rate in groups:
            for k in rows:
                r = self.blocks[k]
                H = int(r[H_])
                if r[KIND] == S4_BLOCK:
                    modes += H * int(r[N2F]) / rate
                    macs += H * H * (0, 1, 2)[int(r[ACT])] / rate
                else:
                    macs += 2 * H * int(r[N2F]) / rate
        for i in range(self.n_tiers):  # DownPool and UpPool linears run once per block of the coarser tier
            macs += 2 * int(self.tiers[i, T_H] * self.tiers[i, T_POOL] * self.tiers[i, T_DOUT]) / rates[i + 1]
        macs += self.d_model * self.n_tokens  # head
        return {"flops_per_sample": float(2 * macs + 20 * modes),
                "weight_bytes_per_step": float(4 * (macs + 8 * modes)),
                "state_bytes_per_row_step": float(4 * 2 * 2 * modes)}

    # ---- state --------------------------------------------------------------------------------------
    def new_state(self, batch_size: int) -> dict:
        """Zero state (nothing consumed): S4 states, DownPool input buffers, UpPool pending outputs, t."""
        return {"ssm": np.zeros((batch_size, max(self.n_state, 1)), np.float32),
                "down": np.zeros((batch_size, self.n_dbuf), np.float32),
                "up": np.zeros((batch_size, self.n_ubuf), np.float32), "t": np.zeros(1, np.int64)}

    def state_from_torch(self, state: tuple) -> dict:
        """Convert a `Backbone` state tuple (t, d, c, u) to the engine's arrays."""
        t, d, c, u = state
        leaves: list = []
        flatten_state(state[1:], leaves)
        B = leaves[0].shape[0]
        out = self.new_state(B)
        out["t"][0] = t
        res_states = list(c)
        T = self.n_tiers
        for i in range(T):
            res_states += list(u[T - 1 - i][1:])
            H, p = self.tiers[i, T_H], self.tiers[i, T_POOL]
            dbuf = _np(d[i].transpose(1, 2)).reshape(B, -1)  # (B, P, H) -> features (h, s)
            out["down"][:, self.tiers[i, T_DBUF]: self.tiers[i, T_DBUF] + p * H] = dbuf
            out["up"][:, self.tiers[i, T_UBUF]: self.tiers[i, T_UBUF] + p * H] = _np(u[T - 1 - i][0]).reshape(B, -1)
        s4_states = [s for s in res_states if s is not None]
        for (scale, w, off, H, N2), s in zip(self._s4_layers, s4_states, strict=True):
            sigma = _np(s).astype(np.complex128) / scale  # (B, H, N/2), rescaled
            st = sigma.astype(np.complex64).transpose(0, 2, 1)  # -> (B, N/2, H)
            out["ssm"][:, off: off + 2 * H * N2] = tile_channels(np.stack([st.real, st.imag], 1))
            out["ssm"][:, off + 2 * H * N2: off + 2 * H * N2 + H] = (w * sigma).real.sum(-1)
        return out

    # ---- running ------------------------------------------------------------------------------------
    def step_logits(self, tokens: np.ndarray, state: dict) -> np.ndarray:
        """Consume tokens (B,) int64 -> logits (B, V) float32 for the next token; state updated in place."""
        logits = np.empty((len(tokens), self.n_tokens), np.float32)
        _step(np.ascontiguousarray(tokens, dtype=np.int64), state["t"], state["ssm"], state["down"],
              state["up"], self.wf, self.blocks, self.tiers, self.center, self.meta, logits)
        return logits

    def sample(self, logits: np.ndarray, state: dict, n_steps: int, tokens_out: np.ndarray, offset: int,
               rng: np.ndarray, temperature: float, top_p: float, nll: np.ndarray, ent: np.ndarray,
               threads: int = 1) -> None:
        """Sample n_steps tokens into tokens_out[:, offset:], stepping the model after each (in place).

        Rows are independent, so with threads > 1 the batch is split into that many groups that run in
        parallel (numba prange); results do not depend on the thread count."""
        B = logits.shape[0]
        groups = max(1, min(int(threads), B))
        bounds = np.linspace(0, B, groups + 1).round().astype(np.int64)
        numba.set_num_threads(max(1, min(groups, numba.config.NUMBA_NUM_THREADS)))
        _sample_groups(bounds, logits, state["t"], state["ssm"], state["down"], state["up"], self.wf,
                       self.blocks, self.tiers, self.center, self.meta, n_steps, tokens_out, offset, rng,
                       float(temperature), float(top_p), nll, ent)


def engine_for(model) -> FastSaShiMi:
    """The model's engine, rebuilt when any parameter or buffer changed since it was packed.

    torch bumps a tensor's `_version` on every in-place update (optimizer steps, load_state_dict)."""
    key = tuple(t._version for t in model.state_dict(keep_vars=True).values()) + (id(model),)
    cached = model.__dict__.get("_fast_engine")
    if cached is None or cached[0] != key:
        cached = (key, FastSaShiMi(model))
        model.__dict__["_fast_engine"] = cached
    return cached[1]


def seed_rng(seed: int, n: int) -> np.ndarray:
    """Independent splitmix64 streams for n rows from one seed: (n,) uint64."""
    mask = (1 << 64) - 1
    base = (int(seed) * 0x9E3779B97F4A7C15) & mask
    return np.array([(base + (i + 1) * 0xD1B54A32D192ED03) & mask for i in range(n)], dtype=np.uint64)
