"""CPU fast paths of the core layers: they must compute exactly what the plain paths compute."""
import pytest
import torch

from panformer import core
from panformer.core.layers import Dropout, EncoderLayer, on_real_tokens


def test_dropout_keeps_the_distribution_and_scaling():
    torch.manual_seed(0)
    d = Dropout(0.3)
    x = torch.ones(400, 500, requires_grad=True)
    y = d(x)
    zeros = (y == 0).float().mean().item()
    assert zeros == pytest.approx(0.3, abs=0.005)
    p_used = round(0.3 * 2**16) / 2**16  # p on a 2^-16 grid; the scale inverts exactly that keep rate
    assert abs(p_used - 0.3) < 2**-17
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p_used)))  # inverted dropout: E[y] = x
    lanes = (y == 0).float().reshape(-1, 4).mean(0)  # four masks come from each 64-bit draw: all fair
    assert torch.allclose(lanes, torch.full((4,), 0.3), atol=0.01), lanes
    for shape in [(7,), (3, 5, 7)]:  # sizes that are not a multiple of four
        z = Dropout(0.5)(torch.ones(shape))
        assert z.shape == shape and set(z.unique().tolist()) <= {0.0, 2.0}
    torch.manual_seed(1)
    a = Dropout(0.3)(torch.ones(1000))
    torch.manual_seed(1)
    assert torch.equal(a, Dropout(0.3)(torch.ones(1000)))  # the seed decides the mask
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
