"""An exponential moving average of a model's weights (Polyak averaging), as kept by fairseq's
``--ema-decay`` and timm's ``ModelEma``: after every optimizer step

    shadow = d * shadow + (1 - d) * weights,    d = min(decay, (1 + n) / (10 + n))

where ``n`` counts the updates (the warm-up lets the average forget its random start quickly). The
Trainer evaluates, selects and saves the averaged weights when ``TrainingArguments.ema_decay > 0``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor, nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """Shadow copies of ``model``'s floating-point parameters and buffers (integer buffers, such as
    step counters, are left alone). Tied weights are averaged once."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in self._live(model).items()}

    @staticmethod
    def _live(model: nn.Module) -> dict[str, Tensor]:
        named = [*model.named_parameters(), *model.named_buffers()]  # each tensor once, under its first name
        return {k: v for k, v in named if v.dtype.is_floating_point}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (call after each optimizer step)."""
        self.updates += 1
        live = self._live(model)
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [live[k].detach() for k in keys],
                             1.0 - self.current_decay())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights with the average."""
        live = self._live(model)
        for k, v in self.shadow.items():
            live[k].copy_(v)

    @contextlib.contextmanager
    def averaged(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` holding the averaged weights inside the block, its own weights again after it."""
        live = self._live(model)
        with torch.no_grad():
            saved = {k: live[k].detach().clone() for k in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    live[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"the saved weight average lacks {sorted(missing)[:5]}")
        for k, v in self.shadow.items():
            v.copy_(state["shadow"][k])
        self.updates = int(state["updates"])
