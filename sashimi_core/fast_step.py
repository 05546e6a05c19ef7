"""Fast exact step mode for SaShiMi on CPU: the whole stack compiled with numba, sampling included.

The torch step path (`SaShiMi.step`) launches hundreds of small tensor ops per audio sample, so Python and
dispatch overhead dominate (~100 samples/s). Here the weights are packed once into a flat float32 array
(the discrete SSM quantities computed in float64 by `S4Kernel.step_params`, fused by `fused_step_params`)
and one numba function runs a chunk of steps: embedding, pooling tiers (a tier only runs when its block
completes), S4 recurrences (the Woodbury bilinear step of s4.py, algebraically fused into two passes over
the state), FF blocks, head, then temperature/top-p sampling
with a per-row counter-based RNG. Logits equal the torch step path to float32 rounding (tested to 1e-4).

numba ships LLVM in its wheel (it is already a librosa dependency), so no system compiler is needed.
Supported: SaShiMi with unet=False (pooled or isotropic), nplr or diag S4. Other models use the torch step.
"""
from __future__ import annotations

import math

import numpy as np
import torch

try:
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba comes with librosa
    HAVE_NUMBA = False

    def njit(*args, **kwargs):
        return (lambda f: f) if not (args and callable(args[0])) else args[0]

