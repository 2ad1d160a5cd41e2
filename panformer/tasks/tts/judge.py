"""Intelligibility: the toolkit's own speech-to-text model (a ``panformer train speech`` run) transcribes
audio and jiwer scores it against the input text (CER / WER)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from panformer.core.errors import ConfigError

__all__ = ["SpeechJudge"]


class SpeechJudge:
    """Wraps a speech run directory: ``judge(waves, sample_rate, texts) -> {"cer", "wer"}, hypotheses``."""

    def __init__(self, run_dir: str | Path) -> None:
        from panformer.tasks.cli import load_run

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.json").is_file():
            raise ConfigError(f"--judge {self.run_dir}: not a run directory (no config.json); train one with "
                              f"`panformer train speech --out DIR`")
        self.task, self.model = load_run(self.run_dir, "cpu")
        if getattr(self.task, "name", None) != "speech":
            raise ConfigError(f"--judge {self.run_dir}: a {self.task.name!r} run; the judge must be a speech run")

    def transcribe(self, waves: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """Transcripts of float32 (N,) waves; clips shorter than the judge's minimum are padded with silence."""
        fe = self.task._frontend()
        examples = []
        for i, w in enumerate(waves):
            need = int(np.ceil(fe.min_samples * sample_rate / self.task.args.sample_rate)) + 1
            w = np.pad(w, (0, max(0, need - len(w)))) if len(w) < need else w
            examples.append((self.task.features_from_wave(w, sample_rate, f"synthesised clip {i}"), []))
        self.model.eval()
        return self.task.transcribe(self.model, examples)[0]

    def score(self, waves: Sequence[np.ndarray], sample_rate: int, texts: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
        """CER / WER of the judge's transcripts against ``texts`` (normalised as the judge was trained)."""
        import jiwer

        from panformer.tasks.speech.arguments import normalize_transcript

        a = self.task.args
        refs = [normalize_transcript(t, a.lowercase, a.strip_punctuation) for t in texts]
        hyps = self.transcribe(waves, sample_rate)
        return {"cer": float(jiwer.cer(refs, hyps)), "wer": float(jiwer.wer(refs, hyps))}, hyps
