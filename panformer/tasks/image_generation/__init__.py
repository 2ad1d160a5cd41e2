"""Class-conditional image generation in the ImageGPT manner on the core decoder (``image-generation``).

Images become greyscale, ``--image-size`` squares quantised to ``--levels`` grey levels, read in raster
order after a class token; a decoder-only Transformer (:class:`core.CausalTransformerLM`) learns
p(pixel | class, earlier pixels) and generates with :mod:`core.decoding` (key/value cache).

Metrics: ``loss`` (nats per pixel) and ``bits_per_dim`` on held-out images; at the end of training
and in ``evaluate``: ``class_accuracy`` (how often the toolkit's ViT classifier, :mod:`tasks.vit`,
recognises the requested class in generated samples; see :mod:`.judge`), ``judge_accuracy`` (the
judge on the real images of the split) and ``samples.png`` (rows = classes).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import SamplingArguments, TransformerConfig, sampling_kwargs
from panformer.core import distributed as D
from panformer.core.checkpoint import atomic_write_text
from panformer.core.data import assemble_splits
from panformer.core.errors import ConfigError, DataError

from .. import register
from ..base import Task, split_flag
from .data import PixelSet, check_sizes, class_names, dequantise, encode_source
from .judge import Judge, load_judge, train_judge
from .model import PixelLM, build_pixel_lm, nll_per_dim, sample_pixels, sequences
from .plots import save_grid

__all__ = ["ImageGenerationTask", "ImageGenerationArguments", "PixelLM", "nll_per_dim", "sample_pixels"]

MODEL_FIELDS = ("image_size", "levels", "d_model", "n_heads", "n_layers", "d_ff", "dropout")


@dataclass
class ImageGenerationArguments(SamplingArguments):
    image_size: int | None = field(default=None, metadata={"help": "side of the square images modelled (None: 8 for digits, 16 otherwise); sequence length image_size**2"})
    levels: int | None = field(default=None, metadata={"help": "grey levels per pixel = pixel vocabulary (None: 17 for digits, lossless; 16 otherwise)"})
    image_column: str | None = field(default=None, metadata={"help": "table column with image paths or images (as the vit task)"})
    label_column: str | None = field(default=None, metadata={"help": "table column with class labels (as the vit task)"})
    image_root: str | None = field(default=None, metadata={"help": "folder that relative paths in a CSV are resolved against (None: the CSV's folder)"})
    data_root: str = field(default="data", metadata={"help": "root folder of torchvision:NAME datasets (nothing is downloaded)"})
    verify_images: bool = field(default=True, metadata={"help": "check that every image file exists and decodes before training"})
    d_model: int = field(default=128, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_layers: int = field(default=4, metadata={"help": "decoder layers"})
    d_ff: int | None = field(default=None, metadata={"help": "feed-forward width (default: 4 * d_model)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on sublayer outputs and embeddings"})
    judge: str | None = field(default=None, metadata={"help": "vit run directory (`panformer train vit`) that judges samples (None: train a small ViT on the training split, cached in RUN/judge)"})
    judge_steps: int = field(default=1000, metadata={"help": "training steps of the built-in ViT judge"})
    eval_samples_per_class: int = field(default=20, metadata={"help": "samples per class generated for class_accuracy and samples.png"})
    classes: list[str] | None = field(default=None, metadata={"help": "predict: classes to generate (default: the INPUT arguments, else all)"})
    num_samples: int = field(default=8, metadata={"help": "predict: samples per class (columns of the grid)"})
    output: str = field(default="samples.png", metadata={"help": "predict: PNG file of the grid (rows = classes)"})


@register
class ImageGenerationTask(Task):
    name = "image-generation"
    summary = "class-conditional ImageGPT on quantised pixels (core decoder); bits/dim, ViT-judged class accuracy"
    Arguments = ImageGenerationArguments
    main_metric = "loss"
    report_metrics = ("bits_per_dim", "class_accuracy")  # shown by `panformer compare`
    model_fields = MODEL_FIELDS
    predict_without_inputs = True
    defaults = dict(epochs=1000, max_steps=3000, batch_size=64, lr=1e-3, schedule="cosine", warmup_steps=100,
                    min_lr_ratio=0.1, weight_decay=0.1, adam_beta2=0.99, metric_for_best="loss", eval_every=250,
                    log_every=50)
    quick = dict(max_time_minutes=0.5, schedule_clock="time", max_steps=100_000, d_model=64, n_heads=2, n_layers=2, batch_size=32, eval_every=50, warmup_steps=10,
                 lr=3e-3, dropout=0.0, judge_steps=60, eval_samples_per_class=4)
    judged_by = "vit"  # compare passes its run as --judge
    predict_help = "CLASS... classes to generate (or --classes; nothing: every class)"

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.run_dir: Path | None = None  # set when reloaded from a run: the judge is cached there

    # -- data -------------------------------------------------------------------------------------
    def _open(self, source: str, what: str):
        from panformer.tasks.vit.data import open_source

        a = self.args
        return open_source(source, what, 1, a.image_column, a.label_column, a.image_root, a.data_root, a.verify_images)

    def read_split(self, source: str | None, split: str) -> PixelSet | None:
        """``--valid-data`` / ``--test-data`` alone, as pixels of the run's size, levels and classes."""
        if not source:
            return None
        return encode_source(self._open(source, split_flag(split)), self.classes, self.size, self.levels, source)

    def load_data(self) -> None:
        from panformer.tasks.vit.data import digits, digits_split

        a = self.args
        builtin = a.data is None
        if hasattr(self, "spec"):  # a reloaded run keeps its image size, levels and classes
            self.size, self.levels = self.spec["image_size"], self.spec["levels"]
        else:
            self.size = a.image_size if a.image_size is not None else (8 if builtin else 16)
            self.levels = a.levels if a.levels is not None else (17 if builtin else 16)
        check_sizes(self.size, self.levels)
        if a.eval_samples_per_class < 1 or a.judge_steps < 1:
            raise ConfigError("--eval-samples-per-class and --judge-steps must be positive")
        if a.judge and not (Path(a.judge) / "config.json").is_file():
            raise ConfigError(f"--judge {a.judge}: no config.json; expected a run directory of `panformer train vit`")
        if builtin:
            src = digits(1)
            indices = digits_split(src.labels, 0.0 if a.valid_data else a.valid_fraction, a.seed)
            self.data_name = "sklearn digits (8x8, 17 grey levels; the vit task's fixed 25 % test split)"
        else:
            src = self._open(a.data, "--data")
            indices = None
            self.data_name = src.name
        parts = assemble_splits(
            len(src), src.subset, indices=indices,
            valid=self._open(a.valid_data, "--valid-data") if a.valid_data else None,
            test=self._open(a.test_data, "--test-data") if a.test_data else None,
            valid_fraction=a.valid_fraction, test_fraction=a.test_fraction, seed=a.seed, max_examples=a.max_examples)
        if not hasattr(self, "spec"):
            self.classes = class_names(parts["train"].labels)
        what = {"train": a.data or "digits", "valid": a.valid_data or "validation data", "test": a.test_data or "test data"}
        self.splits = {k: encode_source(p, self.classes, self.size, self.levels, what[k]) if p is not None else None
                       for k, p in parts.items()}

    def fit_assets(self) -> None:
        a = self.args
        cfg = TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff or 4 * a.d_model,
                                dropout=a.dropout, activation="gelu", norm_first=True, max_len=self.size * self.size,
                                positional="learned")
        self.spec = {"config": cfg.to_dict(), "levels": self.levels, "image_size": self.size, "classes": self.classes}

    def save_assets(self, run_dir: Path) -> None:
        atomic_write_text(run_dir / "model.json", json.dumps(self.spec, indent=2))
        atomic_write_text(run_dir / "labels.json", json.dumps(self.classes))

    def load_assets(self, run_dir: Path) -> None:
        self.spec = json.loads((Path(run_dir) / "model.json").read_text())
        self.size, self.levels, self.classes = self.spec["image_size"], self.spec["levels"], self.spec["classes"]
        self.run_dir = Path(run_dir).parent

    def train_dataset(self) -> PixelSet:
        return self.splits["train"]

    def collate(self, examples: list[tuple[Tensor, int]]) -> dict[str, Tensor]:
        """→ {"ids": (B, S*S + 1)}: the class token, then the pixels; inputs ids[:, :-1], targets ids[:, 1:]."""
        pixels = torch.stack([p for p, _ in examples])
        return {"ids": sequences(pixels, torch.tensor([y for _, y in examples]), self.levels)}

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> PixelLM:
        if getattr(self.args, "quick", False):
            torch.set_num_threads(1)  # a --quick model is tiny: one thread is fastest, and immune to a busy CPU
        return build_pixel_lm(self.spec)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        ids = batch["ids"]
        logits = model(ids[:, :-1]).float()  # (B, n, levels)
        return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())

    # -- results ----------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, Any]:
        """``loss`` (nats per pixel), ``bits_per_dim``, ``images``. With ``out_dir`` or a reloaded run
        also ``class_accuracy`` (+ per class), ``judge_accuracy``, ``judge``; with ``out_dir`` samples.png."""
        was_training = model.training
        model.eval()
        data = self.splits[split]
        nll = nll_per_dim(model, data.pixels, data.labels)
        metrics: dict[str, Any] = {"loss": nll, "bits_per_dim": nll / math.log(2), "images": len(data)}
        if out_dir is not None or self.run_dir is not None:
            metrics.update(self._judged(model, data, out_dir))
        model.train(was_training)
        return metrics

    def _images(self, pixels: Tensor) -> Tensor:
        """levels (N, S*S) → uint8 (N, 1, S, S)."""
        return dequantise(pixels, self.levels).view(-1, 1, self.size, self.size)

    def generate(self, model: nn.Module, class_ids: list[int], per_class: int) -> Tensor:
        """``per_class`` samples of each class → uint8 (len(class_ids), per_class, S, S)."""
        a = self.args
        labels = torch.tensor(class_ids, dtype=torch.long).repeat_interleave(per_class)
        pixels = sample_pixels(model, labels, self.size * self.size, **sampling_kwargs(a))
        return self._images(pixels).view(len(class_ids), per_class, self.size, self.size)

    def get_judge(self, cache_root: Path) -> Judge:
        """``--judge RUN_DIR``, else the cached judge in ``<run>/judge``, else train it there."""
        a = self.args
        if a.judge:
            judge = load_judge(a.judge)
        else:
            cache = Path(cache_root) / "judge"
            if (cache / "model.safetensors").is_file():
                judge = load_judge(cache)
            else:
                if not all(self.splits.get(k) is not None for k in ("train", "valid")):
                    raise ConfigError(f"no ViT judge cached in {cache} and no training data to train one; pass --judge "
                                      f"RUN_DIR or evaluate with --data")
                imgs = {k: self._images(self.splits[k].pixels) for k in ("train", "valid")}
                names = {k: [self.classes[int(y)] for y in self.splits[k].labels] for k in ("train", "valid")}
                print(f"[panformer] training the ViT judge ({a.judge_steps} steps) -> {cache}", file=sys.stderr, flush=True)
                judge = train_judge(imgs, names, cache, self.size, a.judge_steps, a.seed, getattr(a, "precision", "fp32"))
        judge.check_classes(self.classes)
        return judge

    def _judged(self, model: nn.Module, data: PixelSet, out_dir: Path | None) -> dict[str, Any]:
        k = self.args.eval_samples_per_class
        samples = self.generate(model, list(range(len(self.classes))), k)  # (C, k, S, S)
        if out_dir is not None:
            save_grid(samples[:, : min(k, 10)], self.classes, Path(out_dir) / "samples.png")
        cache_root = self.run_dir or Path(out_dir)  # type: ignore[arg-type]
        if len(self.classes) < 2:
            return {}
        if D.world_size() > 1 and not self.args.judge and not (cache_root / "judge" / "model.safetensors").is_file():
            print("[panformer] no class_accuracy under torchrun without --judge: run `panformer evaluate` afterwards",
                  file=sys.stderr, flush=True)  # the built-in judge trains in one process
            return {}
        judge = self.get_judge(cache_root)
        pred = judge.classify(samples.flatten(0, 1)[:, None])
        want = [c for c in self.classes for _ in range(k)]
        per_class = {c: sum(p == c for p in pred[i * k : (i + 1) * k]) / k for i, c in enumerate(self.classes)}
        real = judge.accuracy(self._images(data.pixels), [self.classes[int(y)] for y in data.labels])
        return {"class_accuracy": sum(p == t for p, t in zip(pred, want)) / len(want), "judge_accuracy": real,
                "samples_per_class": k, "class_accuracy_per_class": per_class, "judge": judge.source}

    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Classes → one grid PNG (``--output``; rows = classes, ``--num-samples`` columns);
        returns [{"grid", "classes", "num_samples"}]."""
        a = self.args
        wanted = [str(c) for c in (inputs or a.classes or self.classes)]
        unknown = [c for c in wanted if c not in self.classes]
        if unknown:
            raise DataError(f"unknown class(es) {unknown}; this model generates {self.classes}")
        if a.num_samples < 1:
            raise ConfigError(f"--num-samples must be positive, got {a.num_samples}")
        images = self.generate(model, [self.classes.index(c) for c in wanted], a.num_samples)
        path = save_grid(images, wanted, a.output)
        return [{"grid": str(path), "classes": wanted, "num_samples": a.num_samples}]

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items() if v is not None)
        return (f"image-generation on {self.data_name}: {sizes} images; {self.size}x{self.size}, {self.levels} levels, "
                f"{len(self.classes)} classes")
