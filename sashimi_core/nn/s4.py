"""S4: the structured state space layer (Gu, Goel, Ré 2022), in convolution and recurrent modes.

Per channel h the continuous SSM is x' = A x + B u, y = C x + D u, with A = Λ - P Q^* (NPLR, rank 1, Q = P for
HiPPO-LegS). N = d_state modes are stored as N/2 complex numbers; the other half are their conjugates.

Convolution mode (S4 paper, Alg. 1): the length-L kernel K_l = C̃ Ā^l B̄ comes from its truncated generating
function at the roots of unity ω_k, with the bilinear transform z_k = 2(1 - ω_k)/(1 + ω_k):
    K̂(ω) = 2/(1+ω) · [k00 - k01 (1 + k11)^{-1} k10],  k_ab = sum_n dt a_n b_n / (z - dt Λ_n)   (Woodbury)
and K = irfft(K̂). C̃ = (I - Ā^L)^T C is stored instead of C (the "C̃ trick"), exactly like the reference:
``l_kernel`` records the length C̃ is attuned to (0 = the parameter still holds the raw C).

Recurrent mode: bilinear discretisation Ā = (2/dt - A)^{-1}(2/dt + A), B̄ = (2/dt - A)^{-1} 2B. The step
applies (2/dt - A)^{-1} with Woodbury in O(N) (the reference's 'linear' step). All discrete quantities are
computed in float64 and only then cast; Ā is never diagonalised in float32 (its eigenvectors have condition
number ~1e8 at the LegS init, which is why the reference's float32 'diagonal' step is off by O(0.5)).
Where powers Ā^L are needed for C ↔ C̃, we use the float64 eigendecomposition of A, which is shared by all
channels of one SSM copy (dt only changes the eigenvalues μ = (2/dt + a)/(2/dt - a)). A long input read at
inference (prompt → output and state, `chunked_conv`) uses the step itself as a real S x S matrix per channel
(S = d_state), the same recurrence the step runs, applied a chunk of steps at a time.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi_core.nn.hippo import nplr_legs
from sashimi_core.ops.cauchy import cauchy
from sashimi_core.ops.chunk_scan import chunk_scan

CONV_CHUNK = 512  # most steps per chunk of `S4Kernel.chunked_conv` (it takes ~sqrt(L), at least 32)
# Inference convolves in chunks from this length up; a read that asks for the state (a prompt) from
# CHUNKED_READ_MIN_LENGTH up: then no length-L Cauchy kernel is needed (1-s prompt, sashimi-4: 0.68 -> 0.32 s).
CHUNKED_CONV_MIN_LENGTH = 1 << 13
CHUNKED_READ_MIN_LENGTH = 1


def _c(x: torch.Tensor) -> torch.Tensor:
    """Real view (..., 2) -> complex (...)."""
    return torch.view_as_complex(x.contiguous() if x.stride(-1) != 1 else x)


def _ssm_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Register an SSM parameter tagged for the lr 1e-3 / no weight decay group (see train.py)."""
    p = nn.Parameter(value)
    p._ssm = True
    module.register_parameter(name, p)


def weights_stamp(module: nn.Module) -> list | None:
    """What identifies a module's current weights: each parameter's and buffer's storage and version (an
    optimiser step, load_state_dict or .to() changes it). None when a weight is an inference tensor: no version
    counter to tell a change by, so nothing keyed by it may be reused."""
    weights = (*module.parameters(), *module.buffers())
    return None if any(t.is_inference() for t in weights) else [(t.data_ptr(), t._version) for t in weights]


