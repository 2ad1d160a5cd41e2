#!/usr/bin/env python
"""DETR on the built-in digit scenes: COCO map / map_50 / map_75 on the test split within a time budget.

Scenes: 64x64 canvases with 1-4 real sklearn digits (disjoint digit images per split), 8,000 scenes
split 80/10/10 with the seed. Target (issue 4): ``map_50 >= 0.90`` within 30 minutes of training.

    python bench/detection_digits.py                    # full run: 30-minute budget
    python bench/detection_digits.py --minutes 4 --smoke # short smoke run (numbers are not the target)

Prints a JSON summary and writes it to bench/out/detection_digits.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from panformer.tasks.cli import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget (the Trainer stops then)")
    p.add_argument("--scenes", type=int, default=8000, help="built-in scenes (train + valid + test)")
    p.add_argument("--epochs", type=int, default=30, help="epochs; the cosine schedule spans them (the time budget may stop first)")
    p.add_argument("--precision", default="auto", help="fp32 | bf16 | auto (bf16 where the CPU has it)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="label the result as a smoke run")
    p.add_argument("--out", default="bench/out/detection_digits", help="run directory")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    argv = ["--builtin-scenes", str(a.scenes), "--epochs", str(a.epochs), "--max-time-minutes", str(a.minutes),
            "--precision", a.precision, "--seed", str(a.seed), "--out", a.out, "--overwrite", "--progress", "false",
            "--batch-size", "32", "--lr", "5e-4", "--schedule", "cosine", "--warmup-steps", "200",
            "--d-model", "128", "--n-encoder-layers", "3", "--n-decoder-layers", "3", "--d-ff", "512",
            "--num-queries", "12", "--backbone-pretrain-steps", "600", "--eval-every", "500"]
    t0 = time.time()
    m = train("detection", argv)
    summary = {
        "benchmark": "detection_digits", "smoke_run": a.smoke, "budget_minutes": a.minutes,
        "map": round(m["map"], 4), "map_50": round(m["map_50"], 4), "map_75": round(m["map_75"], 4),
        "precision_50": round(m["precision_50"], 4), "recall_50": round(m["recall_50"], 4),
        "target_map_50": 0.90, "target_met": m["map_50"] >= 0.90, "train_steps": m["train_steps"],
        "train_time_s": m["train_time_s"], "total_time_s": round(time.time() - t0, 1), "num_params": m["num_params"],
        "precision": a.precision, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "args": argv,
    }
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "detection_digits.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
