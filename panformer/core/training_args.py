"""Options of :class:`core.trainer.Trainer` as a dataclass: every field's ``metadata["help"]`` becomes a CLI
flag (HF-style), and ``__post_init__`` rejects impossible values with one clear :class:`ConfigError`."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .runtime import PRECISIONS
from .schedules import SCHEDULES

__all__ = ["TrainingArguments", "lower_is_better"]

_LOWER_TOKENS = {"loss", "perplexity", "ppl", "fid", "wer", "cer", "error", "err", "bits", "bpc", "bpd", "nll",
                 "mse", "rmse", "mae", "l1", "l2", "distance", "divergence", "kl"}


def lower_is_better(metric: str) -> bool:
    """True for names with a loss-like word: ``loss``, ``perplexity``, ``wer``, ``cer``, ``error``, ``bits``..."""
    return any(tok in _LOWER_TOKENS for tok in re.split(r"[^a-z0-9]+", metric.lower()))


@dataclass
class TrainingArguments:
    """Every option of :class:`Trainer`; ``metadata["help"]`` documents each one (for CLIs)."""

    epochs: int = field(default=10, metadata={"help": "passes over the training set"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps to run; overrides epochs"})
    batch_size: int = field(default=32, metadata={
        "help": "global examples per micro-batch (split across DDP ranks); per optimizer step: x grad_accum"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay (not on biases, norms, embeddings)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1"})
    adam_beta2: float = field(default=0.98, metadata={"help": "Adam beta2"})
    adam_eps: float = field(default=1e-9, metadata={"help": "Adam epsilon"})
    schedule: str = field(default="inverse_sqrt", metadata={"help": "learning-rate schedule: " + " | ".join(SCHEDULES)})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps (the peak lr is reached at this step)"})
    schedule_clock: str = field(default="steps", metadata={
        "help": "what the cosine / linear decay follows: steps (max_steps, else epochs) | time (max_time_minutes: the lr "
                "reaches its end when the time budget is spent, however many steps fit; such runs are not bit-reproducible) "
                "| first (whichever of the two is further spent: the steps where they fit in the time, else the clock)"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr of the cosine schedule, as a fraction of lr"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the task's cross-entropy"})
    grad_clip: float | None = field(default=1.0, metadata={"help": "max global gradient norm; None disables clipping"})
    ema_decay: float = field(default=0.0, metadata={
        "help": "keep an exponential moving average of the weights with this decay (e.g. 0.999) and evaluate, "
                "select and save it instead of the last weights; 0 disables"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    precision: str = field(default="fp32", metadata={
        "help": "compute precision: fp32 | bf16 (autocast) | auto (bf16 where the device computes it natively: CUDA "
                "with bf16, CPUs with AVX512-BF16 / AMX; else fp32)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N | mps"})
    seed: int = field(default=0, metadata={"help": "random seed (data order, dropout, initialisation)"})
    eval_every: int | None = field(default=None, metadata={
        "help": "optimizer steps between evaluations and checkpoints; None: at the end of every epoch"})
    log_every: int = field(default=50, metadata={"help": "optimizer steps between training-loss log rows"})
    metric_for_best: str = field(default="loss", metadata={"help": "evaluation metric that selects the best model"})
    greater_is_better: bool | None = field(default=None, metadata={
        "help": "whether a larger metric_for_best is better; None: False for loss/perplexity/wer/cer/error/bits"})
    load_best_model_at_end: bool = field(default=True, metadata={
        "help": "end with the weights of the best evaluation (by metric_for_best); false: the last weights (what a "
                "schedule that decays to its end gives, when the validation set is too small to rank checkpoints)"})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "stop after this many evaluations without improvement; None: never"})
    max_time_minutes: float | None = field(default=None, metadata={
        "help": "stop training (then evaluate and save) after this many minutes"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    resume: bool = field(default=False, metadata={"help": "continue exactly from run_dir/checkpoint"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default; --quick uses 1)"})
    ddp_timeout_minutes: float = field(default=60.0, metadata={
        "help": "under torchrun: how long a rank waits for the others (e.g. while rank 0 evaluates)"})

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "log_every": self.log_every, "lr": self.lr, "max_steps": self.max_steps,
                    "eval_every": self.eval_every, "early_stopping_patience": self.early_stopping_patience,
                    "max_time_minutes": self.max_time_minutes, "grad_clip": self.grad_clip,
                    "ddp_timeout_minutes": self.ddp_timeout_minutes}
        for name, v in positive.items():
            if v is not None and v <= 0:
                raise ConfigError(f"{name} must be positive, got {v}")
        for name in ("warmup_steps", "weight_decay", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule_clock not in ("steps", "time", "first"):
            raise ConfigError(f"schedule_clock must be steps, time or first, got {self.schedule_clock!r}")
        if self.schedule_clock in ("time", "first") and self.max_time_minutes is None:
            raise ConfigError(f"schedule_clock {self.schedule_clock} needs max_time_minutes: the budget the schedule "
                              f"spreads over")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    @property
    def higher_is_better(self) -> bool:
        return not lower_is_better(self.metric_for_best) if self.greater_is_better is None else self.greater_is_better

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
