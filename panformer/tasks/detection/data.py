"""Detection data: built-in digit scenes, COCO-format JSON + image folder, Hugging Face datasets.

Every source becomes a list of *records*, one per image::

    {"image_id": int, "width": int, "height": int,
     "boxes": float (N, 4) absolute xyxy pixels, "labels": long (N,) contiguous class ids 0..K-1,
     and one of "image": uint8 (3, H, W) | "path": str | "hf": (datasets.Dataset, row, column)}

COCO-JSON records also hold "coco_file" (the annotation file evaluation scores against) and the crowd
regions, "crowd_boxes" (M, 4) xyxy and "crowd_labels" (M,); ``image_id`` is then the file's own id.

:class:`DetectionDataset` turns records into model inputs (resized, normalised images and
normalised cxcywh boxes) and :func:`collate_detection` pads them into a batch with a pixel mask.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from panformer.core.data import load_hf_dataset
from panformer.core.errors import DataError

__all__ = [
    "DIGIT_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "digit_scenes", "load_coco", "load_hf", "load_image",
    "record_image", "resize_size", "DetectionDataset", "collate_detection", "preprocess",
]

DIGIT_CLASSES = [str(d) for d in range(10)]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (rounding in exported annotations)


# -- built-in data ----------------------------------------------------------------------------------
def digit_scenes(n: int, seed: int, digit_ids: list[int] | None = None, size: int = 64, max_digits: int = 4,
                 min_px: int = 12, max_px: int = 24) -> list[dict[str, Any]]:
    """``n`` scenes of real handwritten digits (scikit-learn's 1,797 8x8 UCI digits) pasted on a
    ``size`` x ``size`` canvas without overlap, each scaled to ``min_px``..``max_px`` pixels.

    Boxes are exact: the tight box of the pasted digit's ink. ``digit_ids`` restricts the digit
    images used (disjoint pools keep train and test scenes apart). Deterministic in ``seed``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pool = list(range(len(digits.images))) if digit_ids is None else list(digit_ids)
    if not pool:
        raise DataError("digit_scenes: empty pool of digit images")
    imgs = torch.from_numpy(digits.images / 16.0).float()[:, None]  # (1797, 1, 8, 8) in [0, 1]
    # every digit at every size, resized once (bilinear): px -> (1797, px, px)
    patches = {px: F.interpolate(imgs, size=(px, px), mode="bilinear", align_corners=False)[:, 0].numpy()
               for px in range(min_px, max_px + 1)}
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    scenes = []
    for s in range(n):
        canvas = noise.normal(0.08, 0.03, (size, size)).astype(np.float32)
        boxes, labels, taken = [], [], []
        for _ in range(rng.randint(1, max_digits)):
            px = rng.randint(min_px, max_px)
            for _try in range(20):  # rejection-sample a free spot
                x, y = rng.randint(0, size - px), rng.randint(0, size - px)
                if all(x + px <= a or a + b <= x or y + px <= c or c + b <= y for a, c, b in taken):
                    break
            else:
                continue
            k = pool[rng.randrange(len(pool))]
            patch = patches[px][k] * rng.uniform(0.7, 1.0)
            ink = patch > 0.15
            if not ink.any():
                continue
            ys, xs = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
            np.maximum(canvas[y : y + px, x : x + px], patch, out=canvas[y : y + px, x : x + px])
            taken.append((x, y, px))
            boxes.append([x + int(xs[0]), y + int(ys[0]), x + int(xs[-1]) + 1, y + int(ys[-1]) + 1])
            labels.append(int(digits.target[k]))
        gray = torch.from_numpy(np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8))
        scenes.append({"image_id": s, "width": size, "height": size, "image": gray[None].expand(3, -1, -1).contiguous(),
                       "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                       "labels": torch.tensor(labels, dtype=torch.long)})
    return scenes


# -- images -----------------------------------------------------------------------------------------
def load_image(path: str | Path, what: str = "image") -> Tensor:
    """RGB image file → uint8 (3, H, W); :class:`DataError` when missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what}: image file not found: {p}")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{what}: cannot read image {p} ({type(e).__name__}: {e}); is the file corrupt?") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _image_size(path: Path, what: str) -> tuple[int, int]:
    """(width, height) from the header after a structural check, without decoding every pixel."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{what}: image file not found: {path}")
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{what}: cannot read image {path} ({type(e).__name__}: {e}); is the file corrupt?") from None
    return size


def record_image(rec: dict[str, Any]) -> Tensor:
    """The record's pixels as uint8 (3, H, W)."""
    if "image" in rec:
        return rec["image"]
    if "path" in rec:
        return load_image(rec["path"], "image")
    ds, row, col = rec["hf"]
    arr = np.asarray(ds[row][col].convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _check_box(box: list[float], W: int, H: int, where: str) -> list[float]:
    """COCO [x, y, w, h] → xyxy clipped to the image; DataError if degenerate or outside."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise DataError(f"{where}: bbox {box!r} must be 4 numbers [x, y, width, height]")
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise DataError(f"{where}: bbox {box!r} has no area; expected width > 0 and height > 0")
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > W + t or y + h > H + t:
        raise DataError(f"{where}: bbox {box!r} lies outside the {W}x{H} image; "
                        f"expected 0 <= x, 0 <= y, x + width <= {W}, y + height <= {H}")
    return [max(x, 0.0), max(y, 0.0), min(x + w, float(W)), min(y + h, float(H))]


# -- COCO JSON --------------------------------------------------------------------------------------
def load_coco(json_path: str | Path, image_dir: str | Path | None, what: str = "--data",
              categories: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a COCO ``instances.json`` and validate it against the images in ``image_dir``.

    ``categories`` (from the training file) fixes the class order; by default the file's own
    ``categories`` sorted by id. ``iscrowd`` annotations are not training targets (as in DETR): they
    go to ``"crowd_boxes"`` (M, 4) xyxy / ``"crowd_labels"`` (M,). Each record also names its file
    (``"coco_file"``), which evaluation scores against (:func:`.metrics.load_coco_gt`).
    Returns (records, categories as [{"id", "name"}]).
    """
    p = Path(json_path)
    if not p.is_file():
        raise DataError(f"{what}: file not found: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"{what}: {p} is empty; expected a COCO JSON object with 'images', 'annotations' and 'categories'")
    try:
        coco = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{what}: {p} is not valid JSON ({e})") from None
    if not isinstance(coco, dict) or not all(k in coco for k in ("images", "annotations", "categories")):
        have = sorted(coco) if isinstance(coco, dict) else type(coco).__name__
        raise DataError(f"{what}: {p}: expected a COCO object with keys 'images', 'annotations', 'categories'; got {have}")
    if not coco["images"]:
        raise DataError(f"{what}: {p} lists no images")
    if not coco["annotations"]:
        raise DataError(f"{what}: {p} has no annotations (no boxes to learn or score)")
    own = sorted(({"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in coco["categories"]),
                 key=lambda c: c["id"])
    if categories is None:
        if not own:
            raise DataError(f"{what}: {p}: 'categories' is empty")
        categories = own
    index = {c["id"]: i for i, c in enumerate(categories)}
    root = Path(image_dir) if image_dir else p.parent
    if not root.is_dir():
        raise DataError(f"{what}: image folder not found: {root} (set it with --image-dir)")
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"{what}: {p}: images[{i}] needs 'id' and 'file_name', got {im!r}"[:300])
        path = root / im["file_name"]
        W, H = _image_size(path, f"{what} {p}: images[{i}]")
        if ("width" in im and int(im["width"]) != W) or ("height" in im and int(im["height"]) != H):
            raise DataError(f"{what} {p}: images[{i}] says {im.get('width')}x{im.get('height')} but {path} is {W}x{H}")
        images[im["id"]] = {"image_id": int(im["id"]), "width": W, "height": H, "path": str(path), "boxes": [], "labels": [],
                            "crowd_boxes": [], "crowd_labels": [], "coco_file": str(p)}
    names = ", ".join(str(c) for c in index)
    for i, ann in enumerate(coco["annotations"]):
        where = f"{what} {p}: annotations[{i}] (id {ann.get('id')})" if isinstance(ann, dict) else f"{what} {p}: annotations[{i}]"
        if not isinstance(ann, dict) or not all(k in ann for k in ("image_id", "category_id", "bbox")):
            raise DataError(f"{where}: needs 'image_id', 'category_id' and 'bbox'")
        rec = images.get(ann["image_id"])
        if rec is None:
            raise DataError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in index:
            raise DataError(f"{where}: unknown category_id {ann['category_id']!r}; known category ids: {names}")
        crowd = "crowd_" if ann.get("iscrowd", 0) else ""
        rec[crowd + "boxes"].append(_check_box(ann["bbox"], rec["width"], rec["height"], f"{where}, image {rec['path']}"))
        rec[crowd + "labels"].append(index[ann["category_id"]])
    records = [_tensors(r) for r in images.values()]
    return records, categories


def _tensors(rec: dict[str, Any]) -> dict[str, Any]:
    for prefix in ("", "crowd_") if "crowd_boxes" in rec else ("",):
        rec[prefix + "boxes"] = torch.tensor(rec[prefix + "boxes"], dtype=torch.float32).reshape(-1, 4)
        rec[prefix + "labels"] = torch.tensor(rec[prefix + "labels"], dtype=torch.long)
    return rec


# -- Hugging Face datasets --------------------------------------------------------------------------
def load_hf(source: str, what: str, split: str | None = None, categories: list[dict[str, Any]] | None = None,
            image_column: str = "image", objects_column: str = "objects", bbox_format: str = "coco"
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A dataset ``NAME[:CONFIG][:SPLIT]`` (hub, local dataset folder or ``save_to_disk`` folder; the split
    defaults to ``split``, else the flag's) with an image column and an objects column
    ``{"bbox": [[...], ...], "category": [...]}`` (the layout of ``cppe-5`` and the HF detection guide).
    ``bbox_format``: ``coco`` (x, y, w, h) or ``xyxy``, in pixels."""
    ds = load_hf_dataset(source, what, split)
    for col, flag in ((image_column, "--image-column"), (objects_column, "--objects-column")):
        if col not in ds.column_names:
            raise DataError(f"{what} {source}: no column {col!r} (columns: {', '.join(ds.column_names)}); name it with {flag}")
    if len(ds) == 0:
        raise DataError(f"{what} {source}: no rows")
    feat = ds.features[objects_column]
    cat_feat = feat.get("category") if isinstance(feat, dict) else getattr(feat, "feature", {}).get("category")
    names = getattr(getattr(cat_feat, "feature", cat_feat), "names", None)
    objects = ds[objects_column]
    if categories is None:
        ids = sorted({int(c) for o in objects for c in (o or {}).get("category", [])})
        if names:
            ids = list(range(len(names)))
        if not ids:
            raise DataError(f"{what} {source}: no boxes in column {objects_column!r}")
        categories = [{"id": i, "name": names[i] if names else str(i)} for i in ids]
    index = {c["id"]: i for i, c in enumerate(categories)}
    sizes = list(zip(ds["width"], ds["height"])) if {"width", "height"} <= set(ds.column_names) else None
    records = []
    for row, obj in enumerate(objects):
        where = f"{what} {source}: row {row + 1}"
        if not isinstance(obj, dict) or "bbox" not in obj or "category" not in obj:
            raise DataError(f"{where}: column {objects_column!r} must hold {{'bbox': [...], 'category': [...]}}")
        if sizes is not None:
            W, H = int(sizes[row][0]), int(sizes[row][1])
        else:
            W, H = ds[row][image_column].size
        boxes, labels = [], []
        for box, cat in zip(obj["bbox"], obj["category"]):
            if int(cat) not in index:
                raise DataError(f"{where}: unknown category {cat!r}; known: {', '.join(str(c) for c in index)}")
            if bbox_format == "xyxy" and isinstance(box, (list, tuple)) and len(box) == 4:
                box = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            boxes.append(_check_box(list(box), W, H, where))
            labels.append(index[int(cat)])
        records.append(_tensors({"image_id": row, "width": W, "height": H, "boxes": boxes, "labels": labels,
                                 "hf": (ds, row, image_column)}))
    return records, categories


# -- model inputs -----------------------------------------------------------------------------------
def resize_size(w: int, h: int, image_size: int | None, max_size: int | None) -> tuple[int, int]:
    """DETR's rule: the shorter side becomes ``image_size`` unless the longer would exceed ``max_size``.
    Returns (new_w, new_h); the original size when ``image_size`` is None."""
    if image_size is None:
        return w, h
    short, long = min(w, h), max(w, h)
    size = image_size
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if w <= h:
        return size, int(round(size * h / w))
    return int(round(size * w / h)), size


def preprocess(image: Tensor, image_size: int | None = None, max_size: int | None = None) -> Tensor:
    """uint8 (3, H, W) → normalised float (3, h, w) resized by :func:`resize_size`."""
    x = image.float().div(255.0)
    w, h = resize_size(x.shape[2], x.shape[1], image_size, max_size)
    if (h, w) != tuple(x.shape[1:]):
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


class DetectionDataset(Dataset):
    """Records → {"image": (3, h, w), "boxes": (N, 4) cxcywh in [0, 1], "labels": (N,),
    "orig_size": (2,) [H, W], "image_id": ()}; ``hflip`` flips half the images (training only)."""

    def __init__(self, records: list[dict[str, Any]], image_size: int | None = None, max_size: int | None = None,
                 hflip: bool = False) -> None:
        self.records, self.image_size, self.max_size, self.hflip = records, image_size, max_size, hflip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        rec = self.records[i]
        image = preprocess(record_image(rec), self.image_size, self.max_size)
        W, H = rec["width"], rec["height"]
        boxes = rec["boxes"] / torch.tensor([W, H, W, H], dtype=torch.float32)
        if self.hflip and random.random() < 0.5:
            image = image.flip(-1)
            boxes = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor([1.0, 0.0, 1.0, 0.0])
        return {"image": image, "boxes": box_convert(boxes, "xyxy", "cxcywh"), "labels": rec["labels"],
                "orig_size": torch.tensor([H, W]), "image_id": torch.tensor(rec["image_id"])}


def collate_detection(examples: list[dict[str, Tensor]]) -> dict[str, Any]:
    """Pad images to the largest in the batch.

    Returns {"images": (B, 3, H, W), "mask": bool (B, H, W) True at padding,
    "targets": [{"boxes": (N_i, 4) cxcywh, "labels": (N_i,)}], "orig_sizes": (B, 2), "image_ids": (B,)}.
    """
    H = max(e["image"].shape[1] for e in examples)
    W = max(e["image"].shape[2] for e in examples)
    images = torch.zeros(len(examples), 3, H, W)
    mask = torch.ones(len(examples), H, W, dtype=torch.bool)
    for i, e in enumerate(examples):
        _, h, w = e["image"].shape
        images[i, :, :h, :w] = e["image"]
        mask[i, :h, :w] = False
    return {"images": images, "mask": mask,
            "targets": [{"boxes": e["boxes"], "labels": e["labels"]} for e in examples],
            "orig_sizes": torch.stack([e["orig_size"] for e in examples]),
            "image_ids": torch.stack([e["image_id"] for e in examples])}
