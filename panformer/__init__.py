"""panformer: one Transformer, every domain.

``panformer.core`` is the one Transformer and the shared engine (it knows no task);
``panformer.tasks`` holds one module per domain, their registry and the ``panformer`` command line;
``panformer.load(run_dir)`` reloads a trained run for ``.predict`` / ``.evaluate``.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "core", "tasks", "load"]


def load(run, device: str = "auto", task: str | None = None, **options):
    """A trained run directory (or a list of them: an ensemble) ready for ``.predict(inputs)`` and
    ``.evaluate(...)``, with ``.task``, ``.model`` and ``.config``: see :class:`panformer.tasks.runs.TrainedRun`.

    >>> run = panformer.load("runs/sentiment")                  # doctest: +SKIP
    >>> run.predict(["a delight from start to finish"])         # doctest: +SKIP
    [{'text': 'a delight from start to finish', 'label': 'positive', 'probability': 0.93}]
    """
    from panformer.tasks.runs import load as _load  # torch and the tasks load here, not on `import panformer`

    return _load(run, device, task, **options)


def __getattr__(name: str):  # import the subpackages on first use: `import panformer` stays cheap
    if name in ("core", "tasks"):
        import importlib

        return importlib.import_module(f"panformer.{name}")
    raise AttributeError(f"module 'panformer' has no attribute {name!r}")
