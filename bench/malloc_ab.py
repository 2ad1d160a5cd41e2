#!/usr/bin/env python
"""A/B of the Trainer's allocator setting (``core.runtime.retain_freed_memory``) in separate processes.

Each round starts two fresh processes, ``PANFORMER_MALLOC_TUNING=0`` and ``=1`` (which goes first
alternates from round to round); each trains bench/core_speed.py's encoder with fp32 and bf16 steps
taken in turns (its ``interleaved_bf16_speedup``: 3 warm-up + 12 timed pairs) and reports median step
times, minor page faults per step, fp32 inference time and peak RSS. The setting is process-wide and
glibc adapts its own threshold to what a process freed before, so only separate processes compare it
fairly.

    python bench/malloc_ab.py [--rounds 6]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure() -> dict:
    from panformer.core.runtime import limit_blas_threads, retain_freed_memory

    sys.path.insert(0, str(HERE))
    from core_speed import build, infer_fn, interleaved_bf16_speedup, make_batch, time_it

    tuned = retain_freed_memory()
    x, mask = make_batch()
    with limit_blas_threads():
        steps = interleaved_bf16_speedup("panformer", x, mask, repeats=12)
        infer_ms = time_it(infer_fn(build("panformer"), x, mask, "fp32"), repeats=10)
    return {"tuned": tuned, "train_ms/fp32": steps["fp32_ms"], "train_ms/bf16": steps["bf16_ms"],
            **{f"page_faults_per_step/{p}": n for p, n in steps["page_faults_per_step"].items()},
            "infer_ms/fp32": round(infer_ms, 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> None:
    if os.environ.get("_MALLOC_AB_CHILD"):
        print(json.dumps(measure()))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", default="bench/out/malloc_ab.json")
    a = p.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    rounds = []
    for r in range(a.rounds):
        pair = {}
        for tuning in ("0", "1") if r % 2 == 0 else ("1", "0"):  # alternate which goes first: the VM drifts
            out = subprocess.run([sys.executable, __file__], env={**env, "_MALLOC_AB_CHILD": "1",
                                 "PANFORMER_MALLOC_TUNING": tuning}, capture_output=True, text=True, check=True)
            pair["tuned" if tuning == "1" else "default"] = json.loads(out.stdout.splitlines()[-1])
        print(json.dumps(pair), flush=True)
        rounds.append(pair)
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {f"{key}/{side}": sorted(r[side][key] for r in rounds)[len(rounds) // 2]
               for key in ("train_ms/fp32", "train_ms/bf16", "infer_ms/fp32") for side in ("default", "tuned")}
    summary["tuned_faster_in_rounds/fp32"] = sum(r["tuned"]["train_ms/fp32"] < r["default"]["train_ms/fp32"] for r in rounds)
    summary["tuned_faster_in_rounds/bf16"] = sum(r["tuned"]["train_ms/bf16"] < r["default"]["train_ms/bf16"] for r in rounds)
    print(json.dumps(summary))
    path.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
