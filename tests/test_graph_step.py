"""The static-buffer / CUDA-graph sampling engine (`graph_step.py`): the same tokens as the module step loop.

On CPU the engine's step function runs eagerly; the `gpu` tests capture and replay the CUDA graphs."""
import pytest
import torch

from sashimi_core import PRESETS, SaShiMi, generate
from sashimi_core.generation.graph_step import GraphSampler
from sashimi_core.generation.sampling import sample_from_uniform
from sashimi_core.nn.registry import WaveNet, WaveNetConfig
from sashimi_core.nn.s4 import S4Block
from sashimi_core.nn.sashimi import with_overrides

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SaShiMi(PRESETS["sashimi-tiny"]).eval()


@pytest.mark.parametrize("prompt_len", [0, 21, 32])  # starts the 16-step phase cycle at 1, 6 and 1
def test_greedy_tokens_and_nll_equal_the_step_loop(model, prompt_len):
    prompt = torch.randint(0, 256, (3, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    ref, ref_stats = generate(model, 75, prompt=prompt, n_samples=3, temperature=0, engine="torch",
                              return_stats=True)
    out, stats = generate(model, 75, prompt=prompt, n_samples=3, temperature=0, engine="graph", return_stats=True)
    assert torch.equal(out, ref)
    assert stats.nll_bits == pytest.approx(ref_stats.nll_bits, abs=1e-6)


def test_unet_variant_equals_the_step_loop():
    torch.manual_seed(1)
    m = SaShiMi(with_overrides(PRESETS["sashimi-tiny"], unet=True)).eval()
    ref = generate(m, 40, n_samples=2, temperature=0, engine="torch")
    assert torch.equal(generate(m, 40, n_samples=2, temperature=0, engine="graph"), ref)


def test_logits_follow_the_module_step(model):
    """Drive the sampler one step at a time and check its logits and state against `model.step`."""
    logits, state = model.prefill(torch.randint(0, 256, (2, 13)))
    sampler = GraphSampler(model, logits, state, temperature=1.0, top_p=0.95)
    out = torch.empty(2, 1, dtype=torch.long)
    for k in range(40):
        sampler.run(torch.rand(1, 2, generator=torch.Generator().manual_seed(k)), out)
        logits, state = model.step(out[:, 0], state)
        assert torch.allclose(sampler.logits, logits, atol=1e-5)
    assert sampler.t == state[0] == 13 + 1 + 40


def test_seeds_reproduce_and_differ(model):
    a = generate(model, 300, n_samples=2, seed=7, top_p=0.9, engine="graph")
    b = generate(model, 300, n_samples=2, seed=7, top_p=0.9, engine="graph")
    c = generate(model, 300, n_samples=2, seed=8, top_p=0.9, engine="graph")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stop_returns_the_tokens_so_far(model):
    calls = []
    out, stats = generate(model, 1000, seed=1, engine="graph", progress=lambda d, n: calls.append(d),
                          stop=lambda: len(calls) >= 2, return_stats=True)
    assert stats.stopped and out.shape == (1, 512) and calls == [256, 512]


def test_inverse_cdf_matches_the_distribution():
    """Evenly spaced uniforms hit each token in proportion to its probability (to 1/n), and top-p drops the
    tail exactly like `top_p_filter`."""
    logits = torch.log(torch.tensor([[0.4, 0.25, 0.2, 0.1, 0.05]])).expand(2, -1).contiguous()
    n = 20000
    u = (torch.arange(n) + 0.5) / n
    for top_p, probs in [(1.0, [0.4, 0.25, 0.2, 0.1, 0.05]), (0.8, [0.4 / 0.85, 0.25 / 0.85, 0.2 / 0.85, 0, 0])]:
        tokens = torch.stack([sample_from_uniform(logits, 1.0, top_p, torch.full((2,), x))[0] for x in u[::10]])
        freq = torch.bincount(tokens[:, 0], minlength=5).double() / len(tokens)
        assert freq.tolist() == pytest.approx(probs, abs=2e-3)
        assert torch.equal(tokens[:, 0], tokens[:, 1])
    assert sample_from_uniform(logits, 0.0, 1.0, torch.zeros(2))[0].tolist() == [0, 0]
    # temperature flattens: at T = 2 the probabilities go as sqrt(p)
    p2 = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05]).sqrt()
    tokens = torch.stack([sample_from_uniform(logits, 2.0, 1.0, torch.full((2,), x))[0][0] for x in u[::10]])
    assert (torch.bincount(tokens, minlength=5).double() / len(tokens)).tolist() == pytest.approx(
        (p2 / p2.sum()).tolist(), abs=2e-3)


