"""Autoregressive generation over any model with ``start``/``prefill``/``step`` (SaShiMi and the baselines).

    tokens = generate(model, n_steps, prompt=None, n_samples=1, temperature=1.0, top_p=1.0, seed=None,
                      progress=None, stop=None)        # (n_samples, T + n_steps) int64, T = prompt length

Decoding tokens to audio uses the model's own quantisation (``decode(tokens, model.cfg.quantization)``); the
reference decodes linear models with mu-law by mistake, we do not.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from sashimi_core.generation import fast_step, graph_step
from sashimi_core.generation.sampling import accumulate_stats, check_generation_args, sample_token
from sashimi_core.nn.s4 import weights_stamp
from sashimi_core.ops.metrics import non_finite

PROGRESS_EVERY = 256  # steps between progress callbacks / stop checks
PROMPT_READS = 4  # prompt reads remembered per model (`read_prompt`)


@dataclass
class GenerationStats:
    """Per-sample statistics of one `generate` call."""

    seed: int
    nll_bits: list[float] = field(default_factory=list)  # mean -log2 p(token) of the generated tokens
    entropy_bits: list[float] = field(default_factory=list)  # mean entropy of the sampling distribution
    stopped: bool = False  # the stop callback ended generation early
    steps: int = 0  # tokens generated per sample
    order: list[int] = field(default_factory=list)  # sample order when ranked by likelihood
    prompt_nll_bits: list[float] | None = None  # mean -log2 p(prompt token) per sample (conv prompt mode)


@torch.inference_mode()
def generate(model, n_steps: int, *, prompt: torch.Tensor | None = None, n_samples: int = 1,
             temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
             progress: Callable[[int, int], None] | None = None, stop: Callable[[], bool] | None = None,
             prompt_mode: str = "conv", rank: bool = False, return_stats: bool = False,
             engine: str = "auto", threads: int | None = None,
             on_tokens: Callable[[torch.Tensor], None] | None = None,
             prompt_progress: Callable[[int, int], None] | None = None):
    """Sample n_steps tokens after an optional prompt.

    prompt: tokens (T,) shared by all samples, or (n_samples, T). prompt_mode "conv" reads it in one parallel
    pass (``model.prefill``), "step" one token at a time; both give the same state. temperature 0 is greedy.
    seed: same seed -> same tokens (a random one is drawn and reported when None). progress(done, total) and
    stop() are called every PROGRESS_EVERY steps; on stop the tokens so far are returned. on_tokens(tokens
    (n_samples, k) int64, CPU) receives each block of new tokens as it is made (for streaming).
    prompt_progress(done, T) is called as a conv-mode prompt is read (per pass of a long one; not when the
    read is remembered). rank=True orders samples by their model likelihood (lowest NLL first), a guard
    against runaway noise.
    engine: "fast" (numba-compiled CPU step, `fast_step.py`), "graph" (static buffers, one CUDA graph per step
    phase on GPU, `graph_step.py`), "torch" (the module step loop) or "auto" (fast for a supported model on
    CPU, graph for SaShiMi on CUDA, else torch). The engines agree on logits to float32 rounding but draw
    random numbers differently, so a seed reproduces a result within one engine. threads: CPU threads for
    the fast engine's batch rows (default: torch.get_num_threads()).
    Returns tokens (n_samples, T + steps) int64, and GenerationStats when return_stats.
    """
    check_generation_args(n_steps, n_samples, temperature, top_p)
    if prompt_mode not in ("conv", "step"):
        raise ValueError(f"prompt_mode must be 'conv' or 'step', got {prompt_mode!r}")
    if engine not in ("auto", "fast", "graph", "torch"):
        raise ValueError(f"engine must be 'auto', 'fast', 'graph' or 'torch', got {engine!r}")
    device = next(model.parameters()).device
    if engine == "auto":
        engine = ("fast" if device.type == "cpu" and fast_step.supports(model) else
                  "graph" if device.type == "cuda" and graph_step.supports(model) else "torch")
    if engine == "fast" and not fast_step.supports(model):
        raise ValueError(f"engine='fast' does not support this model ({type(model).__name__}); use 'torch'")
    if engine == "graph" and not graph_step.supports(model):
        raise ValueError(f"engine='graph' does not support this model ({type(model).__name__}); use 'torch'")
    bad = non_finite(model.named_parameters())
    if bad:
        raise ValueError(f"the model's weights hold NaN/inf values ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}): nothing sensible can be sampled from it")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    gen = torch.Generator(device=device).manual_seed(int(seed))
    stats = GenerationStats(seed=int(seed))
    was_training = model.training
    model.eval()
    try:
        if prompt is not None and prompt.numel() > 0:
            prompt = torch.as_tensor(prompt, dtype=torch.long, device=device)
            shared = prompt.dim() == 1
            if shared:
                prompt = prompt.unsqueeze(0).expand(n_samples, -1)
            if prompt.dim() != 2 or prompt.shape[0] != n_samples:
                raise ValueError(f"prompt must be (T,) or (n_samples={n_samples}, T), got {tuple(prompt.shape)}")
            if prompt.min() < 0 or prompt.max() >= model.cfg.n_tokens:
                raise ValueError(f"prompt tokens must lie in [0, {model.cfg.n_tokens - 1}]")
            if prompt_mode == "conv":
                if shared and hasattr(model, "repeat_state"):  # read a shared prompt once, copy the state
                    logits, state, nll = read_prompt(model, prompt[:1], prompt_progress)
                    logits, state = logits.expand(n_samples, -1), model.repeat_state(state, n_samples)
                    nll = nll.expand(n_samples)
                else:
                    logits, state, nll = model.prefill(prompt, return_nll=True, progress=prompt_progress)
                stats.prompt_nll_bits = nll.tolist()
            else:
                logits, state = model.start(n_samples)
                for t in range(prompt.shape[1]):
                    logits, state = model.step(prompt[:, t], state)
        else:
            prompt = torch.zeros(n_samples, 0, dtype=torch.long, device=device)
            logits, state = model.start(n_samples)
        if engine == "fast":
            out, nll, ent, done = _fast_loop(model, logits, state, n_steps, n_samples, temperature, top_p,
                                             seed, progress, stop, threads, stats, on_tokens)
        elif engine == "graph":
            out, nll, ent, done = _graph_loop(model, logits, state, n_steps, n_samples, temperature, top_p,
                                              gen, progress, stop, stats, on_tokens)
        else:
            out, nll, ent, done = _torch_loop(model, logits, state, n_steps, n_samples, temperature, top_p,
                                              gen, progress, stop, stats, on_tokens)
        tokens = torch.cat([prompt, out[:, :done].to(device)], 1)
        scale = 1.0 / (max(done, 1) * math.log(2))
        stats.nll_bits = (nll * scale).tolist()
        stats.entropy_bits = (ent * scale).tolist()
        stats.steps = done
        stats.order = list(range(n_samples))
        if rank:
            order = torch.argsort(nll).tolist()
            tokens = tokens[order]
            stats.order = order
            stats.nll_bits = [stats.nll_bits[i] for i in order]
            stats.entropy_bits = [stats.entropy_bits[i] for i in order]
            if stats.prompt_nll_bits is not None:
                stats.prompt_nll_bits = [stats.prompt_nll_bits[i] for i in order]
    finally:
        model.train(was_training)
    return (tokens, stats) if return_stats else tokens


def read_prompt(model, prompt: torch.Tensor, progress: Callable[[int, int], None] | None = None):
    """``model.prefill(prompt, return_nll=True)`` for one prompt (1, T), remembered: the last PROMPT_READS reads
    per model, keyed by the tokens and the weights (`weights_stamp`), so generating again from the same prompt
    (another seed, temperature or length) skips the read. Returns (logits (1, V), state, NLL (1,)); every call
    gets its own copy, since the step engines may update a state in place. progress: see `SaShiMi.prefill`."""
    reads = model.__dict__.setdefault("_prompt_reads", OrderedDict())
    key = (prompt.shape[1], hashlib.blake2b(prompt.cpu().numpy().tobytes(), digest_size=16).hexdigest())
    hit = reads.get(key)
    if hit is not None and hit[0] is not None and hit[0] == weights_stamp(model):
        reads.move_to_end(key)
        return _copy(hit[1])
    out = model.prefill(prompt, return_nll=True, progress=progress)
    reads[key] = (weights_stamp(model), _copy(out))  # stamped after the read: it may grow an S4 layer's C̃
    while len(reads) > PROMPT_READS:
        reads.popitem(last=False)
    return out


def _copy(tree):
    """A copy of nested tuples/lists of tensors (and None)."""
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, (tuple, list)):
        return type(tree)(_copy(x) for x in tree)
    return tree


def _report(done, n_steps, progress, stop, stats, on_tokens=None, out=None, start: int = 0) -> bool:
    """Hand the new tokens out[:, start:done] to on_tokens, call progress; True when generation should stop."""
    if on_tokens is not None and done > start:
        on_tokens(torch.as_tensor(out[:, start:done]).cpu())
    if progress is not None:
        progress(done, n_steps)
    if stop is not None and done < n_steps and stop():
        stats.stopped = True
        return True
    return False


def _fast_loop(model, logits, state, n_steps, n_samples, temperature, top_p, seed, progress, stop, threads,
               stats, on_tokens=None):
    """Sampling loop in the numba engine, PROGRESS_EVERY steps per call."""
    eng = fast_step.engine_for(model)
    st = eng.state_from_torch(state)
    logits = logits.detach().float().cpu().numpy().copy()
    out = np.zeros((n_samples, n_steps), np.int64)
    nll, ent = np.zeros(n_samples), np.zeros(n_samples)
    rng = fast_step.seed_rng(seed, n_samples)
    threads = threads or torch.get_num_threads()
    done = 0
    while done < n_steps:
        n = min(PROGRESS_EVERY, n_steps - done)
        eng.sample(logits, st, n, out, done, rng, temperature, top_p, nll, ent, threads=threads)
        done += n
        if _report(done, n_steps, progress, stop, stats, on_tokens, out, done - n):
            break
    return torch.from_numpy(out), torch.from_numpy(nll), torch.from_numpy(ent), done


def _graph_loop(model, logits, state, n_steps, n_samples, temperature, top_p, gen, progress, stop, stats,
                on_tokens=None):
    """Sampling loop over `graph_step.GraphSampler` (CUDA graphs on GPU), PROGRESS_EVERY steps per block."""
    engine = graph_step.GraphSampler(model, logits, state, temperature, top_p)
    out = torch.empty(n_samples, n_steps, dtype=torch.long, device=logits.device)
    done = 0
    while done < n_steps:
        n = min(PROGRESS_EVERY, n_steps - done)
        uniforms = torch.rand(n, n_samples, generator=gen, device=logits.device)
        engine.run(uniforms, out[:, done: done + n])
        done += n
        if _report(done, n_steps, progress, stop, stats, on_tokens, out, done - n):
            break
    return out, engine.nll, engine.ent, done


def _torch_loop(model, logits, state, n_steps, n_samples, temperature, top_p, gen, progress, stop, stats,
                on_tokens=None):
    """Sampling loop over `model.step` (any model, any device)."""
    device = logits.device
    out = torch.empty(n_samples, n_steps, dtype=torch.long, device=device)
    nll = torch.zeros(n_samples, dtype=torch.float64, device=device)
    ent = torch.zeros_like(nll)
    done = 0
    for t in range(n_steps):
        token, logp = sample_token(logits, temperature, top_p, gen)
        out[:, t] = token
        accumulate_stats(nll, ent, logits, token, logp)
        done = t + 1
        if done < n_steps:
            logits, state = model.step(token, state)
        block = (done - 1) // PROGRESS_EVERY * PROGRESS_EVERY  # first step of this block
        if (done % PROGRESS_EVERY == 0 or done == n_steps) and _report(done, n_steps, progress, stop, stats,
                                                                        on_tokens, out, block):
            break
    return out, nll, ent, done
