"""Audio front end: reading and resampling audio, log-mel features with per-utterance normalisation,
SpecAugment, vocal tract length perturbation (:class:`MelWarp`) and the 4x convolutional subsampling that feeds the core encoder.

Frame arithmetic (``center=False``): a clip of N samples gives ``1 + (N - n_fft) // hop`` feature frames
(``n_fft``: the window length rounded up to a power of two); two 3x3 stride-2 convolutions turn L frames
into ``((L - 1) // 2 - 1) // 2`` encoder positions, so at least 7 frames (at 16 kHz with 25 ms windows
and 10 ms hops: 1,472 samples, 92 ms) are needed for one CTC output.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from panformer.core.errors import DataError

__all__ = ["read_audio", "decode_audio_bytes", "resample", "speed_perturb", "LogMelFrontend", "spec_augment", "MelWarp", "Conv2dSubsampling",
           "subsampled_lengths", "MIN_FRAMES"]

MIN_FRAMES = 7  # feature frames needed for one position after 4x subsampling
F_MIN = 20.0  # Hz, lowest edge of the mel filterbank (the highest is the Nyquist frequency)


def _mono(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    return data.mean(axis=1) if data.ndim == 2 else data  # (N, C) → (N,): mix channels down


def read_audio(path: str | Path, what: str = "audio") -> tuple[np.ndarray, int]:
    """Read a wav / flac / ogg file with soundfile → (float32 mono samples (N,) in [-1, 1], sample rate).

    Raises :class:`DataError` naming the file when it is missing, unreadable or empty.
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what}: audio file not found: {p}")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=False)
    except Exception as e:  # noqa: BLE001 - soundfile.LibsndfileError, RuntimeError, ...
        raise DataError(f"{what}: cannot decode audio file {p} ({str(e).strip() or type(e).__name__}); "
                        f"expected a wav, flac or ogg file") from None
    wave = _mono(data)
    if wave.size == 0:
        raise DataError(f"{what}: audio file {p} has no samples")
    return wave, int(sr)


