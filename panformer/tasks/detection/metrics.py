"""Detection metrics: COCO mAP (pycocotools), per-class precision / recall at IoU 0.5 (scikit-learn)
and pictures of predictions (``torchvision.utils.draw_bounding_boxes``)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["coco_map", "per_class_pr", "draw_detections"]

COCO_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


def coco_map(preds: list[dict[str, Tensor]], gts: list[dict[str, Any]], num_classes: int,
             max_dets: int = 100) -> dict[str, float]:
    """COCO box AP/AR with pycocotools over images ``i = 0..len(gts)-1``.

    preds[i]: {"boxes": (Q, 4) xyxy pixels, "scores": (Q,), "labels": (Q,)};
    gts[i]: {"boxes": (N, 4) xyxy pixels, "labels": (N,), "width": int, "height": int}.
    Returns the keys of :data:`COCO_KEYS` (``map`` = AP@[.5:.95], ``map_50``, ``map_75``, ...).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (p, g) in enumerate(zip(preds, gts)):
        images.append({"id": i, "width": int(g["width"]), "height": int(g["height"])})
        for box, label in zip(g["boxes"].tolist(), g["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "bbox": [box[0], box[1], w, h],
                         "area": w * h, "iscrowd": 0})
        order = p["scores"].argsort(descending=True)[:max_dets]
        for box, score, label in zip(p["boxes"][order].tolist(), p["scores"][order].tolist(), p["labels"][order].tolist()):
            dets.append({"image_id": i, "category_id": int(label), "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                         "score": float(score)})
    if not anns or not dets:
        return {k: 0.0 for k in COCO_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(num_classes)]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(v), 0.0) for v in ev.stats]  # -1 (no such boxes) → 0
    return dict(zip(("map", "map_50", "map_75", "map_small", "map_medium", "map_large"), stats[:6])) | dict(
        zip(("mar_1", "mar_10", "mar_100"), stats[6:9]))


def per_class_pr(preds: list[dict[str, Tensor]], gts: list[dict[str, Any]], class_names: Sequence[str],
                 score_threshold: float = 0.5, iou_threshold: float = 0.5) -> dict[str, float]:
    """Per-class precision / recall / F1 at IoU ``iou_threshold`` for detections scoring >= ``score_threshold``.

    Each image's kept detections are matched one-to-one to its boxes (Hungarian on IoU, pairs with
    IoU >= threshold); a missed box counts as (true class, background), a spurious detection as
    (background, predicted class). Scores are sklearn's ``precision_recall_fscore_support`` over the
    real classes. Returns {"precision_50", "recall_50", "f1_50"} (macro) and
    {"precision_50/<name>", "recall_50/<name>"} per class.
    """
    from sklearn.metrics import precision_recall_fscore_support

    bg = len(class_names)
    y_true: list[int] = []
    y_pred: list[int] = []
    for p, g in zip(preds, gts):
        keep = p["scores"] >= score_threshold
        pb, pl = p["boxes"][keep].float(), p["labels"][keep].tolist()
        gb, gl = g["boxes"].float(), g["labels"].tolist()
        used_p, used_g = set(), set()
        if len(pl) and len(gl):
            iou = box_iou(gb, pb).numpy()  # (N, M)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= iou_threshold:
                    y_true.append(gl[r])
                    y_pred.append(pl[c])
                    used_g.add(r)
                    used_p.add(c)
        y_true += [gl[r] for r in range(len(gl)) if r not in used_g]
        y_pred += [bg] * (len(gl) - len(used_g))
        y_pred += [pl[c] for c in range(len(pl)) if c not in used_p]
        y_true += [bg] * (len(pl) - len(used_p))
    labels = list(range(len(class_names)))
    if not y_true:
        return {"precision_50": 0.0, "recall_50": 0.0, "f1_50": 0.0}
    prec, rec, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out = {"precision_50": float(np.mean(prec)), "recall_50": float(np.mean(rec)), "f1_50": float(np.mean(f1))}
    for name, pr, rc in zip(class_names, prec, rec):
        out[f"precision_50/{name}"] = float(pr)
        out[f"recall_50/{name}"] = float(rc)
    return out


def draw_detections(image: Tensor, pred: dict[str, Tensor], class_names: Sequence[str], path: str | Path,
                    score_threshold: float = 0.5, gt: dict[str, Tensor] | None = None, scale: int = 1) -> Path:
    """Write ``image`` (uint8 (3, H, W)) with predicted boxes (red, "label score") and optional ground
    truth (green) as a PNG; ``scale`` enlarges small images first."""
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    from panformer.core.checkpoint import atomic_path

    img = image
    if scale > 1:
        img = img.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    if gt is not None and len(gt["boxes"]):
        img = draw_bounding_boxes(img, gt["boxes"].float() * scale, colors="lime", width=1)
    keep = pred["scores"] >= score_threshold
    H, W = image.shape[1:]
    if keep.any():
        boxes = pred["boxes"][keep].float().clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
        labels = [f"{class_names[int(l)]} {float(s):.2f}" for l, s in zip(pred["labels"][keep], pred["scores"][keep])]
        img = draw_bounding_boxes(img, boxes * scale, labels=labels, colors="red", width=2)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")
    return path
