"""The ``vit`` task: image classification with a Vision Transformer on the core Encoder."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from panformer.core.augment import random_affine
from panformer.core.data import assemble_splits
from panformer.core.errors import ConfigError, DataError
from panformer.core.metrics import classification_metrics, confusion_matrix_png, top_k_accuracy

from .. import register
from ..base import Task, split_flag
from .cnn import CNNConfig, SmallCNN
from .convert import config_from_torchvision_state, convert_torchvision_state, load_state_file
from .data import ImageDataset, ImageSource, build_transform, digits, digits_split, load_image, open_source
from .model import ViTConfig, VisionTransformer, interpolate_pos_embed
from .plots import rollout_pngs

__all__ = ["VitTask", "VitArguments"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class VitArguments:
    image_column: str | None = field(default=None, metadata={"help": "table column with image paths or images (None: the first of image, img, path, file, ...)"})
    label_column: str | None = field(default=None, metadata={"help": "table column with labels (None: the first of label, labels, fine_label, class, ...)"})
    image_root: str | None = field(default=None, metadata={"help": "folder that relative paths in a CSV are resolved against (None: the CSV's folder)"})
    data_root: str = field(default="data", metadata={"help": "root folder of torchvision:NAME datasets (files must be present; nothing is downloaded)"})
    verify_images: bool = field(default=True, metadata={"help": "check that every image file exists and decodes before training"})
    image_size: int | None = field(default=None, metadata={"help": "side of the square model input (None: 16 for digits, 32 otherwise, the checkpoint's with --pretrained)"})
    patch_size: int | None = field(default=None, metadata={"help": "patch side in pixels (None: 4 for digits, image_size / 8 otherwise, the checkpoint's with --pretrained)"})
    channels: int | None = field(default=None, metadata={"help": "1 (grayscale) or 3 (RGB) input channels (None: 1 for digits and grayscale torchvision sets, else 3)"})
    arch: str = field(default="transformer", metadata={"help": "transformer (ViT) | cnn (baseline: a small CNN, tasks/vit/cnn.py)",
                                                       "choices": ["transformer", "cnn"]})
    cnn_width: int = field(default=32, metadata={"help": "--arch cnn: channels of the first conv block (doubled by the second; dropout 0.25)"})
    d_model: int = field(default=192, metadata={"help": "model width (ViT-Ti: 192)"})
    n_heads: int = field(default=3, metadata={"help": "attention heads"})
    n_layers: int = field(default=6, metadata={"help": "encoder layers"})
    d_ff: int = field(default=384, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and sublayer outputs"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention probabilities"})
    augment: str = field(default="auto", metadata={"help": "auto | none | affine | crop-flip (auto: affine for 1-channel images, crop-flip for RGB)", "choices": ["auto", "none", "affine", "crop-flip"]})
    pretrained: str | None = field(default=None, metadata={"help": "torchvision ViT state-dict file (.pth or .safetensors, e.g. vit_b_16) to fine-tune; model options then come from it"})
    pretrained_heads: int | None = field(default=None, metadata={"help": "attention heads of --pretrained when its width is not a torchvision one"})
    freeze_encoder: bool = field(default=False, metadata={"help": "train only the head (linear probe of --pretrained weights)"})
    rollout_images: int = field(default=4, metadata={"help": "attention-rollout PNGs written by evaluation with an output folder"})
    eval_batch_size: int = field(default=256, metadata={"help": "images per evaluation / prediction batch"})
    baseline: bool = field(default=False, metadata={"help": "also fit an RBF SVC on the pixels of the same split"})


@register
class VitTask(Task):
    name = "vit"
    summary = "image classification: Vision Transformer (patches + [CLS] + core pre-LN Encoder); accuracy / F1 / top-5"
    Arguments = VitArguments
    main_metric = "accuracy"
    report_metrics = ("accuracy", "f1")  # shown by `panformer compare`
    model_fields = ("arch", "cnn_width", "image_size", "patch_size", "channels", "d_model", "n_heads", "n_layers", "d_ff",
                    "pretrained", "pretrained_heads")
    defaults = dict(epochs=100, batch_size=64, lr=1e-3, schedule="cosine", warmup_steps=200, weight_decay=0.05,
                    adam_beta2=0.999, adam_eps=1e-8, metric_for_best="accuracy", label_smoothing=0.1)
    quick = dict(max_time_minutes=0.75, schedule_clock="time", max_steps=100_000, d_model=96, n_heads=4, n_layers=2,
                 d_ff=192, patch_size=4, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=500,
                 label_smoothing=0.0, rollout_images=2, load_best_model_at_end=True)  # batched affine augmentation: 1,700 steps 98.7-98.9 %
    predict_help = "IMAGE... image files to classify"
    baselines = {"cnn": {"arch": "cnn"}}

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        if getattr(args, "quick", False) and "OMP_NUM_THREADS" not in os.environ:
            # The --quick model (70 k parameters) is overhead-bound: on a shared CPU one thread is
            # 5-10x faster than several spinning ones. OMP_NUM_THREADS overrides this.
            torch.set_num_threads(1)

    # -- data -------------------------------------------------------------------------------------
    def _channels(self, source_hint: str | None) -> int:
        a = self.args
        if a.pretrained:
            return 3
        if a.channels is not None:
            if a.channels not in (1, 3):
                raise ConfigError(f"--channels must be 1 or 3, got {a.channels}")
            return a.channels
        gray = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST", "USPS", "Omniglot")
        if source_hint is None or (source_hint.startswith("torchvision:") and source_hint.split(":")[1] in gray):
            return 1
        return 3

    def _open(self, source: str, what: str) -> ImageSource:
        a = self.args
        return open_source(source, what, self.channels, a.image_column, a.label_column, a.image_root, a.data_root,
                           a.verify_images)

    def read_split(self, source: str | None, split: str) -> ImageSource | None:
        return self._open(source, split_flag(split)) if source else None

    def load_data(self) -> None:
        a = self.args
        # a reloaded run (evaluate / predict) keeps the channels it was trained with
        self.channels = self.prep["channels"] if hasattr(self, "prep") else self._channels(a.data)
        if a.data is None:
            src = digits(self.channels)
            indices = digits_split(src.labels, 0.0 if a.valid_data else a.valid_fraction, a.seed)
            self.data_name = "sklearn digits (8x8; fixed 25 % stratified test split, random_state 0)"
        else:
            src = self._open(a.data, "--data")
            indices = None
            self.data_name = src.name
        self.splits = assemble_splits(
            len(src), src.subset, indices=indices,
            valid=self.read_split(a.valid_data, "valid"), test=self.read_split(a.test_data, "test"),
            valid_fraction=a.valid_fraction, test_fraction=a.test_fraction, seed=a.seed, max_examples=a.max_examples)

    def fit_assets(self) -> None:
        a = self.args
        if getattr(a, "arch", "transformer") == "cnn" and (a.pretrained or a.freeze_encoder):
            raise ConfigError("--arch cnn trains a small CNN from scratch; drop --pretrained / --freeze-encoder")
        labels = set(self.splits["train"].labels)
        self.labels = sorted(labels, key=lambda v: (str(type(v)), v))
        if len(self.labels) < 2:
            raise DataError(f"training data has a single class ({self.labels[0]!r}); need at least two")
        self._check_labels(("valid", "test"))
        if a.pretrained:
            self._pretrained_state = load_state_file(a.pretrained)
            cfg = config_from_torchvision_state(self._pretrained_state, a.pretrained_heads)
            if a.patch_size and a.patch_size != cfg.patch_size:
                raise ConfigError(f"--patch-size {a.patch_size} differs from the {cfg.patch_size}-pixel patches of --pretrained {a.pretrained}")
            cfg.image_size = a.image_size or cfg.image_size
            cfg.dropout, cfg.attention_dropout = a.dropout, a.attention_dropout
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            size = a.image_size or (16 if a.data is None else 32)
            patch = a.patch_size or (4 if a.data is None else max(size // 8, 1))
            patch = 1 if self._is_cnn() else patch  # the CNN baseline has no patches
            cfg = ViTConfig(image_size=size, patch_size=patch, in_channels=self.channels,
                            d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff, dropout=a.dropout,
                            attention_dropout=a.attention_dropout, num_classes=len(self.labels))
            mean, std = (0.5,) * self.channels, (0.5,) * self.channels
        cfg.num_classes = len(self.labels)
        if not self._is_cnn():
            ViTConfig(**cfg.to_dict())  # validate (image size divisible by the patch size)
        else:  # validate the baseline's shape before a run directory is written
            CNNConfig(in_channels=self.channels, num_classes=len(self.labels), image_size=cfg.image_size, width=a.cnn_width)
        augment = a.augment if a.augment != "auto" else ("affine" if self.channels == 1 else "crop-flip")
        self.prep = {"vit": cfg.to_dict(), "mean": list(mean), "std": list(std), "augment": augment, "channels": self.channels}

    def check_assets(self, splits: Sequence[str] | None = None) -> None:
        self._check_labels(list(self.splits) if splits is None else splits)

    def _check_labels(self, splits: Sequence[str]) -> None:
        index = {v: i for i, v in enumerate(self.labels)}
        for split in splits:
            src = self.splits.get(split)
            for i, y in enumerate(src.labels if src is not None else []):
                if y not in index:
                    raise DataError(f"{split} data: {src.describe(i)}: unknown label {y!r}; training labels are {self.labels[:20]}")

    def save_assets(self, run_dir: Path) -> None:
        (run_dir / "labels.json").write_text(json.dumps(self.labels))
        (run_dir / "preprocess.json").write_text(json.dumps(self.prep, indent=2))

    def load_assets(self, run_dir: Path) -> None:
        self.labels = json.loads((run_dir / "labels.json").read_text())
        self.prep = json.loads((run_dir / "preprocess.json").read_text())
        self.channels = self.prep["channels"]

    def _transform(self, train: bool):
        p = self.prep
        return build_transform(p["vit"]["image_size"], p["mean"], p["std"], p["augment"] if train else "none", train)

    def _dataset(self, split: str, train: bool = False) -> ImageDataset:
        random_aug = train and self.prep["augment"] == "crop-flip"  # per image; affine: per batch, in loss()
        return ImageDataset(self.splits[split], {v: i for i, v in enumerate(self.labels)}, self._transform(train),
                            cache_mb=0.0 if random_aug else 256.0)

    def train_dataset(self) -> ImageDataset:
        return self._dataset("train", train=True)

    def collate(self, examples: list[tuple[Tensor, int]]) -> dict[str, Tensor]:
        """→ {"images": (B, C, S, S) float, "labels": (B,) long}."""
        return {"images": torch.stack([x for x, _ in examples]), "labels": torch.tensor([y for _, y in examples])}

    # -- model ------------------------------------------------------------------------------------
    def _is_cnn(self) -> bool:
        return getattr(self.args, "arch", "transformer") == "cnn"

    def build_model(self) -> nn.Module:
        if self._is_cnn():  # the baseline; it reads the same pixels (image_size, channels) as the ViT
            vit = self.prep["vit"]
            return SmallCNN(CNNConfig(in_channels=vit["in_channels"], num_classes=vit["num_classes"],
                                      image_size=vit["image_size"], width=self.args.cnn_width))
        model = VisionTransformer(ViTConfig(**self.prep["vit"]))
        if getattr(self.args, "freeze_encoder", False):
            for name, p in model.named_parameters():
                p.requires_grad = name.startswith(("head.", "pre_logits."))
        return model

    def load_pretrained(self, model: nn.Module) -> None:
        """Copy the torchvision weights of ``--pretrained``; a head of another class count starts at zero."""
        if not self.args.pretrained:
            return
        state = convert_torchvision_state(self._pretrained_state)
        cfg = model.cfg
        state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], (cfg.grid, cfg.grid))
        if state["head.weight"].shape[0] != cfg.num_classes:
            state.pop("head.weight"), state.pop("head.bias")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"head.weight", "head.bias"}:
            raise ConfigError(f"--pretrained {self.args.pretrained}: does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        images = batch["images"]
        if self.prep["augment"] == "affine":  # training only: evaluation never goes through the loss
            images = random_affine(images)
        return F.cross_entropy(model(images).float(), batch["labels"], label_smoothing=self.args.label_smoothing)

    # -- results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, model: nn.Module, ds: torch.utils.data.Dataset) -> tuple[Tensor, Tensor]:
        """Logits (N, C) float32 and labels (N,) over ``ds`` in order."""
        device = next(model.parameters()).device
        loader = DataLoader(ds, batch_size=self.args.eval_batch_size, shuffle=False, collate_fn=self.collate)
        logits, labels = [], []
        for batch in loader:
            logits.append(model(batch["images"].to(device)).float().cpu())
            labels.append(batch["labels"])
        return torch.cat(logits), torch.cat(labels)

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        """``accuracy``, ``precision``, ``recall``, ``f1`` (macro), ``loss`` and, with more than five
        classes, ``top5_accuracy``. With ``out_dir``: confusion_matrix.png and attention_rollout_*.png."""
        ds = self._dataset(split)
        was_training = model.training
        model.eval()
        logits, y = self._logits(model, ds)
        pred = logits.argmax(-1)
        metrics = classification_metrics(y.numpy(), pred.numpy(), labels=list(range(len(self.labels))))
        if len(self.labels) > 5:
            metrics["top5_accuracy"] = top_k_accuracy(y.numpy(), logits.numpy(), k=5)
        metrics["loss"] = float(F.cross_entropy(logits, y))
        if out_dir is not None:
            names = [str(v) for v in self.labels]
            confusion_matrix_png(y.numpy(), pred.numpy(), names, Path(out_dir) / "confusion_matrix.png", title=f"vit: {split}")
            n = 0 if self._is_cnn() else min(self.args.rollout_images, len(ds))  # a CNN has no attention
            if n > 0:
                rollout_pngs(model, torch.stack([ds[i][0] for i in range(n)]), [names[int(y[i])] for i in range(n)],
                             names, self.prep["mean"], self.prep["std"], Path(out_dir))
        model.train(was_training)
        return metrics

    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Image paths → {"image", "label", "probability", "top5": [[label, probability], ...]}."""
        tf = self._transform(train=False)
        images = [tf(load_image(p, self.channels, "predict")) for p in inputs]
        device = next(model.parameters()).device
        out = []
        with torch.no_grad():
            for s in range(0, len(images), self.args.eval_batch_size):
                probs = model(torch.stack(images[s : s + self.args.eval_batch_size]).to(device)).float().softmax(-1).cpu()
                for path, p in zip(inputs[s:], probs):
                    top = p.topk(min(5, len(self.labels)))
                    out.append({"image": path, "label": self.labels[int(top.indices[0])], "probability": round(float(top.values[0]), 4),
                                "top5": [[self.labels[int(i)], round(float(v), 4)] for v, i in zip(top.values, top.indices)]})
        return out

    def pixels(self, split: str, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Flattened pixels in [0, 1] (N, C*s*s) at side ``size`` (default min(image_size, 32)) and labels (N,)."""
        s = size or min(self.prep["vit"]["image_size"], 32)
        tf = build_transform(s, [0.0] * self.channels, [1.0] * self.channels, "none", train=False)
        src, index = self.splits[split], {v: i for i, v in enumerate(self.labels)}
        x = np.stack([tf(src.load(i)).flatten().numpy() for i in range(len(src))])
        return x, np.array([index[v] for v in src.labels])

    def baseline(self, out_dir: Path | None = None) -> dict[str, Any]:
        """An RBF SVC on raw pixels, fitted on the same training split (digits: the guide's
        ``SVC(gamma=0.001, C=10)`` on 0..16 grey levels, i.e. gamma 0.256 on [0, 1] pixels)."""
        import time

        from sklearn.svm import SVC

        t0 = time.time()
        split = "test" if self.splits.get("test") is not None else "valid"
        if self.args.data is None:
            (xtr, ytr), (xte, yte) = self.pixels("train", 8), self.pixels(split, 8)
            clf = SVC(C=10.0, gamma=0.001 * 16 ** 2)
        else:
            (xtr, ytr), (xte, yte) = self.pixels("train"), self.pixels(split)
            clf = SVC(C=10.0, gamma="scale")
        pred = clf.fit(xtr, ytr).predict(xte)
        m = classification_metrics(yte, pred, labels=list(range(len(self.labels))))
        m.update(model="svc-rbf-pixels", split=split, train_time_s=round(time.time() - t0, 2))
        return m

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items() if v is not None)
        shown = self.labels if len(self.labels) <= 12 else self.labels[:12] + ["..."]
        return f"vit on {self.data_name}: {sizes}; {len(self.labels)} classes {shown}"
