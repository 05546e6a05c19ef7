"""The numba step engine equals the torch step path (and so the convolution) for every preset."""
import numpy as np
import pytest
import torch

from sashimi_core import PRESETS, SaShiMi, generate
from sashimi_core.generation.fast_step import FastSaShiMi, engine_for, supports
from sashimi_core.nn.sashimi import with_overrides


def _perturbed(name, seed=0):
    torch.manual_seed(seed)
    model = SaShiMi(PRESETS[name]).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("log_dt"):
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    return model


def test_engine_gelu_matches_exact_gelu():
    """The scalar GELU and the 8-lane one (`_gelu_rows`: whole vectors plus a scalar tail of 5 per row)."""
    from numba import njit

    from sashimi_core.ops.fast_kernels import _gelu, _gelu_rows

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = _gelu(x[i])

    x = np.linspace(-12, 12, 200_001).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    exact = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    assert np.abs(out - exact).max() < 2e-6
    rows = x[:-1].reshape(8, 25_000)[:, :24_997].copy()  # 24,997 = 8 * 3,124 + 5
    _gelu_rows(rows)
    assert np.abs(rows - exact[:-1].reshape(8, 25_000)[:, :24_997]).max() < 2e-6


@pytest.mark.parametrize("batch", [1, 2, 3, 7])
@pytest.mark.parametrize("n_in,n_out", [(4, 16), (7, 24), (64, 40), (33, 5)])
def test_engine_linear_matches_numpy(batch, n_in, n_out):
    """Every row tile (4, 2, 1 rows), odd input counts (the one-row kernel's two chains) and a partial strip."""
    from sashimi_core.ops.fast_kernels import _linear, strip_pack

    rng = np.random.default_rng(n_in)
    w, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    packed = strip_pack(w.astype(np.float32))
    wf = np.concatenate([np.zeros(3), packed, b]).astype(np.float32)  # weights at an offset, as packed
    y = _linear(x, wf, 3, 3 + packed.size, n_in, n_out)
    assert y.shape == (batch, n_out)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T + b, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fast_logits_equal_torch_step(name):
    model = _perturbed(name)
    tokens = torch.randint(0, 256, (2, 150))
    with torch.no_grad():
        full = model(tokens)
        logits, state = model.start(2)
        eng = FastSaShiMi(model)
        fast_state = eng.state_from_torch(model.backbone.init_state(2))
        outs = [eng.step_logits(np.full(2, 128), fast_state)]
        torch_outs = [logits]
        for t in range(149):
            outs.append(eng.step_logits(tokens[:, t].numpy(), fast_state))
            logits, state = model.step(tokens[:, t], state)
            torch_outs.append(logits)
    fast = torch.from_numpy(np.stack(outs, 1))
    err_step = (fast - torch.stack(torch_outs, 1)).abs().max().item()
    err_conv = (fast - full).abs().max().item()
    print(name, "fast vs torch step", err_step, "fast vs conv", err_conv)
    assert err_step < 1e-4 and err_conv < 1e-4


def test_fast_state_from_prompt_continues_exactly():
    model = _perturbed("sashimi-2", 1)
    tokens = torch.randint(0, 256, (1, 90))
    with torch.no_grad():
        full = model(tokens)
        logits, state = model.prefill(tokens[:, :37])  # conv-mode prompt, then the fast engine takes over
        eng = engine_for(model)
        st = eng.state_from_torch(state)
        outs = [logits.numpy()]
        for t in range(37, 89):
            outs.append(eng.step_logits(tokens[:, t].numpy(), st))
    err = (torch.from_numpy(np.stack(outs, 1)) - full[:, 37:]).abs().max().item()
    print("prefill -> fast engine", err)
    assert err < 1e-4


