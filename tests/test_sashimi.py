"""SaShiMi backbone and token model: reference parity, conv == step for every preset, causality, sizes."""
import pytest
import torch

from conftest import run_steps
from sashimi_core.nn import s4, sashimi
from sashimi_core.nn.sashimi import PRESETS, SaShiMi, with_overrides
from sashimi_core.reference import backbone_from_reference

PAPER_PARAMS = {  # YouTubeMix ablation, paper Table 5
    "sashimi-2": 1.29e6, "sashimi-4": 2.21e6, "sashimi-6": 3.13e6, "sashimi-8": 4.05e6,
    "s4-isotropic-4": 2.83e6, "s4-isotropic-8": 5.53e6,
}


@pytest.mark.parametrize("weights", ["fresh", "after"])
def test_reference_parity(reference_fixture, weights):
    """Our conv and step outputs match the reference implementation's stored output within 1e-4 (fp32)."""
    f = reference_fixture
    backbone = backbone_from_reference(f["config"], f[weights]).eval()
    with torch.no_grad():
        conv = backbone(f["input"])
        step = run_steps(backbone, f["input"])
    errs = {"conv vs ref conv": (conv - f["output_conv"]).abs().max().item(),
            "step vs ref conv": (step - f["output_conv"]).abs().max().item(),
            "step vs ref step": (step - f["output_step"]).abs().max().item(),
            "conv vs ref float64": (conv - f["output_conv_f64"]).abs().max().item()}
    print(weights, errs)
    assert all(e < 1e-4 for e in errs.values())


