"""Object detection with DETR on the core Transformer (Carion et al. 2020).

Data: built-in scenes of real handwritten digits pasted on a canvas (exact boxes); COCO-format
``instances.json`` + image folder; Hugging Face datasets with an ``objects`` column of boxes.
Metrics: COCO ``map`` / ``map_50`` / ``map_75`` (pycocotools; for COCO-JSON input against the original
annotation file, with a COCO results JSON written per split), per-class precision / recall at IoU 0.5.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from panformer.core.checkpoint import atomic_write_json
from panformer.core.data import parse_hub_spec, seeded_split
from panformer.core.errors import ConfigError, DataError

from .. import register
from ..base import Task, split_flag
from .backbone import BACKBONES, build_backbone
from .data import (DIGIT_CLASSES, DetectionDataset, collate_detection, digit_scenes, load_coco, load_hf, load_image,
                   preprocess, record_image)
from .loss import SetCriterion
from .matcher import HungarianMatcher
from .metrics import coco_evaluate, coco_map, coco_results, draw_detections, load_coco_gt, per_class_pr
from .model import DETR, MLP, detr_config, detr_r50, postprocess

__all__ = ["DetectionTask", "DetectionArguments", "DETR", "MLP", "SetCriterion", "HungarianMatcher", "detr_config",
           "detr_r50", "postprocess", "digit_scenes", "load_coco", "load_hf", "coco_map", "coco_evaluate", "coco_results",
           "load_coco_gt", "per_class_pr"]

PREDICT_FIELDS = ("score_threshold", "draw_dir")


@dataclass
class DetectionArguments:
    image_dir: str | None = field(default=None, metadata={"help": "image folder of a COCO --data JSON (default: the JSON's folder)"})
    valid_image_dir: str | None = field(default=None, metadata={"help": "image folder of --valid-data (default: --image-dir)"})
    test_image_dir: str | None = field(default=None, metadata={"help": "image folder of --test-data (default: --image-dir)"})
    image_column: str = field(default="image", metadata={"help": "Hugging Face data: the image column"})
    objects_column: str = field(default="objects", metadata={"help": "Hugging Face data: column of {'bbox': [...], 'category': [...]}"})
    bbox_format: str = field(default="coco", metadata={"help": "Hugging Face data: box format, coco (x, y, w, h) or xyxy", "choices": ["coco", "xyxy"]})
    builtin_scenes: int = field(default=6000, metadata={"help": "built-in data: number of digit scenes (train + valid + test)"})
    scene_size: int = field(default=64, metadata={"help": "built-in data: canvas size in pixels"})
    max_digits: int = field(default=4, metadata={"help": "built-in data: at most this many digits per scene"})
    image_size: int | None = field(default=None, metadata={"help": "resize the shorter image side to this (DETR: 800); None keeps sizes"})
    max_size: int | None = field(default=None, metadata={"help": "cap on the longer side after resizing (DETR: 1333)"})
    hflip: bool = field(default=False, metadata={"help": "random horizontal flips in training"})
    backbone: str = field(default="small", metadata={"help": "small conv net (small images) or a torchvision ResNet", "choices": list(BACKBONES)})
    trainable_backbone_layers: int = field(default=5, metadata={"help": "ResNet stages trained, from the top (5: all; 3: DETR's recipe with ImageNet weights)"})
    backbone_weights: str | None = field(default=None, metadata={"help": "torchvision ResNet state-dict file (.pth / .safetensors) to start from"})
    backbone_pretrain_steps: int = field(default=0, metadata={
        "help": "first train the backbone this many steps to classify crops of the training boxes (stands in for ImageNet weights)"})
    small_channels: list[int] = field(default_factory=lambda: [32, 64, 128], metadata={"help": "small backbone: channels of its stride-2 stages"})
    d_model: int = field(default=128, metadata={"help": "transformer width (DETR: 256)"})
    n_heads: int = field(default=8, metadata={"help": "attention heads"})
    n_encoder_layers: int = field(default=3, metadata={"help": "encoder layers (DETR: 6)"})
    n_decoder_layers: int = field(default=3, metadata={"help": "decoder layers (DETR: 6)"})
    d_ff: int = field(default=512, metadata={"help": "feed-forward width (DETR: 2048)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the transformer"})
    num_queries: int = field(default=12, metadata={"help": "object queries: the most objects an image can have (DETR: 100)"})
    aux_loss: bool = field(default=True, metadata={"help": "losses at every decoder layer"})
    eos_coef: float = field(default=0.1, metadata={"help": "cross-entropy weight of the no-object class"})
    cost_class: float = field(default=1.0, metadata={"help": "matching cost weight of the class probability"})
    cost_bbox: float = field(default=5.0, metadata={"help": "matching cost weight of the L1 box distance"})
    cost_giou: float = field(default=2.0, metadata={"help": "matching cost weight of the generalised IoU"})
    bbox_loss_coef: float = field(default=5.0, metadata={"help": "loss weight of the L1 box loss"})
    giou_loss_coef: float = field(default=2.0, metadata={"help": "loss weight of the GIoU loss"})
    score_threshold: float = field(default=0.5, metadata={"help": "keep detections scoring at least this (predict, pictures, precision/recall)"})
    draw_dir: str | None = field(default=None, metadata={"help": "predict: also write each image with its boxes as PNG here"})
    num_draw: int = field(default=8, metadata={"help": "evaluate: images drawn with predictions into OUT/predictions/"})


@register
class DetectionTask(Task):
    name = "detection"
    summary = "object detection (DETR): CNN backbone + core encoder-decoder with object queries; COCO mAP"
    Arguments = DetectionArguments
    main_metric = "map"
    report_metrics = ("map", "map_50")  # shown by `panformer compare`
    model_fields = tuple(f.name for f in fields(DetectionArguments) if f.name not in PREDICT_FIELDS)
    defaults = dict(epochs=60, batch_size=32, lr=5e-4, weight_decay=1e-4, schedule="cosine", warmup_steps=200,
                    grad_clip=0.1, metric_for_best="map", adam_beta2=0.999, adam_eps=1e-8)
    quick = dict(max_time_minutes=1.2, schedule_clock="time", max_steps=100_000, builtin_scenes=2000, max_digits=2,
                 d_model=64, n_heads=4, n_encoder_layers=1,
                 n_decoder_layers=2, d_ff=128, num_queries=6, small_channels=[16, 32, 64], batch_size=16,
                 warmup_steps=10, eval_every=400, num_draw=2, lr=1e-3)
    predict_help = "IMAGE... image files to detect objects in"

    # -- data -------------------------------------------------------------------------------------
    def _read(self, source: str, what: str, image_dir: str | None) -> list[dict[str, Any]]:
        a = self.args
        p = Path(source).expanduser()
        cats = getattr(self, "categories", None)
        if p.suffix.lower() == ".json" or p.is_file():
            if p.suffix.lower() != ".json":
                raise DataError(f"{what}: {p}: expected a COCO instances .json file (with --image-dir), "
                                f"a Hugging Face dataset folder or a hub name")
            records, cats = load_coco(p, image_dir or a.image_dir, what, cats)
        elif parse_hub_spec(source) is not None:
            records, cats = load_hf(source, what, None, cats, a.image_column, a.objects_column, a.bbox_format)
        else:
            raise DataError(f"{what}: file not found: {source}")
        self.categories = cats
        return records

    def read_split(self, source: str | None, split: str) -> list[dict[str, Any]] | None:
        return self._read(source, split_flag(split), getattr(self.args, f"{split}_image_dir")) if source else None

    def load_data(self) -> None:
        a = self.args
        fracs = [0.0 if a.valid_data else a.valid_fraction, 0.0 if a.test_data else a.test_fraction]
        parts: dict[str, list | None] = {}
        if a.data is None:
            if a.builtin_scenes < 10 or a.scene_size < 32 or a.max_digits < 1:
                raise ConfigError("built-in scenes need --builtin-scenes >= 10, --scene-size >= 32 and --max-digits >= 1")
            self.categories = [{"id": i, "name": n} for i, n in enumerate(DIGIT_CLASSES)]
            pools = seeded_split(1797, fracs, a.seed)  # disjoint digit images per split
            counts = [a.builtin_scenes - sum(int(round(f * a.builtin_scenes)) for f in fracs)]
            counts += [int(round(f * a.builtin_scenes)) for f in fracs]
            for k, (name, pool, n) in enumerate(zip(("train", "valid", "test"), pools, counts)):
                parts[name] = digit_scenes(n, a.seed * 10 + k, pool, a.scene_size, a.max_digits) if n else []
            self.data_name = "built-in digit scenes (sklearn digits)"
        else:
            records = self._read(a.data, "--data", a.image_dir)
            for name, ids in zip(("train", "valid", "test"), seeded_split(len(records), fracs, a.seed)):
                parts[name] = [records[i] for i in ids]
            self.data_name = Path(a.data).name
        for name, src in (("valid", a.valid_data), ("test", a.test_data)):
            if src:
                parts[name] = self.read_split(src, name)
        if a.max_examples:
            parts["train"] = parts["train"][: a.max_examples]
        if not parts["train"]:
            raise DataError("no training images left after splitting; pass more --data")
        self.splits = {k: (v or None) for k, v in parts.items()}
        if self.splits["valid"] is None:
            raise DataError("empty validation split; raise --valid-fraction or pass --valid-data")

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    def save_assets(self, run_dir: Path) -> None:
        (run_dir / "categories.json").write_text(json.dumps(self.categories, indent=1))

    def load_assets(self, run_dir: Path) -> None:
        self.categories = json.loads((run_dir / "categories.json").read_text())

    def _dataset(self, split: str, train: bool = False) -> DetectionDataset:
        a = self.args
        return DetectionDataset(self.splits[split], a.image_size, a.max_size, hflip=train and a.hflip)

    def train_dataset(self) -> DetectionDataset:
        return self._dataset("train", train=True)

    def collate(self, examples: list[dict[str, Tensor]]) -> dict[str, Any]:
        return collate_detection(examples)

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> DETR:
        a = self.args
        backbone = build_backbone(a.backbone, a.trainable_backbone_layers, a.backbone_weights, tuple(a.small_channels))
        cfg = detr_config(a.d_model, a.n_heads, a.n_encoder_layers, a.n_decoder_layers, a.d_ff, a.dropout)
        return DETR(backbone, cfg, len(self.categories), a.num_queries, a.aux_loss)

    def load_pretrained(self, model: nn.Module) -> None:
        """``--backbone-pretrain-steps``: warm-start the backbone on crops of the training boxes."""
        a = self.args
        if a.backbone_pretrain_steps > 0:
            import sys

            from panformer.core.runtime import resolve_device

            from .pretrain import pretrain_backbone

            torch.manual_seed(a.seed)
            model.backbone.to(resolve_device(a.device))
            stats = pretrain_backbone(model.backbone, self.splits["train"], len(self.categories), a.backbone_pretrain_steps,
                                      lr=1e-3, seed=a.seed)
            print("[panformer] backbone pretraining on box crops: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()),
                  file=sys.stderr, flush=True)

    @property
    def criterion(self) -> SetCriterion:
        if getattr(self, "_criterion", None) is None:
            a = self.args
            matcher = HungarianMatcher(a.cost_class, a.cost_bbox, a.cost_giou)
            self._criterion = SetCriterion(len(self.categories), matcher, a.eos_coef, 1.0, a.bbox_loss_coef, a.giou_loss_coef)
        return self._criterion

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.criterion(model(batch["images"], batch["mask"]), batch["targets"])

    # -- results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, model: nn.Module, split: str, batch_size: int = 32) -> tuple[list[dict[str, Tensor]], float]:
        """Detections (absolute xyxy in original pixels) for every image of ``split`` and the mean loss."""
        device = next(model.parameters()).device
        ds = self._dataset(split)
        preds, loss_sum = [], 0.0
        for s in range(0, len(ds), batch_size):
            batch = collate_detection([ds[i] for i in range(s, min(s + batch_size, len(ds)))])
            out = model(batch["images"].to(device), batch["mask"].to(device))
            loss, _ = self.criterion(out, [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]])
            loss_sum += float(loss) * len(batch["targets"])
            preds += [{k: v.cpu() for k, v in p.items()} for p in postprocess(out, batch["orig_sizes"])]
        return preds, loss_sum / max(len(ds), 1)

    def _coco_gt(self, path: str) -> Any:
        """The original annotation file as a pycocotools ``COCO``, parsed once per task."""
        cache = self.__dict__.setdefault("_coco_gts", {})
        if path not in cache:
            cache[path] = load_coco_gt(path)
        return cache[path]

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        """{"map", "map_50", "map_75", "map_small/medium/large", "mar_1/10/100", "precision_50",
        "recall_50", "f1_50", "precision_50/<class>", "recall_50/<class>", "loss"}.

        COCO-JSON data is scored on the official protocol: the detections, in the file's image ids,
        category ids and original pixels, against the annotation file itself (crowd regions ignored,
        small / medium / large by the file's ``area``), over this split's images. With ``out_dir``
        also ``detections_<split>.json`` (COCO results: [{"image_id", "category_id", "bbox": [x, y, w, h],
        "score"}]) and ``predictions/*.png`` (red: detections >= score_threshold, green: ground truth)."""
        was_training = model.training
        model.eval()
        preds, loss = self._run(model, split, self.args.batch_size)
        model.train(was_training)
        gts = self.splits[split]
        results = coco_results(preds, [r["image_id"] for r in gts], [c["id"] for c in self.categories])
        files = {r.get("coco_file") for r in gts}
        if len(files) == 1 and None not in files:
            metrics = coco_evaluate(results, self._coco_gt(files.pop()), [r["image_id"] for r in gts])
        else:  # built-in scenes, Hugging Face data: a ground truth re-built from the records
            metrics = coco_map(preds, gts, len(self.categories))
        metrics.update(per_class_pr(preds, gts, self.class_names, self.args.score_threshold))
        metrics["loss"] = loss
        if out_dir is not None:
            atomic_write_json(Path(out_dir) / f"detections_{split}.json", results, indent=None)
            for rec, pred in list(zip(gts, preds))[: self.args.num_draw]:
                scale = max(1, 256 // max(rec["width"], rec["height"]))
                png = Path(out_dir) / "predictions" / f"{split}_{rec['image_id']}.png"
                draw_detections(record_image(rec), pred, self.class_names, png, self.args.score_threshold, gt=rec, scale=scale)
        return metrics

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Per image {"image": path, "detections": [{"label", "score", "box": [x0, y0, x1, y1]}]}."""
        a = self.args
        device = next(model.parameters()).device
        results = []
        for path in inputs:
            image = load_image(path, "predict")
            x = preprocess(image, a.image_size, a.max_size)[None].to(device)
            pred = {k: v.cpu() for k, v in postprocess(model(x), torch.tensor([list(image.shape[1:])]))[0].items()}
            keep = (pred["scores"] >= a.score_threshold).nonzero()[:, 0].cpu()
            keep = keep[pred["scores"][keep].argsort(descending=True)]
            dets = [{"label": self.class_names[int(pred["labels"][i])], "score": round(float(pred["scores"][i]), 4),
                     "box": [round(float(v), 1) for v in pred["boxes"][i]]} for i in keep]
            if a.draw_dir:
                scale = max(1, 256 // max(image.shape[1:]))
                draw_detections(image, pred, self.class_names,
                                Path(a.draw_dir) / (Path(path).stem + ".png"), a.score_threshold, scale=scale)
            results.append({"image": path, "detections": dets})
        return results

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,} images" for k, v in self.splits.items() if v is not None)
        n_boxes = sum(len(r["labels"]) for r in self.splits["train"])
        return f"detection on {self.data_name}: {sizes}; {n_boxes:,} training boxes, {len(self.categories)} classes"
