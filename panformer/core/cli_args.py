"""Dataclass arguments → argparse options, with a YAML/JSON config file and flags layered on top.

Precedence (lowest first): dataclass defaults, caller overrides (a task's or recipe's defaults),
``--quick`` overrides, the ``--config`` file (or a run's ``config.json``), then flags given on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError

__all__ = ["add_dataclass_arguments", "load_config_file", "resolve_arguments", "field_names", "str2bool"]


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def str2bool(s: str) -> bool:
    v = s.lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def field_names(*classes: type) -> set[str]:
    return {f.name for c in classes for f in dataclasses.fields(c)}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None,
                            defaults: dict[str, Any] | None = None, skip: set[str] | None = None) -> None:
    """Add one ``--flag-name`` per field of ``cls``. Defaults are SUPPRESSed (so we can tell which
    flags were given); the help text shows the effective default."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if skip and f.name in skip:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})" if help_text else f"(default: {default})"
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        choices = f.metadata.get("choices")
        if typing.get_origin(tp) is typing.Literal:
            choices = list(typing.get_args(tp))
            tp = type(choices[0])
        if tp is bool:
            group.add_argument(flag, nargs="?", const=True, type=str2bool, metavar="BOOL", **kw)
            continue
        if typing.get_origin(tp) in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            group.add_argument(flag, nargs="+", type=inner, **kw)
            continue
        conv = tp if tp in (int, float, str) else str
        if optional:
            conv = _optional(conv)
        group.add_argument(flag, type=conv, choices=choices, **kw)


def _optional(conv):
    def parse(s: str):
        return None if s.lower() in ("none", "null") else conv(s)
    parse.__name__ = conv.__name__
    return parse


def load_config_file(path: str | Path, task: str | None = None, drop: Iterable[str] = (),
                     what: str = "--config") -> dict[str, Any]:
    """Read a YAML or JSON mapping of option names (dashes or underscores) to values.

    A run directory, or the ``config.json`` in it (``{"task": NAME, "args": {...}}``), gives the run's options:
    ``drop`` lists those that belong to that run alone (its output folder, --resume ...), and a run of another
    task than ``task`` is refused.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{what} {p}: no config.json in this folder; pass a YAML/JSON file or a run directory")
        p = p / "config.json"
    if not p.is_file():
        raise ConfigError(f"{what}: file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - reported as one line
        raise ConfigError(f"{what} {p}: cannot parse ({type(e).__name__}: {e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p}: expected a mapping of option: value, got {type(data).__name__}")
    if set(data) == {"task", "args"} and isinstance(data["args"], dict):  # a run's config.json
        if task is not None and data["task"] != task:
            raise ConfigError(f"{what} {p}: a {data['task']!r} run, not {task!r}; use `train {data['task']}` or "
                              f"a {task} run")
        data = {k: v for k, v in data["args"].items() if k not in set(drop)}
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve_arguments(classes: list[type], given: dict[str, Any], layers: list[dict[str, Any]]) -> list[Any]:
    """Build one instance per dataclass from ``layers`` (low → high precedence) then ``given`` flags."""
    known = field_names(*classes)
    merged: dict[str, Any] = {}
    for layer in layers:
        unknown = set(layer) - known
        if unknown:
            raise ConfigError(f"unknown option(s) {sorted(unknown)}; see --help")
        merged.update(layer)
    merged.update(given)
    out = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            out.append(cls(**{k: v for k, v in merged.items() if k in names}))
        except TypeError as e:
            raise ConfigError(str(e)) from None
    return out
