"""GPT-2-family decoders from Hugging Face-format directories into :class:`core.CausalTransformerLM`.

GPT-2 is a pre-LN decoder-only stack with learned positions, tanh-approximated GELU, a final
LayerNorm and an output projection tied to the token embedding. Its ``Conv1D`` layers store weights
as (in, out), the transpose of ``nn.Linear``; ``c_attn`` holds q, k and v side by side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import TransformerConfig
from ..errors import ConfigError
from ..models import CausalTransformerLM
from .hf import Block, TensorSpec, assign_tensors, config_value, find_prefix, read_config, read_state_dict, transpose

__all__ = ["gpt2_config", "gpt2_specs", "load_gpt2", "GPT2_MODEL_TYPES"]

GPT2_MODEL_TYPES = ("gpt2",)
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
_IGNORE = (r"\.attn\.bias$", r"\.attn\.masked_bias$", r"^lm_head\.weight$", r"^score\.", r"^multiple_choice_head\.")


def gpt2_config(cfg: dict[str, Any], where: Path | str = "config.json") -> TransformerConfig:
    """Translate a GPT-2 ``config.json`` dict into a :class:`TransformerConfig` (pre-LN, learned positions)."""
    mt = cfg.get("model_type")
    if mt not in GPT2_MODEL_TYPES:
        raise ConfigError(f"{where}/config.json: model_type {mt!r} (architectures {cfg.get('architectures')}) is not a "
                          f"GPT-2 decoder; load_gpt2 supports {', '.join(GPT2_MODEL_TYPES)}")
    act = config_value(cfg, "activation_function", where, "gelu_new", str)
    if act not in _ACTIVATIONS:
        raise ConfigError(f"{where}/config.json: activation_function {act!r} is not supported; expected one of {sorted(_ACTIVATIONS)}")
    for key, ok in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False), ("scale_attn_weights", True)):
        if cfg.get(key, ok) != ok:
            raise ConfigError(f"{where}/config.json: {key}={cfg[key]!r} is not supported (core attention needs {ok})")
    d = config_value(cfg, "n_embd", where)
    return TransformerConfig(
        d_model=d,
        n_heads=config_value(cfg, "n_head", where),
        n_layers=config_value(cfg, "n_layer", where),
        d_ff=config_value(cfg, "n_inner", where, 4 * d),
        dropout=config_value(cfg, "resid_pdrop", where, 0.1, float),
        attention_dropout=config_value(cfg, "attn_pdrop", where, 0.1, float),
        activation=_ACTIVATIONS[act],
        norm_first=True,
        max_len=config_value(cfg, "n_positions", where, 1024),
        positional="learned",
        layer_norm_eps=config_value(cfg, "layer_norm_epsilon", where, 1e-5, float),
        final_norm=True,
    )


def gpt2_specs(model: CausalTransformerLM, p: str, tied: bool) -> dict[str, TensorSpec]:
    """Our parameter name → (Hugging Face tensor name under prefix ``p``, transform, source shape)."""
    d, f = model.cfg.d_model, model.cfg.d_ff
    specs: dict[str, TensorSpec] = {
        "embed.weight": (f"{p}wte.weight", None, None),
        "decoder.pos.weight": (f"{p}wpe.weight", None, None),
        "decoder.norm.weight": (f"{p}ln_f.weight", None, None),
        "decoder.norm.bias": (f"{p}ln_f.bias", None, None),
    }
    if not tied:
        specs["output.weight"] = ("lm_head.weight", None, None)
    for i in range(len(model.decoder.layers)):
        ours, h = f"decoder.layers.{i}", f"{p}h.{i}"
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):  # c_attn: (d, 3d) = [q | k | v]
            specs[f"{ours}.self_attn.{name}.weight"] = (f"{h}.attn.c_attn.weight", Block(j, 3, 1, transposed=True), (d, 3 * d))
            specs[f"{ours}.self_attn.{name}.bias"] = (f"{h}.attn.c_attn.bias", Block(j, 3, 0), (3 * d,))
        specs.update({
            f"{ours}.self_attn.out_proj.weight": (f"{h}.attn.c_proj.weight", transpose, (d, d)),
            f"{ours}.self_attn.out_proj.bias": (f"{h}.attn.c_proj.bias", None, None),
            f"{ours}.ffn.linear1.weight": (f"{h}.mlp.c_fc.weight", transpose, (d, f)),
            f"{ours}.ffn.linear1.bias": (f"{h}.mlp.c_fc.bias", None, None),
            f"{ours}.ffn.linear2.weight": (f"{h}.mlp.c_proj.weight", transpose, (f, d)),
            f"{ours}.ffn.linear2.bias": (f"{h}.mlp.c_proj.bias", None, None),
            f"{ours}.norm1.weight": (f"{h}.ln_1.weight", None, None),
            f"{ours}.norm1.bias": (f"{h}.ln_1.bias", None, None),
            f"{ours}.norm3.weight": (f"{h}.ln_2.weight", None, None),
            f"{ours}.norm3.bias": (f"{h}.ln_2.bias", None, None),
        })
    return specs


def load_gpt2(path: str | Path, dropout: float | None = None, attention_dropout: float | None = None) -> CausalTransformerLM:
    """Load a GPT-2 decoder (``GPT2Model`` or ``GPT2LMHeadModel`` weights) as a :class:`CausalTransformerLM`.

    The model's call ``(input_ids)`` (B, T) gives logits (B, T, vocab); it implements the
    ``init_decode_state`` / ``decode_step`` protocol, so :func:`core.greedy_search`, :func:`core.sample`
    and :func:`core.beam_search` decode it with the key/value cache. Extra attributes: ``bos_id``,
    ``eos_id`` (from config.json) and ``hf_config``.

    Raises:
        ConfigError: unknown architecture, or a tensor missing / of the wrong shape / unexpected.
    """
    raw = read_config(path)
    where = Path(path)
    cfg = gpt2_config(raw, where)
    if dropout is not None:
        cfg.dropout = dropout
    if attention_dropout is not None:
        cfg.attention_dropout = attention_dropout
    tied = bool(raw.get("tie_word_embeddings", True))
    model = CausalTransformerLM(cfg, config_value(raw, "vocab_size", where), pad_id=None, tie_output=tied,
                                scale_embeddings=False)
    tensors, source = read_state_dict(path)
    prefix = find_prefix(tensors, "wte.weight", ("transformer.",), source)
    assign_tensors(model, gpt2_specs(model, prefix, tied), tensors, source, _IGNORE)
    model.bos_id = raw.get("bos_token_id")
    model.eos_id = raw.get("eos_token_id")
    model.hf_config = raw
    return model.eval()
