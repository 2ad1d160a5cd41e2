"""Process-level set-up: seeding, device choice, mixed precision, BLAS threads and RNG snapshots."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import sys
from typing import Any, ContextManager, Iterator

import numpy as np
import torch

from .errors import ConfigError

__all__ = [
    "PRECISIONS", "seed_everything", "resolve_device", "native_bf16", "resolve_precision", "autocast", "limit_blas_threads",
    "retain_freed_memory", "capture_rng", "rng_state", "set_rng_state",
]

PRECISIONS = ("fp32", "bf16", "auto")

# CPU features that give bf16 matrix products their own instructions (x86: AVX512-BF16, AMX; Arm: BF16 / SVE BF16).
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16", "svebf16"}


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.

    Under ``torchrun`` with CUDA, ``"auto"``/``"cuda"`` mean this process's ``LOCAL_RANK`` GPU. With
    more processes per node (``LOCAL_WORLD_SIZE``) than GPUs, ``"auto"`` means the CPU on every rank
    (NCCL cannot put two ranks on one GPU, and all ranks must agree on the backend); ``"cuda"`` is an
    error then.
    """
    if isinstance(name, torch.device):
        return name
    name = name.strip().lower()
    if name == "auto":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        name = "cuda" if torch.cuda.is_available() and per_node <= torch.cuda.device_count() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively, i.e. faster than fp32.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later). CPU: an AVX512-BF16, AMX or Arm BF16 flag in
    ``/proc/cpuinfo`` (where it cannot be read: no). Without one, PyTorch falls back to a generic bf16 GEMM: on an
    AVX2-only AMD EPYC a (4096 x 256) x (256 x 1024) product took 365 ms in bf16 against 64 ms in fp32, a GPT
    training step 21.6 s against 3.0 s (``bench/precision_auto.py``, BENCHMARKS.md).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(_BF16_CPU_FLAGS & _cpu_flags())
    return False


_WARNED_SLOW_BF16: set[str] = set()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`native_bf16` says so, else ``"fp32"``; the others as given.

    An explicit ``"bf16"`` on hardware without native bf16 is kept (a warning says it is slow there).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and device.type in ("cpu", "cuda") and not native_bf16(device) \
            and device.type not in _WARNED_SLOW_BF16:
        _WARNED_SLOW_BF16.add(device.type)
        what = ("no bf16 instructions (AVX512-BF16, AMX) were found on this CPU" if device.type == "cpu"
                else "this GPU has no bf16")
        print(f"[panformer] warning: --precision bf16, but {what}: bf16 matrix products run several times slower "
              f"than fp32 here; use --precision auto (bf16 only where it is fast) or fp32", file=sys.stderr)
    return precision


def autocast(device: torch.device, precision: str = "fp32") -> ContextManager[Any]:
    """Mixed-precision context: ``"fp32"`` -> no-op, ``"bf16"`` -> ``torch.autocast(bfloat16)``, ``"auto"`` ->
    whichever :func:`resolve_precision` picks for ``device``. Called every training step: only ``"auto"`` is
    resolved here (the Trainer resolves, and warns, once)."""
    if precision == "auto":
        precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


@contextlib.contextmanager
def limit_blas_threads(n: int = 1) -> Iterator[None]:
    """Limit NumPy's (and SciPy's) BLAS thread pools to ``n`` inside the block.

    Idle OpenBLAS threads spinning beside torch's own pool steal cores from its matmuls. torch's
    bundled BLAS and OpenMP pools are left alone.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: just run unlimited
        yield
        return
    torch_dir = os.path.dirname(torch.__file__)
    controller = ThreadpoolController()
    limits = {lib.prefix: n for lib in controller.lib_controllers
              if lib.user_api == "blas" and not lib.filepath.startswith(torch_dir)}
    if not limits:
        yield
        return
    with controller.limit(limits=limits):
        yield


_MALLOC_TUNED: bool | None = None
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)


def retain_freed_memory() -> bool:
    """Let glibc keep freed blocks of up to 32 MiB for reuse instead of returning them to the OS.

    By default glibc serves large blocks with ``mmap`` and hands them back (or trims the heap) when
    freed, so every training step page-faults its activations in again: 13,800-33,300 faults per fp32
    step of ``bench/core_speed.py``'s encoder and up to 7,500 per bf16 step, 7-8 % of the step's time on
    this project's 2-core VM (``bench/malloc_ab.py``, BENCHMARKS.md; inference afterwards in the same
    process was ~5 % slower there; evaluation and prediction alone do not set it). With an mmap threshold of 32 MiB (glibc's maximum)
    and a 1 GiB trim threshold there are almost none, and the peak memory is the same; the process keeps
    its peak heap until it exits (as PyTorch's CUDA caching allocator does). Called once per process by
    the Trainer; a no-op (False) off glibc, when ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    are set by the user, or when ``PANFORMER_MALLOC_TUNING=0``.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
        if sys.platform.startswith("linux") and not user_set and os.environ.get("PANFORMER_MALLOC_TUNING", "1") != "0":
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):  # musl and others: nothing to tune
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _MALLOC_TUNED = bool(mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) and mallopt(_M_TRIM_THRESHOLD, 2**30))
    return _MALLOC_TUNED


def capture_rng() -> tuple[Any, ...]:
    """A cheap raw snapshot of every RNG (convert it with :func:`rng_state` before saving)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(legacy=True), torch.get_rng_state(), cuda


def rng_state(snapshot: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors/ints/floats: safe for ``weights_only``.

    ``snapshot`` is an earlier :func:`capture_rng` result; default: the current state.
    """
    (version, mt, gauss), (kind, keys, pos, has_gauss, cached), cpu, cuda = snapshot or capture_rng()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": cpu.clone(),
    }
    if cuda is not None:
        state["cuda"] = [s.clone() for s in cuda]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot from :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
