"""A small, task-agnostic training loop: AdamW + schedule, accumulation, clipping, bf16, evaluation,
best-model selection, early stopping, exact resumption and DistributedDataParallel.

Tasks supply a dataset, a ``collate_fn`` returning a dict of tensors, a ``loss_fn(model, batch)``
and optionally an ``eval_fn(model) -> {metric: value}``. Seed (:func:`core.runtime.seed_everything`)
before building the model; the Trainer re-seeds with ``args.seed`` when training starts.

``loss_fn`` receives the model as wrapped for training (``DistributedDataParallel`` under
``torchrun``): call it (``model(**batch)``) so gradients are synchronised, and reach other methods
through :func:`core.distributed.unwrap`. ``eval_fn`` receives the bare model. The dataset must be
map-style (``len`` and integer indexing); the data order is a pure function of ``(seed, epoch)``.

Under ``torchrun`` every global batch (``batch_size`` examples, or one from ``batch_sampler_fn``) is
cut into one contiguous shard per rank; a shard's loss is weighted by its share of the batch, so with
a loss that is a mean over examples, N processes take the same steps as one (docs/distributed.md).
``eval_fn`` runs on rank 0 only and its metrics are broadcast; rank 0 alone writes files.

Run directory layout::

    run_dir/model.safetensors          best weights (by metric_for_best), or final ones without eval_fn
                                       (or with load_best_model_at_end false);
                                       with ema_decay, the weight average's (core.ema)
    run_dir/checkpoint/                model.safetensors + trainer_state.pt: resumable, written atomically
    run_dir/log.csv, tensorboard/, curves.png
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import distributed as D
from .checkpoint import load_weights, save_weights
from .ema import WeightEMA
from .errors import ConfigError, DataError
from .optim import build_optimizer
from .run_log import RunLogger
from .runtime import (autocast, capture_rng, limit_blas_threads, resolve_device, resolve_precision, retain_freed_memory,
                      rng_state, seed_everything, set_rng_state)
from .schedules import build_scheduler
from .trainer_state import TrainState, find_checkpoint, read_checkpoint, write_checkpoint
from .training_args import TrainingArguments, lower_is_better

__all__ = ["TrainingArguments", "Trainer", "TrainerCallback", "lower_is_better"]


class TrainerCallback:
    """Hooks (all optional; any object with some of these methods works). Set ``trainer.should_stop``
    to end training after the current step."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer", logs: dict[str, float] | None) -> None: ...
    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: "Trainer", result: dict[str, Any]) -> None: ...


def _to_device(x: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device, non_blocking) for v in x)
    return x


Micro = tuple[list[int], int, float]  # (local indices, global batch size, loss scale)


