#!/usr/bin/env python
"""FSDD connected digits: WER on held-out clips of seen speakers and on a held-out speaker.

Targets (issue 5): WER <= 5 % on held-out utterances of seen speakers (``test_seen``) and <= 15 % on
the held-out speaker ``theo`` (``test``), within 20 minutes of training. Recordings are split before
utterances are composed, so no recording is heard in two splits. Also reports the single-digit
MFCC + SVM baseline on the same speaker split (the guide: 99.2 % random split, 64 % on ``theo``).

    python bench/speech_fsdd.py [--data ../shared/data/fsdd] [--minutes 20] [--threads 2] [--tag full]
    python bench/speech_fsdd.py --tag char -- --units char --speed-perturb 0   # more `panformer train speech` flags after --

Its settings (issue 18, BENCHMARKS.md): BPE output units, speed perturbation of +-10 %, and a cosine schedule
spread over the whole time budget (``--schedule-clock time``; the epoch limit of 200 is never reached in 20
minutes on the project's CPUs). Before 2026-12-06 it trained characters for 60 epochs with a step-planned cosine
(``-- --units char --speed-perturb 0 --epochs 60 --schedule-clock steps``: the issue-5 rows).

A model trained with an attention decoder (``--ctc-weight`` below 1) is also scored with ``--decode attention``
and ``joint`` (no word list either); one that writes BPE units (``--units bpe``) has no word-list decoding.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

# (--decode, --lexicon, label): best path, free prefix beam search, beam search over the training words
DECODINGS = (("greedy", "none", "greedy"), ("beam", "none", "beam"), ("beam", "train", "beam_lexicon"))


def decodings(task, model) -> tuple[tuple[str, str, str], ...]:
    """The decodings a trained speech model can be scored with: the word list spells characters (char units
    only); a model with an attention decoder adds attention and joint decoding."""
    chosen = DECODINGS if task.args.units == "char" else DECODINGS[:2]
    if getattr(model, "decoder", None) is not None:
        chosen += (("attention", "none", "attention"), ("joint", "none", "joint"))
    return chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "fsdd"), help="FSDD folder")
    p.add_argument("--speaker", default="theo", help="held-out test speaker")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--precision", default="auto", help="fp32 | bf16 | auto (bf16 where the CPU has it)")
    p.add_argument("--baseline", action="store_true", help="also run the single-digit MFCC + SVM baseline")
    p.add_argument("--tag", default="full", help="suffix of the output file (e.g. smoke)")
    p.add_argument("extra", nargs="*", help="more `panformer train speech` flags (after --); they override the above")
    a = p.parse_args()
    if not Path(a.data).is_dir():
        sys.exit(f"FSDD not found at {a.data}")
    from panformer.tasks.cli import load_run, train

    run = ROOT / "bench" / "out" / f"speech_fsdd_{a.tag}"
    argv = ["--data", a.data, "--test-speakers", a.speaker, "--sample-rate", "8000", "--n-mels", "40",
            "--threads", str(a.threads), "--precision", a.precision, "--max-time-minutes", str(a.minutes),
            "--epochs", "200", "--schedule-clock", "time",
            "--units", "bpe", "--speed-perturb", "0.1", "--batch-size", "32", "--lr", "1.5e-3", "--warmup-steps", "300",
            "--connected-repeats", "4", "--eval-every", "200", "--out", str(run), "--overwrite", "--progress", "false", *a.extra]
    machine = describe()  # before the run: CPU, bf16 flags, fp32 speed, load (bench/machine.py)
    t0 = time.time()
    metrics = train("speech", argv)
    task, model = load_run(run, "cpu")
    task.load_data()
    result = {"benchmark": "speech_fsdd_connected", "tag": a.tag, "held_out_speaker": a.speaker,
              "train_time_s": metrics["train_time_s"], "train_steps": metrics["train_steps"],
              "num_params": metrics["num_params"], "sizes": {k: len(v) for k, v in task.splits.items()}}
    for decode, lexicon, label in decodings(task, model):
        task.args.decode, task.args.lexicon = decode, lexicon
        for split, name in (("test_seen", "seen_speakers"), ("test", "held_out_speaker")):
            m = task.evaluate(model, split)
            result[f"{name}_{label}"] = {k: round(v, 4) for k, v in m.items()}
    result["targets"] = {"seen_speakers_wer": 0.05, "held_out_speaker_wer": 0.15, "minutes": 20}
    if a.baseline:
        from panformer.tasks import get_task
        from panformer.tasks.cli import resolve_train_args

        cls = get_task("speech")
        args, _ = resolve_train_args(cls, ["--data", a.data, "--fsdd-mode", "single", "--test-speakers", a.speaker,
                                           "--sample-rate", "8000"])
        single = cls(args)
        single.load_data()
        result["mfcc_svm_single_digit_held_out_speaker"] = single.baseline()
    result["machine"] = machine
    result["total_time_s"] = round(time.time() - t0, 1)
    out = ROOT / "bench" / "out" / f"speech_fsdd_{a.tag}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
