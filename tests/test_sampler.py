import pytest
import torch

from sashimi_core import PRESETS, SaShiMi, generate
from sashimi_core.generation.sampling import top_p_filter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SaShiMi(PRESETS["sashimi-tiny"]).eval()


def test_same_seed_same_tokens(model):
    a = generate(model, 300, n_samples=2, seed=7)
    b = generate(model, 300, n_samples=2, seed=7)
    c = generate(model, 300, n_samples=2, seed=8)
    assert a.shape == (2, 300) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tiny_top_p_is_greedy(model):
    greedy = generate(model, 100, temperature=0, seed=1)
    nucleus = generate(model, 100, top_p=1e-9, seed=2)
    assert torch.equal(greedy, nucleus)


def test_top_p_filter_keeps_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()


@pytest.mark.parametrize("mode", ["conv", "step"])
def test_prompt_is_kept_and_modes_agree(model, mode):
    prompt = torch.randint(0, 256, (70,))
    out = generate(model, 40, prompt=prompt, n_samples=2, seed=3, prompt_mode=mode)
    ref = generate(model, 40, prompt=prompt, n_samples=2, seed=3, prompt_mode="step")
    assert out.shape == (2, 110) and torch.equal(out[:, :70], prompt.expand(2, -1))
    assert torch.equal(out, ref)


def test_shared_prompt_is_read_once_with_its_nll(model):
    """A (T,) prompt is read for one row and its state copied: the same tokens as the (n, T) prompt read row by
    row, and the prompt's NLL from the same pass equals a teacher-forced forward pass."""
    from sashimi_core.ops.metrics import nll_bits

    prompt = torch.randint(0, 256, (300,))
    shared, s1 = generate(model, 30, prompt=prompt, n_samples=3, seed=4, return_stats=True)
    rows, s2 = generate(model, 30, prompt=prompt.expand(3, -1).clone(), n_samples=3, seed=4, return_stats=True)
    assert torch.equal(shared, rows)
    with torch.no_grad():
        want = nll_bits(model(prompt[None]), prompt[None]).item()
    assert len(s1.prompt_nll_bits) == 3 and s1.prompt_nll_bits == pytest.approx([want] * 3, abs=1e-4)
    assert s2.prompt_nll_bits == pytest.approx([want] * 3, abs=1e-4)
    _, s3 = generate(model, 5, n_samples=1, seed=4, return_stats=True)
    assert s3.prompt_nll_bits is None


class CountingSaShiMi(SaShiMi):
    """The real model, counting its prompt reads."""
    reads = 0

    def prefill(self, prompt, return_nll=False, progress=None):
        type(self).reads += 1
        return super().prefill(prompt, return_nll, progress)


@pytest.mark.parametrize("engine", ["fast", "torch"])
def test_a_repeated_prompt_is_read_once_until_the_weights_change(engine):
    torch.manual_seed(0)
    model = CountingSaShiMi(PRESETS["sashimi-tiny"]).eval()
    prompt, other = torch.randint(0, 256, (300,)), torch.randint(0, 256, (300,))
    first, s1 = generate(model, 50, prompt=prompt, n_samples=1, seed=5, engine=engine, return_stats=True)
    again, s2 = generate(model, 50, prompt=prompt, n_samples=1, seed=5, engine=engine, return_stats=True)
    assert CountingSaShiMi.reads == 1 and torch.equal(first, again)  # the remembered read, untouched by use
    assert s2.prompt_nll_bits == s1.prompt_nll_bits
    generate(model, 50, prompt=prompt, n_samples=3, seed=6, engine=engine)  # same prompt, other settings
    generate(model, 50, prompt=other, n_samples=1, seed=5, engine=engine)
    assert CountingSaShiMi.reads == 2
    with torch.no_grad():
        model.head.weight.mul_(1.5)  # new weights: the read is redone, and its NLL changes
    _, s3 = generate(model, 50, prompt=prompt, n_samples=1, seed=5, engine=engine, return_stats=True)
    assert CountingSaShiMi.reads == 3 and s3.prompt_nll_bits != s1.prompt_nll_bits
    CountingSaShiMi.reads = 0


@pytest.mark.parametrize("engine", ["fast", "torch"])
def test_on_tokens_streams_every_block_in_order(model, engine):
    blocks = []
    prompt = torch.randint(0, 256, (40,))
    tokens = generate(model, 600, prompt=prompt, n_samples=2, seed=6, engine=engine, on_tokens=blocks.append)
    assert [b.shape for b in blocks] == [(2, 256), (2, 256), (2, 88)]
    assert torch.equal(torch.cat(blocks, 1), tokens[:, 40:])


def test_progress_stop_and_stats(model):
    calls = []
    tokens, stats = generate(model, 1000, seed=0, progress=lambda d, t: calls.append((d, t)),
                             stop=lambda: len(calls) >= 2, return_stats=True)
    assert stats.stopped and tokens.shape[1] == 512 and calls == [(256, 1000), (512, 1000)]
    assert stats.seed == 0 and 0 < stats.nll_bits[0] < 9 and 0 < stats.entropy_bits[0] <= 8


def test_rank_orders_by_likelihood(model):
    tokens, stats = generate(model, 200, n_samples=4, seed=5, rank=True, return_stats=True)
    assert stats.nll_bits == sorted(stats.nll_bits) and sorted(stats.order) == [0, 1, 2, 3]
    plain = generate(model, 200, n_samples=4, seed=5)
    assert torch.equal(tokens, plain[stats.order])


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"n_samples": 0}, "n_samples"),
    ({"prompt": torch.tensor([300])}, "prompt tokens"), ({"prompt_mode": "x"}, "prompt_mode")])
def test_bad_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(model, 10, **kwargs)


@pytest.mark.parametrize("engine", ["fast", "torch"])
def test_non_finite_weights_are_refused_clearly(engine):
    torch.manual_seed(0)
    broken = SaShiMi(PRESETS["sashimi-tiny"]).eval()
    with torch.no_grad():
        broken.head.bias[3] = float("nan")  # e.g. a diverged model built in a notebook
    with pytest.raises(ValueError, match=r"NaN/inf values \(head.bias\)"):
        generate(broken, 10, engine=engine)


def test_prompt_progress_reports_each_pass_of_a_long_read(monkeypatch):
    """A prompt read in passes reports the tokens read after each (rising, ending at T); a remembered read
    reports nothing; a row-wise (non-shared) prompt reports too."""
    from sashimi_core.nn import sashimi

    monkeypatch.setattr(sashimi, "PREFILL_SEGMENT", 64)
    torch.manual_seed(0)
    model = SaShiMi(PRESETS["sashimi-tiny"]).eval()
    prompt = torch.randint(0, 256, (300,))
    calls = []
    generate(model, 5, prompt=prompt, seed=1, prompt_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(64, 300), (128, 300), (192, 300), (256, 300), (300, 300)]  # tokens predicted so far
    calls.clear()
    generate(model, 5, prompt=prompt, seed=2, prompt_progress=lambda d, t: calls.append((d, t)))
    assert calls == []  # remembered
    generate(model, 5, prompt=torch.randint(0, 256, (2, 100)), n_samples=2, seed=3,
             prompt_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(64, 100), (100, 100)]
