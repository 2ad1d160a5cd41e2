"""A minimal ctypes binding to the espeak-ng shared library shipped in the ``espeakng-loader`` wheel.

Synthesis is synchronous and deterministic: the same text, voice, rate, pitch, word gap and seed give
the same samples. espeak-ng keeps hidden static state between utterances (pitch flutter phase, noise
generators), so each utterance runs on a freshly loaded library (``dlclose`` + ``dlopen``, ~2 ms),
which makes every clip a pure function of its arguments, independent of what was spoken before.
"""
from __future__ import annotations

import _ctypes
import ctypes
import threading

import numpy as np

from panformer.core.errors import ConfigError

__all__ = ["ESPEAK_RATE", "espeak_synthesize", "espeak_variants"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

ESPEAK_RATE = 22050  # the engine's output sample rate (Hz), confirmed at initialisation

_lock = threading.Lock()
_engine: dict[str, object] = {}


def _fresh_engine() -> ctypes.CDLL:
    if "lib" in _engine:  # unload the previous instance: its static state must not leak into this clip
        old: ctypes.CDLL = _engine.pop("lib")  # type: ignore[assignment]
        old.espeak_Terminate()
        _ctypes.dlclose(old._handle)
    try:
        import espeakng_loader
    except ImportError:
        raise ConfigError("built-in speech needs the espeakng-loader package: pip install espeakng-loader") from None
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate != ESPEAK_RATE:
        raise ConfigError(f"espeak-ng initialisation failed (returned {rate}); reinstall espeakng-loader")
    chunks: list[np.ndarray] = []

    def on_audio(wav, n, _events):  # called synchronously from espeak_Synth
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    cb = _CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(cb)
    _engine.update(lib=lib, cb=cb, chunks=chunks)  # keep the callback alive
    return lib


def espeak_variants() -> list[str]:
    """Names of the voice variants in the wheel's ``voices/!v`` folder (``m1``, ``f3``, ``klatt`` ...)."""
    import espeakng_loader
    from pathlib import Path

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def espeak_synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
                      word_gap: int = 0, seed: int = 0) -> np.ndarray:
    """Speak ``text``; returns int16 mono samples (N,) at :data:`ESPEAK_RATE` Hz.

    ``voice`` is a language with an optional variant (``"en-us+f3"``), ``rate`` words per minute
    (80-450), ``pitch`` and ``pitch_range`` 0-100, ``word_gap`` extra pause between words in 10 ms units,
    ``seed`` the engine's noise generator (aspiration, jitter), which makes the output reproducible.
    """
    with _lock:
        lib = _fresh_engine()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ConfigError(f"espeak-ng has no voice {voice!r}; use a language such as 'en-us' plus a variant "
                              f"from {espeak_variants()[:8]}...")
        for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range), ("wordgap", word_gap),
                            ("volume", 100)):
            lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        chunks: list[np.ndarray] = _engine["chunks"]  # type: ignore[assignment]
        chunks.clear()
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if err != 0:
            raise ConfigError(f"espeak-ng failed to synthesise {text!r} (error {err})")
        out = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        chunks.clear()
    return out
