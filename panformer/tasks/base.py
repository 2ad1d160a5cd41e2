"""The task interface: what a domain implements so that the shared CLI, Trainer and compare can run it.

A task owns its data adapters, head, loss, decoding glue and metrics. The engine owns the rest.
Lifecycle of ``panformer train``::

    task = Task(args)              # args: merged DataArguments + TrainingArguments + task.Arguments
    task.load_data()               # read/validate every split -> self.splits; raise DataError on bad input
    task.fit_assets()              # tokenizers, label maps, vocabularies from the train split
    model = task.build_model()     # from args + assets (also used to reload a run)
    Trainer(model, targs, task.train_dataset(), task.collate, task.loss, eval_fn=...).train()
    metrics = task.evaluate(model, "test", out_dir=run_dir)

``evaluate`` and ``predict`` reload a run: ``load_assets(run_dir)`` then ``build_model()`` and the
weights in ``model.safetensors``. ``evaluate --test-data X`` (without ``--data``) reads X alone:
``load_split("test")`` -> ``read_split(X, "test")``, never the run's training data. ``train --init-from RUN``
takes the assets of RUN (``load_assets``) instead of ``fit_assets`` and checks the new data against them
(``check_assets``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

from torch import Tensor, nn
from torch.utils.data import Dataset

from panformer.core.errors import ConfigError

__all__ = ["Task", "DataArguments", "RunArguments", "ListDataset", "split_flag"]


def split_flag(split: str) -> str:
    """The option that names a split's own data: ``valid`` -> ``--valid-data``, ``test`` -> ``--test-data``."""
    return {"train": "--data"}.get(split, f"--{split}-data")


@dataclass
class DataArguments:
    """Options about input data that every task accepts."""

    data: str | None = field(default=None, metadata={
        "help": "training data: a file, a folder, or a dataset NAME[:CONFIG][:SPLIT] (Hugging Face hub, a local dataset "
                "folder or a save_to_disk folder; SPLIT defaults to train); built-in data when omitted"})
    valid_data: str | None = field(default=None, metadata={
        "help": "validation data, as --data (a dataset's SPLIT defaults to validation; default: a seeded split of --data)"})
    test_data: str | None = field(default=None, metadata={
        "help": "test data, as --data (a dataset's SPLIT defaults to test; default: a seeded split of --data)"})
    valid_fraction: float = field(default=0.1, metadata={"help": "fraction of --data held out for validation when --valid-data is absent"})
    test_fraction: float = field(default=0.1, metadata={"help": "fraction of --data held out for testing when --test-data is absent"})
    max_examples: int | None = field(default=None, metadata={"help": "use at most this many training examples"})


@dataclass
class RunArguments:
    """Where the run goes and how options are layered."""

    out: str | None = field(default=None, metadata={"help": "run directory (default: runs/<task>-<timestamp>)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run directory"})
    config: str | None = field(default=None, metadata={
        "help": "YAML or JSON file of options, or a run directory / its config.json (the run's options); flags override it"})
    quick: bool = field(default=False, metadata={"help": "a tiny model and few steps, for smoke runs"})
    init_from: str | None = field(default=None, metadata={
        "help": "a run directory of the same task to start from: its weights, assets (tokenizer, labels) and model "
                "options; train it on --data (fine-tuning)"})