# Block table columns (one row per residual block, in execution order)
KIND, H_, ACT, NORM, W1, B1, W2, B2, DSKIP, CPLX, STATE, N2F, BETA = range(13)
S4_BLOCK, FF_BLOCK = 0, 1
ACT_NONE, ACT_ID, ACT_GLU = 0, 1, 2
# Tier table columns (tier i = after i DownPools)
T_H, T_POOL, T_DW, T_DB, T_UW, T_UB, T_UPS, T_UPE, T_DBUF, T_UBUF, T_DOUT = range(11)


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
    planes = (W B̂, Ê, P̂ / B̂, dC2 B̂): the same exact step in two passes and 8 real planes (the three-pass
    form reads 16 plane values per mode). |B̂| is floored at 1e-12 of the channel's largest, so a mode whose
    input weight vanishes keeps a finite basis (it then gets an input of relative size 1e-12)."""
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
        from sashimi_core.s4 import S4Block
        from sashimi_core.sashimi import FFBlock

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
                # 8 float32 planes (re, im of each), each (N/2, H), channels innermost: the step's loops then run
                # over channels with no horizontal sums (real arithmetic vectorises, complex does not)
                cplx = pk.addf(torch.stack([planes.real, planes.imag], 1).transpose(-1, -2).numpy())
                lin = [m for m in layer.output_linear.modules() if isinstance(m, torch.nn.Linear)]
                act = ACT_NONE if not lin else (ACT_GLU if lin[0].out_features == 2 * H else ACT_ID)
                w = pk.addf(_np(lin[0].weight).T) if lin else -1
                b = pk.addf(_np(lin[0].bias)) if lin else -1
                row = [S4_BLOCK, H, act, norm, w, b, -1, -1, pk.addf(_np(layer.D)), cplx, n_state, N2,
                       pk.addf(beta.numpy())]
                self._s4_layers.append((scale.numpy(), n_state, H, N2))  # state basis: sigma = s / scale
                n_state += 2 * H * N2  # re plane then im plane, each (N/2, H)
            elif isinstance(layer, FFBlock):
                lin1, lin2 = layer.ff[0][0], layer.ff[2]
                row = [FF_BLOCK, H, 0, norm, pk.addf(_np(lin1.weight).T), pk.addf(_np(lin1.bias)),
                       pk.addf(_np(lin2.weight).T), pk.addf(_np(lin2.bias)), -1, -1, -1, lin1.out_features, -1]
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
            tiers[i] = [H, down.pool, pk.addf(_np(down.linear.weight).T), pk.addf(_np(down.linear.bias)),
                        pk.addf(_np(up[0].linear.weight).T), pk.addf(_np(up[0].linear.bias)), start, len(blocks),
                        n_dbuf, n_ubuf, down.d_output]
            n_dbuf += down.pool * H
            n_ubuf += down.pool * H
        self.n_tiers = T
        self.tiers, self.blocks = tiers, np.array(blocks, dtype=np.int64).reshape(-1, 13)
        self.center = np.array([center_start, center_end], dtype=np.int64)
        self.n_state, self.n_dbuf, self.n_ubuf = n_state, max(n_dbuf, 1), max(n_ubuf, 1)
        self.embed = pk.addf(_np(model.embedding.weight))
        self.final_norm = pk.addf(np.stack([_np(bb.norm.weight), _np(bb.norm.bias)]))
        self.head_w, self.head_b = pk.addf(_np(model.head.weight).T), pk.addf(_np(model.head.bias))
        self.wf = pk.array()
        self.d_model, self.n_tokens = cfg.d_model, cfg.n_tokens
        self.meta = np.array([T, self.d_model, self.n_tokens, self.embed, self.final_norm, self.head_w,
                              self.head_b], dtype=np.int64)

    def cost(self) -> dict:
        """Work per generated sample, averaged over a pooling cycle: a block at tier i runs every prod(pool[:i])
        steps. flops: 2 per weight multiply-add plus 20 per S4 mode and channel (the fused step's two passes);
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
        B = next(s for s in _flatten(state[1:]) if s is not None).shape[0]
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
        for (scale, off, H, N2), s in zip(self._s4_layers, s4_states, strict=True):
            s = (_np(s) / scale).transpose(0, 2, 1).reshape(B, -1)  # (B, H, N/2) -> (B, N/2 * H), rescaled
            out["ssm"][:, off: off + H * N2] = s.real
            out["ssm"][:, off + H * N2: off + 2 * H * N2] = s.imag
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


def _flatten(x):
    if isinstance(x, (tuple, list)):
        for y in x:
            yield from _flatten(y)
    else:
        yield x


# ---- numba kernels ----------------------------------------------------------------------------------

# Kernels index views with loop variables only: numba then knows indices are non-negative, skips its
# negative-index wraparound, and LLVM vectorises the inner loops.

@njit(cache=True, fastmath=True)
def _layer_norm(x, wf, off, H):
    B = x.shape[0]
    w, bias = wf[off: off + H], wf[off + H: off + 2 * H]
    out = np.empty_like(x)
    for b in range(B):
        xb = x[b]
        mean = 0.0
        for h in range(H):
            mean += xb[h]
        mean /= H
        var = 0.0
        for h in range(H):
            d = xb[h] - mean
            var += d * d
        inv = 1.0 / math.sqrt(var / H + 1e-5)
        ob = out[b]
        for h in range(H):
            ob[h] = (xb[h] - mean) * inv * w[h] + bias[h]
    return out


@njit(cache=True, fastmath=True)
def _linear(x, wf, w_off, b_off, n_in, n_out):
    """x (B, n_in) @ W^T (stored transposed, (n_in, n_out)) + b. Explicit loops: no BLAS threads.

    The batch loop sits inside the weight-row loop, so each row of W is read once per step for all B rows
    (the weights, not the arithmetic, bound a step); each output still sums over i in order."""
    B = x.shape[0]
    w = wf[w_off: w_off + n_in * n_out].reshape(n_in, n_out)
    bias = wf[b_off: b_off + n_out]
    y = np.empty((B, n_out), np.float32)
    for b in range(B):
        yb = y[b]
        for j in range(n_out):
            yb[j] = bias[j]
    for i in range(n_in):
        wi = w[i]
        for b in range(B):
            xi = x[b, i]
            yb = y[b]
            for j in range(n_out):
                yb[j] += xi * wi[j]
    return y


# erf(s) ~ s P(s^2) / Q(s^2) on [-4, 4] (|erf| rounds to 1 beyond): the rational approximation Eigen and
# XLA use for float32. Branch-free, so loops over it vectorise; GELU error <= 1.1e-6 against math.erf
# (checked on a dense grid in tests), where libm's erf costs ~4x more per call.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


@njit(cache=True, fastmath=True)
def _gelu(v):
    """Exact (erf) GELU, v * Phi(v), with the rational erf above."""
    s = min(max(v * np.float32(0.7071067811865476), np.float32(-4.0)), np.float32(4.0))
    s2 = s * s
    p = np.float32(_ERF_P[0])
    for c in _ERF_P[1:]:
        p = p * s2 + np.float32(c)
    q = np.float32(_ERF_Q[0])
    for c in _ERF_Q[1:]:
        q = q * s2 + np.float32(c)
    return np.float32(0.5) * v * (np.float32(1.0) + s * p / q)


@njit(cache=True, fastmath=True)
def _ssm_step(z, row, wf, ssm, act):
    """Bilinear S4 step on (B, H) inputs in the rescaled fused form of `fused_step_params`, real arithmetic on
    (re, im) planes; writes GELU(y + D u) to act.

    Planes and state are (N/2, H) with channels innermost, so each pass is a vector loop over channels and
    the per-channel sums over modes (g, y) accumulate in vectors, in mode order."""
    B = z.shape[0]
    H, N2, c0, s0 = row[H_], row[N2F], row[CPLX], row[STATE]
    HN = H * N2
    pl = wf[c0: c0 + 8 * HN].reshape(8, N2, H)  # W B̂, Ê, P̂ / B̂, dC2 B̂ as (re, im) planes
    D = wf[row[DSKIP]: row[DSKIP] + H]
    beta = wf[row[BETA]: row[BETA] + H]
    g = np.empty(H, np.float32)
    y = np.empty(H, np.float32)
    for b in range(B):
        s = ssm[b, s0: s0 + 2 * HN].reshape(2, N2, H)
        u = z[b]
        for h in range(H):
            g[h] = beta[h] * u[h]
            y[h] = 0.0
        for n in range(N2):  # g = Re<W B̂, sigma> + beta u
            for h in range(H):
                g[h] += pl[0, n, h] * s[0, n, h] - pl[1, n, h] * s[1, n, h]
        for n in range(N2):  # sigma' = Ê sigma + u - (P̂ / B̂) g;  y = Re<dC2 B̂, sigma'>
            for h in range(H):
                sr, si = s[0, n, h], s[1, n, h]
                nr = pl[2, n, h] * sr - pl[3, n, h] * si + u[h] - pl[4, n, h] * g[h]
                ni = pl[2, n, h] * si + pl[3, n, h] * sr - pl[5, n, h] * g[h]
                s[0, n, h] = nr
                s[1, n, h] = ni
                y[h] += pl[6, n, h] * nr - pl[7, n, h] * ni
        for h in range(H):
            act[b, h] = _gelu(y[h] + D[h] * u[h])


@njit(cache=True)
def _blocks(x, start, end, blocks, wf, ssm):
    """Run residual blocks [start, end) on x (B, H) in place."""
    B = x.shape[0]
    for k in range(start, end):
        row = blocks[k]
        H = row[H_]
        z = _layer_norm(x, wf, row[NORM], H)
        if row[KIND] == FF_BLOCK:
            F = row[N2F]
            hid = _linear(z, wf, row[W1], row[B1], H, F)
            for b in range(B):
                for j in range(F):
                    hid[b, j] = _gelu(hid[b, j])
            y = _linear(hid, wf, row[W2], row[B2], F, H)
        else:
            act = np.empty((B, H), np.float32)
            _ssm_step(z, row, wf, ssm, act)
            if row[ACT] == ACT_NONE:
                y = act
            elif row[ACT] == ACT_ID:
                y = _linear(act, wf, row[W1], row[B1], H, H)
            else:
                g = _linear(act, wf, row[W1], row[B1], H, 2 * H)
                y = np.empty((B, H), np.float32)
                for b in range(B):
                    for h in range(H):
                        y[b, h] = g[b, h] / (1.0 + math.exp(-g[b, H + h]))
        for b in range(B):
            for h in range(H):
                x[b, h] += y[b, h]


@njit(cache=True)
def _step(tokens, tt, ssm, down, up, wf, blocks, tiers, center, meta, logits):
    """One backbone step for tokens (B,) -> logits (B, V); mirrors `Backbone.step` (unet=False)."""
    T, H0, V = meta[0], meta[1], meta[2]
    B = tokens.shape[0]
    t = tt[0]
    x = np.empty((B, H0), np.float32)
    for b in range(B):
        for h in range(H0):
            x[b, h] = wf[meta[3] + tokens[b] * H0 + h]
    outputs = []
    depth = 0
    rate = 1
    for i in range(T):
        outputs.append(x.copy())
        H, p = tiers[i, T_H], tiers[i, T_POOL]
        slot = (t // rate) % p
        for b in range(B):
            for h in range(H):  # buffer laid out (h, s) like the DownPool's Linear input
                down[b, tiers[i, T_DBUF] + h * p + slot] = x[b, h]
        rate *= p
        if slot < p - 1:
            break
        buf = down[:, tiers[i, T_DBUF]: tiers[i, T_DBUF] + H * p].copy()
        x = _linear(buf, wf, tiers[i, T_DW], tiers[i, T_DB], H * p, tiers[i, T_DOUT])
        depth += 1
    if depth == T:
        skip = x.copy()
        _blocks(x, center[0], center[1], blocks, wf, ssm)
        x += skip
    for i in range(min(depth, T - 1), -1, -1):
        H, p = tiers[i, T_H], tiers[i, T_POOL]
        r = 1
        for j in range(i):
            r *= tiers[j, T_POOL]
        slot = (t // r) % p
        u0 = tiers[i, T_UBUF]
        y = np.empty((B, H), np.float32)
        for b in range(B):
            for h in range(H):
                y[b, h] = up[b, u0 + slot * H + h]
        if slot == p - 1:  # refill pending outputs from the coarse tier's new output
            Hc = x.shape[1]
            new = _linear(x, wf, tiers[i, T_UW], tiers[i, T_UB], Hc, H * p)  # features (h, s)
            for b in range(B):
                for h in range(H):
                    for s in range(p):
                        up[b, u0 + s * H + h] = new[b, h * p + s]
        x = y + outputs[i]
        skip = x.copy()
        _blocks(x, tiers[i, T_UPS], tiers[i, T_UPE], blocks, wf, ssm)
        x += skip
    z = _layer_norm(x, wf, meta[4], H0)
    out = _linear(z, wf, meta[5], meta[6], H0, V)
    logits[:, :] = out
    tt[0] = t + 1


@njit(cache=True)
def _next_uniform(rng, b):
    """splitmix64 step of row b's RNG -> uniform in [0, 1)."""
    rng[b] += np.uint64(0x9E3779B97F4A7C15)
    z = rng[b]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, fastmath=True)
def _sample_row(lg, q, temperature, top_p, rng, b):
    """Sample from logits lg (V,) float32 -> (token, model NLL in nats, entropy of the sampling dist)."""
    V = lg.shape[0]
    m = lg.max()
    z1 = 0.0
    for j in range(V):
        z1 += math.exp(lg[j] - m)
    logz = m + math.log(z1)
    if temperature == 0.0:
        choice = int(np.argmax(lg))
        return choice, logz - lg[choice], 0.0
    inv_t = 1.0 / temperature
    for j in range(V):
        q[j] = math.exp((lg[j] - m) * inv_t)
    if top_p < 1.0:
        # nucleus = {q >= tau} for the largest tau whose set still holds top_p of the mass (the k most
        # likely tokens, as in the torch sampler), found by bisection instead of a sort
        total = q.sum()
        lo, hi = 0.0, q.max()
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            mass = 0.0
            for j in range(V):
                mass += q[j] if q[j] >= mid else 0.0
            if mass >= top_p * total:
                lo = mid
            else:
                hi = mid
        for j in range(V):
            if q[j] < lo:
                q[j] = 0.0
    z = 0.0
    ez = 0.0  # sum q (lg - m)/T, for the entropy log Z - E[(lg - m)/T]
    for j in range(V):
        z += q[j]
        ez += q[j] * (lg[j] - m) * inv_t
    ent = math.log(z) - ez / z
    u = _next_uniform(rng, b) * z
    acc = 0.0
    choice = V - 1
    for j in range(V):
        acc += q[j]
        if u < acc:
            choice = j
            break
    while q[choice] == 0.0:  # rounding at the top end of the CDF
        choice -= 1
    return choice, logz - lg[choice], ent


@njit(cache=True)
def _sample_chunk(logits, tt, ssm, down, up, wf, blocks, tiers, center, meta, n_steps, tokens_out,
                  offset, rng, temperature, top_p, nll, ent):
    """n_steps of: sample each row from logits, record it, step the model (logits updated in place)."""
    B, V = logits.shape
    tok = np.empty(B, np.int64)
    q = np.empty(V, np.float64)
    for i in range(n_steps):
        for b in range(B):
            choice, nll_b, ent_b = _sample_row(logits[b], q, temperature, top_p, rng, b)
            tok[b] = choice
            tokens_out[b, offset + i] = choice
            nll[b] += nll_b
            ent[b] += ent_b
        _step(tok, tt, ssm, down, up, wf, blocks, tiers, center, meta, logits)


@njit(cache=True, parallel=True)
def _sample_groups(bounds, logits, tt, ssm, down, up, wf, blocks, tiers, center, meta, n_steps, tokens_out,
                   offset, rng, temperature, top_p, nll, ent):
    """Run `_sample_chunk` on row groups [bounds[g], bounds[g+1]) in parallel; advance t once."""
    for g in prange(len(bounds) - 1):
        lo, hi = bounds[g], bounds[g + 1]
        t_local = tt.copy()
        _sample_chunk(logits[lo:hi], t_local, ssm[lo:hi], down[lo:hi], up[lo:hi], wf, blocks, tiers, center,
                      meta, n_steps, tokens_out[lo:hi], offset, rng[lo:hi], temperature, top_p, nll[lo:hi],
                      ent[lo:hi])
    tt[0] += n_steps
