"""Generated pieces out: MIDI files (through music21) and piano-roll pictures (matplotlib)."""
from __future__ import annotations

from pathlib import Path

from panformer.core.checkpoint import atomic_path

from .tokens import Note

__all__ = ["notes_to_score", "write_midi", "write_piano_roll", "VOICE_NAMES"]

VOICE_NAMES = ("Soprano", "Alto", "Tenor", "Bass")
COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")


def notes_to_score(notes: list[Note], steps_per_quarter: int, tempo: float = 80.0):
    """A ``music21.stream.Score`` with one part per voice (Soprano, Alto, Tenor, Bass, Voice 4, ...)."""
    from fractions import Fraction

    from music21 import note, stream, tempo as m21tempo

    score = stream.Score()
    voices = sorted({n[2] for n in notes}) or [0]
    parts = {}
    for v in voices:
        part = stream.Part()
        part.partName = VOICE_NAMES[v] if v < len(VOICE_NAMES) else f"Voice {v}"
        parts[v] = part
        score.insert(0, part)
    parts[voices[0]].insert(0, m21tempo.MetronomeMark(number=tempo))
    for onset, dur, voice, pitch in notes:
        n = note.Note(midi=pitch, quarterLength=Fraction(dur, steps_per_quarter))
        parts[voice].insert(Fraction(onset, steps_per_quarter), n)
    return score


def write_midi(notes: list[Note], path: str | Path, steps_per_quarter: int, tempo: float = 80.0) -> Path:
    """Write ``notes`` as a standard MIDI file (one track per voice), atomically."""
    from music21 import midi

    mf = midi.translate.music21ObjectToMidiFile(notes_to_score(notes, steps_per_quarter, tempo))
    path = Path(path)
    with atomic_path(path) as tmp:
        mf.open(str(tmp), "wb")
        try:
            mf.write()
        finally:
            mf.close()
    return path


def write_piano_roll(notes: list[Note], path: str | Path, steps_per_quarter: int, title: str = "") -> Path:
    """A piano roll: time in quarter notes across, MIDI pitch up, one colour per voice."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    q = steps_per_quarter
    end = max((n[0] + n[1] for n in notes), default=q) / q
    fig = Figure(figsize=(min(4 + end / 4, 24), 4.5), layout="constrained")
    ax = fig.subplots()
    voices = sorted({n[2] for n in notes})
    boxes = [[(o / q, p - 0.4), (o / q + 0.95 * d / q, p - 0.4), (o / q + 0.95 * d / q, p + 0.4), (o / q, p + 0.4)]
             for o, d, _, p in notes]  # one rectangle per note, drawn as a single collection
    ax.add_collection(PolyCollection(boxes, facecolors=[COLORS[n[2] % len(COLORS)] for n in notes], linewidths=0))
    ax.set_xlim(0, max(end, 1))
    pitches = [n[3] for n in notes] or [60]
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlabel("time (quarter notes)")
    ax.set_ylabel("MIDI pitch")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"{len(notes)} notes")
    if voices:
        ax.legend(handles=[Patch(color=COLORS[v % len(COLORS)], label=VOICE_NAMES[v] if v < 4 else f"Voice {v}")
                           for v in voices], loc="upper right", fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path
