"""Fused Triton kernels for the Cauchy sum (forward and analytic backward).

Same semantics as ``cauchy(v, z, w, backend="torch", conj=...)`` (see ``cauchy.py``):
    out[b, l] = sum_n v[b, n] / (z[l] - w[b, n])  [+ conj(v[b, n]) / (z[l] - conj(w[b, n]))]
with v, w (..., N) complex64 or complex128 (flattened to B rows), z (L,) complex, out (..., L).

Triton has no complex dtype: complex tensors are passed as their ``torch.view_as_real`` float views
(interleaved re/im, so element k of a row lives at 2k and 2k + 1). Nothing of size N * L is ever stored:
- forward: one program per (row b, block of L); loops over n keeping the block's sums in registers.
- backward: one program per (row b, block of N, slice of L); loops over L in tiles of (BLOCK_N, BLOCK_L);
  slices are summed afterwards (the split keeps a GPU busy when B * N is small).

Only this module imports Triton. With ``TRITON_INTERPRET=1`` (set before Triton is imported) the kernels
run on CPU tensors; that is how the tests exercise them.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_FWD_BLOCK_L = 128
_BWD_BLOCK_N = 16
_BWD_BLOCK_L = 64
_BWD_TARGET_PROGRAMS = 1024  # split L until the backward grid has about this many programs


@triton.jit
def _cauchy_fwd_kernel(v_ptr, w_ptr, z_ptr, out_ptr, N, L, n_lblocks,
                       CONJ: tl.constexpr, BLOCK_L: tl.constexpr):
    """v, w: (B, N, 2) real views; z: (L, 2); out: (B, L, 2). Program pid -> (row, block of L)."""
    pid = tl.program_id(0)
    row = (pid // n_lblocks).to(tl.int64)
    offs_l = (pid % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = offs_l < L
    zr = tl.load(z_ptr + 2 * offs_l, mask=mask, other=0.0)
    zi = tl.load(z_ptr + 2 * offs_l + 1, mask=mask, other=0.0)
    acc_r = tl.zeros([BLOCK_L], dtype=zr.dtype)
    acc_i = tl.zeros([BLOCK_L], dtype=zr.dtype)
    base = row * N * 2
    for n in range(N):
        vr = tl.load(v_ptr + base + 2 * n)
        vi = tl.load(v_ptr + base + 2 * n + 1)
        wr = tl.load(w_ptr + base + 2 * n)
        wi = tl.load(w_ptr + base + 2 * n + 1)
        dr = zr - wr  # d = z - w;  v / d = v conj(d) / |d|^2
        di = zi - wi
        s = 1.0 / (dr * dr + di * di)
        acc_r += (vr * dr + vi * di) * s
        acc_i += (vi * dr - vr * di) * s
        if CONJ:  # conj(v) / (z - conj(w))
            er = zr - wr
            ei = zi + wi
            t = 1.0 / (er * er + ei * ei)
            acc_r += (vr * er - vi * ei) * t
            acc_i += (-vi * er - vr * ei) * t
    out = out_ptr + row * L * 2 + 2 * offs_l
    tl.store(out, acc_r, mask=mask)
    tl.store(out + 1, acc_i, mask=mask)


@triton.jit
def _cauchy_bwd_kernel(v_ptr, w_ptr, z_ptr, g_ptr, gv_ptr, gw_ptr, B, N, L, n_nblocks, l_per_split,
                       CONJ: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Partial gradients over one slice of L. v, w: (B, N, 2); z: (L, 2); g: (B, L, 2) = out.grad;
    gv, gw: (S, B, N, 2) partial sums, slice s = program_id(1). Program_id(0) -> (row, block of N).

        gv[n] = sum_l g_l conj(1/(z_l - w_n))   [+ conj(g_l) / (z_l - conj(w_n))]
        gw[n] = conj(v_n) * sum_l (g_l conj(1/(z_l - w_n))^2 [+ conj(g_l) / (z_l - conj(w_n))^2])
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    row = (pid // n_nblocks).to(tl.int64)
    offs_n = (pid % n_nblocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    vw = row * N * 2 + 2 * offs_n
    wr = tl.load(w_ptr + vw, mask=mask_n, other=0.0)[:, None]
    wi = tl.load(w_ptr + vw + 1, mask=mask_n, other=0.0)[:, None]
    zero = tl.zeros([BLOCK_N, BLOCK_L], dtype=wr.dtype)
    gv_r, gv_i, gw_r, gw_i = zero, zero, zero, zero
    l_start = split * l_per_split
    l_stop = tl.minimum(l_start + l_per_split, L)
    for l0 in range(l_start, l_stop, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        mask_l = offs_l < l_stop
        zr = tl.load(z_ptr + 2 * offs_l, mask=mask_l, other=0.0)[None, :]
        zi = tl.load(z_ptr + 2 * offs_l + 1, mask=mask_l, other=0.0)[None, :]
        gp = g_ptr + row * L * 2 + 2 * offs_l
        gr = tl.load(gp, mask=mask_l, other=0.0)[None, :]
        gi = tl.load(gp + 1, mask=mask_l, other=0.0)[None, :]
        keep = mask_n[:, None] & mask_l[None, :]
        # a = conj(1 / (z - w)) = d / |d|^2,  d = z - w
        dr = zr - wr
        di = zi - wi
        s = 1.0 / (dr * dr + di * di)
        ar = dr * s
        ai = di * s
        pr = gr * ar - gi * ai  # p = g a
        pi = gr * ai + gi * ar
        gv_r += tl.where(keep, pr, 0.0)
        gv_i += tl.where(keep, pi, 0.0)
        gw_r += tl.where(keep, pr * ar - pi * ai, 0.0)  # g a^2
        gw_i += tl.where(keep, pr * ai + pi * ar, 0.0)
        if CONJ:  # b = 1 / (z - conj(w)) = conj(e) / |e|^2,  e = z - conj(w);  q = conj(g) b
            er = zr - wr
            ei = zi + wi
            t = 1.0 / (er * er + ei * ei)
            br = er * t
            bi = -ei * t
            qr = gr * br + gi * bi
            qi = gr * bi - gi * br
            gv_r += tl.where(keep, qr, 0.0)
            gv_i += tl.where(keep, qi, 0.0)
            gw_r += tl.where(keep, qr * br - qi * bi, 0.0)  # conj(g) b^2
            gw_i += tl.where(keep, qr * bi + qi * br, 0.0)
    sv_r = tl.sum(gv_r, axis=1)
    sv_i = tl.sum(gv_i, axis=1)
    sw_r = tl.sum(gw_r, axis=1)
    sw_i = tl.sum(gw_i, axis=1)
    vr = tl.load(v_ptr + vw, mask=mask_n, other=0.0)
    vi = tl.load(v_ptr + vw + 1, mask=mask_n, other=0.0)
    out = split.to(tl.int64) * B * N * 2 + vw
    tl.store(gv_ptr + out, sv_r, mask=mask_n)
    tl.store(gv_ptr + out + 1, sv_i, mask=mask_n)
    tl.store(gw_ptr + out, sw_r * vr + sw_i * vi, mask=mask_n)  # conj(v) * sw
    tl.store(gw_ptr + out + 1, sw_i * vr - sw_r * vi, mask=mask_n)


def _check(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> None:
    """Validate the kernels' contract: v, w (B, N) and z (L,) contiguous, same complex dtype and device."""
    if v.dim() != 2 or w.shape != v.shape or z.dim() != 1:
        raise ValueError(f"cauchy_triton kernels expect v, w (B, N) and z (L,); got v {tuple(v.shape)}, "
                         f"w {tuple(w.shape)}, z {tuple(z.shape)}")
    if not (v.dtype == w.dtype == z.dtype) or v.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"cauchy_triton supports complex64 and complex128 (one dtype for all inputs); got "
                         f"v {v.dtype}, z {z.dtype}, w {w.dtype}")
    if not (v.device == w.device == z.device):
        raise ValueError(f"v, z, w must be on one device; got {v.device}, {z.device}, {w.device}")
    if not v.is_cuda and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise ValueError(f"cauchy_triton needs CUDA tensors (got {v.device}); use backend='torch' on CPU, "
                         "or set TRITON_INTERPRET=1 before Triton is imported to run the kernels on CPU")
    for name, t in (("v", v), ("z", z), ("w", w)):
        if not t.is_contiguous():
            raise ValueError(f"cauchy_triton kernels need contiguous inputs; {name} has strides {t.stride()}")


