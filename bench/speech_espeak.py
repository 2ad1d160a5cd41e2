#!/usr/bin/env python
"""Built-in espeak-ng speech (digit strings and short phrases, 126 voices): test WER, target <= 2 %.

    python bench/speech_espeak.py [--size 3000] [--minutes 20] [--threads 2] [--tag full]
    python bench/speech_espeak.py --tag bpe -- --units bpe   # more `panformer train speech` flags after --
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
from bench.speech_fsdd import decodings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=3000, help="built-in utterances (80/10/10 split)")
    p.add_argument("--kind", default="mixed", help="digits | phrases | mixed")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--precision", default="auto", help="fp32 | bf16 | auto (bf16 where the CPU has it)")
    p.add_argument("--tag", default="full", help="suffix of the output file (e.g. smoke)")
    p.add_argument("extra", nargs="*", help="more `panformer train speech` flags (after --); they override the above")
    a = p.parse_args()
    from panformer.tasks.cli import load_run, train

    run = ROOT / "bench" / "out" / f"speech_espeak_{a.tag}"
    argv = ["--builtin-size", str(a.size), "--builtin-kind", a.kind, "--threads", str(a.threads),
            "--precision", a.precision, "--max-time-minutes", str(a.minutes), "--epochs", "60",
            "--eval-every", "200", "--out", str(run), "--overwrite", "--progress", "false", *a.extra]
    machine = describe()  # before the run: CPU, bf16 flags, fp32 speed, load (bench/machine.py)
    t0 = time.time()
    metrics = train("speech", argv)
    task, model = load_run(run, "cpu")
    task.load_data()
    result = {"benchmark": "speech_espeak", "tag": a.tag, "kind": a.kind, "size": a.size,
              "train_time_s": metrics["train_time_s"], "train_steps": metrics["train_steps"],
              "num_params": metrics["num_params"]}
    for decode, lexicon, label in decodings(task, model):
        task.args.decode, task.args.lexicon = decode, lexicon
        result[f"test_{label}"] = {k: round(v, 4) for k, v in task.evaluate(model, "test").items()}
    result["target_wer"] = 0.02
    result["machine"] = machine
    result["total_time_s"] = round(time.time() - t0, 1)
    out = ROOT / "bench" / "out" / f"speech_espeak_{a.tag}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
