"""Hungarian matching between DETR's predictions and the ground-truth boxes (Carion et al. 2020, eq. 1)."""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher", "match_cost"]


def match_cost(logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor, cost_class: float = 1.0,
               cost_bbox: float = 5.0, cost_giou: float = 2.0) -> Tensor:
    """Pairwise matching cost of one image.

    Args:
        logits: (Q, K+1) class logits; boxes: (Q, 4) cxcywh in [0, 1].
        tgt_labels: (N,) class ids; tgt_boxes: (N, 4) cxcywh in [0, 1].
    Returns:
        (Q, N) cost = -cost_class * p(class) + cost_bbox * L1 + cost_giou * (-GIoU).
    """
    prob = logits.float().softmax(-1)  # (Q, K+1)
    c_class = -prob[:, tgt_labels]  # (Q, N)
    c_bbox = torch.cdist(boxes.float(), tgt_boxes.float(), p=1)  # (Q, N)
    c_giou = -generalized_box_iou(box_convert(boxes.float(), "cxcywh", "xyxy"), box_convert(tgt_boxes.float(), "cxcywh", "xyxy"))
    return cost_bbox * c_bbox + cost_class * c_class + cost_giou * c_giou


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising :func:`match_cost` (scipy's
    ``linear_sum_assignment``), independently per image."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """outputs: {"pred_logits": (B, Q, K+1), "pred_boxes": (B, Q, 4)}; targets: [{"labels": (N_i,),
        "boxes": (N_i, 4)}]. Returns per image (query indices, target indices), each (min(Q, N_i),)."""
        B, Q = outputs["pred_logits"].shape[:2]
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.empty(0, dtype=torch.long)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        tgt_labels = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets])
        # one cost matrix for the whole batch (few large ops), then one assignment per image
        c = match_cost(outputs["pred_logits"].flatten(0, 1), outputs["pred_boxes"].flatten(0, 1), tgt_labels, tgt_boxes,
                       self.cost_class, self.cost_bbox, self.cost_giou).view(B, Q, -1).cpu()  # (B, Q, sum N_i)
        out = []
        for b, cb in enumerate(c.split(sizes, dim=-1)):
            if sizes[b] == 0:
                out.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(cb[b].numpy())
            out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return out