def test_generate_engines_and_threads():
    model = _perturbed("sashimi-tiny", 2)
    a = generate(model, 700, n_samples=3, seed=11, engine="fast", threads=1)
    b = generate(model, 700, n_samples=3, seed=11, engine="fast", threads=2)
    assert torch.equal(a, b)  # thread count never changes results
    t = generate(model, 50, n_samples=2, seed=11, engine="torch")
    assert t.shape == (2, 50)
    unet = SaShiMi(with_overrides(PRESETS["sashimi-tiny"], unet=True)).eval()
    assert not supports(unet)
    assert generate(unet, 20, seed=0).shape == (1, 20)  # auto falls back to the torch step
    with pytest.raises(ValueError, match="does not support"):
        generate(unet, 5, engine="fast")


def test_engine_rebuilt_after_weight_update():
    model = _perturbed("sashimi-tiny", 3)
    first = engine_for(model)
    assert engine_for(model) is first
    with torch.no_grad():
        model.head.bias.add_(1.0)
    assert engine_for(model) is not first


def test_fast_greedy_matches_torch_greedy():
    model = _perturbed("sashimi-tiny", 4)
    fast = generate(model, 120, temperature=0, engine="fast")
    slow = generate(model, 120, temperature=0, engine="torch")
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("name", ["sashimi-tiny", "sashimi-2"])
def test_cost_counts_the_work_the_torch_step_does(name):
    """`FastSaShiMi.cost` against hooks on the torch step over one pooling cycle (16 steps): every Linear's
    multiply-adds and every S4 step's modes, divided by the samples stepped."""
    from sashimi_core.nn.s4 import S4Block

    torch.manual_seed(0)
    model = SaShiMi(PRESETS[name]).eval()
    macs, modes = [0], [0]

    def on_linear(m, inp, out):
        macs[0] += inp[0].shape[0] * m.in_features * m.out_features

    def on_s4(m, inp, out):
        modes[0] += inp[0].shape[0] * m.H * m.kernel.N2

    with torch.inference_mode():
        logits, state = model.start(2)
        hooks = [m.register_forward_hook(on_linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
        for m in model.modules():
            if isinstance(m, S4Block):  # step() is not forward(): wrap it
                m.step = (lambda blk, f: lambda x, s: (on_s4(blk, (x,), None), f(x, s))[1])(m, m.step)
        for _ in range(16):
            logits, state = model.step(logits.argmax(-1), state)
        for h in hooks:
            h.remove()
    cost = FastSaShiMi(model).cost()
    assert cost["flops_per_sample"] == pytest.approx((2 * macs[0] + 20 * modes[0]) / 32)
    assert cost["state_bytes_per_row_step"] == pytest.approx(16 * modes[0] / 32)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8), (1.6, 0.6)])
def test_engine_sampler_draws_from_the_tempered_nucleus(temperature, top_p):
    """`_sample_row`'s draws follow softmax(logits / T) cut to the smallest top set holding top_p of the mass;
    it returns the model's NLL of the draw (at T = 1, no cut) and the entropy of the distribution it drew from."""
    from sashimi_core.generation.fast_step import seed_rng
    from sashimi_core.ops.fast_kernels import _sample_row

    lg = np.random.default_rng(3).normal(0, 1.5, 16).astype(np.float32)
    w = np.exp((lg.astype(np.float64) - lg.max()) / temperature)
    order = np.argsort(-w)
    keep = order[: int(np.searchsorted(np.cumsum(w[order]) / w.sum(), top_p - 1e-12)) + 1]
    p = np.zeros(16)
    p[keep] = w[keep] / w[keep].sum()
    logz = np.log(np.exp(lg.astype(np.float64) - lg.max()).sum()) + lg.max()
    q, rng, n = np.empty(16), seed_rng(5, 1), 40_000
    counts = np.zeros(16)
    for _ in range(n):
        choice, nll, ent = _sample_row(lg, q, temperature, top_p, rng, 0)
        counts[choice] += 1
        assert abs(nll - (logz - lg[choice])) < 1e-6
    assert abs(ent - -(p[p > 0] * np.log(p[p > 0])).sum()) < 1e-6
    assert np.abs(counts / n - p).max() < 4 * np.sqrt(0.25 / n)  # 4 sigma at worst
    assert counts[p == 0].sum() == 0
