"""Task registry. A task module registers itself with :func:`register`; the CLI looks tasks up here.

Task modules are imported lazily, so a heavy or broken optional dependency of one domain never
stops the others from running.
"""
from __future__ import annotations

import importlib

from panformer.core.errors import ConfigError

__all__ = ["register", "get_task", "available_tasks", "TASK_MODULES"]

# name -> module that defines and registers it
TASK_MODULES: dict[str, str] = {
    "sentiment": "panformer.tasks.sentiment",
    "translation": "panformer.tasks.translation",
    "generation": "panformer.tasks.generation",
    "vit": "panformer.tasks.vit",
    "detection": "panformer.tasks.detection",
    "speech": "panformer.tasks.speech",
    "recommendation": "panformer.tasks.recommendation",
    "music": "panformer.tasks.music",
    "image-generation": "panformer.tasks.image_generation",
    "tts": "panformer.tasks.tts",
}

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a :class:`tasks.base.Task` subclass available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available_tasks() -> list[str]:
    """Names of tasks whose module is present."""
    names = []
    for name, module in TASK_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def get_task(name: str) -> type:
    if name not in _REGISTRY:
        module = TASK_MODULES.get(name)
        if module is None or importlib.util.find_spec(module) is None:
            raise ConfigError(f"unknown task {name!r}; available: {', '.join(available_tasks())}")
        importlib.import_module(module)
        if name not in _REGISTRY:
            raise ConfigError(f"module {module} does not register a task named {name!r} (missing @register?)")
    return _REGISTRY[name]
