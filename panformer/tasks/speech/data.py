"""Speech data sources → lists of :class:`Utterance` (audio + transcript + speaker).

* built-in synthetic speech made with espeak-ng (:func:`espeak_corpus`), cached under the panformer cache;
* Free Spoken Digit Dataset folders (``{digit}_{speaker}_{index}.wav``), single digits or connected
  digit strings composed from recordings of one speaker (:func:`read_fsdd`, :func:`connect_digits`);
* Hugging Face ``audiofolder`` folders (audio files + ``metadata.csv`` with ``file_name``, ``transcription``);
* CSV / TSV / JSONL manifests (audio path, text), paths relative to the manifest;
* Hugging Face datasets (hub names or ``save_to_disk`` folders) with an ``Audio`` column.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from panformer.core.data import is_saved_dataset, load_hf_dataset, load_table, parse_hub_spec
from panformer.core.errors import DataError

from .frontend import decode_audio_bytes, read_audio

__all__ = ["Utterance", "DIGIT_WORDS", "builtin_sentence", "espeak_corpus", "read_fsdd", "is_fsdd_folder",
           "connect_digits", "read_audiofolder", "read_manifest", "read_hf_dataset", "load_source"]

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
AUDIO_COLUMNS = ("file_name", "path", "audio", "file", "filename", "wav")
TEXT_COLUMNS = ("transcription", "text", "sentence", "transcript", "normalized_text")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id")
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")


@dataclass
class Utterance:
    """One example. ``wave`` float32 (N,) at ``sample_rate`` Hz, or None to read ``path`` on demand;
    ``source`` names the file and row for error messages."""

    text: str
    source: str
    wave: np.ndarray | None = None
    sample_rate: int = 0
    path: str | None = None
    speaker: str | None = None

    def audio(self) -> tuple[np.ndarray, int]:
        if self.wave is not None:
            return self.wave, self.sample_rate
        assert self.path is not None
        return read_audio(self.path, self.source)


# -- built-in espeak-ng speech --------------------------------------------------------------------
ESPEAK_LANGS = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"]
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "croak", "edward", "john", "linda", "max"]
_VERBS = ["turn on", "turn off", "open", "close", "find", "show me", "bring", "move", "clean", "check"]
_ADJS = ["red", "green", "blue", "small", "big", "old", "new", "dark", "bright", "warm"]
_NOUNS = ["light", "door", "window", "radio", "lamp", "table", "kitchen", "garden", "box", "book", "car", "phone"]
_PLACES = ["in the kitchen", "near the door", "on the table", "upstairs", "outside", "at home"]


def _digit_string(rng: random.Random, max_digits: int = 5) -> str:
    return " ".join(DIGIT_WORDS[rng.randrange(10)] for _ in range(rng.randint(1, max_digits)))


def _phrase(rng: random.Random) -> str:
    v, a, n = rng.choice(_VERBS), rng.choice(_ADJS), rng.choice(_NOUNS)
    form = rng.randrange(4)
    if form == 0:
        return f"{v} the {a} {n}"
    if form == 1:
        return f"{v} the {n} {rng.choice(_PLACES)}"
    if form == 2:
        return f"the {n} is {a}"
    return f"please {v} the {n}"


def builtin_sentence(rng: random.Random, digits: bool) -> str:
    """One sentence of the built-in grammar: a digit string ("three one four") or a short command."""
    return _digit_string(rng) if digits else _phrase(rng)


def espeak_corpus(n: int, seed: int = 0, kind: str = "mixed", sample_rate: int = 16000,
                  cache: bool = True) -> list[Utterance]:
    """``n`` utterances synthesised by espeak-ng, a pure function of (n, seed, kind, sample_rate).

    kind: ``digits`` (strings of 1-5 spoken digits, "three one four"), ``phrases`` (short commands from a
    small grammar, "turn on the red light") or ``mixed`` (half each). Each utterance draws a voice
    (6 English accents x 21 variants; ``speaker`` is e.g. ``"en-gb-x-rp+f3"``), a rate of 130-210 words
    per minute, pitch 25-75, pitch range 20-90 and a word gap of 0-30 ms. Audio is resampled from
    22,050 Hz to ``sample_rate``, padded with 50-250 ms of silence at each end, mixed with faint white
    noise and cached under ``$PANFORMER_CACHE/speech`` (int16).
    """
    if kind not in ("digits", "phrases", "mixed"):
        raise DataError(f"--builtin-kind must be digits, phrases or mixed, got {kind!r}")
    from panformer.tasks.builtin_data import cache_dir

    from .espeak import ESPEAK_RATE, espeak_synthesize
    from .frontend import resample

    key = hashlib.sha1(json.dumps([n, seed, kind, sample_rate, ESPEAK_LANGS, ESPEAK_VARIANTS, 3]).encode()).hexdigest()[:12]
    path = cache_dir() / "speech" / f"espeak-{kind}-{n}-{seed}-{key}.npz"
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        use_digits = kind == "digits" or (kind == "mixed" and i % 2 == 0)
        text = builtin_sentence(rng, use_digits)
        lang, var = rng.choice(ESPEAK_LANGS), rng.choice(ESPEAK_VARIANTS)
        voice = f"{lang}+{var}" if var else lang
        specs.append((text, voice, rng.randint(130, 210), rng.randint(25, 75), rng.randint(20, 90), rng.randint(0, 3),
                      rng.randrange(2**31)))
    if cache and path.is_file():
        z = np.load(path)
        pcm, offsets = z["pcm"], z["offsets"]
        waves = [pcm[offsets[i]: offsets[i + 1]] for i in range(n)]
    else:
        waves = []
        for text, voice, rate, pitch, rng_range, gap, s in specs:
            pcm16 = espeak_synthesize(text, voice, rate, pitch, rng_range, gap, seed=s)
            x = resample(pcm16.astype(np.float32) / 32768.0, ESPEAK_RATE, sample_rate).numpy()
            noise = np.random.default_rng(s)
            pad = [np.zeros(int(noise.uniform(0.05, 0.25) * sample_rate), np.float32) for _ in range(2)]
            x = np.concatenate([pad[0], x, pad[1]])
            x = x + noise.normal(0.0, noise.uniform(1e-3, 5e-3), x.size).astype(np.float32)  # background noise
            waves.append((np.clip(x, -1, 1) * 32767).round().astype(np.int16))
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            offsets = np.cumsum([0] + [len(w) for w in waves])
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, pcm=np.concatenate(waves), offsets=offsets)
            os.replace(tmp, path)
    return [Utterance(text=sp[0], source=f"built-in espeak utterance {i}", wave=w.astype(np.float32) / 32768.0,
                      sample_rate=sample_rate, speaker=sp[1]) for i, (sp, w) in enumerate(zip(specs, waves))]


# -- Free Spoken Digit Dataset --------------------------------------------------------------------
@dataclass
class Recording:
    digit: int
    speaker: str
    index: int
    path: str


def is_fsdd_folder(folder: Path) -> bool:
    folder = folder / "recordings" if (folder / "recordings").is_dir() else folder
    return any(FSDD_NAME.match(p.name) for p in folder.glob("*.wav"))


def read_fsdd(folder: str | Path, what: str = "--data") -> list[Recording]:
    """Recordings named ``{digit}_{speaker}_{index}.wav`` in ``folder`` (or ``folder/recordings``)."""
    root = Path(folder)
    root = root / "recordings" if (root / "recordings").is_dir() else root
    recs = []
    for p in sorted(root.glob("*.wav")):
        m = FSDD_NAME.match(p.name)
        if m:
            recs.append(Recording(int(m.group(1)), m.group(2), int(m.group(3)), str(p)))
    if not recs:
        raise DataError(f"{what} {root}: no wav files named {{digit}}_{{speaker}}_{{index}}.wav (FSDD convention)")
    return recs


def connect_digits(recs: Sequence[Recording], seed: int, repeats: int = 1, max_digits: int = 5,
                   gap_s: tuple[float, float] = (0.05, 0.25), sample_rate: int = 8000,
                   what: str = "--data") -> list[Utterance]:
    """Connected-digit utterances: each speaker's recordings are shuffled and cut into groups of 1 to
    ``max_digits``, joined with ``gap_s`` seconds of silence (50-200 ms more at each end, faint noise
    throughout), transcript "three one four". Every
    recording is used ``repeats`` times (in a different group each pass)."""
    rng = random.Random(seed)
    by_speaker: dict[str, list[Recording]] = {}
    for r in recs:
        by_speaker.setdefault(r.speaker, []).append(r)
    cache: dict[str, np.ndarray] = {}

    def load(r: Recording) -> np.ndarray:
        if r.path not in cache:
            wave, sr = read_audio(r.path, what)
            if sr != sample_rate:
                from .frontend import resample

                wave = resample(wave, sr, sample_rate).numpy()
            cache[r.path] = wave / max(float(np.abs(wave).max()), 1e-4) * 0.5  # level-normalise recordings
        return cache[r.path]

    out: list[Utterance] = []
    for speaker in sorted(by_speaker):
        for _ in range(repeats):
            pool = list(by_speaker[speaker])
            rng.shuffle(pool)
            i = 0
            while i < len(pool):
                group = pool[i: i + rng.randint(1, max_digits)]
                i += len(group)
                parts = [np.zeros(int(rng.uniform(0.05, 0.2) * sample_rate), np.float32)]
                for j, r in enumerate(group):
                    if j:
                        parts.append(np.zeros(int(rng.uniform(*gap_s) * sample_rate), np.float32))
                    parts.append(load(r).astype(np.float32) * rng.uniform(0.5, 1.0))
                parts.append(np.zeros(int(rng.uniform(0.05, 0.2) * sample_rate), np.float32))
                wave = np.concatenate(parts)
                wave += np.random.default_rng(rng.randrange(2**31)).normal(0, 1e-3, wave.size).astype(np.float32)
                text = " ".join(DIGIT_WORDS[r.digit] for r in group)
                names = "+".join(Path(r.path).name for r in group)
                out.append(Utterance(text=text, source=f"{what} {names}", wave=wave,
                                     sample_rate=sample_rate, speaker=speaker))
    return out


# -- tables: audiofolder, manifests, Hugging Face -------------------------------------------------
def _pick(columns: Sequence[str], given: str | None, candidates: Sequence[str], option: str, source: str,
          what: str, required: bool = True) -> str | None:
    if given:
        if given not in columns:
            raise DataError(f"{what} {source}: no column {given!r} (columns: {', '.join(columns)}); fix {option}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise DataError(f"{what} {source}: none of the columns {', '.join(candidates)} found (columns: "
                        f"{', '.join(columns)}); name the right one with {option}")
    return found


def _rows_to_utterances(ds, source: str, base: Path | None, what: str, audio_col: str | None,
                        text_col: str | None, speaker_col: str | None) -> list[Utterance]:
    cols = list(ds.column_names)
    a_col = _pick(cols, audio_col, AUDIO_COLUMNS, "--audio-column", source, what)
    t_col = _pick(cols, text_col, TEXT_COLUMNS, "--text-column", source, what)
    s_col = _pick(cols, speaker_col, SPEAKER_COLUMNS, "--speaker-column", source, what, required=False)
    feature = ds.features.get(a_col)
    if type(feature).__name__ == "Audio":  # decoding would need torchcodec: read the bytes ourselves
        import datasets

        ds = ds.cast_column(a_col, datasets.Audio(decode=False))
    out = []
    for i, row in enumerate(ds):
        where = f"{what} {source}: row {i + 1}"
        text, audio = row[t_col], row[a_col]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: column {t_col!r} has an empty transcript ({text!r})")
        speaker = None if s_col is None or row[s_col] is None else str(row[s_col])
        if isinstance(audio, dict):  # a Hugging Face Audio value: {"bytes", "path"} or {"array", "sampling_rate"}
            if audio.get("array") is not None:
                wave = np.asarray(audio["array"], dtype=np.float32)
                out.append(Utterance(text, where, wave=wave.mean(0) if wave.ndim == 2 else wave,
                                     sample_rate=int(audio["sampling_rate"]), speaker=speaker))
                continue
            if audio.get("bytes"):
                wave, sr = decode_audio_bytes(audio["bytes"], where)
                out.append(Utterance(text, where, wave=wave, sample_rate=sr, speaker=speaker))
                continue
            audio = audio.get("path")
        if not isinstance(audio, str) or not audio:
            raise DataError(f"{where}: column {a_col!r} holds no audio path ({audio!r})")
        p = Path(audio)
        if not p.is_absolute() and base is not None:
            p = base / p
        if not p.is_file():
            raise DataError(f"{where}: audio file not found: {p}")
        out.append(Utterance(text, where, path=str(p), speaker=speaker))
    return out


def read_audiofolder(folder: Path, what: str, text_col: str | None = None, speaker_col: str | None = None) -> list[Utterance]:
    """Hugging Face ``audiofolder``: ``folder/metadata.csv`` (or .jsonl) with ``file_name`` and a transcript."""
    meta = next((folder / n for n in ("metadata.csv", "metadata.jsonl", "metadata.tsv") if (folder / n).is_file()), None)
    if meta is None:
        raise DataError(f"{what} {folder}: no metadata.csv (audiofolder convention: file_name,transcription)")
    ds = load_table(meta, what)
    return _rows_to_utterances(ds, str(meta), folder, what, "file_name", text_col, speaker_col)


def read_manifest(path: Path, what: str, audio_col: str | None = None, text_col: str | None = None,
                  speaker_col: str | None = None) -> list[Utterance]:
    """A CSV / TSV / JSONL table of (audio path, text[, speaker]); relative paths are relative to it."""
    ds = load_table(path, what)
    return _rows_to_utterances(ds, str(path), path.parent, what, audio_col, text_col, speaker_col)


def read_hf_dataset(source: str, what: str, split: str | None = None, audio_col: str | None = None,
                    text_col: str | None = None, speaker_col: str | None = None) -> list[Utterance]:
    """A dataset ``NAME[:CONFIG][:SPLIT]``: on the hub, a local dataset folder or a ``save_to_disk`` folder
    (the split defaults to the flag's: train for --data, validation for --valid-data, test for --test-data)."""
    ds = load_hf_dataset(source, what, split)
    return _rows_to_utterances(ds, source, None, what, audio_col, text_col, speaker_col)


def load_source(source: str, what: str, audio_col: str | None = None, text_col: str | None = None,
                speaker_col: str | None = None) -> list[Utterance]:
    """Dispatch on the kind of ``source`` (FSDD folders are handled by the task, which composes them)."""
    p = Path(source).expanduser()
    if p.is_dir():
        if any((p / n).is_file() for n in ("metadata.csv", "metadata.jsonl", "metadata.tsv")):
            return read_audiofolder(p, what, text_col, speaker_col)
        if is_saved_dataset(p) or (p / "dataset_info.json").is_file():
            return read_hf_dataset(str(p), what, audio_col=audio_col, text_col=text_col, speaker_col=speaker_col)
        raise DataError(f"{what} {p}: a folder needs metadata.csv (audiofolder), FSDD-named wavs "
                        f"({{digit}}_{{speaker}}_{{index}}.wav) or a saved Hugging Face dataset")
    if p.exists():
        if p.suffix.lower() in AUDIO_SUFFIXES:
            raise DataError(f"{what} {p}: a single audio file has no transcript; pass a manifest or a folder")
        return read_manifest(p, what, audio_col, text_col, speaker_col)
    if parse_hub_spec(source) is not None:
        return read_hf_dataset(source, what, audio_col=audio_col, text_col=text_col, speaker_col=speaker_col)
    raise DataError(f"{what}: file or folder not found: {source}")
