"""HiPPO-LegS and its normal-plus-low-rank (NPLR) form, the S4 initialisation.

HiPPO-LegS (Gu et al. 2020, eq. for LegS): A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 above;
B_n = sqrt(2n+1). Adding P P^T with P_n = sqrt(n + 1/2) makes A + P P^T = -1/2 I + S with S skew-symmetric
(S4 paper, Theorem 1), so A = V (Λ - (V*P)(V*P)*) V* with V unitary. We diagonalise the skew part with
``eigh`` in float64 (i S is Hermitian), keep one of each conjugate pair of eigenvalues (N/2 modes) and
express B and P in the eigenbasis, exactly as the reference's ``nplr('legs', N)`` does.
"""
from __future__ import annotations

import numpy as np
import torch


def legs(N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LegS transition: A (N, N), B (N,) float64."""
    q = np.arange(N, dtype=np.float64)
    col, row = np.meshgrid(q, q)
    r = 2 * q + 1
    M = -(np.where(row >= col, r, 0) - np.diag(q))
    T = np.sqrt(np.diag(2 * q + 1))
    A = T @ M @ np.linalg.inv(T)
    B = np.diag(T).copy()
    return A, B


def nplr_legs(N: int, B_clip: float | None = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NPLR form of HiPPO-LegS with N/2 conjugate-pair modes.

    Returns Λ (N/2,), P (N/2,), B (N/2,) complex128 such that, in the eigenbasis, A = diag(Λ) - P P^* over
    all N modes (each mode's conjugate included). Im(Λ) <= 0 (the reference keeps the negative halves).
    ``B_clip`` clamps Im(B) as the reference does.
    """
    if N % 2:
        raise ValueError(f"d_state must be even (N/2 complex modes), got {N}")
    A, B = legs(N)
    P = np.sqrt(0.5 + np.arange(N, dtype=np.float64))
    AP = A + np.outer(P, P)  # = -1/2 I + skew-symmetric
    W_re = np.mean(np.diagonal(AP))
    W_im, V = np.linalg.eigh(AP * -1j)  # i * skew is Hermitian: real eigenvalues, unitary V
    W = W_re + 1j * W_im
    idx = np.argsort(W.imag, kind="stable")
    W, V = W[idx][: N // 2], V[:, idx][:, : N // 2]
    V_inv = V.conj().T
    B = V_inv @ B.astype(np.complex128)
    P = V_inv @ P.astype(np.complex128)
    if B_clip is not None:
        B = B.real + 1j * np.clip(B.imag, -B_clip, B_clip)
    return torch.from_numpy(W), torch.from_numpy(P), torch.from_numpy(B)
