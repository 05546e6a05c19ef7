"""One contract suite over every token model (SaShiMi, WaveNet, SampleRNN tiny presets): shapes, teacher-forced
step == forward, prefill == stepping, causality, checkpoint round trip, seeded generation, one AdamW step. Then the
baselines' own facts: the paper's parameter counts, WaveNet's receptive field, SampleRNN's truncated-BPTT chunks."""
import pytest
import torch
import torch.nn.functional as F

from sashimi_core import generate, load_model, save_model
from sashimi_core.nn.registry import BASELINE_PRESETS, SampleRNN, SampleRNNConfig, WaveNetConfig, build
from sashimi_core.nn.sashimi import PRESETS, SaShiMi

TINY = ["sashimi-tiny", "wavenet-tiny", "samplernn-tiny"]
L = 48  # > the tiny WaveNet's receptive field (31) and three top frames of the tiny SampleRNN (16 samples)

# The paper's Table (YouTubeMix). Our presets must equal them to the printed precision (0.01M), i.e. within 0.2%.
PAPER_PARAMS = {"wavenet-512": 2.67, "wavenet-1024": 4.24, "samplernn-2tier": 51.85, "samplernn-3tier": 35.03}


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = SaShiMi(PRESETS[name]) if name in PRESETS else build(name)
    return model.eval()


def tokens_for(model, B=2, length=L, seed=1):
    return torch.randint(0, model.cfg.n_tokens, (B, length), generator=torch.Generator().manual_seed(seed))


def teacher_forced(model, tokens):
    """start + step over tokens[:, :-1] -> logits (B, L, V), the step-mode twin of forward(tokens)."""
    logits, state = model.start(tokens.shape[0])
    out = [logits]
    for t in range(tokens.shape[1] - 1):
        logits, state = model.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, 1)


@pytest.mark.parametrize("name", TINY)
def test_shapes_and_interface(name):
    model = make(name)
    V, tokens = model.cfg.n_tokens, tokens_for(model)
    with torch.no_grad():
        assert model(tokens).shape == (2, L, V)
        logits, state = model.start(2)
        assert logits.shape == (2, V)
        logits, state = model.step(tokens[:, 0], state)
        assert logits.shape == (2, V)
        logits, state = model.prefill(tokens[:, :5])
        assert logits.shape == (2, V)
        model.init_state(2)
    assert model.sample_rate == 16000 and model.cfg.quantization == "mu-law"
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", TINY)
def test_step_equals_forward(name):
    model = make(name)
    tokens = tokens_for(model)
    with torch.no_grad():
        full = model(tokens)
        step = teacher_forced(model, tokens)
    err = (step - full).abs().max().item()
    print(f"{name}: teacher-forced step vs forward max |diff| {err:.2e} (logits up to {full.abs().max():.2f})")
    assert err < 1e-4


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("T", [1, 13, 37])
def test_prefill_state_equals_stepping(name, T):
    """A prompt read in one parallel pass leaves the state that T steps leave: same logits for 20 more steps."""
    model = make(name)
    tokens = tokens_for(model, length=T + 20)
    with torch.no_grad():
        lp, sp = model.prefill(tokens[:, :T])
        ls, ss = model.start(2)
        for t in range(T):
            ls, ss = model.step(tokens[:, t], ss)
        errs = [(lp - ls).abs().max().item()]
        for t in range(T, T + 20):
            lp, sp = model.step(tokens[:, t], sp)
            ls, ss = model.step(tokens[:, t], ss)
            errs.append((lp - ls).abs().max().item())
    print(f"{name} T={T}: prefill vs stepping max |diff| {max(errs):.2e}")
    assert max(errs) < 1e-4


@pytest.mark.parametrize("name", TINY)
def test_causality(name):
    model = make(name)
    tokens = tokens_for(model)
    with torch.no_grad():
        base = model(tokens)
        for t in (0, 17, L - 2):
            changed = tokens.clone()
            changed[:, t] = (changed[:, t] + 101) % model.cfg.n_tokens
            out = model(changed)
            before = (out[:, : t + 1] - base[:, : t + 1]).abs().max().item()
            after = (out[:, t + 1] - base[:, t + 1]).abs().max().item()
            assert before < 1e-5, f"changing token {t} moved logits <= {t} by {before}"
            assert after > 1e-6, f"token {t} has no effect on logits {t + 1}"


