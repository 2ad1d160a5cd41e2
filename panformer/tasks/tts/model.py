"""Transformer-TTS (Li et al. 2019) on the core: characters → core Encoder; mel frames → pre-net → core Decoder
(causal self-attention with a KV cache + cross-attention) → r mel frames and a stop logit per step → post-net.

Shapes: text (B, S) ids (0 = pad), mel (B, T, n_mels) normalised log-mel, T = N * r decoder steps of r frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import Decoder, DecodeState, Encoder, TransformerConfig
from panformer.core.masks import lengths_to_padding_mask
from panformer.core.positional import sinusoidal_table

__all__ = ["TransformerTTS", "guided_attention_loss"]


class ConvStack(nn.Module):
    """Conv1d (same padding) layers over (B, T, C_in) → (B, T, C_out); tanh/ReLU between, dropout after each."""

    def __init__(self, dims: list[int], kernel: int = 5, dropout: float = 0.1, act: str = "relu") -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in dims[1:-1])
        self.act = torch.tanh if act == "tanh" else F.relu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        """x (B, T, C); pad bool (B, T) True at padding (zeroed before each conv, so padding never leaks in)."""
        for i, conv in enumerate(self.convs):
            if pad is not None:
                x = x.masked_fill(pad[..., None], 0.0)
            x = conv(x.transpose(1, 2)).transpose(1, 2)
            if i < len(self.norms):
                x = self.dropout(self.act(self.norms[i](x)))
        return x


class TransformerTTS(nn.Module):
    """Text → log-mel. Positions: sinusoids scaled by a learned alpha per stack (as in Transformer-TTS), so the
    core stacks run with ``positional="none"``.

    Args:
        cfg: core config (``n_layers`` encoder, ``n_decoder_layers`` decoder layers, ``positional="none"``).
        vocab_size: characters + specials (id 0 pads). reduction: frames per decoder step (r).
    """

    def __init__(self, cfg: TransformerConfig, vocab_size: int, n_mels: int, reduction: int = 3,
                 encoder_convs: int = 2, prenet_dim: int = 128, prenet_dropout: float = 0.5,
                 postnet_channels: int = 256, max_len: int = 4096) -> None:
        super().__init__()
        d, self.cfg, self.n_mels, self.r = cfg.d_model, cfg, n_mels, reduction
        self.embed = nn.Embedding(vocab_size, d, padding_idx=0)
        self.enc_prenet = ConvStack([d] * (encoder_convs + 1) + [d], 5, cfg.dropout) if encoder_convs else None
        self.prenet = nn.ModuleList([nn.Linear(n_mels, prenet_dim), nn.Linear(prenet_dim, prenet_dim)])
        self.prenet_proj = nn.Linear(prenet_dim, d)
        self.prenet_dropout = prenet_dropout
        self.register_buffer("pe", sinusoidal_table(max_len, d), persistent=False)
        self.enc_alpha = nn.Parameter(torch.ones(1))
        self.dec_alpha = nn.Parameter(torch.ones(1))
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross_attention=True)
        self.mel_out = nn.Linear(d, n_mels * reduction)
        self.stop_out = nn.Linear(d, 1)
        self.postnet = ConvStack([n_mels] + [postnet_channels] * 4 + [n_mels], 5, cfg.dropout, act="tanh")

    def encode(self, text: Tensor, text_lens: Tensor) -> tuple[Tensor, Tensor]:
        """text (B, S), text_lens (B,) → memory (B, S, d), padding mask (B, S) True at padding."""
        mask = lengths_to_padding_mask(text_lens, text.size(1))
        x = self.embed(text)  # (B, S, d)
        if self.enc_prenet is not None:
            x = self.enc_prenet(x, mask)
        x = x + self.enc_alpha * self.pe[: x.size(1)]
        return self.encoder(x, mask), mask

    def _prenet(self, frames: Tensor) -> Tensor:
        """(B, N, n_mels) → (B, N, d): 2 x (Linear, ReLU, dropout 0.5 in training), then a projection."""
        for lin in self.prenet:
            frames = F.dropout(F.relu(lin(frames)), self.prenet_dropout, self.training)
        return self.prenet_proj(frames)

    def _decode(self, frames: Tensor, memory: Tensor, memory_mask: Tensor, offset: int = 0,
                cache=None) -> tuple[Tensor, list[Tensor]]:
        """Decoder input frames (B, n, n_mels) at positions offset.. → hidden (B, n, d), cross maps per layer."""
        x = self._prenet(frames)
        x = x + self.dec_alpha * self.pe[offset: offset + x.size(1)]
        h, _, cross = self.decoder(x, memory, memory_mask, cache=cache, output_attentions=True)
        return h, cross

    def _postnet(self, mel: Tensor, frame_pad: Tensor | None) -> Tensor:
        return mel + self.postnet(mel, frame_pad)

    @staticmethod
    def decoder_inputs(mel: Tensor, r: int) -> Tensor:
        """Teacher forcing: mel (B, N*r, F) → (B, N, F): a zero "go" frame, then the last frame of each group."""
        return torch.cat([mel.new_zeros(mel.size(0), 1, mel.size(2)), mel[:, r - 1:: r][:, :-1]], dim=1)

    def forward(self, text: Tensor, text_lens: Tensor, mel: Tensor, mel_lens: Tensor) -> dict[str, Tensor | list]:
        """Teacher-forced pass. mel (B, N*r, F) normalised targets, mel_lens (B,) valid frames.

        Returns ``mel_before``/``mel_after`` (B, N*r, F), ``stop_logits`` (B, N), ``cross`` (list per decoder
        layer of (B, nh, N, S)), ``step_mask`` (B, N) True at padded decoder steps, ``text_mask`` (B, S).
        """
        memory, text_mask = self.encode(text, text_lens)
        B, N = mel.size(0), mel.size(1) // self.r
        steps = (mel_lens + self.r - 1) // self.r
        step_mask = lengths_to_padding_mask(steps, N)  # (B, N)
        h, cross = self._decode(self.decoder_inputs(mel, self.r), memory, text_mask)  # causal: padding is never seen
        before = self.mel_out(h).view(B, N * self.r, self.n_mels)
        frame_pad = lengths_to_padding_mask(mel_lens, N * self.r)
        return {"mel_before": before, "mel_after": self._postnet(before, frame_pad),
                "stop_logits": self.stop_out(h).squeeze(-1), "cross": cross, "step_mask": step_mask,
                "text_mask": text_mask}

    def init_decode_state(self, text: Tensor, text_lens: Tensor, use_cache: bool = True) -> DecodeState:
        memory, mask = self.encode(text, text_lens)
        return DecodeState(cache=self.decoder.new_cache() if use_cache else None, memory=memory,
                           memory_padding_mask=mask)

    @torch.no_grad()
    def generate(self, text: Tensor, text_lens: Tensor, max_steps: int, stop_threshold: float = 0.5,
                 use_cache: bool = True) -> dict[str, Tensor]:
        """Free-running (autoregressive) synthesis, deterministic in eval mode.

        Each step feeds the last predicted frame; with the KV cache only the new position is computed, without
        it the whole prefix is re-run (identical results). An utterance ends at the first step whose stop
        probability exceeds ``stop_threshold`` (that step's r frames are kept), or after ``max_steps``.

        Returns ``mel`` (B, n*r, F) post-net output (zero beyond each length), ``lengths`` (B,) frames,
        ``stopped`` (B,) bool, ``alignment`` (B, n, S) last-layer cross-attention averaged over heads.
        """
        state = self.init_decode_state(text, text_lens, use_cache)
        B = text.size(0)
        frames = text.new_zeros(B, 1, self.n_mels, dtype=state.memory.dtype)  # decoder inputs so far
        outs, aligns = [], []
        steps = torch.full((B,), max_steps, dtype=torch.long, device=text.device)
        done = torch.zeros(B, dtype=torch.bool, device=text.device)
        for t in range(max_steps):
            new = frames if state.cache is None else frames[:, state.cache.offset:]
            offset = 0 if state.cache is None else state.cache.offset
            h, cross = self._decode(new, state.memory, state.memory_padding_mask, offset, state.cache)
            h = h[:, -1]  # (B, d)
            out = self.mel_out(h).view(B, self.r, self.n_mels)
            outs.append(out)
            aligns.append(cross[-1][:, :, -1].mean(1))  # (B, S)
            stop = torch.sigmoid(self.stop_out(h).squeeze(-1)) > stop_threshold
            steps = torch.where(~done & stop, torch.full_like(steps, t + 1), steps)
            done |= stop
            if bool(done.all()):
                break
            frames = torch.cat([frames, out[:, -1:]], dim=1)
        lengths = steps.clamp(max=len(outs)) * self.r
        before = torch.cat(outs, dim=1)  # (B, n*r, F)
        frame_pad = lengths_to_padding_mask(lengths, before.size(1))
        mel = self._postnet(before.masked_fill(frame_pad[..., None], 0.0), frame_pad)
        return {"mel": mel.masked_fill(frame_pad[..., None], 0.0), "lengths": lengths, "stopped": done,
                "alignment": torch.stack(aligns, dim=1)}


def guided_attention_loss(cross: list[Tensor], step_mask: Tensor, text_mask: Tensor, sigma: float = 0.2) -> Tensor:
    """Guided attention (Tachibana et al. 2018): mean of A[n, s] * (1 - exp(-(s/S - n/N)^2 / (2 sigma^2))) over
    the valid (step, character) pairs of every cross-attention map; pushes attention to the diagonal.

    cross: per layer (B, nh, N, S); step_mask (B, N) / text_mask (B, S) True at padding.
    """
    N = (~step_mask).sum(1).clamp(min=1).float()  # (B,)
    S = (~text_mask).sum(1).clamp(min=1).float()
    n = torch.arange(step_mask.size(1), device=step_mask.device)[None, :, None] / N[:, None, None]
    s = torch.arange(text_mask.size(1), device=text_mask.device)[None, None, :] / S[:, None, None]
    w = 1.0 - torch.exp(-((s - n) ** 2) / (2 * sigma**2))  # (B, N, S)
    valid = (~step_mask)[:, :, None] & (~text_mask)[:, None, :]
    w = (w * valid)[:, None]  # (B, 1, N, S)
    total = sum((a.float() * w).sum() for a in cross)
    return total / (valid.sum() * cross[0].size(1) * len(cross)).clamp(min=1)
