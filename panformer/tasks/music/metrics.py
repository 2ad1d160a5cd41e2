"""Musical statistics comparing sets of pieces (lists of notes ``(onset, duration, voice, pitch)``).

* **in-key share** of a piece: the largest share of its notes that one diatonic collection (the seven
  pitch classes of a major scale or its relative natural minor) holds — key-agnostic, so transposed and
  minor-mode pieces are comparable. Bach's chorales score about 0.9 (leading tones, chromatic passing notes).
* **key-normalised pitch-class histogram** of a piece: its 12-bin note-count histogram, rotated so the
  best-fitting diatonic collection sits on C major's white keys.
* **pitch-class histogram distance** between two sets: total variation distance (half the L1 distance,
  0 = identical, 1 = disjoint) between the sets' mean key-normalised histograms. Set sizes matter (a small
  set's histogram is noisy), so it is reported with the distance between two halves of the real set.
* **duration histogram distance**: the same distance between the note-duration histograms (grid steps).
"""
from __future__ import annotations

import numpy as np

from .tokens import Note

__all__ = ["pitch_class_histogram", "in_key_share", "key_normalised_histogram", "histogram_distance",
           "duration_histogram", "music_statistics"]

MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=float)  # C major's pitch classes


def pitch_class_histogram(notes: list[Note]) -> np.ndarray:
    """(12,) note counts per pitch class, normalised to sum 1 (zeros for no notes)."""
    h = np.bincount([n[3] % 12 for n in notes], minlength=12).astype(float)
    return h / h.sum() if h.sum() else h


def _best_rotation(h: np.ndarray) -> tuple[int, float]:
    """(r, share): the diatonic collection of major key r holds the largest share of the histogram."""
    shares = [float(np.roll(MAJOR, r) @ h) for r in range(12)]
    r = int(np.argmax(shares))
    return r, shares[r]


def in_key_share(notes: list[Note]) -> float:
    return _best_rotation(pitch_class_histogram(notes))[1]


def key_normalised_histogram(notes: list[Note]) -> np.ndarray:
    h = pitch_class_histogram(notes)
    return np.roll(h, -_best_rotation(h)[0])


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance between two normalised histograms."""
    return 0.5 * float(np.abs(a - b).sum())


def duration_histogram(pieces: list[list[Note]], max_dur: int) -> np.ndarray:
    d = np.bincount([min(n[1], max_dur) for p in pieces for n in p], minlength=max_dur + 1).astype(float)
    return d / d.sum() if d.sum() else d


def _mean_pch(pieces: list[list[Note]]) -> np.ndarray:
    return np.mean([key_normalised_histogram(p) for p in pieces], axis=0)


def music_statistics(generated: list[list[Note]], real: list[list[Note]], max_dur: int) -> dict[str, float]:
    """Statistics of generated pieces against real (held-out) ones; empty generated pieces are skipped
    (none at all: the worst values, distances 1 and in-key share 0).

    Keys: ``pch_distance`` (generated vs real), ``pch_distance_real_halves`` (first vs second half of
    the real set, for scale), ``in_key_share`` / ``in_key_share_real`` (means over pieces),
    ``duration_distance`` (generated vs real), ``notes_per_sample``.
    """
    gen = [p for p in generated if p]
    out = {"notes_per_sample": float(np.mean([len(p) for p in generated])) if generated else 0.0,
           "in_key_share_real": float(np.mean([in_key_share(p) for p in real]))}
    if len(real) >= 2:
        half = len(real) // 2
        out["pch_distance_real_halves"] = histogram_distance(_mean_pch(real[:half]), _mean_pch(real[half:]))
    if not gen:  # nothing decodable: the worst values
        return {**out, "pch_distance": 1.0, "in_key_share": 0.0, "duration_distance": 1.0}
    out["pch_distance"] = histogram_distance(_mean_pch(gen), _mean_pch(real))
    out["in_key_share"] = float(np.mean([in_key_share(p) for p in gen]))
    out["duration_distance"] = histogram_distance(duration_histogram(gen, max_dur), duration_histogram(real, max_dur))
    return out
