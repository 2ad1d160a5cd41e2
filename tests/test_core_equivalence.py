"""The core layers reproduce PyTorch's reference modules with copied weights (float64, 1e-5)."""
import pytest
import torch
from torch import nn

from panformer import core
from panformer.core.attention import set_attention_impl

D, H, FF = 32, 4, 64


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture(autouse=True, params=["sdpa", "math"])
def attention_impl(request):
    set_attention_impl(request.param)
    yield request.param
    set_attention_impl("auto")


def copy_mha(ours: core.MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    wq, wk, wv = ref.in_proj_weight.chunk(3)
    bq, bk, bv = ref.in_proj_bias.chunk(3)
    with torch.no_grad():
        for lin, w, b in ((ours.q_proj, wq, bq), (ours.k_proj, wk, bk), (ours.v_proj, wv, bv)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)


def copy_ffn_norms(ours, ref, norm_pairs):
    with torch.no_grad():
        ours.ffn.linear1.load_state_dict(ref.linear1.state_dict())
        ours.ffn.linear2.load_state_dict(ref.linear2.state_dict())
        for a, b in norm_pairs:
            getattr(ours, a).load_state_dict(getattr(ref, b).state_dict())


def padding(B=3, T=7):
    lengths = torch.tensor([T, T - 2, 3])[:B]
    return core.lengths_to_padding_mask(lengths, T)


def cfg(norm_first, activation="relu"):
    return core.TransformerConfig(d_model=D, n_heads=H, n_layers=2, d_ff=FF, dropout=0.0,
                                  activation=activation, norm_first=norm_first)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_padding", [False, True])
def test_attention_matches_torch(causal, use_padding):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(D, H, batch_first=True).eval()
    ours = core.MultiHeadAttention(D, H).eval()
    copy_mha(ours, ref)
    x = torch.randn(3, 7, D)
    kpm = padding() if use_padding else None
    mask = core.causal_mask(7) if causal else None
    expected, expected_w = ref(x, x, x, key_padding_mask=kpm, attn_mask=mask, need_weights=True,
                               average_attn_weights=False)
    got, _ = ours(x, key_padding_mask=kpm, causal=causal)
    got_nw, w = ours(x, key_padding_mask=kpm, causal=causal, need_weights=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_nw, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(w, expected_w, atol=1e-5, rtol=0)


def test_cross_attention_matches_torch():
    torch.manual_seed(1)
    ref = nn.MultiheadAttention(D, H, batch_first=True).eval()
    ours = core.MultiHeadAttention(D, H).eval()
    copy_mha(ours, ref)
    q, kv = torch.randn(3, 5, D), torch.randn(3, 7, D)
    expected, _ = ref(q, kv, kv, key_padding_mask=padding())
    got, _ = ours(q, kv, kv, key_padding_mask=padding())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    torch.manual_seed(2)
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=activation, batch_first=True,
                                     norm_first=norm_first).eval()
    ours = core.EncoderLayer(cfg(norm_first, activation)).eval()
    copy_mha(ours.self_attn, ref.self_attn)
    copy_ffn_norms(ours, ref, [("norm1", "norm1"), ("norm2", "norm2")])
    x, kpm = torch.randn(3, 7, D), padding()
    expected = ref(x, src_key_padding_mask=kpm)
    got, _ = ours(x, kpm)
    keep = ~kpm  # PyTorch's fast path may zero padded rows; compare real positions
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first):
    torch.manual_seed(3)
    ref = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    ours = core.DecoderLayer(cfg(norm_first)).eval()
    copy_mha(ours.self_attn, ref.self_attn)
    copy_mha(ours.cross_attn, ref.multihead_attn)
    copy_ffn_norms(ours, ref, [("norm1", "norm1"), ("norm2", "norm2"), ("norm3", "norm3")])
    tgt, memory = torch.randn(3, 6, D), torch.randn(3, 7, D)
    tgt_kpm = core.lengths_to_padding_mask(torch.tensor([6, 4, 2]), 6)
    expected = ref(tgt, memory, tgt_mask=core.causal_mask(6), tgt_key_padding_mask=tgt_kpm,
                   memory_key_padding_mask=padding())
    got, _, _ = ours(tgt, memory, memory_padding_mask=padding(), padding_mask=tgt_kpm, causal=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_match_torch_transformer(norm_first):
    """Encoder/Decoder stacks (positional='none') equal nn.Transformer with the same weights."""
    torch.manual_seed(4)
    c = core.TransformerConfig(d_model=D, n_heads=H, n_layers=2, d_ff=FF, dropout=0.0, norm_first=norm_first,
                               positional="none")
    ours = core.EncoderDecoder(c).eval()
    ref = nn.Transformer(D, H, 2, 2, FF, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    for o_stack, r_stack, is_dec in ((ours.encoder, ref.encoder, False), (ours.decoder, ref.decoder, True)):
        for o, r in zip(o_stack.layers, r_stack.layers):
            copy_mha(o.self_attn, r.self_attn)
            if is_dec:
                copy_mha(o.cross_attn, r.multihead_attn)
                copy_ffn_norms(o, r, [("norm1", "norm1"), ("norm2", "norm2"), ("norm3", "norm3")])
            else:
                copy_ffn_norms(o, r, [("norm1", "norm1"), ("norm2", "norm2")])
    # nn.Transformer always ends both stacks with a LayerNorm; ours only for pre-LN by default.
    if not norm_first:
        for n in (ref.encoder.norm, ref.decoder.norm):
            with torch.no_grad():
                n.weight.fill_(1.0), n.bias.zero_()
        ref.encoder.norm = nn.Identity()
        ref.decoder.norm = nn.Identity()
    else:
        ours.encoder.norm.load_state_dict(ref.encoder.norm.state_dict())
        ours.decoder.norm.load_state_dict(ref.decoder.norm.state_dict())
    src, tgt = torch.randn(3, 7, D), torch.randn(3, 5, D)
    expected = ref(src, tgt, tgt_mask=core.causal_mask(5), src_key_padding_mask=padding(),
                   memory_key_padding_mask=padding())
    got = ours(src, tgt, src_padding_mask=padding())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_paper_base_parameter_count():
    """N=6, d=512, d_ff=2048, h=8, shared 37k vocabulary: 63,082,496 parameters (Table 3: 65M)."""
    model = core.Seq2SeqTransformer(core.TransformerConfig(), 37000, share_embeddings=True, tie_output=True)
    assert core.count_parameters(model) == 63_082_496


def test_shared_layers_reuse_weights():
    c = core.TransformerConfig(d_model=D, n_heads=H, n_layers=4, d_ff=FF, share_layers=True)
    enc = core.Encoder(c)
    one = core.Encoder(core.TransformerConfig(d_model=D, n_heads=H, n_layers=1, d_ff=FF))
    assert core.count_parameters(enc) == core.count_parameters(one)
    assert enc.layers[0] is enc.layers[3]
