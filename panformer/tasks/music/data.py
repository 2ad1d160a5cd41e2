"""Scores for the music task: the Bach chorales shipped with music21, or a folder of MIDI / MusicXML files,
read with music21 into quantised notes (cached), and training windows over their event tokens.

Parsing with music21 is slow (about a minute for the 371 chorales on one core), so each file's notes are
cached as JSON under ``$PANFORMER_CACHE`` (default ``~/.cache/panformer``) ``/music/<scheme>/``, keyed by
the file's path, size and modification time; ``<scheme>`` names the music21 version and the quantisation
(steps per quarter, voices kept, scheme version), so a change of either re-parses.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from panformer.core.checkpoint import atomic_write_text
from panformer.core.errors import DataError

from ..builtin_data import cache_dir
from .tokens import PAD, EventVocab, Note, sort_notes

__all__ = ["MUSIC_SUFFIXES", "chorale_files", "corpus_path", "music_files", "read_pieces", "score_notes", "PieceWindows", "Piece"]

MUSIC_SUFFIXES = (".mid", ".midi", ".mxl", ".musicxml", ".xml", ".krn", ".abc")
SCHEME_VERSION = 1  # bump when score_notes changes
SATB = ("soprano", "alto", "tenor", "bass")
Piece = tuple[str, list[Note]]  # (name, notes)


def chorale_files(max_pieces: int | None = None) -> list[Path]:
    """The four-part chorales of J. S. Bach in music21's corpus (``corpus.chorales.Iterator``: the 371
    Riemenschneider numbers, in that order; MusicXML encoded by Margaret Greentree). A chorale listed under
    several numbers is one file and is kept once (350 distinct scores), so no piece is in two splits."""
    from music21 import corpus

    by_stem: dict[str, list[Path]] = {}
    for f in corpus.getComposer("bach"):  # one directory listing instead of a corpus search per name
        by_stem.setdefault(Path(f).name.rsplit(".", 1)[0], []).append(Path(f))
    files = []
    for name in corpus.chorales.Iterator(returnType="filename"):
        found = sorted(by_stem.get(name.split("/")[-1], []), key=lambda f: (f.suffix != ".mxl", str(f)))
        files.append(found[0] if found else corpus_path(name))
    files = list(dict.fromkeys(files))
    return files[:max_pieces] if max_pieces else files


def corpus_path(name: str) -> Path:
    """The file of a music21 corpus work such as ``bach/bwv269`` (the exact name, MusicXML preferred);
    DataError when there is none."""
    from music21 import corpus

    try:
        found = corpus.getWork(name)
    except Exception:  # noqa: BLE001 - music21's CorpusException and friends
        found = []
    found = [Path(f) for f in (found if isinstance(found, (list, tuple)) else [found])]
    stem = Path(name).name
    exact = [f for f in found if f.name.startswith(stem + ".") and f.suffixes and
             f.name[len(stem):] in (".mxl", ".xml", ".musicxml", ".krn", ".mid")]
    best = sorted(exact or found, key=lambda f: (f.suffix != ".mxl", str(f)))
    if not best:
        raise DataError(f"{name!r}: no such file, nor a music21 corpus work (e.g. bach/bwv269)")
    return best[0]


def music_files(source: str, what: str) -> list[Path]:
    """The score files of ``source``: one file, or a folder searched recursively (sorted)."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MUSIC_SUFFIXES)
        if not files:
            raise DataError(f"{what}: folder {path} has no MIDI or MusicXML files ({', '.join(MUSIC_SUFFIXES)})")
        return files
    if not path.exists():
        raise DataError(f"{what}: file or folder not found: {source}")
    if path.suffix.lower() not in MUSIC_SUFFIXES:
        raise DataError(f"{what}: {path}: unsupported file type {path.suffix!r}; expected a folder or a "
                        f"{', '.join(MUSIC_SUFFIXES)} file")
    return [path]


def _choose_parts(parts: list, max_voices: int) -> list:
    """Soprano, alto, tenor and bass when the score names them (chorales with extra instrumental parts),
    else the parts that have notes, in score order, at most ``max_voices``."""
    if max_voices >= 4:
        named = [next((p for p in parts if (p.partName or "").strip().lower().startswith(r)), None) for r in SATB]
        if all(p is not None for p in named) and len({id(p) for p in named}) == 4:
            return named
    return [p for p in parts if p.recurse().notes.first() is not None][:max_voices]


