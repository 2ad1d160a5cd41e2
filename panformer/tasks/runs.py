"""Trained runs: reload them (``load_run``), evaluate them on their own or new data, predict with them, and
the Python API over all of it (``panformer.load(run_dir)`` -> :class:`TrainedRun`).

A run directory is what ``panformer train`` writes: ``config.json`` (``{"task": NAME, "args": {...}}``),
``assets/`` (tokenizer, labels ...) and ``model.safetensors``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

from torch import nn

from panformer.core.checkpoint import atomic_write_json, load_weights
from panformer.core.errors import ConfigError, DataError
from panformer.core.runtime import resolve_device

from . import get_task
from .base import split_flag

__all__ = ["TrainedRun", "load", "load_run", "load_runs", "read_run_config", "eval_overrides", "evaluate_loaded",
           "RUN_ONLY_OPTIONS"]

PROG = "panformer"
# options of a run that do not carry over when its config.json is reused (--config RUN, --resume RUN)
RUN_ONLY_OPTIONS = ("out", "overwrite", "config", "resume")
DATA_OPTIONS = ("data", "valid_data", "test_data")


def read_run_config(run: str | Path, what: str = "--run") -> dict[str, Any]:
    """``run/config.json`` as written by ``panformer train``: ``{"task": NAME, "args": {...}}`` (a published model
    directory's config.json has no ``task``). ConfigError when there is none or it cannot be read."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{what} {run}: no config.json; is this a run directory written by `{PROG} train`?")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{what} {path}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{what} {path}: expected a JSON object")
    return cfg


def _task_of_run(run_dir: Path, cfg: dict[str, Any], overrides: Mapping[str, Any]):
    """The run's task with its options (``overrides`` on top) and its assets."""
    task_cls = get_task(cfg["task"])
    task = task_cls(SimpleNamespace(**{**cfg["args"], **overrides}))
    task.load_assets(run_dir / "assets")
    task.run_dir = run_dir
    return task


def load_run(run: str | Path, device: str = "auto", overrides: Mapping[str, Any] | None = None,
             task_name: str | None = None):
    """Rebuild (task, model) from a run directory written by ``train`` (or, for a task with a
    ``load_published`` classmethod such as generation, from a published model directory).

    ``overrides``: options replacing the run's (e.g. ``{"test_data": "x.csv"}``, ``{"temperature": 0.5}``).
    """
    run_dir = Path(run)
    cfg = read_run_config(run_dir)
    overrides = dict(overrides or {})
    if "task" not in cfg:  # e.g. a Hugging Face model directory: the task may know how to load it directly
        task_cls = get_task(task_name) if task_name else None
        loader = getattr(task_cls, "load_published", None)
        if loader is None:
            raise ConfigError(f"--run {run_dir}: config.json names no task; is this a run directory written by "
                              f"`{PROG} train`?")
        task, model = loader(run_dir, {k: v for k, v in overrides.items() if v is not None})
        return task, model.to(resolve_device(device)).eval()
    if task_name is not None and cfg["task"] != task_name:
        raise ConfigError(f"--run {run_dir} is a {cfg['task']!r} run, not {task_name!r}")
    task = _task_of_run(run_dir, cfg, overrides)
    model = task.build_model()
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"--run {run_dir}: no model.safetensors (training did not finish?)")
    load_weights(model, weights)
    model.to(resolve_device(device)).eval()
    return task, model


def load_runs(runs: Sequence[str | Path], device: str = "auto", overrides: Mapping[str, Any] | None = None,
              task_name: str | None = None):
    """:func:`load_run` for one run; for several, (first run's task, the task's ensemble of them)."""
    runs = [str(r) for r in runs]
    if not runs:
        raise ConfigError("no run to load")
    task, model = load_run(runs[0], device, overrides, task_name)
    if len(runs) == 1:
        return task, model
    combine = getattr(task, "ensemble", None)
    if combine is None:
        raise ConfigError(f"task {task.name!r} cannot combine runs into an ensemble; pass a single --run")
    others = [load_run(r, device, overrides, task_name or task.name) for r in runs[1:]]
    return task, combine(model, others, runs)


