"""The ``panformer`` command line: ``tasks``, ``train``, ``evaluate``, ``predict`` (and ``compare``).

Every option is generated from a dataclass (HF-style): :class:`tasks.base.DataArguments`,
:class:`core.trainer.TrainingArguments`, :class:`tasks.base.RunArguments` and the task's own
``Arguments``. Problems with the user's input end with one ``panformer: error: ...`` line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import nn

from panformer import __version__
from panformer.core import distributed as D
from panformer.core.checkpoint import atomic_write_json, load_weights
from panformer.core.cli_args import add_dataclass_arguments, field_names, load_config_file, resolve_arguments, str2bool
from panformer.core.errors import ConfigError, DataError, PanformerError
from panformer.core.models import count_parameters
from panformer.core.runtime import resolve_device, seed_everything
from panformer.core.trainer import Trainer, TrainingArguments

from . import available_tasks, get_task
from .base import DataArguments, RunArguments
from .runs import RUN_ONLY_OPTIONS, eval_overrides, evaluate_loaded, load_run, load_runs

__all__ = ["main", "train", "load_run", "load_runs"]

PROG = "panformer"


def _task_parser(task_cls: type, command: str, defaults: dict[str, Any]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} {command} {task_cls.name}", description=task_cls.summary)
    if command == "train":
        add_dataclass_arguments(p, DataArguments, "data", defaults)
        add_dataclass_arguments(p, TrainingArguments, "training", defaults)
        add_dataclass_arguments(p, RunArguments, "run", defaults)
        add_dataclass_arguments(p, task_cls.Arguments, f"{task_cls.name} options", defaults)
    else:
        p.add_argument("--run", required=True, action="append", metavar="DIR",
                       help="a run directory written by `panformer train`; repeated (--run A --run B): their "
                            "ensemble, for tasks that can combine runs (recommendation, sentiment)")
        p.add_argument("--device", default="auto", help="cpu | cuda | auto (default: auto)")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
        if command == "evaluate":
            add_dataclass_arguments(p, DataArguments, "data (default: the run's own data)", {})
            p.add_argument("--split", default="test", choices=list(task_cls.eval_splits), help="split to evaluate (default: test)")
            p.add_argument("--out", default=None, help="write metrics.json and pictures here (default: print only)")
            add_dataclass_arguments(p, task_cls.Arguments, f"{task_cls.name} options", {},
                                    skip=set(getattr(task_cls, "model_fields", ())))
        else:
            p.add_argument("inputs", nargs="*", help=task_cls.predict_help)
            p.add_argument("--input-file", default=None, help="read inputs from this file, one per line")
            add_dataclass_arguments(p, task_cls.Arguments, f"{task_cls.name} options", {},
                                    skip=set(getattr(task_cls, "model_fields", ())))
    return p


def budget_layer(layer: dict[str, Any], explicit: dict[str, Any]) -> dict[str, Any]:
    """A layer of settings (a recipe's defaults, ``--quick``'s) as it applies under the ``explicit`` options.
    A layer whose length is a wall-clock budget (``schedule_clock`` time: ``max_time_minutes``, the lr schedule
    spread over it) gives way to an explicit ``--max-steps`` or ``--epochs``: that step count replaces the
    budget, which makes the run reproducible step for step (what tests want). A layer whose schedule follows
    whichever budget is further spent (``schedule_clock`` first) follows the steps alone then, its time limit kept."""
    clock = layer.get("schedule_clock")
    if clock not in ("time", "first") or not {"max_steps", "epochs"} & set(explicit):
        return layer
    dropped = ("max_time_minutes", "schedule_clock", "max_steps") if clock == "time" else ("schedule_clock",)
    return {k: v for k, v in layer.items() if k not in dropped}


def resolve_train_args(task_cls: type, argv: Sequence[str], recipe_defaults: dict[str, Any] | None = None):
    """(every resolved option as a namespace, the TrainingArguments) of ``train TASK argv``.

    Layers, lowest first: the task's defaults, the recipe's, ``--quick``, the model options of ``--init-from
    RUN``, the run's own options when resuming (``--resume RUN`` = ``--resume --out RUN``), ``--config`` (a file
    or a run), then the flags given.
    """
    argv, resume_dir = _resume_argv(argv)
    parser = _task_parser(task_cls, "train", {**task_cls.defaults, **(recipe_defaults or {})})
    given = vars(parser.parse_args(list(argv)))
    if resume_dir is not None:
        if given.get("out") not in (None, resume_dir):
            raise ConfigError(f"--resume {resume_dir} and --out {given['out']} name two runs; give one of them")
        given.update(out=resume_dir, resume=True)
    name = task_cls.name
    config_layer = load_config_file(given["config"], name, RUN_ONLY_OPTIONS) if given.get("config") else {}
    run_layer = {}
    if given.get("resume") and given.get("out") and (Path(given["out"]) / "config.json").is_file():
        run_layer = load_config_file(given["out"], name, RUN_ONLY_OPTIONS, what="--resume")
    init_from = given.get("init_from", config_layer.get("init_from", run_layer.get("init_from")))
    init_layer = _init_options(task_cls, init_from) if init_from else {}
    quick = given.get("quick", config_layer.get("quick", run_layer.get("quick", (recipe_defaults or {}).get("quick", False))))
    explicit = {**run_layer, **config_layer, **given}
    layers = [task_cls.defaults, budget_layer(recipe_defaults or {}, explicit)]
    if quick:
        layers.append(budget_layer(task_cls.quick, explicit))
    layers += [init_layer, run_layer, config_layer]
    classes = [DataArguments, TrainingArguments, RunArguments, task_cls.Arguments]
    parts = resolve_arguments(classes, given, layers)
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(asdict(part))
    return SimpleNamespace(**merged), parts[1]


def _resume_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """``--resume RUN`` / ``--resume=RUN`` -> (argv with a bare ``--resume``, RUN); ``--resume [BOOL]`` is left alone."""
    out, run, rest = [], None, list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--resume" and rest and not rest[0].startswith("-"):
            value = rest.pop(0)
        elif arg.startswith("--resume="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
            continue
        try:
            out += ["--resume", str(str2bool(value))]
        except argparse.ArgumentTypeError:  # not a boolean: the run directory
            out.append("--resume")
            run = value
    return out, run


def _init_options(task_cls: type, run: str) -> dict[str, Any]:
    """The task options (architecture, tokenizer, columns ...) of the run ``--init-from`` starts from."""
    run_dir = Path(run)
    options = load_config_file(run_dir, task_cls.name, what="--init-from")
    for need in ("model.safetensors", "assets"):
        if not (run_dir / need).exists():
            raise ConfigError(f"--init-from {run_dir}: no {need}; expected a finished run directory of `{PROG} train "
                              f"{task_cls.name}`")
    names = field_names(task_cls.Arguments)
    return {k: v for k, v in options.items() if k in names}


def _new_run_dir(task_name: str, out: str | None, overwrite: bool, resume: bool) -> tuple[Path, bool]:
    run_dir = Path(out) if out else Path("runs") / f"{task_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume:
        if not (run_dir / "checkpoint").is_dir():
            raise ConfigError(f"--resume: no checkpoint in {run_dir}/checkpoint to resume from")
        return run_dir, False
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"run directory {run_dir} exists and is not empty; pass --overwrite or another --out")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, True


def _log(msg: str) -> None:
    if D.is_main_process():
        print(msg, file=sys.stderr, flush=True)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def _adopt_assets(task: Any, files: dict[str, bytes]) -> None:
    """Make this rank's assets (tokenizer ids, labels...) those rank 0 saved, ``files``: a fit that is not
    deterministic across processes (e.g. tokenizer merges tied in count) would train each rank on other ids."""
    if D.rank() == 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        mine, theirs = Path(tmp, "mine"), Path(tmp, "rank0")
        mine.mkdir()
        task.save_assets(mine)
        if _files(mine) == files:
            return
        for name, data in files.items():
            (theirs / name).parent.mkdir(parents=True, exist_ok=True)
            (theirs / name).write_bytes(data)
        task.load_assets(theirs)
        shutil.rmtree(mine)
        mine.mkdir()
        task.save_assets(mine)
        if _files(mine) != files:
            raise ConfigError(f"rank {D.rank()} fitted other assets than rank 0 and cannot load rank 0's: the task's "
                              f"fit_assets must be deterministic for multi-process training")


def _prepare_data(task: Any, init: Path | None, seed: int) -> nn.Module | None:
    """Read the data and fit the assets. With ``--init-from RUN``: take RUN's assets instead (ids must match its
    weights), check the data against them, and return the model with RUN's weights (a mismatch fails here,
    before the run directory exists)."""
    if init is None:
        task.load_data()
        task.fit_assets()
        return None
    task.load_assets(init / "assets")  # before load_data, as for a reloaded run (image size, channels...)
    task.run_dir = None  # a task being trained is no reloaded run
    task.load_data()
    task.check_assets()
    seed_everything(seed)
    model = task.build_model()
    try:
        load_weights(model, init / "model.safetensors")
    except ConfigError as e:
        raise ConfigError(f"--init-from {init}: {e}") from None
    return model


def train(task_name: str, argv: Sequence[str] = (), recipe_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``panformer train TASK argv...``; returns the metrics written to ``metrics.json``.

    Under ``torchrun`` every rank runs this: rank 0 loads the data first (filling caches), alone
    creates the run directory and writes its files, and evaluates the test split; every rank returns
    the same metrics. A failure on any rank before training raises on all of them (docs/distributed.md).
    """
    error, targs = None, None
    try:
        task_cls = get_task(task_name)
        args, targs = resolve_train_args(task_cls, argv, recipe_defaults)
    except PanformerError as e:
        error = e
    if D.env_world_size() > 1:  # join the process group first: from here on failures are shared
        D.init_distributed(resolve_device(targs.device if targs else "cpu"),
                           targs.ddp_timeout_minutes if targs else None)
    D.sync_errors(error)
    assert targs is not None
    threads = targs.threads or (1 if args.quick else 0)  # a --quick model is overhead-bound: 1 thread is fastest
    if threads:
        torch.set_num_threads(threads)
    task = task_cls(args)
    t0 = time.time()
    init = Path(args.init_from) if args.init_from else None
    # bad input fails here, before anything is written; rank 0 first, so that it alone fills the data caches
    model = D.main_process_first(lambda: _prepare_data(task, init, targs.seed))
    _log(f"[{PROG}] {task.describe_data()}")
    run_dir, created = D.run_on_main(lambda: _new_run_dir(task_name, args.out, args.overwrite, targs.resume))
    try:
        def write_run_files() -> dict[str, bytes] | None:
            atomic_write_json(run_dir / "config.json", {"task": task_name, "args": vars(args)})
            (run_dir / "assets").mkdir(exist_ok=True)
            task.save_assets(run_dir / "assets")
            return _files(run_dir / "assets") if D.world_size() > 1 else None
        assets = D.run_on_main(write_run_files)
        error = None
        try:
            if model is None:  # (with --init-from it holds that run's weights already)
                _adopt_assets(task, assets or {})
                seed_everything(targs.seed)  # weight initialisation depends on the seed alone
                model = task.build_model()
                task.load_pretrained(model)
        except Exception as e:  # noqa: BLE001 - raised on every rank by sync_errors
            error = e
        D.sync_errors(error)
        n_params = count_parameters(model)
        _log(f"[{PROG}] model: {n_params:,} parameters; run directory: {run_dir}"
             + (f"; {D.world_size()} processes" if D.world_size() > 1 else ""))
        trainer = Trainer(model, targs, task.train_dataset(), task.collate, task.loss,
                          eval_fn=lambda m: task.evaluate(m, "valid"), run_dir=run_dir,
                          batch_sampler_fn=task.batch_sampler_fn())
        if targs.precision == "auto":
            _log(f"[{PROG}] precision auto: {trainer.precision} on {trainer.device.type}")
    except BaseException:
        if created and D.is_main_process():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    summary = trainer.train()
    model.eval()
    split = "test" if task.splits.get("test") is not None else "valid"

    def test_metrics() -> dict[str, Any]:  # rank 0 evaluates and writes; the others wait for its metrics
        metrics: dict[str, Any] = dict(task.evaluate(model, split, out_dir=run_dir))
        metrics.update(split=split, num_params=n_params, train_time_s=round(summary.get("train_time_s", 0.0), 2),
                       train_steps=summary.get("steps"), best_step=summary.get("best_step"),
                       examples_per_s=summary.get("examples_per_s"), compute_precision=summary.get("precision"),
                       total_time_s=round(time.time() - t0, 2))
        base = task.baseline(run_dir) if getattr(args, "baseline", False) else None
        if base:
            metrics["baseline"] = base
        atomic_write_json(run_dir / "metrics.json", metrics)
        return metrics
    metrics = D.run_on_main(test_metrics)
    _log(f"[{PROG}] {split} metrics: " + json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))
    return metrics


