"""DETR's set loss: cross-entropy with a down-weighted no-object class, L1 and generalised IoU on
matched boxes, at the final decoder layer and (auxiliary) at every earlier one."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from .matcher import HungarianMatcher

__all__ = ["SetCriterion"]


class SetCriterion(nn.Module):
    """Weighted sum ``w_ce * CE + w_bbox * L1 + w_giou * (1 - GIoU)`` over the final and auxiliary outputs.

    ``eos_coef`` weights the no-object class (id ``num_classes``) in the cross-entropy. L1 and GIoU
    are averaged over the number of target boxes in the batch.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None, eos_coef: float = 0.1,
                 w_ce: float = 1.0, w_bbox: float = 5.0, w_giou: float = 2.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher()
        self.w_ce, self.w_bbox, self.w_giou = w_ce, w_bbox, w_giou
        weight = torch.ones(num_classes + 1)
        weight[-1] = eos_coef
        self.register_buffer("empty_weight", weight, persistent=False)

    def single(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], num_boxes: float) -> dict[str, Tensor]:
        """Losses of one decoder layer: {"loss_ce", "loss_bbox", "loss_giou", "class_error"}."""
        logits = outputs["pred_logits"].float()  # (B, Q, K+1)
        boxes = outputs["pred_boxes"].float()  # (B, Q, 4)
        indices = self.matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(logits.device)
        src_idx = torch.cat([src for src, _ in indices]).to(logits.device)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.long, device=logits.device)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        target_classes[batch_idx, src_idx] = matched_labels
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=self.empty_weight.to(logits.device))
        src_boxes = boxes[batch_idx, src_idx]  # (M, 4)
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(boxes.device).float()
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="sum") / num_boxes
        giou = torch.diag(generalized_box_iou(box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")))
        loss_giou = (1 - giou).sum() / num_boxes
        with torch.no_grad():
            acc = (logits[batch_idx, src_idx].argmax(-1) == matched_labels).float().mean() if len(src_idx) else logits.new_ones(())
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou, "class_error": 100 * (1 - acc)}

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
        """outputs: {"pred_logits", "pred_boxes", "aux_outputs": [{...}, ...]} (see :class:`DETR`).
        Returns (total loss, {"loss_ce", "loss_bbox", "loss_giou", "class_error"} of the last layer)."""
        num_boxes = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        last = self.single(outputs, targets, num_boxes)
        total = self.w_ce * last["loss_ce"] + self.w_bbox * last["loss_bbox"] + self.w_giou * last["loss_giou"]
        for aux in outputs.get("aux_outputs", []):
            a = self.single(aux, targets, num_boxes)
            total = total + self.w_ce * a["loss_ce"] + self.w_bbox * a["loss_bbox"] + self.w_giou * a["loss_giou"]
        return total, {k: v.detach() for k, v in last.items()}