@pytest.mark.parametrize("name", TINY)
def test_save_load_round_trip(name, tmp_path):
    model = make(name)
    tokens = tokens_for(model)
    save_model(model, tmp_path / name, dataset="unit-test")
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    with torch.no_grad():
        err = (loaded(tokens) - model(tokens)).abs().max().item()
    print(f"{name}: reloaded logits max |diff| {err:.1e}")
    assert err == 0.0


@pytest.mark.parametrize("name", TINY)
def test_same_seed_same_tokens(name):
    model = make(name)
    a = generate(model, 30, n_samples=2, seed=11, engine="torch")
    b = generate(model, 30, n_samples=2, seed=11, engine="torch")
    c = generate(model, 30, n_samples=2, seed=12, engine="torch")
    assert a.shape == (2, 30) and torch.equal(a, b) and not torch.equal(a, c)
    prompt = tokens_for(model, B=1, length=21)[0]
    conv = generate(model, 10, prompt=prompt, n_samples=2, seed=3, engine="torch", prompt_mode="conv")
    step = generate(model, 10, prompt=prompt, n_samples=2, seed=3, engine="torch", prompt_mode="step")
    assert conv.shape == (2, 31) and torch.equal(conv[:, :21], prompt.expand(2, -1)) and torch.equal(conv, step)


@pytest.mark.parametrize("name", TINY)
def test_one_adamw_step_lowers_loss(name):
    model = make(name)
    tokens = tokens_for(model)
    with torch.no_grad():
        model.start(2)  # fills any step-mode weight cache, which the update below must invalidate

    def loss_fn():
        return F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    before = loss_fn()
    before.backward()
    assert all(p.grad is not None for p in model.parameters()), "every parameter gets a gradient (DDP-safe)"
    opt.step()
    with torch.no_grad():
        after = loss_fn().item()
        model.eval()
        err = (teacher_forced(model, tokens[:, :20]) - model(tokens[:, :20])).abs().max().item()
    print(f"{name}: loss {before.item():.4f} -> {after:.4f}; step vs forward after the update {err:.1e}")
    assert after < before.item() and err < 1e-4


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_parameter_counts(name):
    n = build(name).num_parameters()
    print(f"{name}: {n:,} parameters, paper {PAPER_PARAMS[name]}M ({n / (PAPER_PARAMS[name] * 1e6) - 1:+.3%})")
    assert round(n / 1e6, 2) == PAPER_PARAMS[name]


def test_presets_and_registration():
    assert {"wavenet-512", "wavenet-1024", "wavenet-tiny", "samplernn-2tier", "samplernn-3tier",
            "samplernn-tiny"} <= set(BASELINE_PRESETS)
    assert WaveNetConfig().receptive_field == 4093  # the reference's 4 blocks x dilations 1..512, kernel 2
    assert SampleRNNConfig(frame_sizes=(16, 4)).frame_samples == (16, 64)
    with pytest.raises(ValueError, match="quantization"):
        WaveNetConfig(quantization="a-law")
    with pytest.raises(ValueError, match="frame_sizes"):
        SampleRNNConfig(frame_sizes=())


def test_wavenet_receptive_field_is_exact():
    """logits[:, t] sees tokens t-RF .. t-1 and nothing older (float64: the oldest token's path through all layers
    is faint in a small random model)."""
    model = make("wavenet-tiny").double()
    rf, t = model.receptive_field, 70
    tokens = tokens_for(model, B=1, length=t + 1)
    with torch.no_grad():
        base = model(tokens)[:, t]
        for s, moves in ((t - rf, True), (t - rf - 1, False)):
            changed = tokens.clone()
            changed[:, s] = (changed[:, s] + 101) % 256
            assert ((model(changed)[:, t] - base).abs().max().item() > 0) == moves


def test_samplernn_truncated_bptt_chunks_continue_exactly():
    model = make("samplernn-tiny")
    P = model.cfg.lookback
    tokens = tokens_for(model, length=3 * P + 5)
    with torch.no_grad():
        full = model(tokens)
        first, state = model(tokens[:, : 2 * P], return_state=True)
        second = model(tokens[:, 2 * P:], state=SampleRNN.detach_state(state))
        err = (torch.cat([first, second], 1) - full).abs().max().item()
        print(f"chunked vs whole forward max |diff| {err:.1e}")
        assert err < 1e-5
        with pytest.raises(ValueError, match="boundary"):
            model(tokens[:, :3], state=model(tokens[:, :5], return_state=True)[1])
