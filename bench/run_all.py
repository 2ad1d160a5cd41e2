#!/usr/bin/env python
"""Run every benchmark in sequence (hours on a 2-core CPU); results land in bench/out/.

    python bench/run_all.py [--only core_speed sentiment_sst2 ...] [--list]

Each script is also runnable on its own; BENCHMARKS.md records commands and numbers.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["core_speed", "bf16_ceiling", "malloc_ab", "dropout_speed", "long_context", "ddp_throughput", "sentiment_sst2",
         "sentiment_minilm_sst2", "generation_speed", "generation_tinyshakespeare", "generation_big_corpus",
         "translation_multi30k", "vit_digits", "detection_digits", "speech_espeak", "speech_fsdd", "recommendation_games",
         "music_chorales", "image_generation_digits", "tts_espeak"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=ORDER, help="run just these")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    a = p.parse_args()
    if a.list:
        print("\n".join(ORDER))
        return 0
    failed = []
    for name in a.only or ORDER:
        t0 = time.time()
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"== {name}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
