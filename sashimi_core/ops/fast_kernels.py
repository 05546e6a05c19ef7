"""numba kernels of the fast step engine (`fast_step.py` packs the weights they read).

Every kernel reads weights from one flat float32 array `wf` at offsets held in two integer tables: one row per
residual block (columns KIND..BETA) and one per pooling tier (T_H..T_DOUT). Activations are (B, H) float32,
the S4 state is (B, n_state) float32 (per layer: 16-channel tiles, see `tile_channels`, then the
carried sum of `_ssm_step`).
"""
from __future__ import annotations

import math

import numpy as np

try:
    from numba import njit, prange

    from sashimi_core.ops.simd import prefetch, vadd, vdiv, vfma, vload, vmax, vmin, vmul, vsplat, vstore, vsub

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


STRIP = 16  # output columns per weight strip: two f32x8 accumulators per batch row


@njit(cache=True, fastmath=True)
def _store_strip(yb, j, n_out, tmp, v0, v1):
    """yb[j: min(j + 16, n_out)] = (v0, v1)[: n_out - j]."""
    if j + STRIP <= n_out:
        vstore(yb, j, v0)
        vstore(yb, j + 8, v1)
    else:
        vstore(tmp, 0, v0)
        vstore(tmp, 8, v1)
        for k in range(n_out - j):
            yb[j + k] = tmp[k]


@njit(cache=True, fastmath=True)
def _linear(x, wf, w_off, b_off, n_in, n_out):
    """x (B, n_in) @ W^T + b -> (B, n_out). Explicit loops: no BLAS threads.

    W is packed in strips of 16 output columns (`strip_pack`): strip s is (n_in, 16) contiguous at
    w_off + s * n_in * 16. Each strip is read once per step for all rows (the weights bound a step) while a
    register tile of rows x 16 outputs accumulates over the inputs in order, starting from the bias; tiles of
    4, 2 and 1 rows (one row: even and odd inputs in two chains, and it prefetches; prefetching in the 4- and
    2-row tiles too doubled them alone with 12.6 MB of weights cycling but cost 15-20% in the engine at B=16).
    A strip (<= 32 KB here) stays in L1 across the row tiles."""
    B = x.shape[0]
    y = np.empty((B, n_out), np.float32)
    tmp = np.zeros(STRIP, np.float32)
    for j in range(0, n_out, STRIP):
        for k in range(STRIP):
            tmp[k] = wf[b_off + j + k] if j + k < n_out else 0.0
        bias0, bias1 = vload(tmp, 0), vload(tmp, 8)
        w = wf[w_off + j * n_in: w_off + (j + STRIP) * n_in]
        b = 0
        while b + 4 <= B:
            x0, x1, x2, x3 = x[b], x[b + 1], x[b + 2], x[b + 3]
            a0, a1, c0, c1, d0, d1, e0, e1 = bias0, bias1, bias0, bias1, bias0, bias1, bias0, bias1
            for i in range(n_in):
                w0, w1 = vload(w, STRIP * i), vload(w, STRIP * i + 8)
                v = vsplat(x0[i])
                a0, a1 = vfma(v, w0, a0), vfma(v, w1, a1)
                v = vsplat(x1[i])
                c0, c1 = vfma(v, w0, c0), vfma(v, w1, c1)
                v = vsplat(x2[i])
                d0, d1 = vfma(v, w0, d0), vfma(v, w1, d1)
                v = vsplat(x3[i])
                e0, e1 = vfma(v, w0, e0), vfma(v, w1, e1)
            _store_strip(y[b], j, n_out, tmp, a0, a1)
            _store_strip(y[b + 1], j, n_out, tmp, c0, c1)
            _store_strip(y[b + 2], j, n_out, tmp, d0, d1)
            _store_strip(y[b + 3], j, n_out, tmp, e0, e1)
            b += 4
        if b + 2 <= B:
            x0, x1 = x[b], x[b + 1]
            a0, a1, c0, c1 = bias0, bias1, bias0, bias1
            for i in range(n_in):
                w0, w1 = vload(w, STRIP * i), vload(w, STRIP * i + 8)
                v = vsplat(x0[i])
                a0, a1 = vfma(v, w0, a0), vfma(v, w1, a1)
                v = vsplat(x1[i])
                c0, c1 = vfma(v, w0, c0), vfma(v, w1, c1)
            _store_strip(y[b], j, n_out, tmp, a0, a1)
            _store_strip(y[b + 1], j, n_out, tmp, c0, c1)
            b += 2
        if b < B:  # one row: even and odd inputs in two chains (FMA latency), added at the end
            xb = x[b]
            a0, a1 = bias0, bias1
            c0 = c1 = vsplat(np.float32(0.0))
            i = 0
            while i + 2 <= n_in:  # one row does 2 FMAs per cache line: ask for the lines 8 KB ahead
                prefetch(wf, w_off + j * n_in + STRIP * i + 2048)
                prefetch(wf, w_off + j * n_in + STRIP * i + 2064)
                v = vsplat(xb[i])
                a0, a1 = vfma(v, vload(w, STRIP * i), a0), vfma(v, vload(w, STRIP * i + 8), a1)
                v = vsplat(xb[i + 1])
                c0, c1 = vfma(v, vload(w, STRIP * i + 16), c0), vfma(v, vload(w, STRIP * i + 24), c1)
                i += 2
            if i < n_in:
                v = vsplat(xb[i])
                a0, a1 = vfma(v, vload(w, STRIP * i), a0), vfma(v, vload(w, STRIP * i + 8), a1)
            _store_strip(y[b], j, n_out, tmp, vadd(a0, c0), vadd(a1, c1))
    return y


