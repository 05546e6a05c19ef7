"""Cauchy-sum backends against the float64 direct sum (forward and gradients).

The Triton kernels are run in a subprocess with TRITON_INTERPRET=1 (it must be set before Triton is
imported), so they are checked on CPU machines too.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sashimi_core.ops.cauchy as cauchy_mod
from sashimi_core.ops.cauchy import cauchy, cauchy_direct

ROOT = Path(__file__).resolve().parents[1]

# (v shape, w shape, L): plain, broadcast w over leading dims, S4's (2, 2, H, N/2) with w (H, N/2)
SHAPES = [((9,), (9,), 50), ((2, 3, 17), (3, 17), 43), ((2, 2, 4, 8), (4, 8), 61)]


def _inputs(v_shape, w_shape, L, dtype, generic_z=False, seed=0):
    """S4-like data: Re w <= -0.1 and z on the imaginary axis (or Re z >= 0), so |z - w| >= 0.1."""
    g = torch.Generator().manual_seed(seed)
    rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
    v = torch.complex(torch.randn(v_shape, generator=g), torch.randn(v_shape, generator=g))
    w = torch.complex(-0.1 - torch.rand(w_shape, generator=g), 10 * torch.randn(w_shape, generator=g))
    theta = torch.arange(L, dtype=torch.float64) * math.pi / (2 * L + 1)
    z = torch.complex(torch.zeros(L, dtype=torch.float64), 2 * torch.tan(theta))
    if generic_z:
        z = z + torch.rand(L, generator=g, dtype=torch.float64)
    return v.to(dtype), z.to(dtype), w.to(dtype), rdtype


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.to(b.dtype) - b).abs().max() / b.abs().max()).item()


def _tol(dtype):
    return 1e-5 if dtype == torch.complex64 else 1e-12


def _small_chunks(monkeypatch, v_shape, conj, step=7):
    """Make the torch backend use chunks of `step` nodes along L (L is never a multiple of 7 here)."""
    rows_n = math.prod(v_shape) * (2 if conj else 1)
    monkeypatch.setattr(cauchy_mod, "_CHUNK_ELEMENTS", rows_n * step)
    assert cauchy_mod._chunk_size(rows_n, 1000) == step


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("conj", [False, True])
@pytest.mark.parametrize("v_shape,w_shape,L", SHAPES)
def test_torch_matches_direct(monkeypatch, v_shape, w_shape, L, conj, dtype):
    _small_chunks(monkeypatch, v_shape, conj)
    for generic_z in (False, True):
        v, z, w, _ = _inputs(v_shape, w_shape, L, dtype, generic_z)
        out = cauchy(v, z, w, backend="torch", conj=conj)
        ref = cauchy_direct(v, z, w.expand_as(v), conj)
        err = _rel(out, ref)
        print(f"torch vs direct {v_shape} conj={conj} {dtype} generic_z={generic_z}: rel max diff {err:.2e}")
        assert out.shape == v.shape[:-1] + (L,) and out.dtype == dtype
        assert err < _tol(dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("conj", [False, True])
def test_torch_grads_match_direct(monkeypatch, conj, dtype):
    v_shape, w_shape, L = SHAPES[2]
    _small_chunks(monkeypatch, v_shape, conj)
    v, z, w, _ = _inputs(v_shape, w_shape, L, dtype, seed=1)
    v.requires_grad_(True)
    w.requires_grad_(True)
    g = torch.randn(v_shape[:-1] + (L,), dtype=torch.complex128)
    grads = torch.autograd.grad(cauchy(v, z, w, backend="torch", conj=conj), (v, w), g.to(dtype))
    refs = torch.autograd.grad(cauchy_direct(v, z, w.expand_as(v), conj), (v, w), g)
    for name, a, b in zip("vw", grads, refs, strict=True):
        err = _rel(a, b)
        print(f"torch grad {name} conj={conj} {dtype}: rel max diff {err:.2e}")
        assert a.shape == b.shape and err < _tol(dtype)


@pytest.mark.parametrize("conj", [False, True])
def test_torch_gradcheck(monkeypatch, conj):
    v_shape, w_shape, L = (2, 3, 5), (3, 5), 11
    _small_chunks(monkeypatch, v_shape, conj, step=3)
    v, z, w, _ = _inputs(v_shape, w_shape, L, torch.complex128, generic_z=True, seed=2)
    v.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, w: cauchy(v, z, w, backend="torch", conj=conj), (v, w))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("conj", [False, True])
def test_naive_matches_direct(conj, dtype):
    v, z, w, _ = _inputs((2, 3, 17), (3, 17), 43, dtype, generic_z=True)
    out = cauchy(v, z, w, backend="naive", conj=conj)
    err = _rel(out, cauchy_direct(v, z, w.expand_as(v), conj))
    print(f"naive vs direct conj={conj} {dtype}: rel max diff {err:.2e}")
    assert out.dtype == dtype and err < _tol(dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("conj", [False, True])
@pytest.mark.parametrize("v_shape,w_shape,L", SHAPES)
def test_numba_matches_direct(v_shape, w_shape, L, conj, dtype):
    """The default CPU backend: forward and both gradients (w shared across leading rows of v, as in S4)."""
    v, z, w, _ = _inputs(v_shape, w_shape, L, dtype, generic_z=True, seed=3)
    v.requires_grad_(True)
    w.requires_grad_(True)
    out = cauchy(v, z, w, backend="numba", conj=conj)
    ref = cauchy_direct(v.detach().to(torch.complex128).requires_grad_(True), z.to(torch.complex128),
                        w.detach().to(torch.complex128).expand(v.shape).requires_grad_(True), conj)
    assert out.shape == v.shape[:-1] + (L,) and out.dtype == dtype
    assert _rel(out.detach(), ref.detach()) < _tol(dtype)
    g = torch.randn(out.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad(out, (v, w), g.to(dtype))
    v64 = v.detach().to(torch.complex128).requires_grad_(True)
    w64 = w.detach().to(torch.complex128).requires_grad_(True)
    refs = torch.autograd.grad(cauchy_direct(v64, z.to(torch.complex128), w64.expand(v.shape), conj), (v64, w64), g)
    for name, a, b in zip("vw", grads, refs, strict=True):
        err = _rel(a, b)
        print(f"numba grad {name} {v_shape} conj={conj} {dtype}: rel max diff {err:.2e}")
        assert a.shape == b.shape and err < _tol(dtype)


def test_unknown_backend():
    v, z, w, _ = _inputs((4,), (4,), 5, torch.complex64)
    with pytest.raises(ValueError, match="unknown Cauchy backend"):
        cauchy(v, z, w, backend="keops")


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=300)


def test_triton_missing_gives_runtime_error():
    code = """
