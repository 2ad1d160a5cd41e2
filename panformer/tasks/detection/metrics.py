"""Detection metrics: COCO mAP (pycocotools), per-class precision / recall at IoU 0.5 (scikit-learn)
and pictures of predictions (``torchvision.utils.draw_bounding_boxes``).

For COCO-JSON input the mAP follows the official protocol: :func:`coco_evaluate` scores COCO results
(original image ids, category ids, ``[x, y, w, h]`` pixels) against the original annotation file with
its crowd regions and areas (:func:`load_coco_gt`). Other sources are scored by :func:`coco_map`
against a ground truth re-built from the records.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou

from panformer.core.errors import DataError

__all__ = ["COCO_KEYS", "coco_results", "coco_evaluate", "load_coco_gt", "coco_map", "per_class_pr", "draw_detections"]

COCO_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


def coco_results(preds: list[dict[str, Tensor]], image_ids: Sequence[int], category_ids: Sequence[int],
                 max_dets: int = 100) -> list[dict[str, Any]]:
    """Detections as a COCO results list, the format of ``detections_<split>.json`` and ``COCO.loadRes``.

    preds[i]: {"boxes": (Q, 4) xyxy pixels of the original image, "scores": (Q,), "labels": (Q,) class
    indices}; ``image_ids[i]`` is image i's id, ``category_ids[k]`` the id of class index k. Each image
    keeps its ``max_dets`` best detections. Returns [{"image_id", "category_id", "bbox": [x, y, w, h],
    "score"}].
    """
    out = []
    for p, image_id in zip(preds, image_ids):
        order = p["scores"].argsort(descending=True)[:max_dets]
        for box, score, label in zip(p["boxes"][order].tolist(), p["scores"][order].tolist(), p["labels"][order].tolist()):
            out.append({"image_id": int(image_id), "category_id": int(category_ids[int(label)]),
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score)})
    return out


def load_coco_gt(source: str | Path | dict[str, Any]):
    """A pycocotools ``COCO`` ground truth from an ``instances.json`` path or its parsed dict.

    The file's own image ids, category ids, ``iscrowd`` flags and ``area`` values are kept; only what
    pycocotools needs and a file may omit is filled in: ``area`` = box w * h, ``iscrowd`` = 0 and
    annotation ``id`` (1, 2, ...). (pycocotools' COCOeval ignores exactly the crowd boxes: it sets
    ``ignore`` from ``iscrowd``.)
    """
    from pycocotools.coco import COCO

    if isinstance(source, dict):
        data = copy.deepcopy(source)  # COCOeval writes into the annotations
    else:
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"COCO ground truth {source}: cannot read it ({type(e).__name__}: {e})") from None
    used = {a["id"] for a in data["annotations"] if "id" in a}
    next_id = 1
    for ann in data["annotations"]:
        if "id" not in ann:
            while next_id in used:
                next_id += 1
            ann["id"] = next_id
            used.add(next_id)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
    return gt


def coco_evaluate(results: list[dict[str, Any]], gt: Any, image_ids: Sequence[int] | None = None,
                  max_dets: int = 100) -> dict[str, float]:
    """COCO box AP/AR of ``results`` (:func:`coco_results`) against ``gt`` (a pycocotools ``COCO``),
    over ``image_ids`` (default: every image of ``gt``) and every category of ``gt``, with
    ``maxDets = [1, 10, max_dets]``: pycocotools' ``COCOeval`` unchanged.

    Returns the keys of :data:`COCO_KEYS` (``map`` = AP@[.5:.95], ``map_50``, ``map_75``, ...); a value
    pycocotools reports as -1 (no ground truth of that size) is 0.
    """
    from pycocotools.cocoeval import COCOeval

    if not results or not gt.getAnnIds(imgIds=list(image_ids) if image_ids is not None else []):
        return {k: 0.0 for k in COCO_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds "area", "id", ... to the dicts it gets
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(v), 0.0) for v in ev.stats]  # -1 (no such boxes) → 0
    return dict(zip(("map", "map_50", "map_75", "map_small", "map_medium", "map_large"), stats[:6])) | dict(
        zip(("mar_1", "mar_10", "mar_100"), stats[6:9]))


def coco_map(preds: list[dict[str, Tensor]], gts: list[dict[str, Any]], num_classes: int,
             max_dets: int = 100) -> dict[str, float]:
    """COCO box AP/AR with pycocotools against a ground truth re-built from records ``i = 0..len(gts)-1``
    (built-in scenes, Hugging Face data: no crowd regions; area = box area).

    preds[i]: {"boxes": (Q, 4) xyxy pixels, "scores": (Q,), "labels": (Q,)};
    gts[i]: {"boxes": (N, 4) xyxy pixels, "labels": (N,), "width": int, "height": int}.
    Returns the keys of :data:`COCO_KEYS`.
    """
    images, anns = [], []
    for i, g in enumerate(gts):
        images.append({"id": i, "width": int(g["width"]), "height": int(g["height"])})
        for box, label in zip(g["boxes"].tolist(), g["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "bbox": [box[0], box[1], w, h],
                         "area": w * h, "iscrowd": 0})
    if not anns:
        return {k: 0.0 for k in COCO_KEYS}
    gt = load_coco_gt({"images": images, "annotations": anns, "categories": [{"id": c} for c in range(num_classes)]})
    return coco_evaluate(coco_results(preds, range(len(gts)), range(num_classes), max_dets), gt, None, max_dets)


def per_class_pr(preds: list[dict[str, Tensor]], gts: list[dict[str, Any]], class_names: Sequence[str],
                 score_threshold: float = 0.5, iou_threshold: float = 0.5) -> dict[str, float]:
    """Per-class precision / recall / F1 at IoU ``iou_threshold`` for detections scoring >= ``score_threshold``.

    Each image's kept detections are matched one-to-one to its boxes (Hungarian on IoU, pairs with
    IoU >= threshold); a missed box counts as (true class, background), a spurious detection as
    (background, predicted class). An unmatched detection lying in a crowd region of its class
    (``gts[i]["crowd_boxes"]`` / ``["crowd_labels"]``, COCO-JSON input) is ignored, as in COCO: the
    region covers at least ``iou_threshold`` of the detection's area. Scores are sklearn's
    ``precision_recall_fscore_support`` over the real classes. Returns {"precision_50", "recall_50", "f1_50"} (macro) and
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
        used_p |= _in_crowd(pb, pl, g, iou_threshold)  # ignored, neither right nor wrong
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


def _in_crowd(boxes: Tensor, labels: list[int], gt: dict[str, Any], threshold: float) -> set[int]:
    """Indices of ``boxes`` (xyxy) covered to at least ``threshold`` of their area by a crowd box of their class."""
    crowd = gt.get("crowd_boxes")
    if crowd is None or not len(crowd) or not len(labels):
        return set()
    from torchvision.ops import box_area

    crowd = crowd.float()
    lt = torch.max(boxes[:, None, :2], crowd[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], crowd[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (M, C)
    cover = inter / box_area(boxes).clamp(min=1e-9)[:, None]
    same = torch.tensor(labels)[:, None] == gt["crowd_labels"][None, :]
    return {int(i) for i in ((cover >= threshold) & same).any(1).nonzero()[:, 0]}


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
