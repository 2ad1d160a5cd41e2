#!/usr/bin/env python
"""Multi30k German→English (test2016): sacreBLEU with greedy and beam search, and the training time.

Trains ``recipes/translation.py``'s configuration on ``../shared/data/multi30k`` for at most
``--minutes`` (target: BLEU >= 35 with beam search within 45 minutes on the 2-core CPU), then scores
test2016 (1,000 sentences) with detokenised, cased sacreBLEU (13a) and chrF.

    python bench/translation_multi30k.py                          # the full benchmark (45 minutes)
    python bench/translation_multi30k.py --minutes 4 --tag smoke  # a smoke run
    python bench/translation_multi30k.py -- --d-model 512         # extra panformer flags after --
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

from recipes.translation import DEFAULTS  # noqa: E402
from panformer.tasks.cli import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "multi30k"), help="folder with train/val/test_2016_flickr .de.gz/.en.gz")
    p.add_argument("--minutes", type=float, default=45.0, help="training time budget (max_time_minutes)")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/bench-multi30k-<tag>)")
    p.add_argument("--tag", default="full", help="name of this run in bench/out/")
    p.add_argument("extra", nargs="*", help="more `panformer train translation` flags (after --)")
    a = p.parse_args()
    d = Path(a.data_dir)
    if not (d / "train.de.gz").is_file():
        sys.exit(f"multi30k not found in {d}")
    run_dir = Path(a.run_dir or ROOT / "runs" / f"bench-multi30k-{a.tag}")
    argv = ["--data", str(d / "train"), "--valid-data", str(d / "val"), "--test-data", str(d / "test_2016_flickr"),
            "--source-lang", "de", "--target-lang", "en", "--max-time-minutes", str(a.minutes),
            "--out", str(run_dir), "--overwrite", "--progress", "false", *a.extra]
    machine = describe()  # before the run: CPU, bf16 flags, fp32 speed, load (bench/machine.py)
    t0 = time.time()
    m = train("translation", argv, recipe_defaults=DEFAULTS)
    summary = {
        "benchmark": "multi30k de-en test2016", "tag": a.tag, "minutes_budget": a.minutes,
        "bleu_beam": round(m["bleu"], 2), "bleu_greedy": round(m.get("bleu_greedy", m["bleu"]), 2),
        "chrf_beam": round(m["chrf"], 2), "chrf_greedy": round(m.get("chrf_greedy", m["chrf"]), 2),
        "beam_size": m.get("beam_size"), "checkpoints_averaged": m.get("checkpoints_averaged"),
        "test_loss": round(m["loss"], 4), "train_time_s": m["train_time_s"], "train_steps": m["train_steps"],
        "num_params": m["num_params"], "total_time_s": round(time.time() - t0, 1), "run_dir": str(run_dir),
        "target": "bleu_beam >= 35 within 45 minutes",
    }
    summary["machine"] = machine
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "out" / f"translation_multi30k_{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
