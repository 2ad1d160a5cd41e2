"""What machine a benchmark ran on, for its JSON: the project's VM is not the same CPU every day.

``describe()`` -> ``{"cpu", "cores", "bf16_flags", "native_bf16", "torch", "threads", "fp32_gflops", "load_1min"}``: the CPU
model, its bf16 instruction flags (AVX512-BF16 / AMX / Arm BF16), the torch version, a 0.3-second fp32 matrix
product speed at the current thread count and the 1-minute load average before the run. A wall-clock result
means little without them: the same GPT step took 0.2 s (bf16) on a Xeon with AMX and 3.0 s (fp32) on an AVX2-only
EPYC (BENCHMARKS.md).
"""
from __future__ import annotations

import os
import platform
import time

import torch

from panformer.core.runtime import _BF16_CPU_FLAGS, _cpu_flags, native_bf16

__all__ = ["describe"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fp32_gflops(seconds: float = 0.3, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return round(2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9, 1)


def describe() -> dict:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "bf16_flags": sorted(_cpu_flags() & _BF16_CPU_FLAGS),
            "native_bf16": native_bf16(torch.device("cpu")), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "fp32_gflops": _fp32_gflops(),
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
