"""Fused CPU Cauchy kernels (numba): forward and analytic backward with no (..., N, L) temporaries.

Same contract as `cauchy(v, z, w, backend="numba", conj=...)`: v, w (R, N) complex; z (L,) complex; out (R, L).
Each kernel works on (re, im) planes so LLVM vectorises the inner loop over L (forward) or the reduction over
L (backward); rows run in parallel (numba prange). The forward computes each 1/(z - w) once for all rows of v
that share w (S4's four (B|P) x (C̃|Q) products), ~2 real divisions per (channel, mode, node), against ~10
separate torch ops over (R, N, chunk) tensors in the chunked backend.

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
        # Sharing 1/(z - w) across rows did not pay off here (the reductions over L are bandwidth-bound),
        # so backward runs per row with w expanded.
        v, z, w = ctx.saved_tensors
        rdtype = np.float64 if v.dtype == torch.complex128 else np.float32
        K, R, N = v.shape
        vr, vi = _planes(v.reshape(K * R, N), rdtype)
        wr, wi = _planes(w.expand(K, R, N).reshape(K * R, N), rdtype)
        zr, zi = _planes(z, rdtype)
        gr, gi = _planes(grad.reshape(K * R, -1), rdtype)
        out = [np.empty_like(vr) for _ in range(4)]
        _backward(vr, vi, wr, wi, zr, zi, gr, gi, ctx.conj, *out)
        gv = torch.complex(torch.from_numpy(out[0]), torch.from_numpy(out[1])).reshape(K, R, N)
        gw = torch.complex(torch.from_numpy(out[2]), torch.from_numpy(out[3])).reshape(K, R, N).sum(0)
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
