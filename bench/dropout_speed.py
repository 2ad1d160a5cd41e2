#!/usr/bin/env python
"""CPU dropout masks: ``core.layers.Dropout`` (16-bit random integers) vs ``torch.rand`` masks (its
previous implementation) vs ``F.dropout``'s ``bernoulli_``; and the core encoder's training step
(``bench/core_speed.py``'s configuration) with each mask, interleaved in one process so that the
machine's drift from minute to minute cancels.

    python bench/dropout_speed.py [--repeats 12]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import panformer.core.layers as layers
from panformer.core.runtime import limit_blas_threads
from core_speed import build, make_batch, time_it, train_step_fn  # bench/ is on sys.path when run as a script

CORE_FORWARD = layers.Dropout.forward


def rand_mask_forward(self, x):
    """The previous CPU path: keep = torch.rand(shape) >= p."""
    if not self.training or self.p == 0.0:
        return x
    keep = torch.rand(x.shape, device=x.device) >= self.p
    return layers._KeepAndScale.apply(x, keep, 1.0 / (1.0 - self.p))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--out", default="bench/out/dropout_speed.json")
    a = p.parse_args()
    shape = torch.Size([32, 128, 256])  # 1M elements, one sublayer output of the step below
    res: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    res["mask_ms/core"] = round(time_it(lambda: layers._keep_mask(shape, round(0.1 * 2**16), "cpu"), 30), 3)
    res["mask_ms/torch.rand"] = round(time_it(lambda: torch.rand(shape) >= 0.1, 30), 3)
    res["mask_ms/bernoulli_"] = round(time_it(lambda: torch.empty(shape).bernoulli_(0.9), 30), 3)
    x, mask = make_batch()
    with limit_blas_threads():
        for precision in ("fp32", "bf16"):
            step = train_step_fn(build("panformer"), x, mask, precision)
            for _ in range(3):
                step()
            times: dict[str, list[float]] = {"core": [], "torch.rand": []}
            for r in range(a.repeats):
                order = [("core", CORE_FORWARD), ("torch.rand", rand_mask_forward)]
                for name, forward in order[:: 1 if r % 2 else -1]:
                    layers.Dropout.forward = forward
                    t = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - t)
            layers.Dropout.forward = CORE_FORWARD
            for name, ts in times.items():
                res[f"train_ms/{precision}/{name}"] = round(sorted(ts)[len(ts) // 2] * 1000, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
