"""The event vocabulary of the music task: notes on a grid of ``steps_per_quarter`` steps per quarter note.

A piece is a list of notes ``(onset, duration, voice, pitch)`` (ints: grid steps, grid steps, part index,
MIDI number). It becomes a MIDI-like event sequence, in time order::

    BOS  [VOICE_v PITCH_p DUR_d]...  SHIFT_k  [VOICE_v PITCH_p DUR_d]...  SHIFT_k ...  EOS

* notes starting together are written by voice (0 = soprano ... 3 = bass), higher pitch first, each as
  three tokens: ``VOICE_v`` (0 .. max_voices-1), ``PITCH_p`` (0 .. 127) and ``DUR_d`` (1 .. max_dur steps;
  longer notes are cut to ``max_dur``);
* ``SHIFT_k`` moves the time cursor k steps forward (1 .. max_shift; longer gaps repeat it); rests are the
  gaps the shifts leave.

Token ids: ``PAD 0, BOS 1, EOS 2``, then the SHIFT, VOICE, PITCH and DUR blocks in that order.
Transposing a piece is adding a constant to its PITCH ids (:meth:`EventVocab.transpose`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from torch import Tensor

__all__ = ["EventVocab", "Note", "sort_notes", "PAD", "BOS", "EOS"]

PAD, BOS, EOS = 0, 1, 2
Note = tuple[int, int, int, int]  # (onset steps, duration steps, voice, MIDI pitch)


def sort_notes(notes: Iterable[Note]) -> list[Note]:
    """The order of the event sequence: by onset, then voice, then higher pitch first."""
    return sorted(notes, key=lambda n: (n[0], n[2], -n[3], n[1]))


@dataclass(frozen=True)
class EventVocab:
    """The token scheme; its fields are saved with a run (``assets/vocab.json``)."""

    steps_per_quarter: int = 4  # grid: sixteenth notes
    max_shift: int = 16  # longest SHIFT token, in steps (a whole note)
    max_dur: int = 32  # longest DUR token, in steps (two whole notes)
    max_voices: int = 4  # VOICE tokens (parts kept per piece)

    @property
    def shift0(self) -> int:  # id of SHIFT_1
        return 3

    @property
    def voice0(self) -> int:
        return self.shift0 + self.max_shift

    @property
    def pitch0(self) -> int:
        return self.voice0 + self.max_voices

    @property
    def dur0(self) -> int:  # id of DUR_1
        return self.pitch0 + 128

    @property
    def size(self) -> int:
        return self.dur0 + self.max_dur

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def token_name(self, t: int) -> str:
        if t < 3:
            return ("PAD", "BOS", "EOS")[t]
        for name, start, n, base in (("SHIFT", self.shift0, self.max_shift, 1), ("VOICE", self.voice0, self.max_voices, 0),
                                     ("PITCH", self.pitch0, 128, 0), ("DUR", self.dur0, self.max_dur, 1)):
            if start <= t < start + n:
                return f"{name}_{t - start + base}"
        raise ValueError(f"token id {t} is outside the vocabulary ({self.size})")

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, notes: Iterable[Note], bos: bool = True, eos: bool = True) -> list[int]:
        """Notes → token ids (see the module docstring). Voices >= max_voices must be removed first."""
        ids = [BOS] if bos else []
        cur = 0
        for onset, dur, voice, pitch in sort_notes(notes):
            gap = onset - cur
            while gap > 0:
                k = min(gap, self.max_shift)
                ids.append(self.shift0 + k - 1)
                gap -= k
            cur = onset
            ids += [self.voice0 + voice, self.pitch0 + pitch, self.dur0 + min(max(dur, 1), self.max_dur) - 1]
        if eos:
            ids.append(EOS)
        return ids

    def decode(self, ids: Iterable[int]) -> tuple[list[Note], int]:
        """Token ids → (notes, number of tokens out of grammar). Lenient, for sampled sequences: a PITCH
        without a VOICE uses the last voice, a PITCH or VOICE not followed by its DUR is dropped; decoding
        stops at EOS."""
        notes: list[Note] = []
        t, voice, pitch, errors = 0, 0, None, 0
        expect = "voice"  # the next token of a note event
        for tok in ids:
            tok = int(tok)
            if tok == EOS:
                break
            if tok in (PAD, BOS):
                continue
            if tok < self.voice0:  # SHIFT
                errors += expect != "voice"
                t, expect, pitch = t + tok - self.shift0 + 1, "voice", None
            elif tok < self.pitch0:  # VOICE
                errors += expect != "voice"
                voice, expect, pitch = tok - self.voice0, "pitch", None
            elif tok < self.dur0:  # PITCH
                errors += expect != "pitch"
                pitch, expect = tok - self.pitch0, "dur"
            elif tok < self.size:  # DUR
                if pitch is None:
                    errors += 1
                    continue
                notes.append((t, tok - self.dur0 + 1, voice, pitch))
                pitch, expect = None, "voice"
            else:
                errors += 1
        return notes, errors

    def allowed_next(self, last: Tensor) -> Tensor:
        """The grammar as a mask: last tokens (B,) → (B, V) bool, True where a token may follow. After
        VOICE only a PITCH, after PITCH only a DUR; elsewhere SHIFT, VOICE or EOS; never PAD or BOS."""
        B, dev = last.size(0), last.device
        ok = torch.zeros(B, self.size, dtype=torch.bool, device=dev)
        is_voice = (last >= self.voice0) & (last < self.pitch0)
        is_pitch = (last >= self.pitch0) & (last < self.dur0)
        free = ~(is_voice | is_pitch)
        ok[is_voice, self.pitch0 : self.dur0] = True
        ok[is_pitch, self.dur0 :] = True
        ok[free, EOS] = True
        ok[free, self.shift0 : self.pitch0] = True  # SHIFT and VOICE blocks are adjacent
        return ok

    # -- augmentation -----------------------------------------------------------------------------
    def transpose(self, ids: Tensor, semitones: int) -> Tensor:
        """Shift every PITCH token of ``ids`` (any shape) by ``semitones``; a pitch that would leave 0..127
        moves by an octave less."""
        if semitones == 0:
            return ids
        is_pitch = (ids >= self.pitch0) & (ids < self.dur0)
        p = ids - self.pitch0 + semitones
        p = torch.where(p > 127, p - 12, torch.where(p < 0, p + 12, p))
        return torch.where(is_pitch, p + self.pitch0, ids)