class S4Kernel(nn.Module):
    """NPLR (S4) or diagonal (S4D) SSM kernel for H channels; produces K (H, L) and step-mode matrices.

    Parameters (reference names and layout where they exist):
        log_dt (H,), A_real (S, N/2) with Re Λ = -exp(A_real), A_imag (S, N/2) with Im Λ = -A_imag,
        B (S, N/2, 2), P (S, N/2, 2) [nplr only], C (H, N/2, 2) holding C̃ once l_kernel > 0.
    S = n_ssm copies of (Λ, B, P) are shared across channels (S = H when n_ssm is None).
    """

    def __init__(self, d_model: int, d_state: int = 64, n_ssm: int | None = 1, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, mode: str = "nplr", cauchy_backend: str = "auto"):
        super().__init__()
        if mode not in ("nplr", "diag"):
            raise ValueError(f"mode must be 'nplr' or 'diag', got {mode!r}")
        S = d_model if n_ssm is None else n_ssm
        if d_model % S:
            raise ValueError(f"n_ssm={S} must divide d_model={d_model}")
        self.H, self.N2, self.S, self.mode, self.cauchy_backend = d_model, d_state // 2, S, mode, cauchy_backend
        Lambda, P, B = nplr_legs(d_state)  # complex128 (N/2,)
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        _ssm_param(self, "log_dt", log_dt)
        _ssm_param(self, "A_real", torch.log(-Lambda.real).float().repeat(S, 1))
        _ssm_param(self, "A_imag", (-Lambda.imag).float().repeat(S, 1))
        _ssm_param(self, "B", torch.view_as_real(B.to(torch.complex64)).repeat(S, 1, 1))
        if mode == "nplr":
            _ssm_param(self, "P", torch.view_as_real(P.to(torch.complex64)).repeat(S, 1, 1))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(d_model, self.N2, dtype=torch.complex64)))
        self.register_buffer("l_kernel", torch.tensor(0, dtype=torch.int64))

    # ---- parameters ---------------------------------------------------------------------------------
    def _params(self, dtype=None):
        """dt (H, 1) real; Λ, B, P, C (H, N/2) complex (P is None for diag). dtype: complex dtype."""
        rep = self.H // self.S  # channel h uses SSM copy h % S (reference: repeat '(v t)')
        Lambda = (-torch.exp(self.A_real) - 1j * self.A_imag).repeat(rep, 1)
        B = _c(self.B).repeat(rep, 1)
        P = _c(self.P).repeat(rep, 1) if self.mode == "nplr" else None
        C = _c(self.C)
        dt = torch.exp(self.log_dt).unsqueeze(-1)
        if dtype is not None:
            rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
            Lambda, B, C, dt = Lambda.to(dtype), B.to(dtype), C.to(dtype), dt.to(rdtype)
            P = P.to(dtype) if P is not None else None
        return dt, Lambda, B, P, C

    # ---- convolution mode ---------------------------------------------------------------------------
    def forward(self, L: int) -> torch.Tensor:
        """Convolution kernel K (H, L), real. Grows C̃'s length first if L exceeds it (as the reference)."""
        if int(self.l_kernel) == 0 or L > int(self.l_kernel):
            self._setup_C(L)
        Lk = int(self.l_kernel)
        dt, Lambda, B, P, C = self._params()
        w = dt * Lambda  # (H, N/2)
        k = torch.arange((Lk + 1) // 2, device=w.device, dtype=torch.float64)  # nodes below Nyquist
        theta = math.pi * k / Lk
        omega = torch.polar(torch.ones_like(theta), -2 * theta).to(w.dtype)  # ω_k = exp(-2πik/Lk)
        z = (2j * torch.tan(theta)).to(w.dtype)  # 2(1 - ω)/(1 + ω) = 2i tan(θ), exact
        if P is None:  # S4D: plain Cauchy sum
            k_f = cauchy(dt * B * C, z, w, backend=self.cauchy_backend, conj=True)
        else:
            left = torch.stack([B, P])  # (2, H, N/2)
            right = torch.stack([C, P.conj()])
            v = dt * left.unsqueeze(1) * right.unsqueeze(0)  # (2, 2, H, N/2)
            r = cauchy(v, z, w, backend=self.cauchy_backend, conj=True)  # (2, 2, H, Lk')
            k_f = _Woodbury.apply(r)  # r00 - r01 r10 / (1 + r11): Woodbury, rank 1
        k_f = k_f * 2 / (1 + omega)
        if Lk % 2 == 0:  # ω = -1: the bilinear map sends it to ∞; the limit is C̃ dt B / 2 over all N modes
            k_f = torch.cat([k_f, (dt * B * C).sum(-1, keepdim=True).real.to(k_f.dtype)], -1)
        return torch.fft.irfft(k_f, n=Lk)[..., :L]

    # ---- float64 discrete-time machinery -----------------------------------------------------------
    def _eig(self):
        """Eigendecomposition of A over all N modes, per SSM copy, in complex128.

        Returns a (S, N), V (S, N, N), V^{-1} (S, N, N) with A = V diag(a) V^{-1}."""
        Lambda = -torch.exp(self.A_real.double()) - 1j * self.A_imag.double()  # (S, N/2)
        lam = torch.cat([Lambda, Lambda.conj()], -1)
        A = torch.diag_embed(lam)
        if self.mode == "nplr":
            P = _c(self.P).to(torch.complex128)
            p, q = torch.cat([P, P.conj()], -1), torch.cat([P.conj(), P], -1)
            A = A - p.unsqueeze(-1) * q.unsqueeze(-2)  # full-space low-rank term P Q^T
        a, V = torch.linalg.eig(A)
        return a, V, torch.linalg.inv(V)

    def _per_channel(self, x: torch.Tensor) -> torch.Tensor:
        """(S, ...) -> (H, ...) following the channel -> copy map h -> h % S."""
        return x.repeat(self.H // self.S, *([1] * (x.dim() - 1)))

    def _mu(self, a):
        """Eigenvalues of Ā per channel: (H, N) complex128 from a (S, N)."""
        r = 2.0 / torch.exp(self.log_dt.double()).unsqueeze(-1)  # 2/dt (H, 1)
        a = self._per_channel(a)
        return (r + a) / (r - a), r, a

    @torch.no_grad()
    def _setup_C(self, L: int) -> None:
        """Make C̃ cover length L, in place (as the reference). l_kernel = 0 (raw C): C̃ = C (I - Ā^L).
        Otherwise double l_kernel m times until it covers L, in one go:
        C̃_{2^m l} = C̃_l (I + Ā^l)(I + Ā^{2l})...(I + Ā^{2^(m-1) l}) = C̃_l (I - Ā^{2^m l}) (I - Ā^l)^{-1}."""
        lk = int(self.l_kernel)
        a, V, Vi = self._eig()
        mu, _, _ = self._mu(a)
        V, Vi = self._per_channel(V), self._per_channel(Vi)
        C = _c(self.C).to(torch.complex128)
        c = torch.cat([C, C.conj()], -1)  # (H, N) row vectors
        cV = torch.einsum("hn,hnm->hm", c, V)
        if lk == 0:
            new_l, scale = L, 1 - mu**L
        else:
            new_l = lk
            while new_l < L:
                new_l *= 2
            scale = (1 - mu**new_l) / (1 - mu**lk)
        c_new = torch.einsum("hm,hmk->hk", cV * scale, Vi)
        self.C.copy_(torch.view_as_real(c_new[:, : self.N2].to(torch.complex64)))
        self.l_kernel.fill_(new_l)

    @torch.no_grad()
    def step_params(self, dtype=torch.complex64) -> dict:
        """Discrete step-mode quantities, computed in float64 then cast. All (H, N/2) complex.

        s' = Dinv (t - P 2Re<R, t>),  t = E s - P 2Re<conj P, s> + 2 B u,  y = 2Re<dC, s'>  (Woodbury step)."""
        dt, Lambda, B, P, C = self._params(torch.complex128)
        Dinv = 1.0 / (2.0 / dt - Lambda)  # (2/dt - Λ)^{-1}
        E = 2.0 / dt + Lambda
        out = {"Dinv": Dinv, "E": E, "B2": 2 * B}
        if P is not None:
            denom = 1 + 2 * (P.conj() * Dinv * P).sum(-1, keepdim=True).real  # 1 + Q* (2/dt - Λ)^{-1} P
            out.update(P=P, R=P.conj() * Dinv / denom)
        out["dC2"] = 2 * self._raw_C()
        return {k: v.to(dtype) for k, v in out.items()}

    @torch.no_grad()
    def _raw_C(self) -> torch.Tensor:
        """C from C̃: solve c (I - Ā^L) = c̃ in the eigenbasis (float64). (H, N/2) complex128."""
        C = _c(self.C).to(torch.complex128)
        L = int(self.l_kernel)
        if L == 0:
            return C
        a, V, Vi = self._eig()
        mu, _, _ = self._mu(a)
        c = torch.cat([C, C.conj()], -1)
        cV = torch.einsum("hn,hnm->hm", c, self._per_channel(V)) / (1 - mu**L)
        return torch.einsum("hm,hmk->hk", cV, self._per_channel(Vi))[:, : self.N2]

    # ---- reading long inputs: the step as a real linear map, applied a chunk at a time -------------
    def _real_step(self):
        """The step s' = Ā s + B̄ u, y = Re<dC2, s'> (see `step_params`) as real maps on R^(2 N/2) (Re s, Im s),
        float64, per channel: Ā (H, S, S), B̄ (H, S), the read-out row c (H, S), S = d_state. Built by stepping
        the S basis states, so it is exactly the recurrence `S4Block.step` runs (never diagonalised)."""
        p = self.step_params(torch.complex128)
        n2 = self.N2
        eye = torch.eye(n2, dtype=torch.complex128, device=p["E"].device)
        basis = torch.cat([eye, 1j * eye]).expand(self.H, 2 * n2, n2)  # (H, S, N/2): Re then Im unit states

        def step(t):  # t = E s + B2 u, given; returns s' (..., N/2)
            if "P" in p:
                P, R = p["P"].unsqueeze(-2), p["R"].unsqueeze(-2)
                t = t - P * (2 * (R * t).sum(-1, keepdim=True).real)
            return p["Dinv"].unsqueeze(-2) * t

        corrected = p["E"].unsqueeze(-2) * basis
        if "P" in p:
            P = p["P"].unsqueeze(-2)
            corrected = corrected - P * (2 * (P.conj() * basis).sum(-1, keepdim=True).real)
        columns = step(corrected)  # (H, S, N/2): Ā applied to each basis state
        A = torch.cat([columns.real, columns.imag], -1).transpose(1, 2)  # (H, S, S), column k = Ā e_k
        b = step(p["B2"].unsqueeze(-2)).squeeze(-2)
        c = torch.cat([p["dC2"].real, -p["dC2"].imag], -1)  # Re<dC2, s> = c . (Re s, Im s)
        return A.contiguous(), torch.cat([b.real, b.imag], -1), c

    def _weights_cached(self, name: str, make):
        """make() (a function of the weights only), kept until a parameter or buffer is replaced or changed in
        place (an optimiser step, load_state_dict, .to()): inference reads the same model many times."""
        cache = self.__dict__.setdefault("_inference_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] is None or hit[0] != weights_stamp(self):
            value = make()
            cache[name] = hit = (weights_stamp(self), value)  # stamped after make(): growing C̃ changes the weights
        return hit[1]

    def _read_cached(self, key, make):
        """make(), kept for the rest of a read (`reading`) and not beyond: the chunk tables are H C S floats."""
        scope = self.__dict__.get("_read_scope")
        if scope is None:
            return make()
        if key not in scope:
            scope[key] = make()
        return scope[key]

    def _chunk_tables(self, C: int):
        """For chunks of C steps: what a chunk's inputs add to the state, fed (H, C, S) float32 with row j =
        Ā^(C-1-j) B̄; the read-out of the state entering a chunk, read (H, S, C) float32 with column t = c Ā^(t+1);
        and Ā^C (H, S, S). Tables by doubling (log2 C batched matmuls; the powers of Ā in float64)."""
        def make():
            A, b, c = self._weights_cached("real_step", self._real_step)
            fed, read, power = b.float().unsqueeze(1), (c.unsqueeze(1) @ A).float(), A  # rows for j, t < 1
            while fed.shape[1] < C:  # m rows -> 2m: fed = [fed Ā^m^T, fed] (falling powers), read = [read, read Ā^m]
                p = power.float()
                fed = torch.cat([fed @ p.transpose(1, 2), fed], 1)
                read = torch.cat([read, read @ p], 1)
                power = power @ power
            into = power if fed.shape[1] == C else torch.linalg.matrix_power(A, C)  # Ā^C: C is mostly a power of 2
            return fed[:, -C:].contiguous(), read[:, :C].transpose(1, 2).contiguous(), into.float()
        return self._read_cached(("tables", C), make)

    def _toeplitz(self, C: int) -> torch.Tensor:
        """The kernel's causal convolution within a chunk as a matrix: (H, C, C) with [j, t] = K_(t-j), t >= j."""
        def make():
            k = self._weights_cached(f"kernel_{C}", lambda: self.forward(C))  # (H, C)
            lag = torch.arange(C, device=k.device)
            lag = lag.unsqueeze(0) - lag.unsqueeze(1)  # [j, t] = t - j
            return k[:, lag.clamp(min=0)] * (lag >= 0)
        return self._read_cached(("toeplitz", C), make)

    def _scan_chunks(self, uc: torch.Tensor, tables, state: torch.Tensor | None = None) -> torch.Tensor:
        """States entering each chunk of uc (H, B, n, C) real and after the last, from `state` (the step-mode
        state before uc, (B, H, N/2) complex; None = zero): (n + 1, H, B, S) float32."""
        H, batch, n, C = uc.shape
        fed, _, into = tables
        added = torch.bmm(uc.reshape(H, batch * n, C), fed).view(H, batch, n, fed.shape[-1])
        added = added.permute(2, 0, 1, 3).contiguous()  # (n, H, B, S): each chunk's slice contiguous
        states = torch.zeros(n + 1, H, batch, fed.shape[-1], device=uc.device)
        if state is not None:
            states[0] = torch.cat([state.real, state.imag], -1).transpose(0, 1)
        return chunk_scan(added, into, states)  # x_(i+1) = Ā^C x_i + added_i, float32 like the step itself

    def _state_at(self, states: torch.Tensor, uc: torch.Tensor, m: int, tables) -> torch.Tensor:
        """The step-mode state after the first m steps of uc (H, B, n, C), from its chunks' entering states:
        x_m = Ā^r x_i + sum_(j<r) Ā^(r-1-j) B̄ u_(iC+j), i = m // C, r = m % C. (B, H, N/2) complex64."""
        C = uc.shape[-1]
        i, r = divmod(m, C)
        x = states[i]
        if r:
            A = self._weights_cached("real_step", self._real_step)[0]
            x = torch.bmm(x, torch.linalg.matrix_power(A, r).transpose(1, 2).float())
            x = x + torch.bmm(uc[:, :, i, :r], tables[0][:, C - r:])  # rows Ā^(r-1-j) B̄
        return torch.complex(x[..., : self.N2], x[..., self.N2:]).transpose(0, 1).to(torch.complex64)

    @torch.no_grad()
    def state_from_sequence(self, u: torch.Tensor) -> torch.Tensor:
        """State after consuming u (B, L, H): what L calls to `step` leave. Returns (B, H, N/2) complex64.

        u is cut into chunks of C ~ sqrt(L) steps; each chunk's contribution is one batched matmul against a
        table of Ā^j B̄, and the chunks are chained by Ā^C (`_scan_chunks`)."""
        batch, L = u.shape[:2]
        C = _chunk_steps(L)
        n = -(-L // C)
        uc = F.pad(u.float().permute(2, 0, 1), (0, n * C - L)).contiguous().view(self.H, batch, n, C)
        tables = self._chunk_tables(C)
        return self._state_at(self._scan_chunks(uc, tables), uc, L, tables)

    @torch.no_grad()
    def chunked_conv(self, u: torch.Tensor, chunk: int | None = None, state_at: int | None = None,
                     state: torch.Tensor | None = None, skip: torch.Tensor | None = None):
        """K * u (the kernel's causal convolution) for a long u (B, H, L) real, without a length-L kernel, from
        the step-mode `state` before u ((B, H, N/2) complex; None = zero), plus skip * u when skip (H,) is given.
        Returns (y (B, H, L), the state after u[..., :state_at] (B, H, N/2) complex64, or None when state_at is None).

        u is cut into chunks of C steps (chunk, default CONV_CHUNK, or fewer: ~sqrt(L)). A chunk's output is two
        batched matmuls per channel: its own inputs against the Toeplitz matrix of K[:C] (skip on its diagonal),
        and the state x carried into it against the read-out table c Ā^(t+1) (offset t). The states come from
        `_scan_chunks`. Costs grow as L (C + 2 S), all of it in matmuls (C ~ 128 beats an FFT per chunk)."""
        batch, H, L = u.shape
        if L == 0:  # nothing to convolve; the state is the one given
            zero = torch.zeros(batch, H, self.N2, dtype=torch.complex64, device=u.device)
            return u.clone(), (None if state_at is None else zero if state is None else state.to(torch.complex64))
        C = _chunk_steps(L, chunk or CONV_CHUNK)
        if int(self.l_kernel):
            C = min(C, int(self.l_kernel))  # never grow C̃ here
        n = -(-L // C)
        uc = F.pad(u.float().transpose(0, 1), (0, n * C - L)).contiguous().view(H, batch, n, C)  # matmul-ready
        conv = self._toeplitz(C)  # first: K[:C] may set up C̃ (a weight), which the step's matrices are keyed by
        tables = self._chunk_tables(C)
        states = self._scan_chunks(uc, tables, state)  # (n + 1, H, B, S)
        if skip is not None:
            conv = conv + torch.diag_embed(skip.float().unsqueeze(-1).expand(H, C))
        y = torch.bmm(uc.reshape(H, batch * n, C), conv)
        y.baddbmm_(states[:n].permute(1, 2, 0, 3).reshape(H, batch * n, states.shape[-1]), tables[1])
        y = y.view(H, batch, n * C)[..., :L].transpose(0, 1).to(u.dtype)
        return y, (None if state_at is None else self._state_at(states, uc, state_at, tables))


def _chunk_steps(L: int, most: int | None = None) -> int:
    """Steps per chunk for a read of L steps: a power of two from sqrt(L) to 2 sqrt(L) (the chunk tables cost
    ~C per step, the scan ~1/C), at least 32, at most `most`."""
    C = max(32, 1 << math.ceil(math.log2(max(L, 1)) / 2))
    return C if most is None else min(C, most)


@contextmanager
def reading(model: nn.Module):
    """While a long input is read in several passes (`SaShiMi.prefill`), each S4 kernel keeps its chunk tables."""
    kernels = [m for m in model.modules() if isinstance(m, S4Kernel)]
    for kernel in kernels:
        kernel._read_scope = {}
    try:
        yield
    finally:
        for kernel in kernels:
            kernel.__dict__.pop("_read_scope", None)


class _Woodbury(torch.autograd.Function):
    """k = r00 - r01 r10 / (1 + r11) for r (2, 2, H, L') complex, keeping two (H, L') terms for backward.

    With a = r01 / (1 + r11) and b = r10 / (1 + r11), k = r00 - a r10 is holomorphic in r with
    dk/dr00 = 1, dk/dr01 = -b, dk/dr10 = -a, dk/dr11 = a b; torch's gradient is g conj(dk/dr). Autograd on the
    expression kept all of r plus the product and the denominator (six terms, 0.34 GB of a sashimi-8 step at
    L = 16000); here a and b (two)."""

    @staticmethod
    def forward(ctx, r):
        d = 1 + r[1, 1]
        a, b = r[0, 1] / d, r[1, 0] / d
        ctx.save_for_backward(a, b)
        return r[0, 0] - a * r[1, 0]

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        a, b = a.conj(), b.conj()
        return torch.stack([torch.stack([g, -g * b]), torch.stack([-g * a, g * a * b])])


class _FFTConv(torch.autograd.Function):
    """y = irfft(rfft(u) rfft(k))[:L], zero-padded to n = 2L, saving u and the kernel's spectrum only.

    Left to autograd, the product keeps both spectra for backward: rfft(u) is (B, H, L + 1) complex, twice u's
    bytes, in every S4 layer (0.46 GB of a sashimi-8 step at L = 16000). Here backward recomputes it from u
    (which the D skip keeps anyway) and uses the adjoint of a causal convolution, a correlation:
        du_j = sum_t dy_t k_{t-j} = irfft(dY conj(K))[:L],   dk_s = sum_{b,t} dy_t u_{t-s} = irfft(sum_b dY conj(U))[:L]
    (no wrap-around for lags below L since n >= 2L - 1)."""

    @staticmethod
    def forward(ctx, u, k):
        L = u.shape[-1]
        n = 2 * L
        k_f = torch.fft.rfft(k, n=n)
        ctx.save_for_backward(u, k_f)
        return torch.fft.irfft(torch.fft.rfft(u, n=n) * k_f, n=n)[..., :L]

    @staticmethod
    def backward(ctx, dy):
        u, k_f = ctx.saved_tensors
        L = u.shape[-1]
        n = 2 * L
        dy_f = torch.fft.rfft(dy, n=n)
        du = dk = None
        if ctx.needs_input_grad[0]:
            du = torch.fft.irfft(dy_f * k_f.conj(), n=n)[..., :L].to(u.dtype)
        if ctx.needs_input_grad[1]:
            u_f = torch.fft.rfft(u.to(k_f.real.dtype), n=n)  # u is bf16 under CPU autocast: no bf16 FFT there
            dk = torch.fft.irfft((dy_f * u_f.conj()).sum(0), n=n)[..., :L].to(k_f.real.dtype)
        return du, dk


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = sum_{s<=t} k_s u_{t-s}. u (B, H, L) real, k (H, L) real -> (B, H, L)."""
    return _FFTConv.apply(u, k)


class S4Block(nn.Module):
    """The reference's S4Block: y = Linear(GELU(K * u + D u)) [+ GLU]. (B, L, H) -> (B, L, H).

    final_act="glu": Linear H -> 2H then GLU; "id": Linear H -> H; None: no output projection."""

    def __init__(self, d_model: int, d_state: int = 64, n_ssm: int | None = 1, final_act: str | None = "glu",
                 dropout: float = 0.0, mode: str = "nplr", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 cauchy_backend: str = "auto"):
        super().__init__()
        self.H = d_model
        self.kernel = S4Kernel(d_model, d_state, n_ssm, dt_min, dt_max, mode, cauchy_backend)
        self.D = nn.Parameter(torch.randn(d_model))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if final_act == "glu":
            self.output_linear = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))
        elif final_act == "id":
            self.output_linear = nn.Sequential(nn.Linear(d_model, d_model), nn.Identity())
        elif final_act is None:
            self.output_linear = nn.Identity()
        else:
            raise ValueError(f"final_act must be 'glu', 'id' or None, got {final_act!r}")
        self._step_cache = None

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        return self.output_linear(self.dropout(self.activation(y)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, H) -> (B, L, H)."""
        return self.forward_with_state(x)[0]

    def forward_with_state(self, x: torch.Tensor, n: int | None = None, state: torch.Tensor | None = None):
        """(forward(x), the recurrent state after x[:, :n] (what n calls to `step` leave; None when n is None)).
        At inference a long sequence, or any whose state is asked for, is convolved in chunks, and the state comes
        from the same pass.
        state: the recurrent state before x (inference only; None = the zero state of `init_state`)."""
        L = x.shape[1]
        u = x.transpose(1, 2)  # (B, H, L)
        chunked_from = CHUNKED_CONV_MIN_LENGTH if n is None else CHUNKED_READ_MIN_LENGTH
        if state is not None or (not torch.is_grad_enabled() and L >= chunked_from):
            y, state = self.kernel.chunked_conv(u, state_at=n, state=state, skip=self.D)  # no length-L kernel
        else:
            y = torch.addcmul(fft_conv(u, self.kernel(L)), u, self.D.unsqueeze(-1))  # k (H, L)
            if n is not None:
                state = self.kernel.state_from_sequence(x[:, :n])
        if n is not None:  # the next `step` makes the step matrices of these weights (a long prompt is read in
            self._step_cache = None  # several passes: once, not per pass; not kept across calls: made in
            # inference mode, they could not serve a step under grad)
        return self._post(y.transpose(1, 2)), state

    # ---- recurrent mode -----------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> torch.Tensor:
        """Zero state (B, H, N/2) complex64; also (re)computes the step matrices from the current weights."""
        self._step_cache = self.kernel.step_params()
        return torch.zeros(batch_size, self.H, self.kernel.N2, dtype=torch.complex64, device=self.D.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, H), state (B, H, N/2) complex -> y_t (B, H), new state. Exact bilinear recurrence."""
        p = self._step_cache  # one read: a prompt read in another thread may reset it meanwhile
        if p is None:
            p = self._step_cache = self.kernel.step_params()
        u = x_t.to(torch.complex64).unsqueeze(-1)  # (B, H, 1)
        t = p["E"] * state + p["B2"] * u
        if "P" in p:
            t = t - p["P"] * (2 * (p["P"].conj() * state).sum(-1, keepdim=True).real)
            t = t - p["P"] * (2 * (p["R"] * t).sum(-1, keepdim=True).real)
        state = p["Dinv"] * t
        y = (p["dC2"] * state).sum(-1).real + self.D * x_t
        return self._post(y), state

    def state_from_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The recurrent state after consuming x (B, L, H) (what L calls to `step` would leave).
        Like init_state, it refreshes the step matrices from the current weights."""
        self._step_cache = self.kernel.step_params()
        return self.kernel.state_from_sequence(x)