class Trainer:
    """See the module docstring. ``train()`` returns ``{"steps", "epochs", "best_metric", "best_step",
    "train_time_s", "examples_per_s", "stopped_early", "last_metrics", "precision"}`` (``precision``: the one
    used, ``auto`` resolved for the device)."""

    def __init__(self, model: nn.Module, args: TrainingArguments, train_data: Dataset,
                 collate_fn: Callable[[list], dict],
                 loss_fn: Callable[[nn.Module, dict], Tensor | tuple[Tensor, dict[str, float]]],
                 eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                 run_dir: str | Path | None = None,
                 batch_sampler_fn: Callable[[int, int], Iterable[list[int]]] | None = None,
                 callbacks: list[Any] | None = None) -> None:
        self.args = args
        device = resolve_device(args.device)
        self.device = D.init_distributed(device, args.ddp_timeout_minutes)
        self.world, self.rank = D.world_size(), D.rank()
        self.is_main = self.rank == 0
        if args.batch_size % self.world:
            raise ConfigError(f"batch_size ({args.batch_size}) must be divisible by the number of processes ({self.world})")
        self.precision = resolve_precision(args.precision, self.device)  # "auto" -> bf16 | fp32 for this device
        self.model = model.to(self.device)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.train_data, self.collate_fn, self.loss_fn, self.eval_fn = train_data, collate_fn, loss_fn, eval_fn
        self.batch_sampler_fn = batch_sampler_fn
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks or [])
        if len(train_data) == 0:  # type: ignore[arg-type]
            raise DataError("the training set is empty")
        self.optimizer = build_optimizer(self.model, args.lr, args.weight_decay,
                                         (args.adam_beta1, args.adam_beta2), args.adam_eps)
        self.steps_per_epoch = len(self._epoch_plan(0))
        self.total_steps = args.max_steps or args.epochs * self.steps_per_epoch
        self.scheduler = build_scheduler(self.optimizer, args.schedule, args.warmup_steps, self.total_steps,
                                         args.min_lr_ratio,
                                         self._time_progress if args.schedule_clock in ("time", "first") else None,
                                         first=args.schedule_clock == "first")
        self.state = TrainState()
        self.should_stop = False
        self.last_metrics: dict[str, float] = {}
        self.logger = RunLogger(self.run_dir or ".", enabled=False)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = WeightEMA(self.model, args.ema_decay) if args.ema_decay else None
        self._best_state: dict[str, Tensor] | None = None
        self._boundary_rng: tuple[Any, ...] | None = None
        self._phase = "idle"
        self._ckpt_step = -1
        self._can_checkpoint = self.is_main and self.run_dir is not None
        self._steps_this_epoch = self.steps_per_epoch
        self._reset_window()

    # --- data order: a pure function of (seed, epoch) ------------------------------------------
    def _global_batches(self, epoch: int) -> list[list[int]]:
        if self.batch_sampler_fn is not None:
            return [list(b) for b in self.batch_sampler_fn(epoch, self.args.seed) if len(b)]
        n, bs = len(self.train_data), self.args.batch_size  # type: ignore[arg-type]
        g = torch.Generator().manual_seed((self.args.seed * 1_000_003 + epoch) % 2**63)
        perm = torch.randperm(n, generator=g).tolist()
        return [perm[i:i + bs] for i in range(0, max(n - bs, 0) + 1, bs)]  # drop the last partial batch

    def _epoch_plan(self, epoch: int) -> list[list[Micro]]:
        """Optimizer steps of ``epoch``, each a list of this rank's micro-batches."""
        micro: list[tuple[list[int], int]] = []
        for b in self._global_batches(epoch):
            if len(b) < self.world:
                continue  # cannot give every rank an example
            q, r = divmod(len(b), self.world)
            start = self.rank * q + min(self.rank, r)
            micro.append((b[start:start + q + (self.rank < r)], len(b)))
        if not micro:
            raise DataError(f"the training set ({len(self.train_data)} examples) yields no batches")  # type: ignore[arg-type]
        k = self.args.grad_accum
        return [[(idx, n, len(idx) * self.world / n / len(micro[i:i + k])) for idx, n in micro[i:i + k]]
                for i in range(0, len(micro), k)]

    def _loader(self, steps: list[list[Micro]], epoch: int) -> Iterator[Any]:
        # A private generator: creating the iterator must not consume the global torch RNG.
        g = torch.Generator().manual_seed((self.args.seed + epoch) % 2**63)
        loader = DataLoader(self.train_data, batch_sampler=[m[0] for s in steps for m in s],
                            collate_fn=self.collate_fn, num_workers=self.args.num_workers,
                            pin_memory=self.device.type == "cuda", generator=g)
        return iter(loader)

    # --- public helpers ------------------------------------------------------------------------
    def param_count(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad or not trainable_only)

    @property
    def epoch_float(self) -> float:
        return self.state.epoch + self.state.epoch_step / max(self._steps_this_epoch, 1)

    # --- training ------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        args = self.args
        if args.resume and self.run_dir is None:
            raise ConfigError("resume needs a run directory")
        self.logger = RunLogger(self.run_dir or ".", enabled=self.is_main and self.run_dir is not None,
                                resume=args.resume)
        if not (args.resume and self._load_checkpoint()):
            seed_everything(args.seed + self.rank)
        st = self.state
        self._boundary_rng = capture_rng()
        self._t0, self._time_before = time.perf_counter(), st.train_time_s
        from tqdm.auto import tqdm
        self._bar = tqdm(total=self.total_steps, initial=st.step, desc="train", dynamic_ncols=True,
                         disable=not (args.progress and self.is_main), file=sys.stderr, mininterval=0.5)
        for cb in self.callbacks:
            getattr(cb, "on_train_begin", lambda t: None)(self)
        if self.device.type == "cpu":
            retain_freed_memory()  # no page faults on every step's activations
        with limit_blas_threads():
            try:
                if st.eval_pending:  # interrupted during an evaluation: redo it
                    self._checkpoint_point()
                self._loop()
                if self.eval_fn is not None and st.last_eval_step != st.step:
                    self._evaluate()  # max_steps / max_time ended mid-interval
                self._save_checkpoint()
            except (KeyboardInterrupt, RuntimeError) as e:  # Ctrl-C, or another rank died (torchrun)
                if self._phase != "optim" and (isinstance(e, KeyboardInterrupt) or D.is_peer_failure(e)):
                    self._save_checkpoint(force=True)  # weights are consistent: save them to resume from
                raise
            finally:
                self._bar.close()
        st.train_time_s = self._elapsed()
        if self._ends_with_best:
            self._restore_best()
        else:
            if self.ema is not None:
                self.ema.copy_to(self.model)  # the result is the average (the checkpoint keeps both)
            if self.is_main and self.run_dir is not None:
                save_weights(self.model, self.run_dir / "model.safetensors", metadata={"step": st.step})
        self.logger.plot_curves()
        self.logger.close()
        result = {"steps": st.step, "epochs": round(self.epoch_float, 4), "best_metric": st.best_metric,
                  "best_step": st.best_step, "train_time_s": st.train_time_s,
                  "examples_per_s": st.examples_seen / st.compute_time_s if st.compute_time_s else 0.0,
                  "stopped_early": st.stopped_early, "last_metrics": dict(self.last_metrics), "precision": self.precision}
        for cb in self.callbacks:
            getattr(cb, "on_train_end", lambda t, r: None)(self, result)
        return result

    def _elapsed(self) -> float:
        return self._time_before + time.perf_counter() - self._t0

    def _time_progress(self) -> float:
        """The fraction of ``max_time_minutes`` spent (``schedule_clock`` time / first); 0 before training starts."""
        if not hasattr(self, "_t0"):
            return 0.0
        spent = min(self._elapsed() / (60 * self.args.max_time_minutes), 1.0)
        # every rank must step with the same lr: they agree on the mean of their clocks
        return D.all_reduce_mean({"spent": spent})["spent"] if self.world > 1 else spent

    def _done(self) -> bool:
        st, args = self.state, self.args
        if self.should_stop:
            return True
        return st.step >= args.max_steps if args.max_steps else st.epoch >= args.epochs

    def _loop(self) -> None:
        st = self.state
        self._steps_this_epoch = self.steps_per_epoch
        while not self._done():
            plan = self._epoch_plan(st.epoch)
            self._steps_this_epoch = len(plan)
            if st.epoch_step >= len(plan):  # the plan got shorter (custom sampler): next epoch
                st.epoch, st.epoch_step = st.epoch + 1, 0
                continue
            batches = self._loader(plan[st.epoch_step:], st.epoch)
            for micro in plan[st.epoch_step:]:
                t = time.perf_counter()
                lr = self._train_step(micro, batches)
                st.compute_time_s += time.perf_counter() - t
                st.epoch_step += 1
                end_of_epoch = st.epoch_step == len(plan)
                if end_of_epoch:
                    st.epoch, st.epoch_step = st.epoch + 1, 0
                self._after_step(lr, end_of_epoch)
                if self._done():
                    break

    def _train_step(self, micro: list[Micro], batches: Iterator[Any]) -> float:
        model = self.ddp or self.model
        if not self.model.training:
            self.model.train()
        lr = self.scheduler.get_last_lr()[0]
        non_blocking = self.device.type == "cuda"
        self._phase = "train"
        loss_sum: Tensor | float = 0.0
        extra_sums: dict[str, Any] = {}
        for i, (idx, n, scale) in enumerate(micro):
            batch = _to_device(next(batches), self.device, non_blocking)
            sync = model.no_sync() if self.ddp is not None and i < len(micro) - 1 else contextlib.nullcontext()
            with sync:
                with autocast(self.device, self.precision):
                    out = self.loss_fn(model, batch)
                loss, extras = out if isinstance(out, tuple) else (out, None)
                (loss * scale if scale != 1.0 else loss).backward()
            share = len(idx) * self.world / n  # 1 in one process; the mean over ranks of loss * share is the batch's
            loss_sum = loss_sum + loss.detach().float() * share
            for k, v in (extras or {}).items():
                v = v.detach().float() if isinstance(v, Tensor) else float(v)
                extra_sums[k] = extra_sums.get(k, 0.0) + share * v
        if self.world > 1:  # the logging window holds means over ranks: exact in any checkpoint, an interrupt's too
            reduced = D.mean_over_ranks({"": loss_sum, **{"x" + k: v for k, v in extra_sums.items()}})
            loss_sum, extra_sums = reduced.pop(""), {k[1:]: v for k, v in reduced.items()}
        self._phase = "optim"
        if self.args.grad_clip is not None:
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self._params, self.args.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._phase = "idle"
        # the logging window only ever holds whole steps, so an interrupted step leaves no trace
        self._loss_sum = self._loss_sum + loss_sum
        self._n_micro += len(micro)
        for k, v in extra_sums.items():
            self._extras[k] = self._extras.get(k, 0.0) + v
        self.state.step += 1
        self.state.examples_seen += sum(m[1] for m in micro)
        return lr

    def _reset_window(self) -> None:
        self._loss_sum: Tensor | float = 0.0
        self._n_micro = 0
        self._extras: dict[str, Any] = {}
        self._grad_norm: Tensor | None = None

    def _after_step(self, lr: float, end_of_epoch: bool) -> None:
        st, args = self.state, self.args
        if self._can_checkpoint:  # what an interrupt during the next step would save (~0.1 ms)
            self._boundary_rng = capture_rng()
        self._bar.update(1)
        logs = None
        if st.step % args.log_every == 0:
            logs = self._log_train(lr)
        if args.max_time_minutes is not None and D.broadcast_flag(self._elapsed() > 60 * args.max_time_minutes):
            self.should_stop = True
        if (args.eval_every and st.step % args.eval_every == 0) or (args.eval_every is None and end_of_epoch):
            st.eval_pending = self.eval_fn is not None
            self._checkpoint_point()
        for cb in self.callbacks:
            getattr(cb, "on_step_end", lambda t, l: None)(self, logs)

    def _checkpoint_point(self) -> None:
        if self.eval_fn is not None:
            self._evaluate()
        self._save_checkpoint()

    def _log_train(self, lr: float) -> dict[str, float]:
        n = max(self._n_micro, 1)
        vals = {"loss": float(self._loss_sum) / n, **{k: float(v) / n for k, v in self._extras.items()}}
        if self._grad_norm is not None:
            vals["grad_norm"] = float(self._grad_norm)  # of the all-reduced gradients: the same on every rank
        self.logger.log(self.state.step, self.epoch_float, "train", lr=lr, **vals)
        self._bar.set_postfix(loss=f"{vals['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
        self._reset_window()
        return vals

    # --- evaluation and best model -------------------------------------------------------------
    def _evaluate(self) -> dict[str, float]:
        st, args = self.state, self.args
        assert self.eval_fn is not None
        self._phase = "eval"
        eval_fn = self.eval_fn

        def run() -> dict[str, float]:
            with torch.no_grad(), autocast(self.device, self.precision):
                return {k: float(v) for k, v in eval_fn(self.model).items()}
        # with ema_decay the averaged weights are evaluated, selected and saved; training goes on from its own
        with self.ema.averaged(self.model) if self.ema is not None else contextlib.nullcontext():
            self.model.eval()
            metrics = D.run_on_main(run)  # rank 0 evaluates, every rank gets its metrics
            self.model.train()
            key = args.metric_for_best
            if key not in metrics:
                raise ConfigError(f"metric_for_best {key!r} is not among the evaluation metrics: {sorted(metrics)}")
            value = metrics[key]
            better = st.best_metric is None or (value > st.best_metric if args.higher_is_better
                                                else value < st.best_metric)
            if better and math.isfinite(value):
                st.best_metric, st.best_step, st.patience = value, st.step, 0
                if args.load_best_model_at_end:  # only _restore_best reads it
                    self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                if self.is_main and self.run_dir is not None:
                    save_weights(self.model, self.run_dir / "model.safetensors",
                                 metadata={"step": st.step, key: value})
            else:
                st.patience += 1
        st.last_eval_step, st.eval_pending = st.step, False
        self.last_metrics = metrics
        self.logger.log(st.step, self.epoch_float, "valid", **metrics)
        if args.progress and self.is_main:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self._bar.write(f"step {st.step}: {shown}" + (" (best)" if better else ""))
        for cb in self.callbacks:
            getattr(cb, "on_evaluate", lambda tr, m: None)(self, metrics)
        if args.early_stopping_patience is not None and st.patience >= args.early_stopping_patience:
            self.should_stop = st.stopped_early = True
        if self._can_checkpoint:
            self._boundary_rng = capture_rng()  # eval_fn may have drawn random numbers
        self._phase = "idle"
        return metrics

    @property
    def _ends_with_best(self) -> bool:
        """Whether training ends with the best evaluation's weights (else with the last ones)."""
        return self.eval_fn is not None and self.state.best_step is not None and self.args.load_best_model_at_end

    def _restore_best(self) -> None:
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        elif self.run_dir is not None and (self.run_dir / "model.safetensors").is_file():
            D.barrier()
            load_weights(self.model, self.run_dir / "model.safetensors")

    # --- checkpoints ---------------------------------------------------------------------------
    def _save_checkpoint(self, force: bool = False) -> None:
        st = self.state
        if self.run_dir is None or (st.step == self._ckpt_step and not force):
            return
        window = {"loss_sum": self._loss_sum, "n_micro": self._n_micro, "extras": dict(self._extras)}  # rank means
        self._ckpt_step = st.step
        if not self.is_main:
            return
        st.train_time_s = self._elapsed()
        state = {"version": 1, **asdict(st), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state(self._boundary_rng),
                 "logger": self.logger.state_dict(), "world_size": self.world, "args": self.args.to_dict(),
                 "window": window}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        write_checkpoint(self.run_dir, self.model, state, st.step)

    def _load_checkpoint(self) -> bool:
        assert self.run_dir is not None
        ckpt = find_checkpoint(self.run_dir)
        if ckpt is None:
            if self.is_main:
                print(f"resume: no checkpoint in {self.run_dir}; starting from scratch", file=sys.stderr)
            return False
        state = read_checkpoint(ckpt, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            if "ema" not in state:
                raise ConfigError(f"resume: {ckpt} was written without ema_decay; resume without it, or start a new "
                                  f"run to average the weights")
            self.ema.load_state_dict(state["ema"])
        self.state = TrainState.from_dict(state)
        set_rng_state(state["rng"])  # rank 0's generators; the other ranks draw from their own seeds:
        if self.rank:
            seed_everything((self.args.seed + self.rank) * 1_000_003 + self.state.step)
        self.logger.load_state_dict(state["logger"], step=self.state.step)
        window = state.get("window", {})
        self._loss_sum, self._n_micro = window.get("loss_sum", 0.0), window.get("n_micro", 0)
        self._extras = dict(window.get("extras", {}))
        self._ckpt_step = self.state.step
        return True
