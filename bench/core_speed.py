#!/usr/bin/env python
"""Core encoder vs ``torch.nn.TransformerEncoder``: training step and inference, fp32 and bf16.

Same configuration for both (d_model 256, 4 heads, d_ff 1024, 4 layers, dropout 0.1, post-LN), one
process. Our encoder drops out sublayer outputs and embedding sums (the paper); PyTorch's layer also
drops attention probabilities, which takes SDPA off its fused CPU kernel.

    python bench/core_speed.py [--batch 32] [--length 128] [--repeats 20]
    python bench/core_speed.py --compile     # panformer's encoder under torch.compile (inductor), same steps
    python bench/core_speed.py --device cuda # on a GPU (the issue's targets are for the CPU)
    python bench/core_speed.py --default-malloc  # without the Trainer's allocator setting (A/B)

Both models train with the Trainer's optimizer (``core.optim.build_optimizer``: AdamW, fused kernel) in a
process with the Trainer's allocator setting (``core.runtime.retain_freed_memory``), as ``panformer
train`` runs them.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from torch import nn

from panformer import core
from panformer.core.optim import build_optimizer
from panformer.core.runtime import limit_blas_threads, retain_freed_memory


def build(kind: str, d=256, h=4, ff=1024, n=4, dropout=0.1) -> nn.Module:
    if kind == "panformer":
        cfg = core.TransformerConfig(d_model=d, n_heads=h, n_layers=n, d_ff=ff, dropout=dropout, positional="none")
        return core.Encoder(cfg)
    layer = nn.TransformerEncoderLayer(d, h, ff, dropout=dropout, batch_first=True)
    return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)


def make_batch(batch: int = 32, length: int = 128, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The benchmark's input (seeded): x (batch, length, 256) and a padding mask (batch, length) for
    lengths uniform in [length/2, length], the first at full length (a quarter padding on average)."""
    torch.manual_seed(0)
    x = torch.randn(batch, length, 256, device=device)
    lengths = torch.randint(length // 2, length + 1, (batch,))
    lengths[0] = length
    return x, core.lengths_to_padding_mask(lengths, length).to(device)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_it(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1000  # median ms


def train_step_fn(model, x, mask, precision):
    opt = build_optimizer(model, lr=1e-4)
    model.train()

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x, src_key_padding_mask=mask) if isinstance(model, nn.TransformerEncoder) else model(x, mask)
            loss = out.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def interleaved_bf16_speedup(kind: str, x, mask, repeats: int, warmup: int = 3) -> dict:
    """fp32 and bf16 training steps of two identical models taken in turns, so that the machine's drift
    (this VM's speed varies by +-10 % from minute to minute) hits both: median step times and the
    median of the per-pair ratios."""
    torch.manual_seed(0)
    models = {prec: build(kind).to(x.device) for prec in ("fp32", "bf16")}
    models["bf16"].load_state_dict(models["fp32"].state_dict())
    steps = {prec: train_step_fn(m, x, mask, prec) for prec, m in models.items()}
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    faults = {"fp32": 0, "bf16": 0}  # minor page faults (resource.getrusage): see --default-malloc
    for i in range(warmup + repeats):
        for prec, step in steps.items():
            _sync()
            f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            step()
            _sync()
            if i >= warmup:
                times[prec].append((time.perf_counter() - t) * 1000)
                faults[prec] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
    ratios = sorted(f / b for f, b in zip(times["fp32"], times["bf16"]))
    med = {prec: sorted(ts)[len(ts) // 2] for prec, ts in times.items()}
    return {"fp32_ms": round(med["fp32"], 1), "bf16_ms": round(med["bf16"], 1),
            "speedup": round(ratios[len(ratios) // 2], 2), "speedup_q1_q3": [round(ratios[len(ratios) // 4], 2),
                                                                         round(ratios[3 * len(ratios) // 4], 2)],
            "page_faults_per_step": {prec: n // repeats for prec, n in faults.items()}}


def optimizer_step_ms(repeats: int) -> dict:
    """One AdamW step over panformer's encoder with random gradients: the Trainer's optimizer
    (``build_optimizer``, the fused kernel) against ``torch.optim.AdamW``'s default implementation."""
    model = build("panformer")
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opts = {"build_optimizer": build_optimizer(model, lr=1e-4), "adamw_default": torch.optim.AdamW(model.parameters(), lr=1e-4)}
    return {name: round(time_it(opt.step, repeats), 2) for name, opt in opts.items()}


def infer_fn(model, x, mask, precision):
    model.eval()

    @torch.no_grad()
    def run():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            model(x, src_key_padding_mask=mask) if isinstance(model, nn.TransformerEncoder) else model(x, mask)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="torch.compile panformer's encoder (the first, compiling"
                   " step is excluded from the timings)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator at its defaults")
    p.add_argument("--out", default=None, help="default: bench/out/core_speed[_compile][_cuda][_default_malloc].json")
    a = p.parse_args()
    malloc_tuned = False if a.default_malloc else retain_freed_memory()
    x, mask = make_batch(a.batch, a.length, a.device)
    res: dict = {"config": vars(a), "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "malloc_tuned": malloc_tuned}
    with limit_blas_threads():
        for precision in ("fp32", "bf16"):
            for kind in ("panformer", "torch"):
                m = build(kind).to(a.device)
                if a.compile and kind == "panformer":
                    m = torch.compile(m)
                res[f"train_ms/{kind}/{precision}"] = round(time_it(train_step_fn(m, x, mask, precision), a.repeats), 1)
                res[f"infer_ms/{kind}/{precision}"] = round(time_it(infer_fn(m, x, mask, precision), a.repeats), 1)
                print(kind, precision, res[f"train_ms/{kind}/{precision}"], res[f"infer_ms/{kind}/{precision}"], flush=True)
        res["optimizer_step_ms"] = optimizer_step_ms(a.repeats)
        print("optimizer step", res["optimizer_step_ms"], flush=True)
        for kind in ("panformer", "torch"):
            res[f"bf16_speedup_interleaved/{kind}"] = interleaved_bf16_speedup(kind, x, mask, a.repeats)
            print(kind, "interleaved", res[f"bf16_speedup_interleaved/{kind}"], flush=True)
    r = res
    res["speedup_train_fp32"] = round(r["train_ms/torch/fp32"] / r["train_ms/panformer/fp32"], 2)
    res["speedup_infer_fp32"] = round(r["infer_ms/torch/fp32"] / r["infer_ms/panformer/fp32"], 2)
    res["bf16_speedup_train/panformer"] = round(r["train_ms/panformer/fp32"] / r["train_ms/panformer/bf16"], 2)
    res["bf16_speedup_train/torch"] = round(r["train_ms/torch/fp32"] / r["train_ms/torch/bf16"], 2)
    suffix = ("_compile" if a.compile else "") + ("" if a.device == "cpu" else f"_{a.device}") + (
        "_default_malloc" if a.default_malloc else "")
    out = Path(a.out or f"bench/out/core_speed{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