class ListDataset(Dataset):
    """A map-style dataset over a list of examples."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class Task:
    """Base class of a domain. Subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Arguments: ClassVar[type]  # dataclass of task options (model size, columns, tokenizer, ...)
    defaults: ClassVar[dict[str, Any]] = {}  # overrides of any default (TrainingArguments too)
    quick: ClassVar[dict[str, Any]] = {}  # overrides applied by --quick
    main_metric: ClassVar[str] = "loss"  # the validation metric that picks the best checkpoint
    predict_help: ClassVar[str] = "INPUT... the inputs to predict"
    eval_splits: ClassVar[tuple[str, ...]] = ("train", "valid", "test")  # choices of `evaluate --split`
    report_metrics: ClassVar[tuple[str, ...]] = ()  # test metrics in `compare`'s table (default: (main_metric,))
    # older-architecture baselines: name -> train option overrides, e.g. {"lstm": {"arch": "lstm"}}; training with
    # them runs the baseline through the same data, Trainer, metrics and run directory (`compare` reports them)
    baselines: ClassVar[dict[str, dict[str, Any]]] = {}
    # the options that give a split its own data (``evaluate`` reads only them when they are given without --data)
    split_options: ClassVar[dict[str, tuple[str, ...]]] = {"valid": ("valid_data",), "test": ("test_data",)}
    # a task whose outputs another task's trained run scores (``--judge RUN``): `compare` runs that task first and
    # passes its Transformer run, e.g. tts is judged by a speech model, image generation by a ViT
    judged_by: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.report_metrics:  # a task that names none reports its main metric
            cls.report_metrics = (cls.main_metric,)

    def __init__(self, args: Any) -> None:
        self.args = args  # a namespace with every resolved option
        self.splits: dict[str, Any] = {}
        self.run_dir: Path | None = None  # the run directory a reloaded task comes from (evaluate, predict)

    # -- data -------------------------------------------------------------------------------------
    def load_data(self) -> None:
        """Read and validate the train/valid/test splits into ``self.splits``."""
        raise NotImplementedError

    def read_split(self, source: str | None, split: str) -> Any:
        """``source`` read as the whole of ``split`` ("valid" or "test"), in the form ``self.splits[split]`` holds
        (what ``--valid-data`` / ``--test-data`` give); ``load_data`` reads those options through it."""
        raise ConfigError(f"{self.name} takes its {split} split from --data only; pass --data")

    def finish_splits(self) -> None:
        """Optional: derive per-split data (features, transcripts...) once ``self.splits`` is set."""

    def load_split(self, split: str) -> None:
        """Read ``split`` alone from its own options (``split_options``): ``evaluate --test-data X`` on a trained
        run reads X, not the run's ``--data``. ``self.splits`` becomes ``{split: ...}``."""
        self.splits = {split: self.read_split(getattr(self.args, f"{split}_data", None), split)}
        self.finish_splits()

    def fit_assets(self) -> None:
        """Fit tokenizers / label maps on ``self.splits['train']``."""

    def check_assets(self, splits: Sequence[str] | None = None) -> None:
        """Optional: raise DataError where ``splits`` (default: all) of ``self.splits`` hold what assets restored by
        ``load_assets`` cannot encode (an unknown label, ...). ``train --init-from RUN`` calls it instead of
        ``fit_assets``; evaluating a run calls it for the split evaluated."""

    def save_assets(self, run_dir: Path) -> None:
        """Write what ``build_model`` and ``predict`` need besides weights (tokenizer.json, labels.json)."""

    def load_assets(self, run_dir: Path) -> None:
        """Inverse of ``save_assets``."""

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def collate(self, examples: list[Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def batch_sampler_fn(self) -> Callable[[int, int], Iterable[list[int]]] | None:
        """Optional: (epoch, seed) -> batches of indices (e.g. length bucketing)."""
        return None

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor | tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def load_pretrained(self, model: nn.Module) -> None:
        """Optional: initialise from published weights (``--pretrained``)."""

    # A task that can score several trained runs as one defines
    #     ensemble(self, model, others: list[(task, model)], runs: list[str]) -> nn.Module
    # (``--run A --run B`` of evaluate and predict; see tasks.cli.load_runs). Without it several runs are an error.

    # -- results ----------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        """Metrics dict on a split; with ``out_dir`` also write pictures (confusion matrix, maps...)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: list[str]) -> list[Any]:
        """Predictions for raw user inputs (text, file paths, ids), one per input, JSON-serialisable."""
        raise NotImplementedError

    def baseline(self, out_dir: Path | None = None) -> dict[str, Any] | None:
        """Optional: a classical baseline (sklearn) on the same split, for ``--baseline`` and compare."""
        return None

    def describe_data(self) -> str:
        """One line naming the dataset, for logs and reports."""
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items() if v is not None and hasattr(v, "__len__"))
        return f"{self.name}: {sizes}"