def test_the_top_of_the_cdf_never_picks_a_dropped_token():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    token, logp = sample_from_uniform(logits, 1.0, 0.5, torch.tensor([1.0 - 2**-24]))
    assert token.item() == 0 and torch.isfinite(logp[0, token]).all()


def test_other_models_are_refused():
    wavenet = WaveNet(WaveNetConfig(n_blocks=1, n_layers=2, residual_channels=8, dilation_channels=8, skip_channels=8,
                                   end_channels=8, embed_channels=8, out_channels=8)).eval()
    with pytest.raises(ValueError, match="graph"):
        generate(wavenet, 10, engine="graph")


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, (tuple, list)):
        return type(x)(_to_meta(y) for y in x)
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    return x


@pytest.mark.parametrize("unet", [False, True])
@pytest.mark.parametrize("temperature, top_p", [(1.0, 0.9), (0.0, 1.0)])
def test_every_phase_of_the_step_is_capturable(unet, temperature, top_p):
    """What a CUDA graph forbids, checked without a GPU: the step body of every phase runs on the meta
    device, where a host sync (.item(), a branch on a tensor value) and a CPU tensor mixed in both raise.
    (The `gpu` tests below capture for real; no GPU has been lent to this project yet.)"""
    torch.manual_seed(0)
    m = SaShiMi(with_overrides(PRESETS["sashimi-tiny"], unet=unet)).eval()
    with torch.inference_mode():
        logits, state = m.start(2)  # fills each S4 block's step matrices, moved below with the weights
    m.to("meta")
    for block in m.modules():
        if isinstance(block, S4Block):
            block._step_cache = _to_meta(block._step_cache)
    with torch.inference_mode():
        sampler = GraphSampler(m, logits.to("meta"), _to_meta(state), temperature, top_p, use_graphs=False)
        for phase in range(sampler.period):
            sampler._body(phase)
    assert sampler.period == 16 and sampler.logits.is_meta and all(x.is_meta for x in sampler.leaves)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("preset", ["sashimi-tiny", "sashimi-2"])
def test_cuda_graphs_equal_the_eager_step(preset):
    torch.manual_seed(0)
    m = SaShiMi(PRESETS[preset]).cuda().eval()
    prompt = torch.randint(0, 256, (4, 37), device="cuda")
    with torch.inference_mode():
        logits, state = m.prefill(prompt)
        graphed = GraphSampler(m, logits, state, 1.0, 0.95)
        eager = GraphSampler(m, logits, state, 1.0, 0.95, use_graphs=False)
        assert graphed.graphs is not None and len(graphed.graphs) == 16
        uniforms = torch.rand(200, 4, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        out_g = torch.empty(4, 200, dtype=torch.long, device="cuda")
        out_e = torch.empty_like(out_g)
        graphed.run(uniforms, out_g)
        eager.run(uniforms, out_e)
        assert torch.equal(out_g, out_e)
        assert torch.allclose(graphed.logits, eager.logits, atol=1e-4)


@pytest.mark.gpu
@cuda
def test_cuda_auto_engine_is_graph_and_greedy_matches_torch_loop():
    torch.manual_seed(0)
    m = SaShiMi(PRESETS["sashimi-2"]).cuda().eval()
    ref = generate(m, 100, n_samples=2, temperature=0, engine="torch")
    assert torch.equal(generate(m, 100, n_samples=2, temperature=0), ref)
