"""Cauchy sums, the inner loop of the S4 convolution kernel.

    cauchy(v, z, w)[..., l] = sum_n v[..., n] / (z[l] - w[..., n])                      (conj=False)
                            + sum_n conj(v[..., n]) / (z[l] - conj(w[..., n]))           (conj=True)

v, w: (..., N) complex; z: (L,) complex; result (..., L) complex. ``conj=True`` adds the conjugate half of
each pair, which is how S4 stores its N = d_state modes as N/2 complex numbers.

Backends (one door: `s4.py` only ever calls :func:`cauchy`):
- ``"direct"``: float64/complex128 materialising sum, the slow twin used by tests.
- ``"naive"``: materialises the (..., N, L) tensor and lets autograd keep it: the reference implementation's
  ``cauchy_naive``; the baseline in ``python -m bench kernel``.
- ``"torch"``: chunked over L with an analytic backward, so memory stays O(batch * N * chunk) and backward
  stores only v, z, w.
- ``"numba"``: fused CPU kernels (see ``cauchy_cpu.py``), the fastest CPU path; forward and backward.
- ``"triton"``: a fused GPU kernel (see ``cauchy_triton.py``); forward and backward.
- ``"auto"``: triton for CUDA tensors when Triton imports; numba on CPU; torch otherwise (quietly).
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "direct", "naive", "torch", "numba", "triton")
_CHUNK_ELEMENTS = 1 << 21  # complex elements per (..., N, chunk) intermediate: 16 MB at complex64

try:  # Triton is optional: GPU machines (and TRITON_INTERPRET=1 tests) only.
    from sashimi_core.ops import cauchy_triton as _cauchy_triton

    _TRITON_ERROR = None
except Exception as exc:  # ImportError, or a Triton that fails to initialise
    _cauchy_triton = None
    _TRITON_ERROR = exc

try:  # numba comes with librosa; without it the chunked torch backend is used
    from sashimi_core.ops import cauchy_cpu as _cauchy_cpu
except ImportError as exc:
    _cauchy_cpu = None
    _NUMBA_ERROR = exc


def set_threads(n: int) -> None:
    """Use n CPU threads in torch's kernels and in the numba Cauchy kernel. numba's pool defaults to every
    core, so without this two `--threads 1` training processes on 2 cores run 6 threads and each slows ~4x."""
    torch.set_num_threads(n)
    if _cauchy_cpu is not None:
        import numba

        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, backend: str = "auto",
           conj: bool = False) -> torch.Tensor:
    """Cauchy sum. v, w (..., N) complex; z (L,) complex -> (..., L) complex (see module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Cauchy backend {backend!r}; expected one of {BACKENDS}")
    if v.shape != w.shape and torch.broadcast_shapes(v.shape, w.shape) != v.shape:
        raise ValueError(f"v {tuple(v.shape)} and w {tuple(w.shape)} must broadcast to v's shape")
    if backend == "auto":
        if v.is_cuda:
            backend = "triton" if _cauchy_triton is not None else "torch"
        else:
            backend = "numba" if _cauchy_cpu is not None else "torch"
    if backend == "numba":
        if _cauchy_cpu is None:
            raise RuntimeError(f"Cauchy backend 'numba' is unavailable ({_NUMBA_ERROR!r}); `pip install numba`")
        return _cauchy_cpu.cauchy_numba(v, z, w, conj)  # shares each 1/(z - w) across the rows of v
    w = w.expand_as(v)
    if backend == "direct":
        return cauchy_direct(v, z, w, conj)
    if backend == "naive":
        return cauchy_naive(v, z, w, conj)
    if backend == "triton":
        if _cauchy_triton is None:
            raise RuntimeError(f"Cauchy backend 'triton' is unavailable ({_TRITON_ERROR!r}); "
                               "install it with `pip install triton` on a Linux x86_64 machine with CUDA, "
                               "or use backend='torch'")
        return _cauchy_triton.cauchy_triton(v, z, w, conj)
    return _CauchyChunked.apply(v, z, w, conj)


def cauchy_direct(v, z, w, conj=False):
    """Float64 reference: materialises (..., N, L) in complex128 and sums. Tests only."""
    v, z, w = v.to(torch.complex128), z.to(torch.complex128), w.to(torch.complex128)
    r = (v.unsqueeze(-1) / (z - w.unsqueeze(-1))).sum(-2)
    if conj:
        r = r + (v.conj().unsqueeze(-1) / (z - w.conj().unsqueeze(-1))).sum(-2)
    return r


def cauchy_naive(v, z, w, conj=False):
    """The reference's ``cauchy_naive``: one (..., 2N, L) tensor, autograd keeps it for backward."""
    if conj:
        v, w = torch.cat([v, v.conj()], -1), torch.cat([w, w.conj()], -1)
    return (v.unsqueeze(-1) / (z - w.unsqueeze(-1))).sum(-2)


def _chunk_size(batch_n: int, L: int) -> int:
    return max(1, min(L, _CHUNK_ELEMENTS // max(1, batch_n)))


class _CauchyChunked(torch.autograd.Function):
    """Chunked Cauchy sum with the analytic gradient (no (..., N, L) tensor is stored).

    With r_l = sum_n v_n/(z_l - w_n) [+ conj terms] and PyTorch's convention for complex gradients
    (x.grad = dLoss/dRe x + i dLoss/dIm x, g = r.grad):
        v.grad = sum_l g_l conj(1/(z_l - w_n))            [+ conj(g_l) / (z_l - conj(w_n))]
        w.grad = sum_l g_l conj(v_n/(z_l - w_n)^2)        [+ conj(g_l) conj(v_n)/(z_l - conj(w_n))^2]
    """

    @staticmethod
    def forward(ctx, v, z, w, conj):
        ctx.save_for_backward(v, z, w)
        ctx.conj = conj
        batch_shape, N, L = v.shape[:-1], v.shape[-1], z.shape[-1]
        v2, w2 = v.reshape(-1, N, 1), w.reshape(-1, N, 1)
        out = torch.empty(v2.shape[0], L, dtype=torch.promote_types(v.dtype, z.dtype), device=v.device)
        step = _chunk_size(v2.shape[0] * N * (2 if conj else 1), L)
        vc, wc = v2.conj(), w2.conj()
        for s in range(0, L, step):
            zc = z[s:s + step]
            r = (v2 / (zc - w2)).sum(-2)
            if conj:
                r += (vc / (zc - wc)).sum(-2)
            out[:, s:s + step] = r
        return out.reshape(*batch_shape, L)

    @staticmethod
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        conj = ctx.conj
        batch_shape, N, L = v.shape[:-1], v.shape[-1], z.shape[-1]
        g = grad.reshape(-1, 1, L)
        w2 = w.reshape(-1, N, 1)
        wc = w2.conj()
        gv = torch.zeros(g.shape[0], N, dtype=v.dtype, device=v.device)
        gw = torch.zeros_like(gv)
        step = _chunk_size(g.shape[0] * N * (2 if conj else 1), L)
        for s in range(0, L, step):
            zc, gc = z[s:s + step], g[..., s:s + step]
            inv = 1.0 / (zc.conj() - wc)  # conj(1 / (z - w)),  (B, N, Lc)
            ginv = gc * inv
            gv += ginv.sum(-1)
            gw += (ginv * inv).sum(-1)
            if conj:
                inv2 = 1.0 / (zc - wc)  # 1 / (z - conj(w))
                ginv2 = gc.conj() * inv2
                gv += ginv2.sum(-1)
                gw += (ginv2 * inv2).sum(-1)
        gw_first = gw  # holds sum g conj(1/(z-w))^2 [+ sum conj(g)/(z-conj w)^2]; multiply by conj(v)
        gw = gw_first * v.reshape(-1, N).conj()
        grad_v = gv.reshape(*batch_shape, N) if ctx.needs_input_grad[0] else None
        grad_w = gw.reshape(*batch_shape, N) if ctx.needs_input_grad[2] else None
        return grad_v, None, grad_w, None