def test_reference_import_rejects_wrong_weights(reference_fixture):
    f = reference_fixture
    bad = dict(f["after"])
    bad.pop("norm.weight")
    with pytest.raises(ValueError, match="missing"):
        backbone_from_reference(f["config"], bad)
    with pytest.raises(ValueError, match="shape mismatch"):
        backbone_from_reference({**f["config"], "d_model": 8}, f["after"])


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("log_dt"):
                p.add_(0.5 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_conv_equals_step_every_preset(name):
    torch.manual_seed(0)
    model = SaShiMi(PRESETS[name]).eval()
    _perturb(model)
    L = 256
    x = 0.5 * torch.randn(1, L, model.cfg.d_model)
    with torch.no_grad():
        conv = model.backbone(x)
        step = run_steps(model.backbone, x)
    err = (conv - step).abs().max().item()
    print(name, "backbone conv vs step max |diff|", err)
    assert err < 1e-4


@pytest.mark.parametrize("unet,chunked_read", [(False, True), (True, True), (False, False)])
def test_token_step_equals_forward_and_prefill(monkeypatch, unet, chunked_read):
    """chunked_read False: the prompt's state from full-length kernels and `state_from_sequence`."""
    if not chunked_read:
        monkeypatch.setattr(s4, "CHUNKED_READ_MIN_LENGTH", 1 << 30)
    torch.manual_seed(1)
    model = SaShiMi(with_overrides(PRESETS["sashimi-tiny"], unet=unet)).eval()
    tokens = torch.randint(0, 256, (2, 80))
    with torch.no_grad():
        full = model(tokens)
        logits, state = model.start(2)
        outs = [logits]
        for t in range(79):
            logits, state = model.step(tokens[:, t], state)
            outs.append(logits)
        err = (torch.stack(outs, 1) - full).abs().max().item()
        # A prompt read in conv mode leaves the same state as stepping through it.
        for T in (1, 7, 16, 45):
            lc, sc = model.prefill(tokens[:, :T])
            ls, ss = model.start(2)
            for t in range(T):
                ls, ss = model.step(tokens[:, t], ss)
            e = (lc - ls).abs().max().item()
            for t in range(T, T + 20):
                lc, sc = model.step(tokens[:, t], sc)
                ls, ss = model.step(tokens[:, t], ss)
                e = max(e, (lc - ls).abs().max().item())
            print("prompt", T, "conv-state vs step-state logits", e)
            assert e < 1e-4
    print("step vs forward logits", err)
    assert err < 1e-4


@pytest.mark.parametrize("segment,unet", [(1 << 14, False), (32, False), (20, True)])
def test_long_prompt_read_in_chunks_continues_like_stepping(monkeypatch, segment, unet):
    """The chunked convolution a long prompt takes (made short here), read in one pass or in passes of a few
    hops that each continue from the last one's state (segment 20 rounds up to 32), leaves the state stepping
    leaves, and its NLL is the full-length forward's."""
    monkeypatch.setattr(s4, "CHUNKED_CONV_MIN_LENGTH", 24)
    monkeypatch.setattr(s4, "CONV_CHUNK", 8)
    monkeypatch.setattr(sashimi, "PREFILL_SEGMENT", segment)
    torch.manual_seed(2)
    model = SaShiMi(with_overrides(PRESETS["sashimi-tiny"], unet=unet)).eval()
    tokens = torch.randint(0, 256, (2, 140))
    with torch.no_grad():
        T = 101
        lc, sc, bits = model.prefill(tokens[:, :T], return_nll=True)
        ls, ss = model.start(2)
        for t in range(T):
            ls, ss = model.step(tokens[:, t], ss)
        e = (lc - ls).abs().max().item()
        for t in range(T, 140):
            lc, sc = model.step(tokens[:, t], sc)
            ls, ss = model.step(tokens[:, t], ss)
            e = max(e, (lc - ls).abs().max().item())
        for name in ("CHUNKED_CONV_MIN_LENGTH", "CHUNKED_READ_MIN_LENGTH"):  # one pass, full-length kernels
            monkeypatch.setattr(s4, name, 1 << 30)
        monkeypatch.setattr(sashimi, "PREFILL_SEGMENT", 1 << 30)
        _, _, full_bits = model.prefill(tokens[:, :T], return_nll=True)
    print("chunked prompt: conv-state vs step-state logits", e)
    assert e < 1e-4
    torch.testing.assert_close(bits, full_bits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["sashimi-tiny", "s4-isotropic-4"])
def test_causality(name):
    cfg = PRESETS[name] if name == "sashimi-tiny" else with_overrides(PRESETS[name], d_model=16, n_layers=1)
    torch.manual_seed(2)
    model = SaShiMi(cfg).eval()
    tokens = torch.randint(0, 256, (1, 64))
    with torch.no_grad():
        base = model(tokens)
        for t in (0, 5, 16, 31, 63):
            changed = tokens.clone()
            changed[0, t] = (changed[0, t] + 77) % 256
            diff = (model(changed) - base).abs().amax(-1)[0]
            # FFT convolution spreads float32 rounding noise (~1e-7), never signal, to earlier positions
            assert diff[: t + 1].max() < 1e-5, f"logits at <= {t} changed"
            if t < 63:
                assert diff[t + 1:].max() > 1e-3


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_paper(name):
    n = SaShiMi(PRESETS[name]).num_parameters()
    rel = n / PAPER_PARAMS[name] - 1
    print(name, n, f"{rel:+.2%}")
    assert abs(rel) < 0.01


def test_reference_sizes():
    """Exact counts measured on the reference (tests/data/reference/README.md)."""
    assert SaShiMi(PRESETS["sashimi-8"]).num_parameters() == 4_072_448  # final_act='id', n_ssm=1
    assert SaShiMi(PRESETS["sashimi-sc09"]).num_parameters() == 4_764_160  # final_act='glu', n_ssm=1


def test_odd_length_is_padded_causally():
    model = SaShiMi(PRESETS["sashimi-tiny"]).eval()
    tokens = torch.randint(0, 256, (1, 37))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), model(torch.cat([tokens, tokens[:, :11]], 1))[:, :37],
                                   atol=1e-5, rtol=0)


def test_one_training_step_lowers_loss():
    torch.manual_seed(3)
    model = SaShiMi(PRESETS["sashimi-tiny"])
    tokens = torch.randint(100, 156, (2, 128))
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(losses)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("unet", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(unet):
    """Recomputing residual blocks in backward (trainer --checkpoint-activations) changes memory, not math."""
    cfg = with_overrides(PRESETS["sashimi-2"], d_model=16, d_state=8, n_layers=1, unet=unet)
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = SaShiMi(cfg).train()
        model.backbone.checkpoint_activations = recompute
        calls = []
        block = model.backbone.c_layers[0]
        block.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))  # recompute may stop early
        loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        loss.backward()
        assert len(calls) == (2 if recompute else 1)  # recomputed in backward
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6, msg=n)