def eval_overrides(task_cls: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """The options ``evaluate`` passes on to a run: those ``given``; with ``--data`` the run's own validation and
    test sources are dropped too (they came with its data), unless given as well."""
    over = dict(given)
    if given.get("data") is not None:
        for name in {n for names in task_cls.split_options.values() for n in names} - set(given):
            over[name] = None
    return over


def evaluate_loaded(task: Any, model: nn.Module, split: str = "test", given: Mapping[str, Any] | None = None,
                    out_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a reloaded run (``task`` built with :func:`eval_overrides` of ``given``) on ``split``.

    Which data is read: with ``split``'s own source given (``--test-data X`` / ``--valid-data X``, without
    ``--data``) only that source (``task.load_split``), so a run whose training data is gone can be evaluated;
    otherwise ``task.load_data()`` on the run's ``--data`` or the given one. With ``out_dir`` also
    ``metrics.json`` and the task's pictures there.
    """
    given = dict(given or {})
    own = task.split_options.get(split, ())
    try:
        if "data" not in given and any(given.get(name) for name in own):
            task.load_split(split)
        else:
            task.load_data()
    except DataError as e:
        if any(k in given for k in (*DATA_OPTIONS, *own)):
            raise
        raise DataError(f"{e} (reading the run's own data; evaluate on other data with --test-data or --data)") from None
    if task.splits.get(split) is None:
        raise DataError(f"no {split} split in this data; pass {split_flag(split)} or choose another --split")
    task.check_assets([split])
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    metrics = task.evaluate(model, split, out_dir=out)
    if out is not None:
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


class TrainedRun:
    """A trained run (or an ensemble of runs) ready to use from Python; what ``panformer.load`` returns.

    Attributes: ``task`` (the task, with the run's assets), ``model`` (the ``nn.Module`` in eval mode, on
    ``device``), ``config`` (the run's resolved options, a dict), ``runs`` (the run directories).
    """

    def __init__(self, runs: str | Path | Sequence[str | Path], device: str = "auto", task: str | None = None,
                 **options: Any) -> None:
        self.runs = [Path(r) for r in ([runs] if isinstance(runs, (str, os.PathLike)) else runs)]
        self.device, self._task_name, self._options = device, task, dict(options)
        self.task, self.model = load_runs(self.runs, device, self._options, task)
        self.config: dict[str, Any] = dict(vars(self.task.args))

    def __repr__(self) -> str:
        runs = ", ".join(str(r) for r in self.runs)
        return f"TrainedRun({self.task.name!r}, runs=[{runs}], device={self.device!r})"

    def _fresh_task(self, options: Mapping[str, Any]):
        """The first run's task again, with ``options`` on top (no state of earlier calls: data, caches)."""
        over = {**self._options, **options}
        run = self.runs[0]
        cfg = read_run_config(run)
        if "task" not in cfg:
            return load_run(run, "cpu", over, self._task_name)[0]
        return _task_of_run(run, cfg, over)

    def predict(self, inputs: str | Sequence[str] | None = None, **options: Any) -> list[Any]:
        """Predictions for raw inputs (texts, file paths, item histories; one string is one input), as
        ``panformer predict TASK --run DIR INPUT...`` prints them: a list, one entry per printed line (a string
        or a JSON-able dict). ``options``: the task's predict options, e.g. ``temperature=0.5``."""
        items = [str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(x) for x in (inputs or [])]
        task = self._fresh_task(options) if options else self.task
        if not items and not getattr(task, "predict_without_inputs", False):
            raise DataError("nothing to predict: give one or more inputs")
        return list(task.predict(self.model, items))

    def evaluate(self, data: str | None = None, split: str = "test", out_dir: str | Path | None = None,
                 **options: Any) -> dict[str, Any]:
        """Metrics on ``split`` ("test", "valid", "train"), as ``panformer evaluate`` prints them.

        ``data``: new data cut into splits as in training (``--data``); ``test_data=`` / ``valid_data=``: a split's
        own data, read alone (``evaluate(test_data="new.csv")``); neither: the run's own data. ``options``: other
        task options, e.g. ``text_column="body"``. ``out_dir``: also write metrics.json and pictures there.
        """
        given = {**options, **({"data": data} if data is not None else {})}
        task_cls = type(self.task)
        choices = getattr(task_cls, "eval_splits", ("train", "valid", "test"))
        if split not in choices:
            raise ConfigError(f"split must be one of {', '.join(choices)}, got {split!r}")
        task = self._fresh_task(eval_overrides(task_cls, given))
        return evaluate_loaded(task, self.model, split, given, out_dir)


def load(run: str | Path | Sequence[str | Path], device: str = "auto", task: str | None = None,
         **options: Any) -> TrainedRun:
    """Load a trained run directory (or a list of them: an ensemble, for tasks that can combine runs) for
    ``.predict(inputs)`` and ``.evaluate(...)``. ``task`` names the task of a published model directory
    (e.g. a GPT-2 folder for ``generation``); ``options`` override the run's (e.g. ``temperature=0.7``)."""
    return TrainedRun(run, device, task, **options)
