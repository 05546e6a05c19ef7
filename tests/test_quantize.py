import librosa
import numpy as np
import pytest
import torch

from sashimi_core.ops.quantize import (
    ZERO_TOKEN,
    decode,
    encode,
    linear_decode,
    linear_encode,
    mu_law_decode,
    mu_law_encode,
)


def test_mu_law_matches_librosa():
    x = np.random.default_rng(0).uniform(-1.3, 1.3, 50_000)
    ours = mu_law_encode(x).numpy()
    theirs = librosa.mu_compress(np.clip(x, -1, 1), mu=255, quantize=True) + 128
    assert (ours == theirs).all()
    t = np.arange(256)
    np.testing.assert_allclose(mu_law_decode(t).numpy(), librosa.mu_expand(t - 128, mu=255, quantize=True),
                               atol=1e-6)


@pytest.mark.parametrize("q", ["mu-law", "linear"])
def test_round_trip_and_zero(q):
    tokens = torch.arange(256)
    assert (encode(decode(tokens, q), q) == tokens).all()
    assert int(encode(torch.zeros(1), q)) == ZERO_TOKEN
    x = torch.linspace(-1, 1, 1001)
    err = (decode(encode(x, q), q) - x).abs().max().item()
    print(q, "max round-trip error", err)
    assert err <= (2 / 256 if q == "linear" else 0.05)  # widest mu-law bin, next to +-1


def test_linear_bins_and_clipping():
    assert linear_encode(torch.tensor([-1.0, -0.999, 0.999, 1.0, 5.0, -5.0])).tolist() == [0, 0, 255, 255, 255, 0]
    assert abs(float(linear_decode(torch.tensor(128))) - 1 / 256) < 1e-7


def test_unknown_quantization():
    with pytest.raises(ValueError, match="unknown quantization"):
        encode(torch.zeros(3), "a-law")