def score_notes(score, vocab: EventVocab) -> list[Note]:
    """A music21 score → unique notes ``(onset, duration, voice, pitch)`` on the vocabulary's grid, in
    :func:`sort_notes` order, the first onset at 0. Ties are merged, chords split into notes, grace and
    unpitched notes dropped."""
    from music21 import chord, note

    spq = vocab.steps_per_quarter
    parts = list(getattr(score, "parts", None) or []) or [score]
    notes: set[Note] = set()
    for voice, part in enumerate(_choose_parts(parts, vocab.max_voices)):
        for n in part.stripTies().flatten().notes:
            if isinstance(n, note.Note):
                pitches = [n.pitch.midi]
            elif isinstance(n, chord.Chord):
                pitches = [p.midi for p in n.pitches]
            else:  # unpitched percussion
                continue
            dur = round(float(n.quarterLength) * spq)
            if dur <= 0:  # grace notes
                continue
            onset = round(float(n.offset) * spq)
            notes.update((onset, dur, voice, min(max(int(p), 0), 127)) for p in pitches)
    if not notes:
        return []
    t0 = min(n[0] for n in notes)
    return sort_notes((o - t0, d, v, p) for o, d, v, p in notes)


def _cache_path(path: Path, vocab: EventVocab) -> Path:
    import music21

    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    scheme = f"m21-{music21.__version__}-q{vocab.steps_per_quarter}-v{vocab.max_voices}-s{SCHEME_VERSION}"
    return cache_dir() / "music" / scheme / f"{key}.json"


def _parse(path: Path, vocab: EventVocab, what: str) -> list[Note]:
    from music21 import converter

    try:
        score = converter.parse(str(path))
    except Exception as e:  # noqa: BLE001 - music21 raises many kinds on a broken file
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        raise DataError(f"{what}: cannot read {path} as a score ({type(e).__name__}: {msg})") from None
    try:
        return score_notes(score, vocab)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{what}: cannot extract notes from {path} ({type(e).__name__}: {e})") from None


def read_pieces(files: list[Path], vocab: EventVocab, what: str, use_cache: bool = True) -> list[Piece]:
    """Notes of every file (from the cache when possible); a file without notes is a DataError."""
    pieces: list[Piece] = []
    todo = [f for f in files if not (use_cache and _cache_path(f, vocab).is_file())]
    if len(todo) > 20:
        print(f"[panformer] music: parsing {len(todo)} scores with music21 (about {len(todo) // 6 + 1} s; cached "
              f"for the next runs)", file=sys.stderr, flush=True)
    for f in files:
        cached = _cache_path(f, vocab) if use_cache else None
        notes = None
        if cached is not None and cached.is_file():
            try:
                notes = sort_notes(tuple(n) for n in json.loads(cached.read_text())["notes"])
            except (OSError, ValueError, KeyError, TypeError):
                notes = None  # a damaged cache entry: parse again
        if notes is None:
            notes = _parse(f, vocab, what)
            if cached is not None and notes:
                cached.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(cached, json.dumps({"source": str(f), "notes": notes}, separators=(",", ":")))
        if not notes:
            raise DataError(f"{what}: {f} contains no pitched notes")
        pieces.append((f.stem, notes))
    return pieces


class PieceWindows(Dataset):
    """Training windows: item ``i`` = ``block_size + 1`` tokens of one piece (inputs and shifted targets),
    starting at a multiple of ``stride``, transposed by one of ``-transpose .. +transpose`` semitones and
    PAD-filled at the end of the piece. Every (window, transposition) pair is one item, so an epoch
    visits each once (in the Trainer's seeded order)."""

    def __init__(self, pieces: list[Tensor], block_size: int, vocab: EventVocab, transpose: int = 0,
                 stride: int | None = None) -> None:
        if not pieces:
            raise DataError("no training pieces")
        self.pieces, self.block_size, self.vocab = pieces, block_size, vocab
        stride = stride or max(1, block_size // 4)
        self.starts = [(p, s) for p, ids in enumerate(pieces)
                       for s in range(0, max(1, len(ids) - block_size - 1 + stride), stride)]
        self.shifts = list(range(-transpose, transpose + 1))

    def __len__(self) -> int:
        return len(self.starts) * len(self.shifts)

    def __getitem__(self, i: int) -> Tensor:
        w, k = divmod(i, len(self.shifts))
        p, s = self.starts[w]
        x = self.vocab.transpose(self.pieces[p][s : s + self.block_size + 1], self.shifts[k])  # (<= block+1,)
        if x.numel() < self.block_size + 1:
            x = torch.cat([x, x.new_full((self.block_size + 1 - x.numel(),), PAD)])
        return x
