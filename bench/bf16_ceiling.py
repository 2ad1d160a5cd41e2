#!/usr/bin/env python
"""The most bf16 autocast can gain on this CPU for bench/core_speed.py's training step: its matmuls alone.

Times every GEMM of one training step of the core_speed configuration (d_model 256, d_ff 1024, 4 layers,
batch 32 x length 128 with a quarter padding, so the FFN sees 3,075 packed tokens): per linear layer the
forward product and the two backward products (input and weight gradients), per attention the two
batched products forward and four backward. Nothing else (LayerNorm, softmax, dropout, casts, the
optimizer) is counted, so fp32 time / bf16 time is the ceiling of the step's bf16 speed-up here.

    python bench/bf16_ceiling.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from panformer.core.runtime import retain_freed_memory

TOKENS, REAL, D, FF, BATCH, HEADS, T, LAYERS = 4096, 3075, 256, 1024, 32, 4, 128, 4


def gemm_shapes() -> list[tuple[int, int, int]]:
    """(M, K, N) of each linear-layer GEMM of one layer: y = x W^T, dx = dy W, dW = dy^T x."""
    shapes = []
    for m, k, n, count in [(TOKENS, D, D, 4), (REAL, D, FF, 1), (REAL, FF, D, 1)]:  # q, k, v, out; FFN in, out
        shapes += [(m, k, n), (m, n, k), (n, m, k)] * count
    return shapes


def matmul_step_ms(dtype: torch.dtype, repeats: int) -> float:
    mats = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in gemm_shapes()]
    hs = D // HEADS
    bmms = [(torch.randn(BATCH * HEADS, T, hs, dtype=dtype), torch.randn(BATCH * HEADS, hs, T, dtype=dtype)),  # q k^T
            (torch.randn(BATCH * HEADS, T, T, dtype=dtype), torch.randn(BATCH * HEADS, T, hs, dtype=dtype))]  # p v

    def step() -> None:
        for _ in range(LAYERS):
            for a, b in mats:
                torch.mm(a, b)
            for _ in range(3):  # forward, and backward's two products per forward product
                for a, b in bmms:
                    torch.bmm(a, b)

    step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="bench/out/bf16_ceiling.json")
    a = p.parse_args()
    retain_freed_memory()
    pairs = [(matmul_step_ms(torch.float32, a.repeats), matmul_step_ms(torch.bfloat16, a.repeats)) for _ in range(3)]
    fp32, bf16 = (sorted(x)[1] for x in zip(*pairs))
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__, "matmul_ms/fp32": round(fp32, 1),
           "matmul_ms/bf16": round(bf16, 1), "ceiling_speedup": round(fp32 / bf16, 2),
           "rounds": [[round(f, 1), round(b, 1)] for f, b in pairs]}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
