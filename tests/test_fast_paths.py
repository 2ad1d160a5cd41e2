"""CPU fast paths of the core layers: they must compute exactly what the plain paths compute."""
import pytest
import torch

import core
from core.layers import Dropout, EncoderLayer, on_real_tokens


def test_dropout_keeps_the_distribution_and_scaling():
    torch.manual_seed(0)
    d = Dropout(0.3)
    x = torch.ones(400, 500, requires_grad=True)
    y = d(x)
    zeros = (y == 0).float().mean().item()
    assert zeros == pytest.approx(0.3, abs=0.005)
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))  # inverted dropout: E[y] = x
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d y / d x = keep / (1 - p)
    d.eval()
    assert d(x) is x
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_dropout_in_bf16_keeps_dtype():
    y = Dropout(0.5)(torch.ones(64, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) <= {0.0, 2.0}


def test_real_token_packing_equals_the_padded_computation():
    torch.manual_seed(0)
    ffn = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    x = torch.randn(3, 5, 8, requires_grad=True)
    mask = core.lengths_to_padding_mask(torch.tensor([5, 2, 4]), 5)
    packed = on_real_tokens(ffn, x, mask)
    full = ffn(x)
    keep = ~mask
    torch.testing.assert_close(packed[keep], full[keep])
    assert (packed[mask] == 0).all()
    g_packed = torch.autograd.grad(packed[keep].sum(), ffn[0].weight)[0]
    g_full = torch.autograd.grad(full[keep].sum(), ffn[0].weight)[0]
    torch.testing.assert_close(g_packed, g_full)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_layer_real_positions_do_not_depend_on_packing(norm_first):
    torch.manual_seed(0)
    cfg = core.TransformerConfig(d_model=16, n_heads=2, d_ff=32, dropout=0.0, norm_first=norm_first)
    layer = EncoderLayer(cfg).double().eval()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    mask = core.lengths_to_padding_mask(torch.tensor([6, 3, 1]), 6)
    out, _ = layer(x, mask)
    # the same layer on each sequence alone, without padding
    for b, n in enumerate([6, 3, 1]):
        alone, _ = layer(x[b : b + 1, :n])
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-10, rtol=0)
