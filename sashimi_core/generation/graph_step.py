"""Static-buffer sampling loop for SaShiMi on any torch device; on CUDA each step is one CUDA-graph replay.

The plain loop (`sampler._torch_loop`) launches every kernel of `SaShiMi.step` from Python, so on a GPU a
step costs hundreds of launch latencies. Here the state lives in preallocated tensors that one step
function (sample a token from the current logits, record its NLL, step the model, write the new state and
logits back in place) updates; on CUDA that function is captured once per step phase and replayed.

Why one graph per phase: `Backbone.step` decides in Python which pooling tiers run, from t. It reads t only as
(t // r) % p with r * p dividing P = prod(cfg.pool), so the control flow of step t equals that of step t % P,
and P graphs (16 for pool [4, 4]) cover every step. Each graph allocates its intermediates from its own
memory pool, and everything that outlives a replay is copied into the static buffers inside the graph, so
graphs may replay in any order (a prompt of any length starts the cycle at any phase).

Random numbers are drawn outside the graphs, a block of uniforms at a time from the caller's generator, and
turned into tokens by inverse-CDF sampling inside them (`sample_from_uniform`): no host sync, no generator
state in the graph. On CPU the same step function runs eagerly (what the CPU tests check).
"""
from __future__ import annotations

import math

import torch

from sashimi_core.generation.sampling import accumulate_stats, sample_from_uniform
from sashimi_core.nn.sashimi import flatten_state, unflatten_state


def supports(model) -> bool:
    """True for SaShiMi token models (the backbone's step control flow is periodic in t)."""
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "architecture", "") == "sashimi" and hasattr(model, "backbone")


class GraphSampler:
    """Sampling state of one `generate` call in static tensors: B rows, fixed temperature and top_p.

    logits (B, V) for the next token and the model `state` (t, d, c, u) as returned by `start`/`prefill`.
    use_graphs: capture CUDA graphs (default: when the model is on a CUDA device)."""

    def __init__(self, model, logits: torch.Tensor, state: tuple, temperature: float, top_p: float,
                 use_graphs: bool | None = None):
        if not supports(model):
            raise ValueError(f"the graph engine supports SaShiMi models, not {type(model).__name__}")
        self.model, self.temperature, self.top_p = model, float(temperature), float(top_p)
        self.t = int(state[0])
        self.period = math.prod(model.cfg.pool) if model.cfg.pool else 1
        leaves: list = []
        self.spec = flatten_state(state[1:], leaves)
        self.leaves = [x.clone() for x in leaves]  # static: written in place by every step
        device = logits.device
        B = logits.shape[0]
        self.logits = logits.float().clone()
        self.u = torch.zeros(B, device=device)  # uniforms for the next token
        self.token = torch.zeros(B, dtype=torch.long, device=device)  # the token just sampled
        self.nll = torch.zeros(B, dtype=torch.float64, device=device)  # sum of -log p_model(token), nats
        self.ent = torch.zeros_like(self.nll)  # sum of the sampling distribution's entropy, nats
        if use_graphs is None:
            use_graphs = device.type == "cuda"
        self.graphs = self._capture() if use_graphs else None

    def _body(self, phase: int) -> None:
        """One step at phase t % period: sample from self.logits with self.u, step the model, write back."""
        token, logp = sample_from_uniform(self.logits, self.temperature, self.top_p, self.u)
        self.token.copy_(token)
        accumulate_stats(self.nll, self.ent, self.logits, token, logp)
        state = (phase,) + unflatten_state(self.spec, self.leaves)  # phase gives step t's control flow
        logits, new_state = self.model.step(token, state)
        new_leaves: list = []
        flatten_state(new_state[1:], new_leaves)
        for dst, src in zip(self.leaves, new_leaves, strict=True):
            if src is not dst:  # tiers that did not tick pass their state through untouched
                dst.copy_(src)
        self.logits.copy_(logits)

    def _static(self) -> list[torch.Tensor]:
        return self.leaves + [self.logits, self.u, self.token, self.nll, self.ent]

    def _capture(self) -> list:
        """One CUDA graph per phase. Warm-up runs (on a side stream, as torch requires before capture)
        change the buffers, so they are saved first and restored before the real steps."""
        saved = [x.clone() for x in self._static()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for phase in range(self.period):
                self._body(phase)
        torch.cuda.current_stream().wait_stream(side)
        graphs = []
        for phase in range(self.period):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the app may train meanwhile
                self._body(phase)
            graphs.append(graph)
        for dst, src in zip(self._static(), saved, strict=True):
            dst.copy_(src)
        return graphs

    def run(self, uniforms: torch.Tensor, out: torch.Tensor) -> None:
        """Sample len(uniforms) tokens: uniforms (n, B) in [0, 1) -> out (B, n) tokens, stepping after each."""
        for k in range(uniforms.shape[0]):
            self.u.copy_(uniforms[k])
            phase = self.t % self.period
            if self.graphs is None:
                self._body(phase)
            else:
                self.graphs[phase].replay()
            out[:, k].copy_(self.token)
            self.t += 1
