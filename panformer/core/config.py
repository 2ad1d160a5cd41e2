"""The one configuration of the core Transformer."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["TransformerConfig"]


@dataclass
class TransformerConfig:
    """Hyper-parameters shared by :class:`core.Encoder`, :class:`core.Decoder` and friends.

    The defaults are the paper's base model (Vaswani et al. 2017, Table 3): post-LN, ReLU, 6 layers.
    """

    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    n_decoder_layers: int | None = None  # None: same as n_layers
    d_ff: int = 2048
    dropout: float = 0.1  # on sublayer outputs and on embedding + position sums (the paper)
    attention_dropout: float = 0.0  # on attention probabilities (optional; slows CPU attention)
    activation: Literal["relu", "gelu"] = "relu"
    norm_first: bool = False  # False: post-LN as in the paper; True: pre-LN (GPT-2, ViT)
    max_len: int = 512
    positional: Literal["sinusoidal", "learned", "none"] = "sinusoidal"
    share_layers: bool = False  # one layer's weights reused at every depth (ALBERT / Universal T.)
    layer_norm_eps: float = 1e-5
    bias: bool = True  # biases in attention projections and FFN
    final_norm: bool | None = None  # LayerNorm after the stack; None: only when norm_first

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.activation not in ("relu", "gelu", "gelu_tanh"):
            raise ConfigError(f"activation must be 'relu' or 'gelu', got {self.activation!r}")
        if self.positional not in ("sinusoidal", "learned", "none"):
            raise ConfigError(f"positional must be 'sinusoidal', 'learned' or 'none', got {self.positional!r}")
        for name in ("d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError("dropout and attention_dropout must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def num_decoder_layers(self) -> int:
        return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers

    @property
    def use_final_norm(self) -> bool:
        return self.norm_first if self.final_norm is None else self.final_norm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown TransformerConfig keys: {sorted(unknown)}")
        return cls(**d)
