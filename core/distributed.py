"""Small helpers for data-parallel runs under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``).

All functions are safe to call in a single, non-distributed process (they become no-ops).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["env_world_size", "init_distributed", "is_distributed", "world_size", "rank", "local_rank",
           "is_main_process", "barrier", "all_reduce_mean", "broadcast_flag", "cleanup"]


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA).

    Returns the device this rank should use (``cuda:LOCAL_RANK`` on CUDA). Idempotent.
    """
    if env_world_size() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not is_distributed():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                **({"device_id": device} if device.type == "cuda" else {}))
    return device


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each value over all ranks (every rank must pass the same keys)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_flag(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (keeps stop decisions in lock-step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup() -> None:
    """Leave the process group (no-op when not distributed)."""
    if is_distributed():
        dist.destroy_process_group()
