#!/usr/bin/env python
"""Built-in espeak-ng TTS: held-out mel L1 and intelligibility (CER of the toolkit's speech model), target CER <= 10 %.

    python bench/tts_espeak.py [--size 1000] [--minutes 60] [--judge RUN | --judge-minutes 20] [--tag full]

The judge is a `panformer train speech` run (multi-voice built-in espeak speech): given with --judge, or trained
here first for --judge-minutes. Reported on the test split (held-out sentences, never heard in training):
``cer_tts`` (free-running synthesis → Griffin-Lim → judge), ``cer_copy_synthesis`` (the real log-mel → Griffin-Lim
→ judge: the vocoder's ceiling) and ``cer_real`` (the real espeak audio: the judge's ceiling).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1000, help="built-in utterances (80/10/10 split)")
    p.add_argument("--kind", default="mixed", help="digits | phrases | mixed")
    p.add_argument("--minutes", type=float, default=60.0, help="TTS training time budget")
    p.add_argument("--judge", default=None, help="speech run directory used as the judge")
    p.add_argument("--judge-minutes", type=float, default=20.0, help="without --judge: train one for this long")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--eval-utterances", type=int, default=100, help="test utterances synthesised and judged")
    p.add_argument("--tag", default="full", help="suffix of the output file (e.g. smoke)")
    p.add_argument("extra", nargs="*", help="more `panformer train tts` options, after --")
    a = p.parse_args()
    import torch

    from panformer.tasks.cli import load_run, train

    out = ROOT / "bench" / "out" / f"tts_espeak_{a.tag}"
    t0 = time.time()
    judge = a.judge
    if judge is None:
        judge = str(out / "judge")
        train("speech", ["--builtin-size", "3000", "--threads", str(a.threads), "--max-time-minutes",
                         str(a.judge_minutes), "--out", judge, "--overwrite", "--progress", "false"])
    argv = ["--builtin-size", str(a.size), "--builtin-kind", a.kind, "--threads", str(a.threads),
            "--max-time-minutes", str(a.minutes), "--epochs", "1000", "--eval-free-max", "16",
            "--out", str(out / "run"), "--overwrite", "--progress", "false", *a.extra]
    metrics = train("tts", argv)
    task, model = load_run(out / "run", "cpu", {"judge": judge, "eval_free_max": a.eval_utterances})
    task.load_data()
    test = task.evaluate(model, "test", out_dir=out / "eval")
    # the vocoder's ceiling: Griffin-Lim on the real log-mels of the same sentences
    n = min(a.eval_utterances, len(task.texts["test"]))
    vocoded = [task.vocoder()(m) for m in task.mels["test"][:n]]
    copy = task.judge().score(vocoded, task.args.sample_rate, task.texts["test"][:n])[0]
    result = {"benchmark": "tts_espeak", "tag": a.tag, "kind": a.kind, "size": a.size, "judge": str(judge),
              "train_time_s": metrics["train_time_s"], "train_steps": metrics["train_steps"],
              "num_params": metrics["num_params"], "threads": a.threads, "torch_threads": torch.get_num_threads(),
              "test_utterances": n,
              "mel_l1_teacher_forced": round(test["mel_l1"], 4), "mel_l1_free_dtw": round(test["mel_l1_free"], 4),
              "loss": round(test["loss"], 4), "stop_rate": round(test["stop_rate"], 4),
              "length_ratio": round(test["length_ratio"], 4),
              "cer_tts": round(test["cer"], 4), "wer_tts": round(test["wer"], 4),
              "cer_copy_synthesis": round(copy["cer"], 4), "cer_real": round(test["cer_real"], 4),
              "target_cer": 0.10, "total_time_s": round(time.time() - t0, 1)}
    path = ROOT / "bench" / "out" / f"tts_espeak_{a.tag}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
