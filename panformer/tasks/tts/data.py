"""TTS data: the built-in one-voice espeak-ng corpus, text normalisation and the character vocabulary check.

Custom data is read by the speech task's adapters (:func:`tasks.speech.data.load_source`): audiofolder
folders (``metadata.csv`` with ``file_name,transcription``), CSV/TSV/JSONL manifests, Hugging Face datasets.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Iterable

import numpy as np

from panformer.core.errors import DataError
from panformer.tasks.speech.arguments import normalize_transcript
from panformer.tasks.speech.data import Utterance, builtin_sentence

__all__ = ["tts_corpus", "read_source", "normalize_text", "check_vocabulary"]


def tts_corpus(n: int, seed: int = 0, kind: str = "mixed", sample_rate: int = 16000, voice: str = "en-us",
               rate: int = 160, cache: bool = True) -> list[Utterance]:
    """``n`` distinct sentences of the speech task's built-in grammar (digit strings, short commands),
    spoken by ONE espeak-ng voice at one rate and pitch (a TTS model learns one speaker), with 50 ms of
    silence at each end; a pure function of the arguments, cached as int16 under ``$PANFORMER_CACHE/tts``.
    """
    if kind not in ("digits", "phrases", "mixed"):
        raise DataError(f"--builtin-kind must be digits, phrases or mixed, got {kind!r}")
    from panformer.tasks.builtin_data import cache_dir
    from panformer.tasks.speech.espeak import ESPEAK_RATE, espeak_synthesize
    from panformer.tasks.speech.frontend import resample

    rng, texts, seen = random.Random(seed), [], set()
    for i in range(n):
        for _ in range(100):  # distinct sentences: held-out text is never heard in training
            text = builtin_sentence(rng, kind == "digits" or (kind == "mixed" and i % 2 == 0))
            if text not in seen:
                break
        seen.add(text)
        texts.append(text)
    key = hashlib.sha1(json.dumps([texts, sample_rate, voice, rate, 1]).encode()).hexdigest()[:12]
    path = cache_dir() / "tts" / f"espeak-{kind}-{n}-{seed}-{key}.npz"
    if cache and path.is_file():
        z = np.load(path)
        pcm, offsets = z["pcm"], z["offsets"]
        waves = [pcm[offsets[i]: offsets[i + 1]] for i in range(n)]
    else:
        pad = np.zeros(int(0.05 * sample_rate), np.float32)
        waves = []
        for i, text in enumerate(texts):
            x = resample(espeak_synthesize(text, voice, rate, seed=i).astype(np.float32) / 32768.0, ESPEAK_RATE,
                         sample_rate).numpy()
            waves.append((np.clip(np.concatenate([pad, x, pad]), -1, 1) * 32767).round().astype(np.int16))
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, pcm=np.concatenate(waves), offsets=np.cumsum([0] + [len(w) for w in waves]))
            os.replace(tmp, path)
    return [Utterance(text=t, source=f"built-in espeak utterance {i}", wave=w.astype(np.float32) / 32768.0,
                      sample_rate=sample_rate, speaker=voice) for i, (t, w) in enumerate(zip(texts, waves))]


def read_source(source: str, what: str, audio_col: str | None = None, text_col: str | None = None) -> list[Utterance]:
    """Utterances of an audiofolder, manifest or Hugging Face dataset; an empty folder or source is a DataError."""
    from panformer.tasks.speech.data import load_source

    p = Path(source).expanduser()
    if p.is_dir() and not any(p.iterdir()):
        raise DataError(f"{what} {p}: empty folder; expected an audiofolder (audio files + metadata.csv with "
                        f"file_name,transcription)")
    if p.is_dir() and not any((p / n).is_file() for n in ("metadata.csv", "metadata.jsonl", "metadata.tsv",
                                                          "dataset_info.json", "dataset_dict.json")):
        raise DataError(f"{what} {p}: no metadata.csv; an audiofolder needs metadata.csv with "
                        f"file_name,transcription next to the audio files")
    utts = load_source(source, what, audio_col, text_col)
    if not utts:
        raise DataError(f"{what} {source}: no utterances (empty table)")
    return utts


def normalize_text(text: str, lowercase: bool = True, strip_punctuation: bool = True) -> str:
    """The speech task's normalisation (NFKC, lowercase, punctuation removed, whitespace collapsed)."""
    return normalize_transcript(text, lowercase, strip_punctuation)


def check_vocabulary(texts: Iterable[tuple[str, str]], vocab: set[str]) -> None:
    """Raise :class:`DataError` naming the first text (and its source) with characters outside ``vocab``.

    texts: (source, normalised text) pairs.
    """
    for source, text in texts:
        if not text:
            raise DataError(f"{source}: empty text after normalisation")
        bad = sorted({c for c in text if c not in vocab})
        if bad:
            raise DataError(f"{source}: {text!r} has characters {''.join(bad)!r} that the TTS vocabulary lacks "
                            f"(it has {''.join(sorted(vocab))!r}); spell them out or retrain with them in the data")
