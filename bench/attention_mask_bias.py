#!/usr/bin/env python
"""The explicit ("math") attention kernel: the mask added inside the scores' matrix product (``baddbmm``
with the scale as its alpha, ``core.attention._explicit`` since 2026-12-08) against the formula it replaced
(``matmul``, then a scaling and a ``masked_fill`` pass over the (B, nh, Tq, Tk) scores, as nanoGPT writes it).

Forward + backward of the kernel alone, at the character LM's shape (batch 32, 6 heads, T 128, head size 32)
with a causal mask, the padded encoder's (key padding), both (SASRec's: a full-size bias per example) and no
mask; the two versions in turns in one process,
so the machine's drift hits both; median of the per-pair ratios.

    python bench/attention_mask_bias.py [--threads 2] [--repeats 40]
    python bench/attention_mask_bias.py --batch 128 --heads 1 --length 50 --head-size 64 --out bench/out/attention_mask_bias_sasrec.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from panformer.core import lengths_to_padding_mask  # noqa: E402
from panformer.core.attention import _explicit, build_attention_mask  # noqa: E402


def previous(q, k, v, mask):
    """The kernel before: scores = (q k^T) * scale, masked_fill, softmax, @ v."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    if mask is not None:
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--head-size", type=int, default=32)
    p.add_argument("--out", default="bench/out/attention_mask_bias.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, nh, T, hs = a.batch, a.heads, a.length, a.head_size
    padding = lengths_to_padding_mask(torch.randint(T // 2, T + 1, (B,)), T)
    masks = {"causal": build_attention_mask(T, T, causal=True), "key_padding": build_attention_mask(T, T, padding),
             "causal_padding": build_attention_mask(T, T, padding, causal=True),  # (B, 1, T, T): a bias per example
             "none": None}
    base = torch.randn(B, T, 3, nh, hs)  # q, k, v as the fused projection lays them out: (B, T, 3, nh, hs)
    kernels = {"previous": previous, "bias_in_product": lambda q, k, v, m: _explicit(q, k, v, m, 0.0)[0]}
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for mask_name, mask in masks.items():
            times: dict[str, list[float]] = {name: [] for name in kernels}
            for r in range(a.repeats + 3):
                for name, fn in kernels.items():
                    x = base.to(dtype).requires_grad_(True)
                    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))  # (B, nh, T, hs) views
                    t = time.perf_counter()
                    fn(q, k, v, mask).float().sum().backward()
                    if r >= 3:
                        times[name].append((time.perf_counter() - t) * 1000)
            ratios = sorted(n / o for n, o in zip(times["bias_in_product"], times["previous"]))
            row = {"dtype": str(dtype).removeprefix("torch."), "mask": mask_name,
                   **{f"{name}_ms": round(sorted(v)[len(v) // 2], 2) for name, v in times.items()},
                   "ratio_new_over_previous": round(ratios[len(ratios) // 2], 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"shape": {"batch": B, "heads": nh, "length": T, "head_size": hs}, "threads": a.threads,
           "repeats": a.repeats, "rows": rows, "machine": describe()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
