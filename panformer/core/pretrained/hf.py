"""Reading Hugging Face-format model directories without the transformers library.

A directory holds ``config.json`` and the weights as ``model.safetensors`` or ``pytorch_model.bin``
(or their sharded forms with an ``*.index.json``). Pickled weights are only ever read with
``torch.load(weights_only=True)``. Mapping tensors onto a core module is checked tensor by tensor:
anything missing, mis-shaped or left over raises :class:`core.errors.ConfigError` naming it.
"""
from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .hub import resolve_pretrained

__all__ = ["read_config", "read_state_dict", "find_prefix", "TensorSpec", "assign_tensors", "export_tensors", "config_value",
           "transpose", "Block"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

# (source key, transform applied to the source tensor, expected source shape or None = target's shape).
# The transform is None, :func:`transpose` or a :class:`Block`: each has a known inverse, so one map
# serves loading (:func:`assign_tensors`) and exporting (:func:`export_tensors`).
TensorSpec = tuple[str, Callable[[Tensor], Tensor] | None, tuple[int, ...] | None]


def transpose(x: Tensor) -> Tensor:
    """(a, b) → (b, a): ``Conv1D`` weights (in, out) ↔ ``nn.Linear`` weights (out, in). Its own inverse."""
    return x.t()


@dataclass(frozen=True)
class Block:
    """Block ``index`` of ``count`` equal blocks along ``dim`` of a fused source tensor (e.g. GPT-2's
    ``c_attn`` = [q | k | v]), then transposed when ``transposed``. Exporting concatenates the blocks."""

    index: int
    count: int
    dim: int = -1
    transposed: bool = False

    def __call__(self, src: Tensor) -> Tensor:
        part = src.chunk(self.count, self.dim)[self.index]
        return part.t() if self.transposed else part

    def to_source(self, value: Tensor) -> Tensor:
        return value.t() if self.transposed else value


def _model_dir(path: str | Path) -> Path:
    p = resolve_pretrained(path)
    if p.is_file() and p.name == "config.json":
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"pretrained model directory not found: {p} (expected a folder with config.json and "
                          "model.safetensors or pytorch_model.bin, or a Hugging Face Hub id such as org/name)")
    return p


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory."""
    f = _model_dir(path) / "config.json"
    if not f.is_file():
        raise ConfigError(f"{f.parent}: no config.json; is this a Hugging Face-format model directory?")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{f}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def config_value(cfg: dict[str, Any], key: str, where: Path | str, default: Any = ..., kind: type = int) -> Any:
    """``cfg[key]`` checked to be of ``kind`` (a missing key without default raises ConfigError)."""
    if key not in cfg or cfg[key] is None:
        if default is ...:
            raise ConfigError(f"{where}/config.json: missing field {key!r}")
        return default
    v = cfg[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise ConfigError(f"{where}/config.json: field {key!r} should be {kind.__name__}, got {v!r}")
    return v


def _load_file(f: Path) -> dict[str, Tensor]:
    try:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(f), device="cpu")
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(f"{f}: refusing to load: not a plain tensor checkpoint (torch.load with weights_only=True "
                          f"failed: {str(e).splitlines()[0]}); convert it to model.safetensors") from None
    except Exception as e:  # noqa: BLE001 - corrupt or truncated file
        raise ConfigError(f"{f}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], Path]:
    """All tensors of a model directory (safetensors preferred) and the file they came from.

    Old TensorFlow-converted names (``LayerNorm.gamma`` / ``.beta``) are renamed to ``weight`` / ``bias``.
    """
    d = _model_dir(path)
    found = next((d / n for n in WEIGHT_FILES if (d / n).is_file()), None)
    if found is None:
        raise ConfigError(f"{d}: no weights; expected one of {', '.join(WEIGHT_FILES)}")
    if found.name.endswith(".index.json"):
        try:
            weight_map = json.loads(found.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConfigError(f"{found}: not a valid shard index ({e})") from None
        tensors: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (d / shard).is_file():
                raise ConfigError(f"{found}: shard {shard} listed in weight_map is missing")
            tensors.update(_load_file(d / shard))
    else:
        tensors = _load_file(found)
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise ConfigError(f"{found}: expected a mapping of tensor names to tensors")
    renamed = {}
    for k, v in tensors.items():
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
        renamed[re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)] = v
    return renamed, found


def find_prefix(tensors: dict[str, Tensor], anchor: str, prefixes: Iterable[str], where: Path) -> str:
    """The prefix ("" or e.g. "bert.") under which ``anchor`` is stored (task-head checkpoints nest the backbone)."""
    for p in ("", *prefixes):
        if p + anchor in tensors:
            return p
    raise ConfigError(f"{where}: tensor {anchor!r} is missing (also looked under {', '.join(prefixes)}); "
                      f"found e.g. {sorted(tensors)[:3]}")


def _shape(t: Iterable[int]) -> list[int]:
    return [int(s) for s in t]


@torch.no_grad()
def assign_tensors(
    model: nn.Module,
    specs: dict[str, TensorSpec],
    tensors: dict[str, Tensor],
    where: Path,
    ignore: Iterable[str] = (),
) -> None:
    """Copy source tensors into every parameter of ``model`` (tied parameters once).

    Args:
        specs: target parameter name → (source key, transform, expected source shape).
        ignore: regular expressions of source keys that may be left unused (task heads, buffers).
    Raises:
        ConfigError naming the first missing or mis-shaped source tensor, or the unexpected ones.
    """
    params = dict(model.named_parameters())
    absent = sorted(set(params) - set(specs))
    if absent:  # a bug in the loader, not the user's input
        raise RuntimeError(f"no source tensor mapped for {absent}")
    used = set()
    for name, (key, fn, src_shape) in specs.items():
        param = params[name]
        if key not in tensors:
            raise ConfigError(f"{where}: tensor {key!r} is missing (expected shape {_shape(src_shape or param.shape)})")
        src = tensors[key]
        expected = _shape(src_shape or param.shape)
        if _shape(src.shape) != expected:
            raise ConfigError(f"{where}: tensor {key!r} has shape {_shape(src.shape)}, expected {expected} "
                              "from config.json")
        value = fn(src) if fn is not None else src
        param.copy_(value.to(param.dtype))
        used.add(key)
    patterns = [re.compile(p) for p in ignore]
    left = sorted(k for k in tensors if k not in used and not any(p.search(k) for p in patterns))
    if left:
        more = f" and {len(left) - 3} more" if len(left) > 3 else ""
        raise ConfigError(f"{where}: unexpected tensor {left[0]!r} (shape {_shape(tensors[left[0]].shape)})"
                          f"{', ' + ', '.join(map(repr, left[1:3])) if len(left) > 1 else ''}{more}: "
                          "config.json does not describe these weights")


@torch.no_grad()
def export_tensors(model: nn.Module, specs: dict[str, TensorSpec]) -> dict[str, Tensor]:
    """The inverse of :func:`assign_tensors`: source-format tensors (fresh, contiguous float copies) from
    ``model``'s parameters. Several :class:`Block` specs of one source key are concatenated in order.

    ``model``'s own state (not ``named_parameters``) is read, so layers shared across depths
    (``share_layers``) are written once per depth, as a format without sharing expects.
    """
    state = model.state_dict()
    absent = sorted(k for k, p in model.named_parameters() if k not in specs)
    if absent:  # a bug in the map, not the user's input
        raise RuntimeError(f"no target tensor mapped for {absent}")
    out: dict[str, Tensor] = {}
    blocks: dict[str, dict[int, tuple[Block, Tensor]]] = {}
    for name, (key, fn, _) in specs.items():
        value = state[name].detach()
        if isinstance(fn, Block):
            blocks.setdefault(key, {})[fn.index] = (fn, fn.to_source(value))
        elif fn is None or fn is transpose:
            out[key] = value.t() if fn is transpose else value
        else:
            raise RuntimeError(f"{name}: transform {fn!r} has no known inverse")
    for key, parts in blocks.items():
        fn = parts[min(parts)][0]
        if sorted(parts) != list(range(fn.count)):
            raise RuntimeError(f"{key}: blocks {sorted(parts)} of {fn.count} mapped")
        out[key] = torch.cat([parts[i][1] for i in range(fn.count)], dim=fn.dim)
    return {k: v.float().contiguous().clone() for k, v in out.items()}
