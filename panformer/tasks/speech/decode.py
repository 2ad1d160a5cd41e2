"""Decoding strategies of the speech model, its metrics (WER / CER / exact match) and the MFCC + SVM
whole-utterance baseline."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from panformer.core import beam_search
from panformer.core.checkpoint import atomic_path
from panformer.core.errors import ConfigError

from .ctc import Lexicon, ctc_beam_decode, ctc_greedy_decode, ctc_prefix_beam_search, ctc_scores

__all__ = ["DECODERS", "decode_batch", "speech_metrics", "write_predictions", "mfcc_svm_baseline"]

DECODERS = ("greedy", "beam", "attention", "joint")


@torch.no_grad()
def decode_batch(model: nn.Module, batch: dict[str, Tensor], args: Any, tokenizer: Any,
                 lexicon: Lexicon | None = None) -> list[list[int]]:
    """Label ids per utterance of a collated batch, with ``args.decode`` / ``args.beam_size``; a
    ``lexicon`` constrains ``beam`` decoding to its words."""
    mode, K = args.decode, args.beam_size
    if mode not in DECODERS:
        raise ConfigError(f"--decode must be one of {', '.join(DECODERS)}, got {mode!r}")
    if lexicon is not None and mode != "beam":
        raise ConfigError(f"--lexicon constrains CTC prefix beam search: use it with --decode beam, not {mode}")
    if mode in ("attention", "joint") and getattr(model, "decoder", None) is None:
        raise ConfigError(f"--decode {mode} needs an attention decoder: train with --ctc-weight below 1")
    blank, bos, eos = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
    out = model(batch["feats"], batch["feat_lens"])
    lp, lens = out["ctc_log_probs"], out["enc_lens"]  # (B, T', V), (B,)
    specials = set(range(5))
    if mode == "greedy":
        return [[c for c in s if c not in specials] for s in ctc_greedy_decode(lp, lens, blank)]
    if mode == "beam":
        return [[c for c in s if c not in specials] for s in ctc_beam_decode(lp, lens, K, blank, lexicon)]
    B = lp.size(0)
    max_new = int(lens.max()) + 2  # a character needs at least one encoder frame
    state = model.init_decode_state(batch["feats"], batch["feat_lens"])
    prefix = torch.full((B, 1), bos, dtype=torch.long, device=lp.device)
    nbest = beam_search(model, state, prefix, K, max_new, eos, pad_id=blank, length_penalty=1.0, return_all=True)
    results = []
    for b in range(B):
        att = [[int(t) for t in seq.tolist() if t not in (eos, blank)] for _, seq in nbest[b]]
        if mode == "attention":
            results.append(att[0] if att else [])
            continue
        # joint: rescore the union of both N-best lists with lambda * log p_ctc + (1 - lambda) * log p_att
        ctc_hyps = [h for h, _ in ctc_prefix_beam_search(lp[b, : int(lens[b])], K, blank)]
        cands = [list(h) for h in dict.fromkeys(tuple(h) for h in att + ctc_hyps)]
        if not cands:
            results.append([])
            continue
        s_ctc = ctc_scores(lp[b], int(lens[b]), cands, blank).cpu()
        mem, mask = out["memory"][b: b + 1], out["memory_mask"][b: b + 1]
        s_att = model.attention_scores(mem, mask, cands, bos, eos).float().cpu()
        lam = float(args.ctc_weight)
        score = lam * s_ctc + (1 - lam) * s_att
        results.append(cands[int(score.argmax())])
    return results


def speech_metrics(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """``{"wer", "cer"}`` (jiwer, over the whole split) and ``"exact_match"`` (sklearn accuracy of whole
    transcripts). An empty hypothesis counts as all deletions."""
    import jiwer
    from sklearn.metrics import accuracy_score

    return {"wer": float(jiwer.wer(list(refs), list(hyps))), "cer": float(jiwer.cer(list(refs), list(hyps))),
            "exact_match": float(accuracy_score(list(refs), list(hyps)))}


def write_predictions(path: Path, sources: Sequence[str], refs: Sequence[str], hyps: Sequence[str]) -> None:
    """TSV of source, reference, hypothesis, correct (1/0), written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["source", "reference", "hypothesis", "correct"])
            for s, r, h in zip(sources, refs, hyps):
                w.writerow([s, r, h, int(r == h)])


def _mfcc_stats(utts: Sequence[Any], sample_rate: int) -> np.ndarray:
    import torchaudio.transforms as AT

    from .frontend import resample

    mfcc = AT.MFCC(sample_rate=sample_rate, n_mfcc=20, melkwargs={"n_fft": 512, "hop_length": sample_rate // 100,
                                                                 "n_mels": 40, "center": False})
    rows = []
    for u in utts:
        wave, sr = u.audio()
        m = mfcc(resample(wave, sr, sample_rate))  # (20, T)
        d = m[:, 1:] - m[:, :-1]
        rows.append(torch.cat([m.mean(1), m.std(1), d.std(1), m[:, : m.size(1) // 2].mean(1),
                               m[:, m.size(1) // 2:].mean(1)]).numpy())
    return np.stack(rows)


def mfcc_svm_baseline(train_utts: Sequence[Any], train_texts: Sequence[str], test_utts: Sequence[Any],
                      test_texts: Sequence[str], sample_rate: int, split: str) -> dict[str, Any]:
    """Whole-utterance classification: MFCC statistics (mean, std, delta std, halves) → standardise → RBF SVM.
    Only meaningful when test transcripts occur in training (single digits, commands)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    t0 = time.time()
    xtr, xte = _mfcc_stats(train_utts, sample_rate), _mfcc_stats(test_utts, sample_rate)
    clf = make_pipeline(StandardScaler(), SVC(C=10.0, gamma="scale"))
    clf.fit(xtr, list(train_texts))
    m = speech_metrics(test_texts, list(clf.predict(xte)))
    m.update(model="mfcc-svm", split=split, classes=len(set(train_texts)), train_time_s=round(time.time() - t0, 2))
    return m