import sys
sys.modules["triton"] = None  # `import triton` now raises ImportError
import torch
from sashimi_core.ops.cauchy import cauchy
v, z, w = torch.ones(2, 3, dtype=torch.complex64), 1j * torch.arange(4.0).to(torch.complex64), -torch.ones(3)
assert cauchy(v, z, w.to(v.dtype)).shape == (2, 4)  # auto falls back to torch quietly
try:
    cauchy(v, z, w.to(v.dtype), backend="triton")
except RuntimeError as e:
    print("MSG", e)
"""
    res = _run_python(code)
    assert res.returncode == 0, res.stderr
    assert "MSG" in res.stdout and "pip install triton" in res.stdout and "backend='torch'" in res.stdout


_TRITON_CHECK = """
import json, warnings
import torch
from sashimi_core.ops.cauchy import cauchy, cauchy_direct
from sashimi_core.ops import cauchy_triton as ct
warnings.simplefilter("ignore")  # the interpreter warns about 1/0 in masked lanes
exec(INPUTS_SRC)
results = []
cases = [((2, 3, 19), (3, 19), 45, True), ((2, 2, 4, 8), (4, 8), 70, False)]
for dtype in (torch.complex64, torch.complex128):
    for conj in (False, True):
        for v_shape, w_shape, L, generic_z in cases:
            v, z, w, _ = _inputs(v_shape, w_shape, L, dtype, generic_z)
            v.requires_grad_(True); w.requires_grad_(True)
            g = torch.randn(v_shape[:-1] + (L,), dtype=torch.complex128)
            out = cauchy(v, z, w, backend="triton", conj=conj)
            gt = torch.autograd.grad(out, (v, w), g.to(dtype))
            gtorch = torch.autograd.grad(cauchy(v, z, w, backend="torch", conj=conj), (v, w), g.to(dtype))
            ref = cauchy_direct(v, z, w.expand_as(v), conj)
            gref = torch.autograd.grad(ref, (v, w), g)
            rel = lambda a, b: ((a.to(b.dtype) - b).abs().max() / b.abs().max()).item()
            results.append(dict(dtype=str(dtype), conj=conj, shape=v_shape, L=L, out_dtype=str(out.dtype),
                                fwd=rel(out, ref), gv_direct=rel(gt[0], gref[0]),
                                gw_direct=rel(gt[1], gref[1]), gv_torch=rel(gt[0], gtorch[0]),
                                gw_torch=rel(gt[1], gtorch[1])))
