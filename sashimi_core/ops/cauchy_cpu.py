"""Fused CPU Cauchy kernels (numba): forward and analytic backward with no (..., N, L) temporaries.

Same contract as `cauchy(v, z, w, backend="numba", conj=...)`: v, w (R, N) complex; z (L,) complex; out (R, L).
Each kernel works on (re, im) planes so LLVM vectorises the inner loop over L (forward) or the reduction over
L (backward); rows run in parallel (numba prange). The forward computes each 1/(z - w) once for all rows of v
that share w (S4's four (B|P) x (C̃|Q) products), ~2 real divisions per (channel, mode, node), against ~10
separate torch ops over (R, N, chunk) tensors in the chunked backend. The backward shares them too for S4's four
rows (`_backward4`, 2.1x faster than one pass per row); other row counts run per row.

Gradients, with PyTorch's convention for complex tensors (x.grad = dLoss/dRe x + i dLoss/dIm x, g = out.grad):
    v.grad = sum_l g_l conj(1/(z_l - w_n))   [+ conj(g_l) / (z_l - conj(w_n))]
    w.grad = conj(v_n) sum_l g_l conj(1/(z_l - w_n))^2   [+ conj(g_l) / (z_l - conj(w_n))^2]
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath=True)
def _forward(vr, vi, wr, wi, zr, zi, conj, out_r, out_i):
    """v (K, R, N) planes share w (R, N): each 1/(z - w) is computed once for the K rows. out (K, R, L)."""
    K, R, N = vr.shape
    L = zr.shape[0]
    inv1 = np.empty((R, L), vr.dtype)
    inv2 = np.empty((R, L), vr.dtype)
    d1 = np.empty((R, L), vr.dtype)
    d2 = np.empty((R, L), vr.dtype)
    dr = np.empty((R, L), vr.dtype)
    for r in prange(R):
        for k in range(K):
            for l in range(L):
                out_r[k, r, l] = 0.0
                out_i[k, r, l] = 0.0
        for n in range(N):
            c, d = wr[r, n], wi[r, n]
            for l in range(L):
                x = zr[l] - c
                y1 = zi[l] - d
                dr[r, l] = x
                d1[r, l] = y1
                inv1[r, l] = 1.0 / (x * x + y1 * y1)
                if conj:
                    y2 = zi[l] + d
                    d2[r, l] = y2
                    inv2[r, l] = 1.0 / (x * x + y2 * y2)
            for k in range(K):
                a, b = vr[k, r, n], vi[k, r, n]
                o_r, o_i = out_r[k, r], out_i[k, r]
                for l in range(L):
                    # v / (z - w) = v conj(z - w) / |z - w|^2
                    o_r[l] += (a * dr[r, l] + b * d1[r, l]) * inv1[r, l]
                    o_i[l] += (b * dr[r, l] - a * d1[r, l]) * inv1[r, l]
                if conj:  # conj(v) / (z - conj(w))
                    for l in range(L):
                        o_r[l] += (a * dr[r, l] - b * d2[r, l]) * inv2[r, l]
                        o_i[l] += (-b * dr[r, l] - a * d2[r, l]) * inv2[r, l]


@njit(cache=True, parallel=True, fastmath=True)
def _backward(vr, vi, wr, wi, zr, zi, gr, gi, conj, gv_r, gv_i, gw_r, gw_i):
    R, N = vr.shape
    L = zr.shape[0]
    for r in prange(R):
        g_r, g_i = gr[r], gi[r]
        for n in range(N):
            c, d = wr[r, n], wi[r, n]
            s1r = s1i = s2r = s2i = 0.0
            for l in range(L):
                dr = zr[l] - c
                d1i = zi[l] - d
                inv1 = 1.0 / (dr * dr + d1i * d1i)
                pr, pi = dr * inv1, d1i * inv1  # conj(1 / (z - w))
                s1r += g_r[l] * pr - g_i[l] * pi
                s1i += g_r[l] * pi + g_i[l] * pr
                qr, qi = pr * pr - pi * pi, 2.0 * pr * pi  # conj(1 / (z - w))^2
                s2r += g_r[l] * qr - g_i[l] * qi
                s2i += g_r[l] * qi + g_i[l] * qr
                if conj:
                    d2i = zi[l] + d
                    inv2 = 1.0 / (dr * dr + d2i * d2i)
                    ur, ui = dr * inv2, -d2i * inv2  # 1 / (z - conj(w))
                    s1r += g_r[l] * ur + g_i[l] * ui  # conj(g) u
                    s1i += g_r[l] * ui - g_i[l] * ur
                    u2r, u2i = ur * ur - ui * ui, 2.0 * ur * ui
                    s2r += g_r[l] * u2r + g_i[l] * u2i
                    s2i += g_r[l] * u2i - g_i[l] * u2r
            a, b = vr[r, n], vi[r, n]
            gv_r[r, n], gv_i[r, n] = s1r, s1i
            gw_r[r, n] = a * s2r + b * s2i  # conj(v) * S2
            gw_i[r, n] = a * s2i - b * s2r


@njit(cache=True, parallel=True, fastmath=True)
def _backward4(vr, vi, wr, wi, zr, zi, gr, gi, conj, gv_r, gv_i, gw_r, gw_i):
    """`_backward` for S4's K = 4 rows of v (K, R, N) that share w (R, N): each 1/(z - w) is computed once for
    the four rows (the divisions dominate), 16 running sums kept in registers. g (K, R, L), gv (K, R, N),
    gw (R, N) summed over K."""
    _, R, N = vr.shape
    L = zr.shape[0]
    for r in prange(R):
        g0r, g0i, g1r, g1i = gr[0, r], gi[0, r], gr[1, r], gi[1, r]
        g2r, g2i, g3r, g3i = gr[2, r], gi[2, r], gr[3, r], gi[3, r]
        for n in range(N):
            c, d = wr[r, n], wi[r, n]
            a0r = a0i = a1r = a1i = a2r = a2i = a3r = a3i = 0.0  # S1 per k
            b0r = b0i = b1r = b1i = b2r = b2i = b3r = b3i = 0.0  # S2 per k
            for l in range(L):
                dr = zr[l] - c
                d1i = zi[l] - d
                inv1 = 1.0 / (dr * dr + d1i * d1i)
                pr, pi = dr * inv1, d1i * inv1
                qr, qi = pr * pr - pi * pi, 2.0 * pr * pi
                if conj:
                    d2i = zi[l] + d
                    inv2 = 1.0 / (dr * dr + d2i * d2i)
                    ur, ui = dr * inv2, -d2i * inv2
                    u2r, u2i = ur * ur - ui * ui, 2.0 * ur * ui
                    # g p + conj(g) u = gr (pr + ur) + gi (ui - pi) + i [gr (pi + ui) + gi (pr - ur)]; q, u2 alike
                    Pr, Mr, Pi, Mi = pr + ur, pr - ur, pi + ui, ui - pi
                    Qr, QMr, Qi, QMi = qr + u2r, qr - u2r, qi + u2i, u2i - qi
                else:
                    Pr, Mr, Pi, Mi = pr, pr, pi, -pi
                    Qr, QMr, Qi, QMi = qr, qr, qi, -qi
                a0r += g0r[l] * Pr + g0i[l] * Mi
                a0i += g0r[l] * Pi + g0i[l] * Mr
                a1r += g1r[l] * Pr + g1i[l] * Mi
                a1i += g1r[l] * Pi + g1i[l] * Mr
                a2r += g2r[l] * Pr + g2i[l] * Mi
                a2i += g2r[l] * Pi + g2i[l] * Mr
                a3r += g3r[l] * Pr + g3i[l] * Mi
                a3i += g3r[l] * Pi + g3i[l] * Mr
                b0r += g0r[l] * Qr + g0i[l] * QMi
                b0i += g0r[l] * Qi + g0i[l] * QMr
                b1r += g1r[l] * Qr + g1i[l] * QMi
                b1i += g1r[l] * Qi + g1i[l] * QMr
                b2r += g2r[l] * Qr + g2i[l] * QMi
                b2i += g2r[l] * Qi + g2i[l] * QMr
                b3r += g3r[l] * Qr + g3i[l] * QMi
                b3i += g3r[l] * Qi + g3i[l] * QMr
            gv_r[0, r, n], gv_i[0, r, n] = a0r, a0i
            gv_r[1, r, n], gv_i[1, r, n] = a1r, a1i
            gv_r[2, r, n], gv_i[2, r, n] = a2r, a2i
            gv_r[3, r, n], gv_i[3, r, n] = a3r, a3i
            x0, y0 = vr[0, r, n], vi[0, r, n]
            x1, y1 = vr[1, r, n], vi[1, r, n]
            x2, y2 = vr[2, r, n], vi[2, r, n]
            x3, y3 = vr[3, r, n], vi[3, r, n]
            gw_r[r, n] = (x0 * b0r + y0 * b0i) + (x1 * b1r + y1 * b1i) + (x2 * b2r + y2 * b2i) + (x3 * b3r + y3 * b3i)
            gw_i[r, n] = (x0 * b0i - y0 * b0r) + (x1 * b1i - y1 * b1r) + (x2 * b2i - y2 * b2r) + (x3 * b3i - y3 * b3r)


def _planes(x: torch.Tensor, rdtype) -> tuple[np.ndarray, np.ndarray]:
    x = x.detach().resolve_conj()
    return (np.ascontiguousarray(x.real.numpy(), dtype=rdtype), np.ascontiguousarray(x.imag.numpy(), dtype=rdtype))


class CauchyNumba(torch.autograd.Function):
    """Autograd wrapper: v (K, R, N), w (R, N) complex CPU tensors, z (L,) -> (K, R, L)."""

    @staticmethod
    def forward(ctx, v, z, w, conj):
        ctx.save_for_backward(v, z, w)
        ctx.conj = bool(conj)
        rdtype = np.float64 if v.dtype == torch.complex128 else np.float32
        K, R, N = v.shape
        L = z.shape[-1]
        vr, vi = _planes(v, rdtype)
        wr, wi = _planes(w, rdtype)
        zr, zi = _planes(z, rdtype)
        out_r = np.empty((K, R, L), rdtype)
        out_i = np.empty_like(out_r)
        _forward(vr, vi, wr, wi, zr, zi, ctx.conj, out_r, out_i)
        return torch.complex(torch.from_numpy(out_r), torch.from_numpy(out_i))

    @staticmethod
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        rdtype = np.float64 if v.dtype == torch.complex128 else np.float32
        K, R, N = v.shape
        zr, zi = _planes(z, rdtype)
        if K == 4:  # S4's (B|P) x (C̃|Q) products: one pass over L for the four rows
            vr, vi = _planes(v, rdtype)
            wr, wi = _planes(w, rdtype)
            gr, gi = _planes(grad, rdtype)
            out = [np.empty_like(vr), np.empty_like(vr), np.empty_like(wr), np.empty_like(wr)]
            _backward4(vr, vi, wr, wi, zr, zi, gr, gi, ctx.conj, *out)
        else:  # per row, w expanded
            vr, vi = _planes(v.reshape(K * R, N), rdtype)
            wr, wi = _planes(w.expand(K, R, N).reshape(K * R, N), rdtype)
            gr, gi = _planes(grad.reshape(K * R, -1), rdtype)
            out = [np.empty_like(vr) for _ in range(4)]
            _backward(vr, vi, wr, wi, zr, zi, gr, gi, ctx.conj, *out)
        gv = torch.complex(torch.from_numpy(out[0]), torch.from_numpy(out[1])).reshape(K, R, N)
        gw = torch.complex(torch.from_numpy(out[2]), torch.from_numpy(out[3])).reshape(-1, R, N).sum(0)
        return (gv if ctx.needs_input_grad[0] else None, None, gw if ctx.needs_input_grad[2] else None, None)


def cauchy_numba(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, conj: bool) -> torch.Tensor:
    """v (..., N), w broadcastable to v, z (L,) -> (..., L). When w has fewer leading dims than v (S4 passes
    w (H, N/2) with v (2, 2, H, N/2)), the rows of v that share a w row share its Cauchy matrix."""
    if v.is_cuda:
        raise ValueError("the numba Cauchy backend runs on CPU tensors only")
    if v.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"the numba Cauchy backend needs complex64/complex128 inputs, got {v.dtype}")
    w, z = w.to(v.dtype), z.to(v.dtype)
    # strip leading broadcast dims of w: v = (K..., W...) with w = (W...)
    while w.dim() > 1 and w.shape[0] == 1 and w.dim() >= v.dim():
        w = w.squeeze(0)
    if v.shape[v.dim() - w.dim():] != w.shape:
        w = w.expand_as(v)
    lead = v.shape[: v.dim() - w.dim()]
    N, L = v.shape[-1], z.shape[-1]
    v3 = v.reshape(-1, w.numel() // N, N)
    out = CauchyNumba.apply(v3, z, w.reshape(-1, N), conj)
    return out.reshape(*lead, *w.shape[:-1], L)