def _forward(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, conj: bool) -> torch.Tensor:
    """v, w (B, N), z (L,) contiguous, one complex dtype -> (B, L)."""
    _check(v, z, w)
    (B, N), L = v.shape, z.shape[0]
    out = torch.empty(B, L, dtype=v.dtype, device=v.device)
    if B == 0 or L == 0:
        return out
    if N == 0:
        return out.zero_()
    n_lblocks = triton.cdiv(L, _FWD_BLOCK_L)
    _cauchy_fwd_kernel[(B * n_lblocks,)](
        torch.view_as_real(v), torch.view_as_real(w), torch.view_as_real(z), torch.view_as_real(out),
        N, L, n_lblocks, CONJ=conj, BLOCK_L=_FWD_BLOCK_L)
    return out


def _backward(v, z, w, g, conj: bool):
    """Gradients (gv, gw), each (B, N), for out.grad g (B, L); see `_cauchy_bwd_kernel`."""
    _check(v, z, w)
    (B, N), L = v.shape, z.shape[0]
    g = g.to(v.dtype).contiguous()
    if g.shape != (B, L):
        raise ValueError(f"grad has shape {tuple(g.shape)}, expected {(B, L)}")
    if B * N == 0 or L == 0:
        return torch.zeros_like(v), torch.zeros_like(v)
    n_nblocks = triton.cdiv(N, _BWD_BLOCK_N)
    n_ltiles = triton.cdiv(L, _BWD_BLOCK_L)
    split = 1 if not v.is_cuda else max(1, min(n_ltiles, _BWD_TARGET_PROGRAMS // (B * n_nblocks)))
    l_per_split = triton.cdiv(n_ltiles, split) * _BWD_BLOCK_L
    split = triton.cdiv(L, l_per_split)
    gv = torch.empty(split, B, N, dtype=v.dtype, device=v.device)
    gw = torch.empty_like(gv)
    _cauchy_bwd_kernel[(B * n_nblocks, split)](
        torch.view_as_real(v), torch.view_as_real(w), torch.view_as_real(z), torch.view_as_real(g),
        torch.view_as_real(gv), torch.view_as_real(gw), B, N, L, n_nblocks, l_per_split,
        CONJ=conj, BLOCK_N=_BWD_BLOCK_N, BLOCK_L=_BWD_BLOCK_L)
    return gv.sum(0), gw.sum(0)


class _CauchyTriton(torch.autograd.Function):
    """Autograd wrapper: v, w (B, N), z (L,) contiguous -> (B, L). Saves only v, z, w; z gets no grad."""

    @staticmethod
    def forward(ctx, v, z, w, conj):
        ctx.save_for_backward(v, z, w)
        ctx.conj = conj
        return _forward(v, z, w, conj)

    @staticmethod
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[2]):
            return None, None, None, None
        gv, gw = _backward(v, z, w, grad, ctx.conj)
        need_v, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        return (gv if need_v else None), None, (gw if need_w else None), None


def cauchy_triton(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, conj: bool = False) -> torch.Tensor:
    """Cauchy sum via Triton. v (..., N), w broadcastable to v, z (L,); complex64/128 -> (..., L).

    Inputs are promoted to one complex dtype and made contiguous here (autograd routes the gradients
    back through the casts and the broadcast of w)."""
    for name, t in (("v", v), ("z", z), ("w", w)):
        if not t.is_complex():
            raise ValueError(f"cauchy_triton expects complex tensors; {name} is {t.dtype}")
    if z.dim() != 1:
        raise ValueError(f"z must be 1-D (L,), got shape {tuple(z.shape)}")
    if v.dim() == 0 or torch.broadcast_shapes(v.shape, w.shape) != v.shape:
        raise ValueError(f"v {tuple(v.shape)} and w {tuple(w.shape)} must broadcast to v's shape (..., N)")
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    if dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"cauchy_triton supports complex64 and complex128, got {dtype}")
    batch_shape, N = v.shape[:-1], v.shape[-1]
    v2 = v.to(dtype).reshape(-1, N).contiguous()
    w2 = w.to(dtype).expand_as(v).reshape(-1, N).contiguous()
    out = _CauchyTriton.apply(v2, z.to(dtype).contiguous(), w2, bool(conj))
    return out.reshape(*batch_shape, z.shape[0])
