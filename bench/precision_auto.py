#!/usr/bin/env python
"""What ``--precision auto`` picks on this machine, and whether the pick is the faster one.

Times a matrix product and a whole training step of the generation recipe's GPT (6 layers x 192, block 128,
batch 32, the Trainer's optimizer) in fp32 and in bf16 autocast, the two precisions' steps in turns, and
prints which one ``auto`` resolves to (``panformer.core.runtime.native_bf16``: CPU flags AVX512-BF16 / AMX /
Arm BF16). On a CPU without them PyTorch falls back to a generic bf16 matrix product, several times slower
than fp32; with them bf16 is the faster one.

    python bench/precision_auto.py [--steps 8] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panformer.core.optim import build_optimizer  # noqa: E402
from panformer.core.runtime import (_BF16_CPU_FLAGS, _cpu_flags, autocast, limit_blas_threads,  # noqa: E402
                                    native_bf16, resolve_precision, retain_freed_memory)

CPU = torch.device("cpu")


def gemm_ms(dtype: torch.dtype, repeats: int = 5) -> float:
    a, w = torch.randn(4096, 256, dtype=dtype), torch.randn(1024, 256, dtype=dtype)
    a @ w.t()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ w.t()
    return (time.perf_counter() - t0) / repeats * 1000


def gpt_steps(steps: int) -> dict[str, float]:
    """Median ms of the generation recipe's training step (its model, loss and optimizer) per precision."""
    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args
    from recipes.generation import DEFAULTS

    cls = get_task("generation")  # built-in text: no shared data needed; dropout 0 keeps the step deterministic
    args, targs = resolve_train_args(cls, ["--dropout", "0"], DEFAULTS)
    task = cls(args)
    task.load_data()
    task.fit_assets()
    torch.manual_seed(0)
    model = task.build_model()
    ds = task.train_dataset()
    opt = build_optimizer(model, targs.lr, targs.weight_decay, (targs.adam_beta1, targs.adam_beta2), targs.adam_eps)
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def step(precision: str) -> float:
        batch = task.collate([ds[j] for j in torch.randint(len(ds), (targs.batch_size,), generator=g).tolist()])
        t0 = time.perf_counter()
        with autocast(CPU, precision):
            loss = task.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0) * 1000

    model.train()
    for p in times:
        step(p)  # warm-up of each precision's kernels
    for _ in range(steps):
        for p in times:
            times[p].append(step(p))
    return {f"gpt_step_{p}_ms": round(statistics.median(v), 1) for p, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="training steps per precision (taken in turns)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="full")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    retain_freed_memory()
    flags = sorted(_cpu_flags() & ({"avx2", "avx512f", "amx_tile"} | _BF16_CPU_FLAGS))
    with limit_blas_threads():
        out = {"benchmark": "precision_auto", "tag": a.tag, "cpu_flags": flags, "native_bf16": native_bf16(CPU),
               "auto_picks": resolve_precision("auto", CPU), "threads": a.threads,
               "gemm_fp32_ms": round(gemm_ms(torch.float32), 1), "gemm_bf16_ms": round(gemm_ms(torch.bfloat16), 1),
               **gpt_steps(a.steps)}
    out["bf16_speedup_gemm"] = round(out["gemm_fp32_ms"] / out["gemm_bf16_ms"], 2)
    out["bf16_speedup_step"] = round(out["gpt_step_fp32_ms"] / out["gpt_step_bf16_ms"], 2)
    faster = "bf16" if out["bf16_speedup_step"] > 1 else "fp32"
    out["auto_is_faster"] = out["auto_picks"] == faster
    print(json.dumps(out, indent=2))
    path = ROOT / "bench" / "out" / f"precision_auto_{a.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
