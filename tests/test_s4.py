import copy

import pytest
import torch

from conftest import run_steps
from sashimi_core.nn import s4
from sashimi_core.nn.hippo import nplr_legs
from sashimi_core.nn.s4 import S4Block, _Woodbury, fft_conv


def _perturb_dt(block, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        block.kernel.log_dt.add_(0.3 * torch.randn(block.kernel.log_dt.shape, generator=g))


def test_nplr_reconstructs_legs():
    """diag(Λ) - P P^* over both conjugate halves, mapped back, has the LegS spectrum (-1, ..., -N)."""
    N = 16
    Lambda, P, B = nplr_legs(N, B_clip=None)
    lam = torch.cat([Lambda, Lambda.conj()])
    p = torch.cat([P, P.conj()])
    A = torch.diag(lam) - torch.outer(p, p.conj())
    eig = torch.linalg.eigvals(A).real.sort().values
    print("eigenvalues", eig[:4], eig[-4:])
    # LegS is far from normal: its eigenvalues are sensitive at the 1e-4 level even in float64
    torch.testing.assert_close(eig, -torch.arange(N, 0, -1, dtype=torch.float64), atol=1e-3, rtol=0)


def _direct_conv(u, k):
    L = u.shape[-1]
    return torch.stack([(k[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1) for t in range(L)], -1)


def test_fft_conv_is_causal_convolution():
    u, k = torch.randn(2, 3, 50), torch.randn(3, 50)
    torch.testing.assert_close(fft_conv(u, k), _direct_conv(u, k), atol=1e-4, rtol=1e-4)


def test_fft_conv_gradients_are_those_of_the_direct_sum():
    torch.manual_seed(0)
    u = torch.randn(3, 4, 37, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 37, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fft_conv, (u, k))
    dy = torch.randn(3, 4, 37, dtype=torch.float64)
    fast = torch.autograd.grad(fft_conv(u, k), (u, k), dy)
    direct = torch.autograd.grad(_direct_conv(u, k), (u, k), dy)
    for a, b in zip(fast, direct, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # one input frozen: the other's gradient alone (the S4 kernel's k when u is data, and the reverse)
    (du,) = torch.autograd.grad(fft_conv(u, k.detach()), (u,), dy)
    torch.testing.assert_close(du, direct[0], atol=1e-10, rtol=1e-10)


def _saved_bytes(fn, *args) -> tuple[dict, torch.Tensor]:
    """({storage pointer: bytes} of what autograd keeps for backward of fn(*args), fn(*args))."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return saved, out


def _woodbury_expr(r):
    return r[0, 0] - r[0, 1] * r[1, 0] / (1 + r[1, 1])


def test_woodbury_gradients_are_those_of_the_expression():
    torch.manual_seed(0)
    r = (0.3 * torch.randn(2, 2, 3, 7, dtype=torch.complex128)).requires_grad_()
    assert torch.autograd.gradcheck(_Woodbury.apply, (r,))
    g = torch.randn(3, 7, dtype=torch.complex128)
    torch.testing.assert_close(_Woodbury.apply(r), _woodbury_expr(r), atol=1e-12, rtol=1e-12)
    (fast,) = torch.autograd.grad(_Woodbury.apply(r), (r,), g)
    (expr,) = torch.autograd.grad(_woodbury_expr(r), (r,), g)
    torch.testing.assert_close(fast, expr, atol=1e-12, rtol=1e-12)


def test_woodbury_keeps_two_terms_not_the_cauchy_sums():
    H, L = 4, 500
    r = torch.randn(2, 2, H, L, dtype=torch.complex64, requires_grad=True)
    saved, _ = _saved_bytes(_Woodbury.apply, r)
    assert r.untyped_storage().data_ptr() not in saved
    assert sum(saved.values()) <= 2 * H * L * 8
    saved_expr, _ = _saved_bytes(_woodbury_expr, r)
    assert sum(saved_expr.values()) >= 6 * H * L * 8  # what plain autograd keeps (the reason for the Function)


def test_fft_conv_keeps_no_spectrum_of_the_input_for_backward():
    """Backward keeps u (shared with the D skip) and the kernel's (H, L + 1) spectrum, nothing of size B."""
    B, H, L = 8, 4, 1000
    u = torch.randn(B, H, L, requires_grad=True)
    k = torch.randn(H, L, requires_grad=True)
    saved, y = _saved_bytes(fft_conv, u, k)
    extra = sum(saved.values()) - u.untyped_storage().nbytes()
    assert extra <= H * (L + 1) * 8, f"{extra} bytes kept beyond u: the (B, H, L + 1) spectra of u are back"
    y.sum().backward()
    assert u.grad.shape == u.shape and k.grad.shape == k.shape


@pytest.mark.parametrize("mode", ["nplr", "diag"])
@pytest.mark.parametrize("n_ssm", [1, None])
@pytest.mark.parametrize("final_act", ["glu", "id", None])
def test_conv_equals_step(mode, n_ssm, final_act):
    torch.manual_seed(0)
    block = S4Block(8, d_state=16, n_ssm=n_ssm, final_act=final_act, mode=mode).eval()
    _perturb_dt(block)
    x = torch.randn(2, 200, 8)
    with torch.no_grad():
        y = block(x)
        ys = run_steps(block, x)
    err = (y - ys).abs().max().item()
    print(mode, n_ssm, final_act, "conv vs step", err)
    assert err < 1e-4


def test_kernel_length_growth_and_truncation():
    torch.manual_seed(1)
    block = S4Block(4, d_state=16).eval()
    x = torch.randn(1, 96, 4)
    with torch.no_grad():
        y96 = block(x)
        assert int(block.kernel.l_kernel) == 96
        torch.testing.assert_close(block(x[:, :40]), y96[:, :40], atol=1e-5, rtol=0)  # shorter: truncated
        block(torch.randn(1, 300, 4))  # longer: C̃ doubles in place (96 -> 192 -> 384) like the reference
        assert int(block.kernel.l_kernel) == 384
        y = block(x)
        err = (y - run_steps(block, x)).abs().max().item()
    print("after growth: conv vs step", err)
    assert err < 1e-4


def test_state_from_sequence_matches_steps():
    """Several chunks with zeros in front (L = 333 is not a multiple of the chunk), two batch rows."""
    torch.manual_seed(2)
    block = S4Block(6, d_state=32).eval()
    _perturb_dt(block, 3)
    x = torch.randn(2, 333, 6)
    with torch.no_grad():
        block(x)
        state = block.init_state(2)
        for t in range(333):
            _, state = block.step(x[:, t], state)
        fast = block.state_from_sequence(x)
    err = (fast - state).abs().max().item()
    print("prompt state: sequence vs steps", err)
    assert err < 1e-4 * max(1.0, state.abs().max().item())


@pytest.mark.parametrize("mode,l_kernel", [("nplr", 0), ("nplr", 96), ("diag", 96)])
def test_chunked_conv_equals_the_full_length_convolution(mode, l_kernel):
    """A long sequence read in chunks (own kernel within a chunk, carried state from before it) gives the
    full-length FFT convolution; L = 1000 is not a multiple of the chunk; the kernel is never grown."""
    torch.manual_seed(3)
    block = S4Block(6, d_state=32, mode=mode).eval()
    _perturb_dt(block, 4)
    u = torch.randn(2, 6, 1000)
    with torch.no_grad():
        if l_kernel:
            block.kernel(l_kernel)
        chunked, none = block.kernel.chunked_conv(u, chunk=64)
        assert none is None and int(block.kernel.l_kernel) in ((l_kernel,) if l_kernel else (32, 64))  # C̃ for a chunk
        full = s4.fft_conv(u, copy.deepcopy(block.kernel)(1000))
        for at in (0, 1, 333, 640, 1000):  # on and off chunk boundaries, none and all of u
            again, state = block.kernel.chunked_conv(u, chunk=64, state_at=at)
            torch.testing.assert_close(again, chunked, atol=1e-5, rtol=1e-5)
            expect = block.kernel.state_from_sequence(u[..., :at].transpose(1, 2))
            assert (state - expect).abs().max() < 1e-5 * max(1.0, expect.abs().max().item()), at
            rest, _ = block.kernel.chunked_conv(u[..., at:], chunk=64, state=state)  # continued from that state
            torch.testing.assert_close(rest, chunked[..., at:], atol=1e-5 * max(1.0, full.abs().max().item()), rtol=0)
    err = (chunked - full).abs().max().item()
    print(mode, l_kernel, "chunked vs full convolution", err, "scale", full.abs().max().item())
    assert err < 1e-5 * max(1.0, full.abs().max().item())


def test_long_inference_uses_the_chunked_convolution_and_matches_steps(monkeypatch):
    monkeypatch.setattr(s4, "CHUNKED_CONV_MIN_LENGTH", 256)
    monkeypatch.setattr(s4, "CONV_CHUNK", 32)
    calls = []
    real = s4.S4Kernel.chunked_conv
    monkeypatch.setattr(s4.S4Kernel, "chunked_conv", lambda self, u, **kw: calls.append(u.shape) or real(self, u, **kw))
    torch.manual_seed(4)
    block = S4Block(4, d_state=16).eval()
    _perturb_dt(block, 5)
    x = torch.randn(1, 300, 4)
    with torch.no_grad():
        y = block(x)
        y2, state = block.forward_with_state(x, 287)
        stepped = block.init_state(1)
        for t in range(287):
            _, stepped = block.step(x[:, t], stepped)
    assert calls == [(1, 4, 300)] * 2
    err = (y - run_steps(block, x)).abs().max().item()
    print("chunked conv vs step", err)
    assert err < 1e-4
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-5)  # chunks aligned differently for the state
    assert (state - stepped).abs().max() < 1e-4 * max(1.0, stepped.abs().max().item())


def test_gradients_flow_to_ssm_parameters():
    block = S4Block(4, d_state=8)
    block(torch.randn(2, 64, 4)).square().sum().backward()
    k = block.kernel
    for name in ("log_dt", "A_real", "A_imag", "B", "P", "C"):
        g = getattr(k, name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    assert all(getattr(getattr(k, n), "_ssm", False) for n in ("log_dt", "A_real", "A_imag", "B", "P"))
    assert not getattr(k.C, "_ssm", False)


def test_block_trains_under_cpu_bf16_autocast():
    """`--amp-cpu`: forward and backward of an S4 block under CPU bf16 autocast (the FFTs run in float32:
    CPU has no bf16 FFT) give gradients close to float32's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), S4Block(8, d_state=16))  # the Linear hands S4 bf16
    x = torch.randn(2, 256, 8)
    model(x).square().sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    y.float().square().sum().backward()
    for name, p in model.named_parameters():
        rel = (p.grad - want[name]).norm() / want[name].norm()
        assert torch.isfinite(p.grad).all() and rel < 0.05, (name, rel.item())


def test_chunked_conv_reuses_weight_only_work_until_a_weight_changes(monkeypatch):
    """The kernel K[:C] and the step's real matrices are computed once per weights: a second read reuses them,
    an in-place change of a parameter (as an optimiser step) or load_state_dict recomputes them."""
    torch.manual_seed(4)
    kernel = S4Block(6, d_state=16).eval().kernel
    u = torch.randn(1, 6, 300)
    calls = []
    real_step = kernel._real_step
    monkeypatch.setattr(kernel, "_real_step", lambda: calls.append(1) or real_step())
    with torch.no_grad():
        first, _ = kernel.chunked_conv(u, chunk=64)
        again, _ = kernel.chunked_conv(u, chunk=64)
        assert len(calls) == 1 and torch.equal(first, again)
        kernel.log_dt.add_(0.3)  # in place: the same tensor, a new version
        changed, _ = kernel.chunked_conv(u, chunk=64)
        assert len(calls) == 2 and not torch.allclose(changed, first)
        fresh = copy.deepcopy(kernel)
        for name in ("_inference_cache", "_real_step"):  # nothing cached, the unpatched method
            fresh.__dict__.pop(name, None)
        torch.testing.assert_close(changed, fresh.chunked_conv(u, chunk=64)[0])
        kernel.load_state_dict(S4Block(6, d_state=16).kernel.state_dict())
        assert not torch.allclose(kernel.chunked_conv(u, chunk=64)[0], changed) and len(calls) == 3


def test_chunk_scan_compiled_equals_the_torch_loop():
    """The compiled scan across chunks (float32) and the torch loop it replaces (taken for float64) agree."""
    from sashimi_core.ops.chunk_scan import chunk_scan

    torch.manual_seed(5)
    n, H, B, S = 7, 3, 2, 8
    added = torch.randn(n, H, B, S)
    into = torch.randn(H, S, S) / S**0.5
    start = torch.zeros(n + 1, H, B, S)
    start[0] = torch.randn(H, B, S)
    fast = chunk_scan(added, into, start.clone())
    slow = chunk_scan(added.double(), into.double(), start.double())
    x = start[0].double()
    for i in range(n):  # the recurrence itself, one channel matrix at a time
        x = torch.einsum("hrs,hbs->hbr", into.double(), x) + added[i].double()
        torch.testing.assert_close(slow[i + 1], x)
    torch.testing.assert_close(fast, slow.float(), atol=1e-5, rtol=1e-5)
