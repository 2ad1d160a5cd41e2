"""Small helpers for data-parallel runs under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``).

All functions are safe to call in a single, non-distributed process (they become no-ops, or just call
the function they are given). The collective ones (:func:`sync_errors`, :func:`run_on_main`,
:func:`main_process_first`, :func:`broadcast_object`, :func:`barrier`...) must be reached by every rank
in the same order.

Errors: :func:`sync_errors` turns "one rank failed" into "every rank raises": the failing rank its own
exception, the others :class:`core.errors.PeerError`. Exceptions that rank 0 will report carry
``quiet = True`` on the other ranks, so a multi-process run prints one ``panformer: error:`` line.
"""
from __future__ import annotations

import gc
import os
import re
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import ConfigError, PanformerError, PeerError

__all__ = ["env_world_size", "init_distributed", "is_distributed", "world_size", "rank", "local_rank",
           "is_main_process", "barrier", "all_reduce_mean", "mean_over_ranks", "broadcast_flag", "broadcast_object", "sync_errors",
           "run_on_main", "main_process_first", "unwrap", "is_peer_failure", "cleanup"]

T = TypeVar("T")


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: torch.device, timeout_minutes: float | None = None) -> torch.device:
    """Join the process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA).

    Returns the device this rank should use (``cuda:LOCAL_RANK`` on CUDA). Idempotent. ``timeout_minutes``
    bounds every collective (default: torch's, 10 min for nccl, 30 for gloo): other ranks wait that
    long while rank 0 evaluates alone.
    """
    if env_world_size() <= 1:
        return device
    if device.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} CUDA device(s) on this "
                              f"node; launch at most that many processes per node (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not is_distributed():
        kw: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        if timeout_minutes:
            kw["timeout"] = timedelta(minutes=timeout_minutes)
        try:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://", **kw)
        except (ValueError, RuntimeError) as e:  # missing MASTER_ADDR, unreachable master, port taken...
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"rank {os.environ.get('RANK', '?')} of {env_world_size()} could not join the process "
                              f"group at {where} ({msg}); launch with torchrun (docs/distributed.md)") from e
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


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (``model`` itself otherwise). Call a wrapped model
    for its forward (that synchronises gradients); unwrap it for other methods and attributes."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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


def mean_over_ranks(values: dict[str, Tensor | float]) -> dict[str, Tensor]:
    """Mean of each value over all ranks as float64 0-d tensors, in one collective that every rank must reach
    with the same keys; on GPUs without waiting for the result on the host. One process: the values as
    tensors."""
    keys = sorted(values)
    if not is_distributed() or not keys:
        return {k: torch.as_tensor(values[k], dtype=torch.float64) for k in keys}
    dev = _reduce_device()
    t = torch.stack([torch.as_tensor(values[k]).to(dev, torch.float64) for k in keys])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return dict(zip(keys, t.unbind()))


def broadcast_flag(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (keeps stop decisions in lock-step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _describe(e: BaseException) -> str:
    return str(e) if isinstance(e, PanformerError) else f"{type(e).__name__}: {e}"


def _raise(error: BaseException | None, failed: list[tuple[int, str]]) -> None:
    r, msg = failed[0]
    more = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
    if error is None:
        error = PeerError(f"rank {r} failed{more}: {msg}")
    error.quiet = rank() != 0  # type: ignore[attr-defined] - rank 0 reports it
    raise error


def sync_errors(error: BaseException | None = None) -> None:
    """Collective error check: each rank passes the exception it caught (or None). If any rank
    failed, every rank raises: a failing rank its own exception, the others :class:`PeerError`
    naming the first failing rank and its message. Single process: raises ``error`` if given."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    msgs: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(msgs, None if error is None else _describe(error))
    failed = [(r, m) for r, m in enumerate(msgs) if m is not None]
    if failed:
        _raise(error, failed)


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only (file writes, evaluation) and return its result on every rank; the
    others wait. An exception on rank 0 is raised there and as :class:`PeerError` on the others."""
    if not is_distributed():
        return fn()
    ok, result, error = True, None, None
    if rank() == 0:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
            ok, result, error = False, _describe(e), e
    ok, result = broadcast_object((ok, result))
    if not ok:
        _raise(error, [(0, result)])
    return result  # type: ignore[return-value]


def main_process_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the other ranks (e.g. data loading that fills a cache once);
    returns each rank's own result. A failure anywhere raises on every rank (see :func:`sync_errors`)."""
    if not is_distributed():
        return fn()
    result, error = None, None
    for turn in (True, False):
        if (rank() == 0) == turn:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - shared with every rank by sync_errors
                error = e
        sync_errors(error)
    return result  # type: ignore[return-value]


_PEER_LOST = re.compile(r"gloo|nccl|connection (reset|closed)|broken pipe|timed out|timeout", re.I)


def is_peer_failure(e: BaseException) -> bool:
    """True for the error a collective raises when another rank died or hung (gloo: a RuntimeError
    "Connection reset by peer"; NCCL: a DistBackendError or a watchdog timeout)."""
    return is_distributed() and (isinstance(e, dist.DistError)
                                 or (type(e) is RuntimeError and bool(_PEER_LOST.search(str(e)))))


def cleanup(wait_for_peers: bool = True) -> None:
    """Leave the process group (no-op when not distributed).

    With ``wait_for_peers`` (the command succeeded on every rank) the ranks first meet at a barrier,
    so that no rank tears its connections down while a peer still exchanges data with it; after a
    failure they leave at once. The group's C++ objects (gloo worker threads, the DDP reducer that
    holds the group) are then freed here, while the interpreter is fully alive, not during its
    shutdown, when a gloo worker that releases a tensor Python still owns can abort the process
    ("terminate called without an active exception", seen rarely after runs that had succeeded)."""
    if not is_distributed():
        return
    if wait_for_peers:
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - a peer died after all: leave anyway
            pass
    dist.destroy_process_group()
    gc.collect()
