#!/usr/bin/env python
"""SST-2 sentiment from scratch vs TF-IDF + logistic regression, in one run.

Trains the core Encoder on the 67,349 SST-2 training phrases (GLUE train), picks the best checkpoint
on dev (872), reports test (1,821 labelled sentences) with the baseline fitted on the same training
data. Evaluation and selection use an exponential moving average of the weights (``--ema-decay``).

    python bench/sentiment_sst2.py [--minutes 20] [--data-root ../shared/data] [--out bench/out/sst2]
    python bench/sentiment_sst2.py --members 5     # 5 seeds in turn, minutes/5 each; scores their ensemble

With ``--members N`` the N runs (seeds 0..N-1) share the time budget one after another and the test
score is that of ``panformer evaluate sentiment --run A --run B ...`` (mean log-probabilities).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tasks.cli import load_runs, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget (all members together)")
    p.add_argument("--members", type=int, default=1, help="runs with seeds 0..N-1, scored as an ensemble")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default="bench/out/sst2", help="run directory (members: OUT-m0, OUT-m1, ...)")
    p.add_argument("extra", nargs="*", help="more `panformer train sentiment` flags (after --)")
    a = p.parse_args()
    sst = Path(a.data_root) / "sst2"
    if not sst.is_dir():
        raise SystemExit(f"SST-2 not found at {sst}")
    if a.members < 1:
        raise SystemExit("--members must be >= 1")
    argv = ["--data", sst / "train.tsv", "--valid-data", sst / "dev.tsv", "--test-data", sst / "test.tsv",
            "--precision", "bf16", "--epochs", "3" if a.members == 1 else "2",
            "--batch-size", "64", "--lr", "5e-4", "--schedule", "cosine", "--warmup-steps", "500",
            "--weight-decay", "0.05", "--label-smoothing", "0.1", "--dropout", "0.2",
            "--d-model", "256", "--n-heads", "4", "--n-layers", "3", "--d-ff", "1024",
            "--vocab-size", "16000", "--ema-decay", "0.999", "--eval-every", "350",
            "--metric-for-best", "accuracy", "--progress", "false", "--overwrite"]
    t0 = time.time()
    runs = [a.out] if a.members == 1 else [f"{a.out}-m{i}" for i in range(a.members)]
    results = []
    for i, run in enumerate(runs):
        member = ["--seed", str(i), "--max-time-minutes", a.minutes / a.members, "--out", run]
        results.append(train("sentiment", [str(x) for x in [*argv, *member, *(["--baseline"] if i == 0 else []),
                                                            *a.extra]]))
    m = results[0]
    summary = {"benchmark": "sst2", "test_accuracy": m["accuracy"], "test_f1": m["f1"],
               "baseline_tfidf_logreg_accuracy": m["baseline"]["accuracy"],
               "train_time_s": round(sum(r["train_time_s"] for r in results), 2), "num_params": m["num_params"],
               "best_step": m["best_step"]}
    if a.members > 1:
        task, ensemble = load_runs(runs, "cpu")
        task.load_data()
        valid, test = task.evaluate(ensemble, "valid"), task.evaluate(ensemble, "test")
        summary.update(test_accuracy=test["accuracy"], test_f1=test["f1"], valid_accuracy=valid["accuracy"],
                       members=[{"run": r, "test_accuracy": x["accuracy"], "best_step": x["best_step"],
                                 "train_time_s": x["train_time_s"]} for r, x in zip(runs, results)],
                       best_step=None)
    summary.update(wall_s=round(time.time() - t0, 1), target_accuracy=0.83,
                   target_met=summary["test_accuracy"] >= 0.83)
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    name = "sentiment_sst2.json" if a.members == 1 else f"sentiment_sst2_ens{a.members}.json"
    Path("bench/out", name).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
