"""The scan across chunks of a chunked S4 read (`S4Kernel.chunked_conv`): x_(i+1) = M x_i + a_i per channel.

A torch loop makes one small batched matmul per chunk (thousands per prompt), and each launches the BLAS
thread team: from a worker thread (where the app reads prompts) that cost 4x more than from the main thread.
Here one compiled call per layer and pass, channels split over numba's threads.
"""
from __future__ import annotations

import torch

try:
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba comes with librosa
    HAVE_NUMBA = False


if HAVE_NUMBA:
    @njit(cache=True, fastmath=True, parallel=True, nogil=True)
    def _scan(added, into, states):  # pragma: no cover - compiled; covered through chunk_scan
        n, H, B, S = added.shape
        for h in prange(H):
            for i in range(n):
                for b in range(B):
                    for r in range(S):
                        acc = added[i, h, b, r]
                        for s in range(S):
                            acc += into[h, r, s] * states[i, h, b, s]
                        states[i + 1, h, b, r] = acc


def chunk_scan(added: torch.Tensor, into: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Fill states[1:] from states[0]: states[i + 1] = into states[i] + added[i], per channel h and row b.

    added (n, H, B, S), into (H, S, S), states (n + 1, H, B, S), all float32 CPU contiguous (else the torch loop).
    Returns states."""
    if HAVE_NUMBA and states.device.type == "cpu" and all(
            t.dtype == torch.float32 and t.is_contiguous() for t in (added, into, states)):
        _scan(added.numpy(), into.numpy(), states.numpy())
        return states
    into_t = into.transpose(1, 2).contiguous()
    for i in range(added.shape[0]):  # one small batched matmul per chunk
        torch.baddbmm(added[i], states[i], into_t, out=states[i + 1])
    return states
