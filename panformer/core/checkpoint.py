"""Atomic, safe serialisation: safetensors weights, JSON/text files and ``weights_only`` torch state.

Every writer goes through :func:`atomic_path`: a temporary file in the destination's directory,
``fsync``, then ``os.replace`` -- a crash leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .errors import ConfigError

__all__ = [
    "atomic_path", "atomic_write_text", "atomic_write_json", "atomic_save_torch", "load_torch",
    "unwrap_model", "save_weights", "load_weights", "read_weights_metadata",
]

_TIED_KEY = "__tied__"  # safetensors metadata: JSON {alias: kept name} for tensors stored once


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename itself (not possible on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON (``Path`` and other unknown objects are written as ``str``)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def atomic_save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically; keep ``obj`` to tensors and plain containers/scalars so that
    :func:`load_torch` (``weights_only=True``) can read it back."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file or a pickle that is not plain state
        raise ConfigError(f"{path}: cannot read state ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel``/``DataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _dedupe(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Store each view of shared memory once; clone partial overlaps (safetensors refuses both).

    Returns (tensors to write, {alias: kept name}) -- aliases are identical views of a kept tensor.
    """
    out: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen_view: dict[tuple, str] = {}
    seen_storage: set[tuple] = set()
    for name, t in state.items():
        if not isinstance(t, Tensor):
            raise ConfigError(f"cannot save {name!r}: not a tensor ({type(t).__name__})")
        t = t.detach()
        if t.device.type == "meta":
            raise ConfigError(f"cannot save {name!r}: it is on the meta device")
        storage = (t.device, t.untyped_storage().data_ptr()) if t.numel() else None
        view = (storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if storage is not None and view in seen_view:
            aliases[name] = seen_view[view]
            continue
        if storage is not None and storage in seen_storage:
            t = t.clone()  # a different view of already-saved memory: give it its own
        elif storage is not None:
            seen_storage.add(storage)
            seen_view[view] = name
        out[name] = t.to("cpu").contiguous()
    # safetensors also rejects views of one CPU storage made by `.to("cpu")`/`contiguous()` no-ops.
    ptrs: set[int] = set()
    for name, t in out.items():
        if t.numel():
            p = t.untyped_storage().data_ptr()
            if p in ptrs or t.untyped_storage().nbytes() != t.numel() * t.element_size():
                out[name] = t = t.clone()
                p = t.untyped_storage().data_ptr()
            ptrs.add(p)
    return out, aliases


def save_weights(model_or_state_dict: nn.Module | Mapping[str, Tensor], path: str | Path,
                 metadata: Mapping[str, Any] | None = None) -> None:
    """Write a model's ``state_dict()`` (or a state dict) to ``path`` as safetensors, atomically.

    Tied tensors (e.g. an output projection that *is* the token embedding) are stored once; the
    aliases are recorded in the metadata and :func:`load_weights` fills them in. ``metadata`` values
    that are not strings are stored as JSON.
    """
    state = (unwrap_model(model_or_state_dict).state_dict()
             if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict)
    tensors, aliases = _dedupe(state)
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()}
    if aliases:
        meta[_TIED_KEY] = json.dumps(aliases)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta or None)


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable safetensors file ({e})") from e
    for alias, kept in json.loads(meta.get(_TIED_KEY, "{}")).items():
        tensors[alias] = tensors[kept]
    return tensors, meta


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored by :func:`save_weights` (without the internal tie table)."""
    _, meta = _read(Path(path))
    return {k: v for k, v in meta.items() if k != _TIED_KEY}


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Copy the tensors in ``path`` into ``model`` (in place, so ties and devices are kept).

    Raises :class:`ConfigError` naming missing, unexpected (only when ``strict``) and mis-shaped
    tensors. Returns ``(missing, unexpected)`` names (empty when ``strict``).
    """
    path = Path(path)
    model = unwrap_model(model)
    tensors, _ = _read(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mis_shaped = [f"{k} (file {list(tensors[k].shape)} vs model {list(v.shape)})"
                  for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    problems = []
    if strict and missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    if mis_shaped:
        problems.append(f"shape mismatch: {_names(mis_shaped)}")
    if problems:
        raise ConfigError(f"{path} does not match the model ({type(model).__name__}): " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=False)
    return missing, unexpected
