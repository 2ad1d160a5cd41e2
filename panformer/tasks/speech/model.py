"""The speech recogniser: SpecAugment → 4x conv subsampling → core Encoder → CTC head, with an optional
attention decoder (core Decoder) trained jointly with CTC (the hybrid CTC/attention model of
Watanabe et al. 2017), which implements the ``init_decode_state``/``decode_step`` protocol of
:mod:`core.decoding` so ``core.beam_search`` decodes it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import Decoder, DecodeState, Encoder, OutputProjection, TokenEmbedding, TransformerConfig
from panformer.core.masks import lengths_to_padding_mask

from .frontend import Conv2dSubsampling, MelWarp, spec_augment

__all__ = ["SpeechRecognizer"]


class SpeechRecognizer(nn.Module):
    """Log-mel features (B, T, n_mels) → CTC log-probabilities (B, T', V) over characters, T' ≈ T / 4.

    Args:
        cfg: the core Transformer configuration (encoder, and decoder when ``attention_decoder``).
        n_mels: feature bins. vocab_size: characters + specials; ``blank`` (= the pad id 0) is the CTC blank.
        spec_augment: (freq_masks, freq_width, time_masks, time_width) applied in training only.
        freq_warp: vocal tract length perturbation (:class:`MelWarp`) applied in training only, before SpecAugment.
        encoder: replaces the core Encoder (e.g. a bidirectional :class:`core.RNNEncoder` baseline); same
            contract: (x (B, T', d), padding_mask (B, T')) → (B, T', d).
    """

    def __init__(self, cfg: TransformerConfig, n_mels: int, vocab_size: int, blank: int = 0,
                 conv_channels: int = 64, attention_decoder: bool = False,
                 spec_augment: tuple[int, int, int, float] = (2, 15, 2, 0.05),
                 encoder: nn.Module | None = None, freq_warp: MelWarp | None = None) -> None:
        super().__init__()
        self.cfg, self.blank, self.vocab_size = cfg, blank, vocab_size
        self.spec_augment, self.freq_warp = spec_augment, freq_warp
        self.subsample = Conv2dSubsampling(n_mels, cfg.d_model, conv_channels)
        self.encoder = encoder if encoder is not None else Encoder(cfg)
        self.ctc_head = nn.Linear(cfg.d_model, vocab_size)
        self.decoder: Decoder | None = None
        if attention_decoder:
            self.embed = TokenEmbedding(vocab_size, cfg.d_model, blank)
            self.decoder = Decoder(cfg, cross_attention=True)
            self.output = OutputProjection(cfg.d_model, vocab_size, tied_to=self.embed)

    def encode(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) → memory (B, T', d), enc_lens (B,), padding mask (B, T')."""
        if self.training and self.freq_warp is not None:
            feats = self.freq_warp(feats)
        if self.training and self.spec_augment is not None:
            feats = spec_augment(feats, feat_lens, *self.spec_augment)
        x, enc_lens = self.subsample(feats, feat_lens)  # (B, T', d)
        mask = lengths_to_padding_mask(enc_lens, x.size(1))  # (B, T') True at padding
        return self.encoder(x, mask), enc_lens, mask

    def forward(self, feats: Tensor, feat_lens: Tensor, tgt_in: Tensor | None = None) -> dict[str, Tensor]:
        """Returns ``{"ctc_log_probs" (B, T', V) float32, "enc_lens" (B,)}`` and, with teacher-forced
        decoder input ``tgt_in`` (B, L) (BOS + labels, padded with 0), ``"att_logits"`` (B, L, V)."""
        memory, enc_lens, mask = self.encode(feats, feat_lens)
        out = {"ctc_log_probs": F.log_softmax(self.ctc_head(memory).float(), dim=-1), "enc_lens": enc_lens,
               "memory": memory, "memory_mask": mask}
        if tgt_in is not None and self.decoder is not None:
            h = self.decoder(self.embed(tgt_in), memory, mask, tgt_in.eq(self.blank))
            out["att_logits"] = self.output(h)
        return out

    # -- the core.decoding protocol (attention decoder) -------------------------------------------
    def init_decode_state(self, feats: Tensor, feat_lens: Tensor, use_cache: bool = True) -> DecodeState:
        if self.decoder is None:
            raise ValueError("this model has no attention decoder (trained with --ctc-weight 1)")
        memory, _, mask = self.encode(feats, feat_lens)
        return DecodeState(cache=self.decoder.new_cache() if use_cache else None, memory=memory,
                           memory_padding_mask=mask)

    def decode_step(self, tokens: Tensor, state: DecodeState) -> Tensor:
        """tokens (B, t) so far → next-token logits (B, V)."""
        assert self.decoder is not None
        new = tokens if state.cache is None else tokens[:, state.cache.offset:]
        h = self.decoder(self.embed(new), state.memory, state.memory_padding_mask, cache=state.cache)
        return self.output(h[:, -1])

    @torch.no_grad()
    def attention_scores(self, memory: Tensor, mask: Tensor, hyps: list[list[int]], bos: int, eos: int) -> Tensor:
        """Teacher-forced log p_att(y + EOS | x) of each hypothesis for one utterance's memory (1, T', d) → (N,)."""
        assert self.decoder is not None
        n, L = len(hyps), max(len(h) for h in hyps) + 1
        tgt_in = torch.full((n, L), self.blank, dtype=torch.long, device=memory.device)
        tgt_out = torch.full((n, L), -100, dtype=torch.long, device=memory.device)
        for i, h in enumerate(hyps):
            tgt_in[i, : len(h) + 1] = torch.tensor([bos] + h)
            tgt_out[i, : len(h) + 1] = torch.tensor(h + [eos])
        h = self.decoder(self.embed(tgt_in), memory.expand(n, -1, -1), mask.expand(n, -1), tgt_in.eq(self.blank))
        logp = F.log_softmax(self.output(h).float(), dim=-1)
        tok = logp.gather(-1, tgt_out.clamp(min=0)[..., None]).squeeze(-1)
        return (tok * tgt_out.ne(-100)).sum(-1)
