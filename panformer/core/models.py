"""Token-level models built from the core stacks (domain-free): a seq2seq Transformer and a causal LM.

Both implement the decoding protocol of :mod:`core.decoding`.
"""
from __future__ import annotations

from torch import Tensor, nn

from .config import TransformerConfig
from .decoding import DecodeState
from .embedding import OutputProjection, TokenEmbedding
from .transformer import Decoder, Encoder

__all__ = ["Seq2SeqTransformer", "CausalTransformerLM", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class Seq2SeqTransformer(nn.Module):
    """The paper's translation model: embeddings, encoder, decoder and output projection.

    ``share_embeddings`` uses one embedding matrix for source and target (one joint vocabulary);
    ``tie_output`` ties the output projection to the target embedding (section 3.4).
    """

    def __init__(
        self,
        cfg: TransformerConfig,
        src_vocab_size: int,
        tgt_vocab_size: int | None = None,
        pad_id: int = 0,
        share_embeddings: bool = False,
        tie_output: bool = True,
    ) -> None:
        super().__init__()
        tgt_vocab_size = src_vocab_size if tgt_vocab_size is None else tgt_vocab_size
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError("share_embeddings needs one vocabulary: src_vocab_size == tgt_vocab_size")
        self.cfg, self.pad_id = cfg, pad_id
        self.src_embed = TokenEmbedding(src_vocab_size, cfg.d_model, pad_id)
        self.tgt_embed = self.src_embed if share_embeddings else TokenEmbedding(tgt_vocab_size, cfg.d_model, pad_id)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross_attention=True)
        self.output = OutputProjection(cfg.d_model, tgt_vocab_size, tied_to=self.tgt_embed if tie_output else None)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src ids (B, S) → memory (B, S, d) and its padding mask (B, S)."""
        mask = src.eq(self.pad_id)
        return self.encoder(self.src_embed(src), mask), mask

    def forward(self, src: Tensor, tgt_in: Tensor, output_attentions: bool = False):
        """src (B, S), tgt_in (B, T) teacher-forced decoder input → logits (B, T, V).

        With ``output_attentions`` also returns the decoder's cross-attention maps per layer."""
        memory, src_mask = self.encode(src)
        out = self.decoder(self.tgt_embed(tgt_in), memory, src_mask, tgt_in.eq(self.pad_id),
                           output_attentions=output_attentions)
        if output_attentions:
            h, _, cross = out
            return self.output(h), cross
        return self.output(out)

    def init_decode_state(self, src: Tensor, use_cache: bool = True) -> DecodeState:
        memory, mask = self.encode(src)
        return DecodeState(cache=self.decoder.new_cache() if use_cache else None, memory=memory, memory_padding_mask=mask)

    def decode_step(self, tokens: Tensor, state: DecodeState) -> Tensor:
        new = tokens if state.cache is None else tokens[:, state.cache.offset :]
        h = self.decoder(self.tgt_embed(new), state.memory, state.memory_padding_mask, cache=state.cache)
        return self.output(h[:, -1])


class CausalTransformerLM(nn.Module):
    """Decoder-only language model (GPT): embeddings, causal decoder stack, tied output projection."""

    def __init__(self, cfg: TransformerConfig, vocab_size: int, pad_id: int | None = None, tie_output: bool = True,
                 scale_embeddings: bool = True) -> None:
        super().__init__()
        self.cfg, self.pad_id, self.vocab_size = cfg, pad_id, vocab_size
        self.embed = TokenEmbedding(vocab_size, cfg.d_model, pad_id, scale=scale_embeddings)
        self.decoder = Decoder(cfg, cross_attention=False)
        self.output = OutputProjection(cfg.d_model, vocab_size, tied_to=self.embed if tie_output else None)

    def forward(self, ids: Tensor, padding_mask: Tensor | None = None, output_attentions: bool = False):
        """ids (B, T) → logits (B, T, V) (with ``output_attentions``: and per-layer maps (B, nh, T, T))."""
        out = self.decoder(self.embed(ids), padding_mask=padding_mask, output_attentions=output_attentions)
        if output_attentions:
            h, maps, _ = out
            return self.output(h), maps
        return self.output(out)

    def init_decode_state(self, batch_size: int | None = None, use_cache: bool = True) -> DecodeState:
        return DecodeState(cache=self.decoder.new_cache() if use_cache else None)

    def decode_step(self, tokens: Tensor, state: DecodeState) -> Tensor:
        if state.cache is None:
            return self.output(self.decoder(self.embed(tokens[:, -self.cfg.max_len :]))[:, -1])
        new = tokens[:, state.cache.offset :]
        return self.output(self.decoder(self.embed(new), cache=state.cache)[:, -1])