def decode_audio_bytes(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Like :func:`read_audio` for an in-memory encoded file (Hugging Face ``Audio(decode=False)`` bytes)."""
    import soundfile as sf

    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{what}: cannot decode audio bytes ({str(e).strip() or type(e).__name__})") from None
    wave = _mono(wave)
    if wave.size == 0:
        raise DataError(f"{what}: audio has no samples")
    return wave, int(sr)


def resample(wave: np.ndarray | Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Polyphase (Kaiser-windowed FIR) resampling of (N,) samples → float32 tensor (N * new_sr / orig_sr,)."""
    if orig_sr == new_sr:
        return torch.as_tensor(wave, dtype=torch.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(orig_sr, new_sr)
    x = wave.detach().cpu().numpy() if isinstance(wave, Tensor) else np.asarray(wave)
    return torch.from_numpy(resample_poly(x.astype(np.float32), new_sr // g, orig_sr // g).astype(np.float32))


def speed_perturb(wave: Tensor, factor: float) -> Tensor:
    """Play (N,) samples ``factor`` times faster → (about N / factor,) at the same sample rate: tempo and pitch
    change together (Ko et al. 2015, Kaldi's speed perturbation). ``factor`` is rounded to 0.01, which keeps
    the polyphase filter short (up 100, down 100 x factor)."""
    k = int(round(factor * 100))
    if k <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    return wave if k == 100 else resample(wave, k, 100)  # read as k Hz, written at 100 Hz: k / 100 times faster


class LogMelFrontend(nn.Module):
    """(N,) samples at ``sample_rate`` → (T, n_mels) log-mel features, mean/variance normalised per
    utterance and mel bin (so recording level and channel colour do not matter)."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0) -> None:
        super().__init__()
        import torchaudio.transforms as AT

        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.win = int(round(sample_rate * win_ms / 1000))
        self.hop = int(round(sample_rate * hop_ms / 1000))
        self.n_fft = n_fft = 1 << (self.win - 1).bit_length()
        self.mel = AT.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=self.win, hop_length=self.hop,
                                     n_mels=n_mels, center=False, power=2.0, f_min=F_MIN, f_max=sample_rate / 2)

    def num_frames(self, num_samples: int) -> int:
        """Feature frames for a clip of ``num_samples`` (0 when shorter than one FFT frame)."""
        return 0 if num_samples < self.n_fft else 1 + (num_samples - self.n_fft) // self.hop

    @property
    def min_samples(self) -> int:
        """Shortest clip that yields one encoder position after 4x subsampling."""
        return self.n_fft + (MIN_FRAMES - 1) * self.hop

    @torch.no_grad()
    def log_mel(self, wave: Tensor, floor: float = 1e-6) -> Tensor:
        """wave (N,) → (T, n_mels) natural-log mel power ``log(mel + floor)``, not normalised (TTS targets)."""
        if wave.numel() < self.n_fft:
            raise ValueError(f"{wave.numel()} samples is shorter than one {self.n_fft}-sample analysis frame")
        return torch.log(self.mel(wave.float()) + floor).transpose(0, 1)  # (T, n_mels)

    @torch.no_grad()
    def forward(self, wave: Tensor) -> Tensor:
        """wave (N,) → (T, n_mels) with T = :meth:`num_frames` (N)."""
        feats = self.log_mel(wave)  # (T, n_mels)
        mean, std = feats.mean(0, keepdim=True), feats.std(0, keepdim=True, unbiased=False)
        return (feats - mean) / (std + 1e-5)


def spec_augment(feats: Tensor, lengths: Tensor, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 2,
                 time_width: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """SpecAugment (Park et al. 2019) without time warping: zero ``freq_masks`` bands of up to ``freq_width``
    mel bins and ``time_masks`` spans of up to ``time_width`` x length frames, independently per utterance.

    feats (B, T, F) normalised features (0 is the mean), lengths (B,) valid frames → masked copy (B, T, F).
    """
    B, T, F = feats.shape
    dev = feats.device

    def spans(n: int, max_width: Tensor, size: Tensor) -> Tensor:  # → bool (B, n, size.max())
        width = (torch.rand(B, n, generator=generator) * (max_width[:, None].float() + 1)).long()
        start = (torch.rand(B, n, generator=generator) * (size[:, None] - width).clamp(min=1).float()).long()
        pos = torch.arange(int(size.max()))[None, None, :]
        return (pos >= start[..., None]) & (pos < (start + width)[..., None])

    out = feats.clone()
    if freq_masks > 0 and freq_width > 0:
        f_mask = spans(freq_masks, torch.full((B,), min(freq_width, F)), torch.full((B,), F)).any(1)  # (B, F)
        out = out.masked_fill(f_mask[:, None, :].to(dev), 0.0)
    if time_masks > 0 and time_width > 0:
        lens = lengths.cpu().clamp(min=1)
        t_mask = spans(time_masks, (lens.float() * time_width).long(), torch.full((B,), T)).any(1)  # (B, T)
        t_mask &= torch.arange(T)[None, :] < lens[:, None]
        out = out.masked_fill(t_mask[:, :, None].to(dev), 0.0)
    return out


def _hz_to_mel(f: Tensor) -> Tensor:  # HTK mel scale, torchaudio's default
    return 2595.0 * torch.log10(1.0 + f / 700.0)


class MelWarp(nn.Module):
    """Vocal tract length perturbation (Jaitly & Hinton 2013) on mel features: each utterance's frequency
    axis is scaled by its own factor a drawn from [1 - max_warp, 1 + max_warp], piecewise linearly so that
    the band edge stays put (f -> a f up to ``boundary`` x Nyquist x min(a, 1) / a, then a straight line to
    the Nyquist frequency). Mel bin centre g of the output reads the input at the frequency that the warp
    maps to g, interpolated linearly between bins. It has no parameters or buffers (checkpoints do not
    change) and runs on the fly, so every epoch hears other speakers' vocal tracts.

    feats (B, T, F) → warped (B, T, F); ``F`` must equal ``n_mels``.
    """

    def __init__(self, sample_rate: int, n_mels: int, max_warp: float, boundary: float = 0.6,
                 f_min: float = F_MIN) -> None:
        super().__init__()
        if not 0.0 < max_warp < 0.5:
            raise ValueError(f"max_warp must be in (0, 0.5), got {max_warp}")
        self.nyquist, self.n_mels, self.max_warp, self.boundary = sample_rate / 2, n_mels, max_warp, boundary
        m = torch.linspace(float(_hz_to_mel(torch.tensor(f_min))), float(_hz_to_mel(torch.tensor(self.nyquist))),
                           n_mels + 2, dtype=torch.float64)
        self._mel_lo, self._mel_step = float(m[1]), float(m[1] - m[0])  # centre of bin 0, spacing
        self._centres_hz = 700.0 * (10.0 ** (m[1:-1] / 2595.0) - 1.0)  # (F,) float64

    def source_bins(self, alpha: Tensor) -> Tensor:
        """alpha (B,) warp factors → (B, F) fractional input bin read by each output bin."""
        g = self._centres_hz[None, :]  # (1, F) output frequencies
        a = alpha.double()[:, None]  # (B, 1)
        n = self.nyquist
        f0 = self.boundary * n * torch.clamp(a, max=1.0) / a  # the warp's knee, in input Hz
        low = g / a  # inverse of f -> a f below the knee
        high = f0 + (g - a * f0) * (n - f0) / (n - a * f0)  # inverse of the line from (f0, a f0) to (n, n)
        src = torch.where(g <= a * f0, low, high)
        return ((_hz_to_mel(src) - self._mel_lo) / self._mel_step).clamp(0, self.n_mels - 1)

    def forward(self, feats: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Warp each utterance by a factor drawn uniformly from [1 - max_warp, 1 + max_warp]."""
        alpha = 1.0 + (torch.rand(feats.size(0), generator=generator, dtype=torch.float64) * 2 - 1) * self.max_warp
        return self.warp(feats, alpha)

    def warp(self, feats: Tensor, alpha: Tensor) -> Tensor:
        """feats (B, T, F), alpha (B,) → (B, T, F): a tone at f Hz (below the knee) moves to alpha x f Hz."""
        B, T, F = feats.shape
        if F != self.n_mels:
            raise ValueError(f"MelWarp was built for {self.n_mels} mel bins, got features with {F}")
        pos = self.source_bins(alpha).to(feats.device)  # (B, F)
        lo = pos.floor().long().clamp(max=F - 2)
        w = (pos - lo).to(feats.dtype)[:, None, :]  # (B, 1, F)
        idx = lo[:, None, :].expand(B, T, F)
        left, right = feats.gather(2, idx), feats.gather(2, idx + 1)
        return left + w * (right - left)


def subsampled_lengths(frames: Tensor) -> Tensor:
    """Frames L → positions after two 3x3 stride-2 convolutions: ((L - 1) // 2 - 1) // 2 (never below 0)."""
    return (((frames - 1) // 2 - 1) // 2).clamp(min=0)


class Conv2dSubsampling(nn.Module):
    """4x subsampling in time (ESPnet / Conformer style): two Conv2d(3x3, stride 2) + ReLU over the
    (time, mel) plane, then a linear map of channels x reduced mels to d_model.

    (B, T, F) features → (B, T', d_model) with T' = :func:`subsampled_lengths` (T).
    """

    def __init__(self, n_mels: int, d_model: int, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU())
        f_out = ((n_mels - 1) // 2 - 1) // 2
        self.proj = nn.Linear(channels * f_out, d_model)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(feats.unsqueeze(1))  # (B, C, T', F')
        B, C, T, F = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(B, T, C * F))  # (B, T', d_model)
        return x, subsampled_lengths(lengths)
