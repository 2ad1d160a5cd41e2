#!/usr/bin/env python
"""SST-2 sentiment from scratch vs TF-IDF + logistic regression, in one run.

Trains the core Encoder on the 67,349 SST-2 training phrases (GLUE train), picks the best epoch on
dev (872), reports test (1,821 labelled sentences) with the baseline fitted on the same training data.

    python bench/sentiment_sst2.py [--minutes 20] [--data-root ../shared/data] [--out bench/out/sst2]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tasks.cli import train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default="bench/out/sst2")
    p.add_argument("extra", nargs="*", help="more `panformer train sentiment` flags (after --)")
    a = p.parse_args()
    sst = Path(a.data_root) / "sst2"
    if not sst.is_dir():
        raise SystemExit(f"SST-2 not found at {sst}")
    argv = ["--data", sst / "train.tsv", "--valid-data", sst / "dev.tsv", "--test-data", sst / "test.tsv",
            "--baseline", "--precision", "bf16", "--max-time-minutes", a.minutes, "--epochs", "8",
            "--batch-size", "64", "--lr", "5e-4", "--schedule", "cosine", "--warmup-steps", "500",
            "--weight-decay", "0.05", "--label-smoothing", "0.1", "--dropout", "0.2",
            "--d-model", "256", "--n-heads", "4", "--n-layers", "3", "--d-ff", "1024",
            "--vocab-size", "16000", "--metric-for-best", "accuracy", "--progress", "false",
            "--out", a.out, "--overwrite", *a.extra]
    t0 = time.time()
    m = train("sentiment", [str(x) for x in argv])
    summary = {"benchmark": "sst2", "test_accuracy": m["accuracy"], "test_f1": m["f1"],
               "baseline_tfidf_logreg_accuracy": m["baseline"]["accuracy"], "train_time_s": m["train_time_s"],
               "num_params": m["num_params"], "best_step": m["best_step"], "wall_s": round(time.time() - t0, 1),
               "target_accuracy": 0.83, "target_met": m["accuracy"] >= 0.83}
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    Path("bench/out/sentiment_sst2.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