# end to end: an S4 kernel (NPLR, conj=True, broadcast w) with the Triton backend vs the torch backend
from sashimi_core.nn.s4 import S4Kernel
torch.manual_seed(0)
kt = S4Kernel(4, 16, n_ssm=1, cauchy_backend="triton")
kc = S4Kernel(4, 16, n_ssm=1, cauchy_backend="torch")
kc.load_state_dict(kt.state_dict())
kt_out, kc_out = kt(100), kc(100)
kt_out.square().sum().backward()
kc_out.square().sum().backward()
s4 = dict(k=rel(kt_out, kc_out), **{n: rel(p.grad, q.grad) for (n, p), q in
                                    zip(kt.named_parameters(), kc.parameters(), strict=True)})
errors = []
c64 = torch.complex64


def no_interpret():  # CPU tensors without TRITON_INTERPRET=1: a clear error, not a Triton crash
    import os
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        ct.cauchy_triton(torch.ones(3, dtype=c64), torch.ones(5, dtype=c64), torch.ones(3, dtype=c64))
    finally:
        os.environ["TRITON_INTERPRET"] = "1"


for bad in [lambda: ct.cauchy_triton(torch.ones(3, 4), torch.ones(5), torch.ones(3, 4)),
            lambda: ct.cauchy_triton(torch.ones(3, 4, dtype=c64), torch.ones(5, 2, dtype=c64),
                                     torch.ones(3, 4, dtype=c64)),
            lambda: ct._forward(torch.ones(4, 3, dtype=c64).t(), torch.ones(5, dtype=c64),
                                torch.ones(3, 4, dtype=c64), False),
            no_interpret]:
    try:
        bad()
        errors.append(None)
    except ValueError as e:
        errors.append(str(e))
print("RESULT" + json.dumps(dict(results=results, errors=errors, s4=s4)))
"""


def test_triton_interpret_matches_direct():
    try:
        import triton  # noqa: F401
    except Exception as exc:
        pytest.skip(f"Triton is not importable here ({exc!r}); `pip install triton` to test its kernels")
    import inspect

    code = f"INPUTS_SRC = {inspect.getsource(_inputs)!r}\nimport math\n" + _TRITON_CHECK
    res = _run_python(code, TRITON_INTERPRET="1")
    assert res.returncode == 0, res.stderr[-4000:]
    line = next(s for s in res.stdout.splitlines() if s.startswith("RESULT"))
    data = json.loads(line[len("RESULT"):])
    for r in data["results"]:
        print("triton (interpret)", r)
        tol = 1e-5 if r["dtype"] == "torch.complex64" else 1e-12
        assert r["out_dtype"] == r["dtype"]
        assert max(r["fwd"], r["gv_direct"], r["gw_direct"], r["gv_torch"], r["gw_torch"]) < tol, r
    print("triton S4Kernel vs torch backend (kernel, grads)", data["s4"])
    assert max(data["s4"].values()) < 1e-4, data["s4"]
    print("triton errors", data["errors"])
    assert all(e is not None for e in data["errors"]), data["errors"]
    assert "complex" in data["errors"][0] and "1-D" in data["errors"][1] and "contiguous" in data["errors"][2]
    assert "CUDA" in data["errors"][3] and "TRITON_INTERPRET=1" in data["errors"][3]
