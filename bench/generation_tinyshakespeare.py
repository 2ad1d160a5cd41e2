#!/usr/bin/env python
"""tinyshakespeare, character level: validation loss after a wall-time budget.

nanoGPT's split (first 90 % train, last 10 % validation) and shape (6 layers x 192, 6 heads, block
128, batch 64, no dropout), bf16 autocast, cosine schedule. Target: validation loss <= 1.60 within
15 minutes of training (nanoGPT's CPU recipe: 1.88).

    python bench/generation_tinyshakespeare.py                          # the full benchmark (15 minutes)
    python bench/generation_tinyshakespeare.py --minutes 4 --tag smoke  # a smoke run
    python bench/generation_tinyshakespeare.py -- --precision fp32      # extra panformer flags after --
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.generation import DEFAULTS  # noqa: E402
from panformer.tasks.cli import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"))
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget (max_time_minutes)")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/bench-tinyshakespeare-<tag>)")
    p.add_argument("--tag", default="full", help="name of this run in bench/out/")
    p.add_argument("extra", nargs="*", help="more `panformer train generation` flags (after --)")
    a = p.parse_args()
    if not Path(a.data).is_file():
        sys.exit(f"tinyshakespeare not found: {a.data}")
    run_dir = Path(a.run_dir or ROOT / "runs" / f"bench-tinyshakespeare-{a.tag}")
    argv = ["--data", a.data, "--max-time-minutes", str(a.minutes), "--out", str(run_dir), "--overwrite",
            "--progress", "false", "--prompt", "ROMEO:", "--max-new-tokens", "300",
            "--max-steps", "2000",  # ~1,300 steps fit 15 min here: the cosine schedule is mostly decayed by then
            *a.extra]
    t0 = time.time()
    m = train("generation", argv, recipe_defaults=DEFAULTS)
    summary = {
        "benchmark": "tinyshakespeare char-level validation loss", "tag": a.tag, "minutes_budget": a.minutes,
        "val_loss": round(m["loss"], 4), "bits_per_char": round(m["bits_per_char"], 4),
        "train_time_s": m["train_time_s"], "train_steps": m["train_steps"], "num_params": m["num_params"],
        "examples_per_s": round(m["examples_per_s"] or 0.0, 1), "total_time_s": round(time.time() - t0, 1),
        "run_dir": str(run_dir), "target": "val_loss <= 1.60 within 15 minutes (nanoGPT CPU recipe 1.88)",
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "out" / f"generation_tinyshakespeare_{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
