"""panformer: one Transformer, every domain.

``panformer.core`` is the one Transformer and the shared engine (it knows no task);
``panformer.tasks`` holds one module per domain, their registry and the ``panformer`` command line.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "core", "tasks"]


def __getattr__(name: str):  # import the subpackages on first use: `import panformer` stays cheap
    if name in ("core", "tasks"):
        import importlib

        return importlib.import_module(f"panformer.{name}")
    raise AttributeError(f"module 'panformer' has no attribute {name!r}")
