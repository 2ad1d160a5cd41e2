"""core.init: the gpt2 scheme's standard deviations, per parameter kind, and the generation task's --init."""
from __future__ import annotations

import math

import pytest
import torch

from panformer.core import CausalTransformerLM, TransformerConfig
from panformer.core.init import init_weights_


def lm(n_layers: int = 4) -> CausalTransformerLM:
    cfg = TransformerConfig(d_model=128, n_heads=4, n_layers=n_layers, d_ff=512, dropout=0.0, activation="gelu",
                            norm_first=True, max_len=32, positional="learned")
    return CausalTransformerLM(cfg, vocab_size=300, scale_embeddings=False)


def test_gpt2_init_sets_each_kind_of_parameter():
    torch.manual_seed(0)
    model = init_weights_(lm(4), "gpt2", n_layers=4)
    resid = 0.02 / math.sqrt(8)
    seen = {"linear": 0, "residual": 0, "bias": 0, "norm": 0}
    for name, p in model.named_parameters():
        if name.endswith(("out_proj.weight", "linear2.weight")):
            kind, want = "residual", resid
        elif name.endswith("proj.weight") or name.endswith("linear1.weight") or name == "embed.weight":
            kind, want = "linear", 0.02
        elif "norm" in name:
            kind = "norm"
            assert torch.all(p == (1.0 if name.endswith("weight") else 0.0)), name
            seen[kind] += 1
            continue
        elif name.endswith("bias"):
            kind = "bias"
            assert torch.all(p == 0), name
            seen[kind] += 1
            continue
        else:
            continue  # the learned positions: N(0, 0.02) at construction already
        # a sample std of n >= 16k normal draws is within 3 % of sigma with overwhelming probability
        # (its relative standard error is 1 / sqrt(2n) < 0.6 %); PyTorch's defaults are 2-4x these
        assert p.std().item() == pytest.approx(want, rel=0.03), name
        assert abs(p.mean().item()) < 0.1 * want, name
        seen[kind] += 1
    assert seen == {"linear": 1 + 4 * 4, "residual": 2 * 4, "bias": 4 * 6, "norm": 2 * 4 * 2 + 2}


def test_torch_scheme_is_a_no_op_and_unknown_schemes_are_refused():
    torch.manual_seed(0)
    model = lm(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_weights_(model, "torch", n_layers=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="torch, gpt2"):
        init_weights_(model, "xavier", n_layers=2)


def test_generation_task_applies_init_option():
    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args

    cls = get_task("generation")
    stds = {}
    for scheme in ("torch", "gpt2"):
        args, _ = resolve_train_args(cls, ["--quick", "--init", scheme, "--max-chars", "20000"])
        task = cls(args)
        task.load_data()
        task.fit_assets()
        torch.manual_seed(0)
        model = task.build_model()
        stds[scheme] = model.decoder.layers[0].ffn.linear2.weight.std().item()
    # quick model: d 64, 2 layers, d_ff 256 -> PyTorch's default std 1/sqrt(3*256) = 0.036; gpt2 0.02/sqrt(4) = 0.01
    assert stds["gpt2"] == pytest.approx(0.01, rel=0.05)
    assert stds["torch"] == pytest.approx(1 / math.sqrt(3 * 256), rel=0.05)
