"""TTS audio glue: log-mel targets (the speech task's front end, not normalised), the Griffin-Lim vocoder
(torchaudio ``InverseMelScale`` + ``GriffinLim``), wav writing (soundfile), mel/alignment pictures, DTW L1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from panformer.core.checkpoint import atomic_path
from panformer.tasks.speech.frontend import LogMelFrontend

__all__ = ["MEL_FLOOR", "mel_frontend", "GriffinLimVocoder", "write_wav", "plot_mel_alignment", "dtw_l1"]

MEL_FLOOR = 1e-5  # log(mel power + floor): -11.5 in digital silence


def mel_frontend(sample_rate: int, n_mels: int, win_ms: float, hop_ms: float) -> LogMelFrontend:
    """The speech task's log-mel front end; TTS uses its un-normalised :meth:`LogMelFrontend.log_mel`."""
    return LogMelFrontend(sample_rate, n_mels, win_ms, hop_ms)


class GriffinLimVocoder:
    """log-mel (T, n_mels) → waveform (N,) float32: exp → least-squares inverse mel filterbank → magnitude
    ** ``power`` (sharpening) → Griffin-Lim phase reconstruction with a zero-phase start (deterministic).
    The output is time-aligned with the input: re-analysed by the front end it gives the same T frames."""

    def __init__(self, fe: LogMelFrontend, n_iter: int = 48, power: float = 1.3) -> None:
        import torchaudio.transforms as AT

        mel = fe.mel.mel_scale
        self.inverse = AT.InverseMelScale(fe.n_fft // 2 + 1, fe.n_mels, fe.sample_rate, mel.f_min, mel.f_max,
                                          mel.norm, mel.mel_scale)
        self.griffin_lim = AT.GriffinLim(fe.n_fft, n_iter, win_length=fe.win, hop_length=fe.hop, power=1.0,
                                         rand_init=False)
        self.power = power

    @torch.no_grad()
    def __call__(self, log_mel: Tensor) -> np.ndarray:
        power = (log_mel.float().T.exp() - MEL_FLOOR).clamp(min=0.0)  # (n_mels, T) mel power
        mag = self.inverse(power).clamp(min=0.0).sqrt()  # (n_freq, T) linear magnitude
        wave = self.griffin_lim(mag ** self.power)  # frame k centred on sample k * hop
        half = self.griffin_lim.n_fft // 2  # the front end's frame k is centred on k * hop + n_fft / 2: realign
        wave = torch.nn.functional.pad(wave, (half, half))  # (T - 1) * hop + n_fft samples → T frames again
        peak = float(wave.abs().max())
        return (wave / peak * 0.7 if peak > 0 else wave).numpy().astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM wav, written atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(wave, -1, 1), sample_rate, subtype="PCM_16", format="WAV")


def plot_mel_alignment(path: Path, mel: Tensor, alignment: Tensor | None, title: str,
                       reference: Tensor | None = None) -> None:
    """PNG: the synthesised log-mel (n_mels x T), optionally the reference, and the decoder-step x character
    cross-attention alignment (last decoder layer, mean over heads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("synthesised log-mel", mel.float().T.numpy(), "frame", "mel bin")]
    if reference is not None:
        panels.append(("reference log-mel", reference.float().T.numpy(), "frame", "mel bin"))
    if alignment is not None:
        panels.append(("alignment (cross-attention)", alignment.float().T.numpy(), "decoder step", "character"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (name, img, xl, yl) in zip(axes[:, 0], panels):
        im = ax.imshow(img, origin="lower", aspect="auto", interpolation="none")
        ax.set(title=name, xlabel=xl, ylabel=yl)
        fig.colorbar(im, ax=ax)
    fig.suptitle(title[:90])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def dtw_l1(a: Tensor, b: Tensor) -> float:
    """Mean L1 distance per frame and bin between (Ta, F) and (Tb, F) along the best DTW path (steps (1,0), (0,1),
    (1,1)): compares a free-running synthesis with its reference despite different durations."""
    cost = torch.cdist(a.float()[None], b.float()[None], p=1)[0].numpy() / a.size(1)  # (Ta, Tb)
    Ta, Tb = cost.shape
    acc = np.full((Ta + 1, Tb + 1), np.inf)
    steps = np.zeros((Ta + 1, Tb + 1))
    acc[0, 0] = 0.0
    for i in range(1, Ta + 1):  # row by row; the (0, 1) move is a running minimum along the row
        diag, up = acc[i - 1, :-1], acc[i - 1, 1:]
        best_prev = np.minimum(diag, up)
        n_prev = np.where(diag <= up, steps[i - 1, :-1], steps[i - 1, 1:])
        for j in range(1, Tb + 1):
            c = cost[i - 1, j - 1]
            if acc[i, j - 1] < best_prev[j - 1]:
                acc[i, j], steps[i, j] = acc[i, j - 1] + c, steps[i, j - 1] + 1
            else:
                acc[i, j], steps[i, j] = best_prev[j - 1] + c, n_prev[j - 1] + 1
    return float(acc[Ta, Tb] / steps[Ta, Tb])