def strip_pack(weight: np.ndarray) -> np.ndarray:
    """nn.Linear weight (n_out, n_in) -> the flat strip layout `_linear` reads: (ceil(n_out / 16), n_in, 16),
    output columns zero-padded to a multiple of 16."""
    n_out, n_in = weight.shape
    strips = -(-n_out // STRIP)
    padded = np.zeros((strips * STRIP, n_in), np.float32)
    padded[:n_out] = weight
    return np.ascontiguousarray(padded.reshape(strips, STRIP, n_in).transpose(0, 2, 1)).ravel()


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
def _gelu8(v):
    """`_gelu` on 8 lanes (numba leaves the scalar loop unvectorised: ~6 ns a value)."""
    s = vmin(vmax(vmul(v, vsplat(np.float32(0.7071067811865476))), vsplat(np.float32(-4.0))),
             vsplat(np.float32(4.0)))
    s2 = vmul(s, s)
    p = vsplat(np.float32(_ERF_P[0]))
    for c in _ERF_P[1:]:
        p = vfma(p, s2, vsplat(np.float32(c)))
    q = vsplat(np.float32(_ERF_Q[0]))
    for c in _ERF_Q[1:]:
        q = vfma(q, s2, vsplat(np.float32(c)))
    half_v = vmul(vsplat(np.float32(0.5)), v)
    return vfma(half_v, vdiv(vmul(s, p), q), half_v)


@njit(cache=True, fastmath=True)
def _gelu_rows(a):
    """GELU of a (B, n) in place."""
    B, n = a.shape
    n8 = n - n % 8
    for b in range(B):
        ab = a[b]
        for j in range(0, n8, 8):
            vstore(ab, j, _gelu8(vload(ab, j)))
        for j in range(n8, n):
            ab[j] = _gelu(ab[j])


TILE = 16  # channels per S4 tile (two f32x8)


def tile_channels(a: np.ndarray) -> np.ndarray:
    """S4 planes (P, N/2, H) or states (B, P, N/2, H) -> the engine's flat layout (one row per leading index):
    whole tiles of 16 channels, each (N/2, P, 16) contiguous, then the remaining H % 16 channels as (P, N/2, rest)."""
    *lead, P, N2, H = a.shape
    H16 = H - H % TILE
    tiles = a[..., :H16].reshape(*lead, P, N2, H16 // TILE, TILE)
    tiles = np.moveaxis(tiles, -2, -4)  # (..., tiles, P, N2, 16) -> below (..., tiles, N2, P, 16)
    tiles = np.swapaxes(tiles, -3, -2)
    flat = [tiles.reshape(*lead, -1), a[..., H16:].reshape(*lead, -1)]
    return np.ascontiguousarray(np.concatenate(flat, axis=-1), dtype=np.float32)


@njit(cache=True, fastmath=True)
def _ssm_modes(s, pl, o, q, g, u, yr, yi, wr, wi):
    """8 channels of one mode: sigma' = Ê sigma + u - (P̂ / B̂) g at state offset q (re, then im 16 later),
    planes at o (plane k at o + 16 k). Accumulates y = Re<dC2 B̂, sigma'> as (yr, yi) and the next step's
    Re<W B̂, sigma'> as (wr, wi)."""
    sr, si = vload(s, q), vload(s, q + 16)
    er, ei = vload(pl, o + 32), vload(pl, o + 48)
    nr = vsub(vsub(vfma(er, sr, u), vmul(ei, si)), vmul(vload(pl, o + 64), g))
    ni = vsub(vfma(ei, sr, vmul(er, si)), vmul(vload(pl, o + 80), g))
    vstore(s, q, nr)
    vstore(s, q + 16, ni)
    return (vfma(vload(pl, o + 96), nr, yr), vfma(vload(pl, o + 112), ni, yi),
            vfma(vload(pl, o), nr, wr), vfma(vload(pl, o + 16), ni, wi))


@njit(cache=True, fastmath=True)
def _ssm_step(z, row, wf, ssm, act):
    """Bilinear S4 step on (B, H) inputs in the rescaled fused form of `fused_step_params`, real arithmetic on
    (re, im) planes; writes GELU(y + D u) to act.

    One pass over the state: g = Re<W B̂, sigma> + beta u needs the whole state before any mode is updated, so
    the update pass also sums Re<W B̂, sigma'> for the next step and keeps it after the layer's state (H
    floats per row, `state_from_torch` fills it). Layout (`tile_channels`): per tile of 16 channels, planes
    (N/2, 8, 16) and each row's state (N/2, 2, 16) are contiguous, so a tile's planes (16 KB at N/2 = 32)
    stream in order and stay in L1 across the batch rows. The sums over modes accumulate in f32x8 registers,
    real and imaginary parts in separate chains. Channels past the last whole tile take a scalar loop."""
    B = z.shape[0]
    H, N2, c0, s0 = row[H_], row[N2F], row[CPLX], row[STATE]
    D = wf[row[DSKIP]: row[DSKIP] + H]
    beta = wf[row[BETA]: row[BETA] + H]
    zero = vsplat(np.float32(0.0))
    PT, ST = N2 * 8 * TILE, N2 * 2 * TILE  # floats per tile: planes, state
    H16 = H - H % TILE
    w0 = s0 + 2 * N2 * H  # the carried Re<W B̂, sigma> (H,)
    for t in range(H16 // TILE):
        c = TILE * t
        pl = wf[c0 + t * PT: c0 + (t + 1) * PT]
        for b in range(B):
            s = ssm[b, s0 + t * ST: s0 + (t + 1) * ST]
            carry = ssm[b, w0: w0 + H]
            zb = z[b]
            u0, u1 = vload(zb, c), vload(zb, c + 8)
            g0 = vfma(vload(beta, c), u0, vload(carry, c))
            g1 = vfma(vload(beta, c + 8), u1, vload(carry, c + 8))
            yr0 = yi0 = yr1 = yi1 = wr0 = wi0 = wr1 = wi1 = zero
            # the state tile read next (the next row's, after the last row the next tile's first): each is 4 KB
            # of its own, rows are n_state apart, and the one pass no longer streams it ahead of the arithmetic
            nrow = ssm[b + 1] if b + 1 < B else ssm[0]
            noff = s0 + t * ST if b + 1 < B else s0 + (t + 1) * ST
            for n in range(N2):
                o, q = 8 * TILE * n, 2 * TILE * n
                prefetch(nrow, noff + q)
                prefetch(nrow, noff + q + 16)
                if b == B - 1:  # the next tile's planes, one line per plane and mode (a hint: never faults)
                    for k in range(0, 8 * TILE, 16):
                        prefetch(wf, c0 + (t + 1) * PT + o + k)
                yr0, yi0, wr0, wi0 = _ssm_modes(s, pl, o, q, g0, u0, yr0, yi0, wr0, wi0)
                yr1, yi1, wr1, wi1 = _ssm_modes(s, pl, o + 8, q + 8, g1, u1, yr1, yi1, wr1, wi1)
            vstore(carry, c, vsub(wr0, wi0))
            vstore(carry, c + 8, vsub(wr1, wi1))
            ab = act[b]
            vstore(ab, c, vfma(vload(D, c), u0, vsub(yr0, yi0)))
            vstore(ab, c + 8, vfma(vload(D, c + 8), u1, vsub(yr1, yi1)))
    R = H - H16
    if R:
        n_tiles = H16 // TILE
        pl = wf[c0 + n_tiles * PT: c0 + n_tiles * PT + 8 * N2 * R].reshape(8, N2, R)
        g = np.empty(R, np.float32)
        y = np.empty(R, np.float32)
        for b in range(B):
            s = ssm[b, s0 + n_tiles * ST: s0 + n_tiles * ST + 2 * N2 * R].reshape(2, N2, R)
            carry = ssm[b, w0 + H16: w0 + H]
            u = z[b, H16:]
            for h in range(R):
                g[h] = carry[h] + beta[H16 + h] * u[h]
                y[h] = 0.0
                carry[h] = 0.0
            for n in range(N2):
                for h in range(R):
                    sr, si = s[0, n, h], s[1, n, h]
                    nr = pl[2, n, h] * sr - pl[3, n, h] * si + u[h] - pl[4, n, h] * g[h]
                    ni = pl[2, n, h] * si + pl[3, n, h] * sr - pl[5, n, h] * g[h]
                    s[0, n, h] = nr
                    s[1, n, h] = ni
                    y[h] += pl[6, n, h] * nr - pl[7, n, h] * ni
                    carry[h] += pl[0, n, h] * nr - pl[1, n, h] * ni
            for h in range(R):
                act[b, H16 + h] = y[h] + D[H16 + h] * u[h]
    _gelu_rows(act)


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
            _gelu_rows(hid)
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
        q[j] = math.exp(lg[j] - m)
        z1 += q[j]
    logz = m + math.log(z1)
    if temperature == 0.0:
        choice = int(np.argmax(lg))
        return choice, logz - lg[choice], 0.0
    inv_t = 1.0 / temperature
    if temperature != 1.0:  # at T = 1 the sampling weights are the exponentials just summed
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
