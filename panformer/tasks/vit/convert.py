"""Import torchvision Vision Transformer weights (``vit_b_16``, ``vit_b_32``, ``vit_l_16``, ``vit_l_32``,
``vit_h_14`` or any ``VisionTransformer``) into :class:`tasks.vit.model.VisionTransformer`.

torchvision → core names (per layer ``i``)::

    conv_proj.{weight,bias}                          → patch_embed.proj.{weight,bias}
    class_token                                      → cls_token
    encoder.pos_embedding                            → pos_embed
    encoder.layers.encoder_layer_i.ln_1 / ln_2       → encoder.layers.i.norm1 / norm2
    ....self_attention.in_proj_{weight,bias} (3d, d) → ....self_attn.{q,k,v}_proj (split in thirds)
    ....self_attention.out_proj                      → ....self_attn.out_proj
    ....mlp.0 / mlp.3 (older: mlp.linear_1 / _2)     → ....ffn.linear1 / linear2
    encoder.ln                                       → encoder.norm
    heads.head (heads.pre_logits)                    → head (pre_logits.0)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from panformer.core.errors import ConfigError

from .model import ViTConfig, VisionTransformer

__all__ = ["from_torchvision", "config_from_torchvision_state", "convert_torchvision_state", "load_state_file"]

# Heads of torchvision's published widths (not recoverable from a state dict); other widths: d / 64.
_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
_LAYER = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.+)$")


def load_state_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a ``.pth``/``.pt`` file (read with ``weights_only=True``) or ``.safetensors``.

    A checkpoint that wraps the weights (``{"model": ...}`` or ``{"state_dict": ...}``) is unwrapped.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"--pretrained: file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or not a weights file
        raise ConfigError(f"--pretrained {p}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"--pretrained {p}: expected a state dict of tensors")
    return state


def config_from_torchvision_state(state: Mapping[str, Tensor], n_heads: int | None = None) -> ViTConfig:
    """Infer a :class:`ViTConfig` from a torchvision ViT state dict (heads from the width unless given)."""
    if "conv_proj.weight" not in state:
        if any(k.startswith("conv_proj.") for k in state):
            raise ConfigError("torchvision ViT with a convolutional stem (conv_stem_configs) is not supported")
        raise ConfigError("not a torchvision VisionTransformer state dict: no 'conv_proj.weight' "
                          f"(keys start with {sorted(state)[:3]})")
    d, in_ch, p, _ = state["conv_proj.weight"].shape
    n_patches = state["encoder.pos_embedding"].shape[1] - 1
    grid = round(n_patches ** 0.5)
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    fc1 = next(k for k in state if _LAYER.match(k) and k.endswith(("mlp.0.weight", "mlp.linear_1.weight")))
    rep = state["heads.pre_logits.weight"].shape[0] if "heads.pre_logits.weight" in state else None
    return ViTConfig(image_size=grid * p, patch_size=p, in_channels=in_ch, num_classes=state["heads.head.weight"].shape[0],
                     d_model=d, n_heads=n_heads or _HEADS_BY_WIDTH.get(d, max(d // 64, 1)), n_layers=len(layers),
                     d_ff=state[fc1].shape[0], layer_norm_eps=1e-6, representation_size=rep)


def _layer_key(rest: str) -> list[str] | None:
    """Core names for the torchvision name ``rest`` inside one encoder layer (three for in_proj)."""
    table = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.out_proj": "self_attn.out_proj",
             "mlp.0": "ffn.linear1", "mlp.linear_1": "ffn.linear1", "mlp.3": "ffn.linear2", "mlp.linear_2": "ffn.linear2"}
    module, _, param = rest.rpartition(".")
    if module == "self_attention" and param in ("in_proj_weight", "in_proj_bias"):
        suffix = param.removeprefix("in_proj_")
        return [f"self_attn.{n}_proj.{suffix}" for n in "qkv"]
    return [f"{table[module]}.{param}"] if module in table else None


def convert_torchvision_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and split the fused q/k/v projection of) a torchvision ViT state dict to core names."""
    top = {"conv_proj.weight": "patch_embed.proj.weight", "conv_proj.bias": "patch_embed.proj.bias",
           "class_token": "cls_token", "encoder.pos_embedding": "pos_embed",
           "encoder.ln.weight": "encoder.norm.weight", "encoder.ln.bias": "encoder.norm.bias",
           "heads.head.weight": "head.weight", "heads.head.bias": "head.bias",
           "heads.pre_logits.weight": "pre_logits.0.weight", "heads.pre_logits.bias": "pre_logits.0.bias"}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        m = _LAYER.match(key)
        names = _layer_key(m.group(2)) if m else None
        if names is None:
            raise ConfigError(f"unexpected key {key!r} in the torchvision ViT state dict")
        prefix = f"encoder.layers.{m.group(1)}."
        parts = value.chunk(3, dim=0) if len(names) == 3 else (value,)  # in_proj: [W_q; W_k; W_v]
        for name, part in zip(names, parts):
            out[prefix + name] = part.contiguous()
    return out


def from_torchvision(model_or_state_dict: nn.Module | Mapping[str, Tensor] | str | Path,
                     n_heads: int | None = None, dropout: float = 0.0) -> VisionTransformer:
    """A core :class:`VisionTransformer` whose logits equal the given torchvision ViT's.

    Args:
        model_or_state_dict: a ``torchvision.models.VisionTransformer``, its ``state_dict()``, or a
            path to one saved with ``torch.save`` (``.pth``) or as ``.safetensors``.
        n_heads: attention heads; read from a model, else inferred from the width (768 → 12,
            1024 → 16, 1280 → 16, otherwise width / 64). Give it for custom state dicts.
        dropout: dropout of the new model (torchvision's published models use 0).
    Returns:
        ``VisionTransformer`` in eval mode, on CPU, float32; call it on images (B, 3, H, W).
    """
    if isinstance(model_or_state_dict, nn.Module):
        tv = model_or_state_dict
        n_heads = n_heads or tv.encoder.layers[0].self_attention.num_heads
        state = tv.state_dict()
    elif isinstance(model_or_state_dict, (str, Path)):
        state = load_state_file(model_or_state_dict)
    else:
        state = dict(model_or_state_dict)
    cfg = config_from_torchvision_state(state, n_heads)
    cfg.dropout = dropout
    model = VisionTransformer(cfg)
    converted = {k: v.detach().to("cpu", torch.float32) for k, v in convert_torchvision_state(state).items()}
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ConfigError(f"torchvision ViT import: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model.eval()
