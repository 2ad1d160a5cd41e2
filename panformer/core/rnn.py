"""Recurrent sequence encoders (LSTM / GRU): the pre-Transformer baselines, with core.Encoder's call contract.

``RNNEncoder(cfg)(x (B, T, d), padding_mask (B, T) bool, True = pad) -> (B, T, d)``. Padding may sit
anywhere (right-padded text, left-padded item histories): each row's real positions are gathered to
the front in their order, run as a packed sequence (so padding never enters the recurrence) and
scattered back; padded positions of the output are zero. Bidirectional states (2 * hidden) are
projected back to ``d_model``. A unidirectional encoder is causal: the output at t sees x[:t + 1] only.
:class:`RecurrentLM` is the LSTM / GRU counterpart of :class:`core.CausalTransformerLM` (same decoding protocol).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .decoding import DecodeState
from .embedding import OutputProjection, TokenEmbedding
from .errors import ConfigError

__all__ = ["RNNConfig", "RNNEncoder", "RecurrentLM", "RNN_CELLS"]

RNN_CELLS = ("lstm", "gru")


@dataclass
class RNNConfig:
    """Shape of an :class:`RNNEncoder`."""

    d_model: int = 256  # input and output width
    n_layers: int = 1
    cell: Literal["lstm", "gru"] = "lstm"
    bidirectional: bool = True  # False: causal (left to right)
    hidden_size: int | None = None  # per direction; None: d_model
    dropout: float = 0.1  # on the input (embeddings), between layers and on the output
    input_norm: bool = True  # LayerNorm on the input: inputs of any scale (conv features) keep the gates unsaturated
    max_len: int = 512  # RecurrentLM: the context generation keeps (the recurrence itself has no limit)

    def __post_init__(self) -> None:
        if self.cell not in RNN_CELLS:
            raise ConfigError(f"RNN cell must be one of {', '.join(RNN_CELLS)}, got {self.cell!r}")
        for name in ("d_model", "n_layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout must be in [0, 1)")

    @property
    def hidden(self) -> int:
        return self.hidden_size or self.d_model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RNNEncoder(nn.Module):
    """A stack of LSTM / GRU layers over ``x`` (B, T, d_model) that ignores padded positions."""

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        rnn_cls = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm: nn.Module = nn.LayerNorm(cfg.d_model) if cfg.input_norm else nn.Identity()
        self.rnn = rnn_cls(cfg.d_model, cfg.hidden, cfg.n_layers, batch_first=True, bidirectional=cfg.bidirectional,
                           dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        out = cfg.hidden * (2 if cfg.bidirectional else 1)
        self.proj: nn.Module = nn.Linear(out, cfg.d_model) if out != cfg.d_model else nn.Identity()

    @property
    def causal(self) -> bool:
        return not self.cfg.bidirectional

    def step(self, x: Tensor, hidden: Any = None) -> tuple[Tensor, Any]:
        """Unpadded x (B, t, d) continuing from ``hidden`` (None: the start) → ((B, t, d), new hidden)."""
        h, hidden = self.rnn(self.dropout(self.norm(x)), hidden)
        return self.dropout(self.proj(h)), hidden

    def forward(self, x: Tensor, padding_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """x (B, T, d), padding_mask bool (B, T) True at padding → (B, T, d), zeros at padding.

        ``causal=True`` asks for a left-to-right encoder and fails on a bidirectional one.
        """
        if causal and self.cfg.bidirectional:
            raise ValueError("a bidirectional RNNEncoder cannot be causal; build it with bidirectional=False")
        B, T, _ = x.shape
        x = self.dropout(self.norm(x))
        if padding_mask is None:
            h, _ = self.rnn(x)  # (B, T, H * dirs)
            return self.dropout(self.proj(h))
        keep = ~padding_mask  # (B, T)
        lengths = keep.sum(1)  # (B,)
        # stable sort: real positions first, in order; padding after (handles left and right padding)
        order = torch.sort(padding_mask.to(torch.int8), dim=1, stable=True).indices  # (B, T)
        xs = x.gather(1, order.unsqueeze(-1).expand_as(x))  # (B, T, d) right-padded
        packed = pack_padded_sequence(xs, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.rnn(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=T)  # (B, T, H * dirs)
        h = self.dropout(self.proj(h))  # (B, T, d)
        real = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T) in sorted order
        h = h * real.unsqueeze(-1).to(h.dtype)
        out = torch.zeros_like(h)
        return out.scatter(1, order.unsqueeze(-1).expand_as(h), h)  # back to the original positions


class _RecurrentCache:
    """The state a :class:`RecurrentLM` carries between decoding steps, in ``DecodeState.cache``."""

    def __init__(self) -> None:
        self.offset, self.hidden = 0, None

    def reorder(self, index: Tensor) -> None:
        """Keep / duplicate batch rows (beam search): hidden tensors are (layers * dirs, B, H)."""
        if isinstance(self.hidden, tuple):
            self.hidden = tuple(h.index_select(1, index) for h in self.hidden)
        elif self.hidden is not None:
            self.hidden = self.hidden.index_select(1, index)


class RecurrentLM(nn.Module):
    """An LSTM / GRU language model: embeddings, a causal :class:`RNNEncoder`, tied output projection.

    ``forward(ids (B, T)) -> logits (B, T, V)``; implements ``init_decode_state`` / ``decode_step`` so
    ``core.greedy_search`` / ``sample`` / ``beam_search`` / ``generate`` drive it like a Transformer LM
    (the "cache" is the recurrent state).
    """

    def __init__(self, cfg: RNNConfig, vocab_size: int, pad_id: int | None = None, tie_output: bool = True) -> None:
        super().__init__()
        if cfg.bidirectional:
            raise ConfigError("a language model must be causal: RNNConfig(bidirectional=False)")
        self.cfg, self.pad_id, self.vocab_size = cfg, pad_id, vocab_size
        self.embed = TokenEmbedding(vocab_size, cfg.d_model, pad_id, scale=False)
        self.rnn = RNNEncoder(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.output = OutputProjection(cfg.d_model, vocab_size, tied_to=self.embed if tie_output else None)

    def forward(self, ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """ids (B, T) → logits (B, T, V); position t has seen ids[:, :t + 1]."""
        return self.output(self.norm(self.rnn(self.embed(ids), padding_mask, causal=True)))

    def init_decode_state(self, batch_size: int | None = None, use_cache: bool = True) -> DecodeState:
        return DecodeState(cache=_RecurrentCache() if use_cache else None)  # type: ignore[arg-type]

    def decode_step(self, tokens: Tensor, state: DecodeState) -> Tensor:
        """tokens (B, t) so far → next-token logits (B, V); with a cache only the new tokens are run."""
        cache = state.cache
        if cache is None:
            return self(tokens)[:, -1]
        h, cache.hidden = self.rnn.step(self.embed(tokens[:, cache.offset:]), cache.hidden)  # type: ignore[union-attr]
        cache.offset = tokens.size(1)  # type: ignore[union-attr]
        return self.output(self.norm(h[:, -1]))
