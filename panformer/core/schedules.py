"""Learning-rate schedules, as multipliers of the optimizer's base learning rate.

Step convention: the multiplier returned for ``k`` (the number of optimizer steps already taken,
as :class:`torch.optim.lr_scheduler.LambdaLR` counts) is the one used by optimizer step ``s = k + 1``.
So with ``warmup_steps = w`` the ``w``-th optimizer step runs at exactly the peak ``lr``, and no step
is wasted at ``lr = 0``.

* ``inverse_sqrt`` -- Vaswani et al. 2017, eq. 3: ``min(s^-0.5, s * w^-1.5)``, normalised so the
  peak (at ``s == w``) is 1; afterwards it decays as ``sqrt(w / s)``. ``w = 0`` is treated as 1.
* ``cosine``   -- linear warm-up to 1, then half a cosine down to ``min_lr_ratio`` at ``s == total``.
* ``linear``   -- linear warm-up to 1, then linear decay to 0 at ``s == total``.
* ``constant`` -- linear warm-up to 1, then 1.

The decay of ``cosine`` and ``linear`` follows the optimizer steps by default. With ``progress_fn`` (a
function returning the fraction of a wall-clock budget spent, 0..1) it follows the clock instead: the lr
reaches its end value when the budget is spent, however many steps that took (``--schedule-clock time``).
With both ``total_steps`` and ``progress_fn`` and ``first=True`` it follows whichever budget is further
spent (``--schedule-clock first``): the planned steps on a machine fast enough to finish them in time, the
clock on one that is not, so the decay is never cut off half-way by the time limit.
"""
from __future__ import annotations

import math
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .errors import ConfigError

__all__ = ["SCHEDULES", "lr_lambda", "build_scheduler"]

SCHEDULES = ("inverse_sqrt", "cosine", "linear", "constant")


def _warmup(s: int, w: int) -> float:
    return s / w if s < w else 1.0


def lr_lambda(name: str, warmup_steps: int, total_steps: int | None = None,
              min_lr_ratio: float = 0.0, progress_fn: Callable[[], float] | None = None,
              first: bool = False) -> Callable[[int], float]:
    """Return ``f(k) -> multiplier`` for schedule ``name`` (see the module docstring)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    w = warmup_steps

    if name == "inverse_sqrt":
        wi = max(w, 1)

        def inverse_sqrt(k: int) -> float:
            s = k + 1
            return min(s ** -0.5, s * wi ** -1.5) * wi ** 0.5
        return inverse_sqrt

    if name == "constant":
        return lambda k: _warmup(k + 1, w)

    if (progress_fn is None or first) and (total_steps is None or total_steps < 1):
        raise ConfigError(f"schedule {name!r} needs total_steps >= 1, got {total_steps}")
    decay_steps = max((total_steps or 1) - w, 1)

    def progress(s: int) -> float:
        if progress_fn is None:
            p = (s - w) / decay_steps
        else:
            p = max(progress_fn(), (s - w) / decay_steps) if first else progress_fn()
        return min(max(p, 0.0), 1.0)

    if name == "cosine":
        def cosine(k: int) -> float:
            s = k + 1
            if s < w:
                return s / w
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress(s)))
        return cosine

    def linear(k: int) -> float:
        s = k + 1
        return s / w if s < w else 1.0 - progress(s)
    return linear


def build_scheduler(optimizer: Optimizer, name: str, warmup_steps: int, total_steps: int | None = None,
                    min_lr_ratio: float = 0.0, progress_fn: Callable[[], float] | None = None,
                    first: bool = False) -> LambdaLR:
    """A :class:`LambdaLR` for ``name``; call ``scheduler.step()`` once per optimizer step.

    Its ``state_dict()`` holds only counters (the lambdas are plain functions), so it round-trips
    through ``torch.load(weights_only=True)``.
    """
    return LambdaLR(optimizer, lr_lambda(name, warmup_steps, total_steps, min_lr_ratio, progress_fn, first))