def _evaluate(task_name: str, argv: Sequence[str]) -> None:
    task_cls = get_task(task_name)
    ns = vars(_task_parser(task_cls, "evaluate", {}).parse_args(list(argv)))
    given = {k: v for k, v in ns.items() if k not in ("run", "device", "threads", "split", "out")}
    if ns.get("threads"):
        torch.set_num_threads(ns["threads"])
    task, model = load_runs(ns["run"], ns["device"], eval_overrides(task_cls, given), task_name)
    print(json.dumps(evaluate_loaded(task, model, ns["split"], given, ns.get("out")), indent=2))


def _predict(task_name: str, argv: Sequence[str]) -> None:
    task_cls = get_task(task_name)
    ns = vars(_task_parser(task_cls, "predict", {}).parse_args(list(argv)))
    inputs = list(ns.get("inputs") or [])
    if ns.get("input_file"):
        path = Path(ns["input_file"])
        if not path.is_file():
            raise DataError(f"--input-file: file not found: {path}")
        inputs += [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if ns.get("threads"):
        torch.set_num_threads(ns["threads"])
    overrides = {k: v for k, v in ns.items() if k not in ("run", "device", "inputs", "input_file", "threads")}
    task, model = load_runs(ns["run"], ns["device"], overrides, task_name)
    if not inputs and not getattr(task, "predict_without_inputs", False):
        raise DataError("nothing to predict: give INPUT arguments or --input-file")
    for pred in task.predict(model, inputs):
        print(pred if isinstance(pred, str) else json.dumps(pred, ensure_ascii=False))


def _list_tasks() -> None:
    for name in available_tasks():
        try:
            summary = get_task(name).summary
        except Exception as e:  # noqa: BLE001 - an optional dependency missing for one task
            summary = f"(unavailable: {type(e).__name__}: {e})"
        print(f"{name:16s} {summary}")


USAGE = f"""usage: {PROG} COMMAND [TASK] [options]
       {PROG} --version

commands:
  tasks                         list the registered tasks
  train TASK [options]          train a model; `{PROG} train TASK --help` lists every option
  evaluate TASK --run DIR       evaluate a trained run (optionally on other --data)
  predict TASK --run DIR INPUT  predict for raw inputs
  compare [options]             run several tasks and report them side by side
  data [list | fetch [NAME...]] the built-in datasets: where each is found; fetch them now
  export TASK --run DIR --out DIR   write a run as a Hugging Face transformers folder
"""


def main(argv: Sequence[str] | None = None, recipe_defaults: dict[str, Any] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"{PROG} {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    finished = False  # every rank got through the command: they all wait for each other before leaving
    try:
        if cmd == "tasks":
            _list_tasks()
            return 0
        if cmd == "compare":
            from .compare import main as compare_main

            return compare_main(rest)
        if cmd == "data":
            from .builtin_data import main as data_main

            return data_main(rest)
        if cmd == "export":
            from .export import main as export_main

            return export_main(rest)
        if cmd not in ("train", "evaluate", "predict"):
            raise ConfigError(f"unknown command {cmd!r}; expected tasks, train, evaluate, predict, compare, data or "
                              f"export")
        if not rest or rest[0].startswith("-"):
            raise ConfigError(f"`{PROG} {cmd}` needs a TASK: one of {', '.join(available_tasks())}")
        task_name, rest = rest[0], rest[1:]
        if cmd == "train":
            train(task_name, rest, recipe_defaults)
        elif cmd == "evaluate":
            _evaluate(task_name, rest)
        else:
            _predict(task_name, rest)
        finished = True
        return 0
    except PanformerError as e:
        if not getattr(e, "quiet", False):  # under torchrun, errors every rank shares are printed by rank 0
            print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if D.is_main_process():
            print(f"{PROG}: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    except RuntimeError as e:
        if not D.is_peer_failure(e):
            raise
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        print(f"{PROG}: error: rank {D.rank()} lost another process of this multi-process run ({first}); see that "
              f"process's error", file=sys.stderr)
        return 1
    finally:
        D.cleanup(wait_for_peers=finished)  # leave the process group (torchrun); a no-op in one process


if __name__ == "__main__":
    sys.exit(main())
