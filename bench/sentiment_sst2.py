#!/usr/bin/env python
"""SST-2 sentiment from scratch vs TF-IDF + logistic regression, in one run.

Trains the core Encoder on the 67,349 SST-2 training phrases (GLUE train), picks the best checkpoint
on dev (872), reports test (1,821 labelled sentences) with the baseline fitted on the same training
data. Evaluation and selection use an exponential moving average of the weights (``--ema-decay``).

    python bench/sentiment_sst2.py [--minutes 20] [--data-root ../shared/data] [--out bench/out/sst2]
    python bench/sentiment_sst2.py --members 1     # one model (3 layers, d_ff 1024, 3 epochs)
    python bench/sentiment_sst2.py --first-seed 100 --out bench/out/sst2-s100   # a second draw

The target run is an ensemble of ``--members 12`` (the default). Its runs (seeds 0..N-1, or from
``--first-seed``) are smaller (2 layers, d_ff 512, 2 epochs) and train ``--parallel`` at a time, one
thread each, within ``--minutes`` of wall-clock time in all. Member i gets ``--variant`` number i mod V
on top: by default the tokenizer cycles through WordPiece, BPE and whole words, so the members read the
text differently and disagree more usefully than seeds alone. The test score is that of ``panformer
evaluate sentiment --run A --run B ...`` (mean log-probabilities).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

from panformer.tasks.cli import load_runs, train  # noqa: E402

VARIANTS = ["--tokenizer wordpiece", "--tokenizer bpe", "--tokenizer word"]
MEMBER = ["--n-layers", "2", "--d-ff", "512", "--epochs", "2"]


def _train_side_by_side(commands: list[list[str]], logs: list[Path], parallel: int) -> None:
    """Run the `panformer train` commands, ``parallel`` at a time; stop at the first failure."""
    waiting, running = list(zip(commands, logs)), []
    while waiting or running:
        while waiting and len(running) < parallel:
            cmd, log = waiting.pop(0)
            out = log.open("w")
            proc = subprocess.Popen([sys.executable, "-m", "panformer", "train", "sentiment", *cmd],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
            running.append((proc, out, log))
        time.sleep(1)
        for proc, out, log in list(running):
            if proc.poll() is None:
                continue
            out.close()
            running.remove((proc, out, log))
            if proc.returncode != 0:
                for other, *_ in running:
                    other.kill()
                raise SystemExit(f"a member failed (exit {proc.returncode}); see {log}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget (all members together)")
    p.add_argument("--members", type=int, default=12, help="runs scored as an ensemble (1: one model alone)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds S..S+N-1 (a second draw of the benchmark)")
    p.add_argument("--parallel", type=int, default=2,
                   help="members trained side by side (each with CPU cores / parallel threads)")
    p.add_argument("--variant", action="append", default=None,
                   help=f"flags for member i mod V (repeatable; default: {' | '.join(VARIANTS)})")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default="bench/out/sst2", help="run directory (members: OUT-m0, OUT-m1, ...)")
    p.add_argument("extra", nargs="*", help="more `panformer train sentiment` flags (after --)")
    a = p.parse_args()
    sst = Path(a.data_root) / "sst2"
    if not sst.is_dir():
        raise SystemExit(f"SST-2 not found at {sst}")
    if a.members < 1 or a.parallel < 1:
        raise SystemExit("--members and --parallel must be >= 1")
    argv = ["--data", sst / "train.tsv", "--valid-data", sst / "dev.tsv", "--test-data", sst / "test.tsv",
            "--precision", "auto", "--epochs", "3",
            "--batch-size", "64", "--lr", "5e-4", "--schedule", "cosine", "--warmup-steps", "500",
            "--weight-decay", "0.05", "--label-smoothing", "0.1", "--dropout", "0.2",
            "--d-model", "256", "--n-heads", "4", "--n-layers", "3", "--d-ff", "1024",
            "--vocab-size", "16000", "--ema-decay", "0.999", "--eval-every", "350",
            "--metric-for-best", "accuracy", "--progress", "false", "--overwrite"]
    variants = a.variant or VARIANTS
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    machine = describe()  # before the run: CPU, bf16 flags, fp32 speed, load (bench/machine.py)
    t0 = time.time()
    if a.members == 1:
        runs = [a.out]
        results = [train("sentiment", [str(x) for x in [*argv, "--seed", a.first_seed, "--max-time-minutes",
                                                        a.minutes, "--out", a.out, "--baseline", *a.extra]])]
    else:
        runs = [f"{a.out}-m{i}" for i in range(a.members)]
        budget = a.minutes * min(a.parallel, a.members) / a.members  # minutes per member
        threads = max(1, (os.cpu_count() or 1) // a.parallel)
        commands = [[str(x) for x in [*argv, *MEMBER, "--threads", threads,
                                      *shlex.split(variants[i % len(variants)]), "--seed", a.first_seed + i,
                                      "--max-time-minutes", round(budget, 3), "--out", run,
                                      *(["--baseline"] if i == 0 else []), *a.extra]]
                    for i, run in enumerate(runs)]
        _train_side_by_side(commands, [Path(f"{run}.log") for run in runs], a.parallel)
        results = [json.loads(Path(run, "metrics.json").read_text()) for run in runs]
    train_wall_s = time.time() - t0
    m = results[0]
    summary = {"benchmark": "sst2", "test_accuracy": m["accuracy"], "test_f1": m["f1"],
               "baseline_tfidf_logreg_accuracy": m["baseline"]["accuracy"],
               "train_wall_s": round(train_wall_s, 1),
               "train_time_s": round(sum(r["train_time_s"] for r in results), 2),
               "num_params": m["num_params"], "best_step": m["best_step"]}
    if a.members > 1:
        task, ensemble = load_runs(runs, "cpu")
        task.load_data()
        valid, test = task.evaluate(ensemble, "valid"), task.evaluate(ensemble, "test")
        summary.update(test_accuracy=test["accuracy"], test_f1=test["f1"], valid_accuracy=valid["accuracy"],
                       num_params=sum(r["num_params"] for r in results), best_step=None, parallel=a.parallel,
                       members=[{"run": r, "variant": variants[i % len(variants)],
                                 "test_accuracy": x["accuracy"], "best_step": x["best_step"],
                                 "train_time_s": x["train_time_s"]} for i, (r, x) in enumerate(zip(runs, results))])
    summary.update(wall_s=round(time.time() - t0, 1), target_accuracy=0.83,
                   target_met=summary["test_accuracy"] >= 0.83 and train_wall_s <= a.minutes * 60)
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    name = "sentiment_sst2" + (f"_ens{a.members}" if a.members > 1 else "")
    name += (f"_seed{a.first_seed}" if a.first_seed else "") + ".json"
    summary["machine"] = machine
    Path("bench/out", name).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
