"""The Trainer's resumable state: step counters and best metric (:class:`TrainState`), and the
checkpoint directory ``run_dir/checkpoint/`` (``model.safetensors`` + ``trainer_state.pt``), written
atomically by rank 0 and found again by every rank on ``--resume``."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from . import distributed as D
from .checkpoint import atomic_save_torch, load_torch, load_weights, save_weights
from .errors import ConfigError

__all__ = ["TrainState", "write_checkpoint", "find_checkpoint", "read_checkpoint"]


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    epoch_step: int = 0  # optimizer steps done within it
    best_metric: float | None = None
    best_step: int | None = None
    patience: int = 0  # evaluations since the last improvement
    last_eval_step: int = -1
    eval_pending: bool = False  # the last step was due an evaluation that has not finished
    stopped_early: bool = False
    train_time_s: float = 0.0  # wall time in train(), all sessions
    compute_time_s: float = 0.0  # of which in training steps
    examples_seen: int = 0

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "TrainState":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})


def write_checkpoint(run_dir: Path, model: nn.Module, state: dict[str, Any], step: int) -> None:
    """Replace ``run_dir/checkpoint`` by (weights, ``state``) atomically (call on one rank only)."""
    final, tmp, old = (run_dir / n for n in ("checkpoint", "checkpoint.tmp", "checkpoint.old"))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors", metadata={"step": step})
    atomic_save_torch(state, tmp / "trainer_state.pt")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)  # a crash between the two renames leaves checkpoint.old, which loads
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint directory to resume from, the same decision on every rank (collective): None
    when rank 0 has none; a :class:`ConfigError` on every rank when rank 0 has one that another rank
    cannot see (a run directory that is not on a filesystem all nodes share)."""
    ckpt = next((d for d in (run_dir / "checkpoint", run_dir / "checkpoint.old")
                 if (d / "trainer_state.pt").is_file()), None)
    found = D.broadcast_object(ckpt is not None)
    D.sync_errors(ConfigError(f"--resume: rank {D.rank()} sees no checkpoint in {run_dir}; put the run directory on "
                              f"a filesystem every node shares") if found and ckpt is None else None)
    return ckpt if found else None


def read_checkpoint(ckpt: Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights of ``ckpt`` into ``model``; returns the saved trainer state dict."""
    state = load_torch(ckpt / "trainer_state.pt")
    load_weights(model, ckpt / "model.safetensors", strict=True)
    return state
