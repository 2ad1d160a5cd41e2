"""Warm-start a backbone trained from scratch by classifying the training boxes' crops.

DETR starts from an ImageNet-pretrained ResNet; without one (small images, no downloads) its class
head learns slowly. This stands in for that pretraining using only the training split: every
ground-truth box is cropped at its own scale (shrunk to fit ``crop_size`` when larger), pasted in
the middle of a ``crop_size`` canvas, and the backbone + a linear head learn its class.
"""
from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import IMAGENET_MEAN, IMAGENET_STD, record_image

__all__ = ["box_crops", "pretrain_backbone"]


def box_crops(records: list[dict[str, Any]], crop_size: int = 32, max_crops: int = 20000,
              seed: int = 0) -> tuple[Tensor, Tensor]:
    """Crops of the ground-truth boxes → (N, 3, crop_size, crop_size) normalised float, (N,) labels."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    crops, labels = [], []
    for i in order:
        rec = records[i]
        image = (record_image(rec).float() / 255 - mean) / std  # (3, H, W)
        for (x0, y0, x1, y1), c in zip(rec["boxes"].tolist(), rec["labels"].tolist()):
            x0, y0, x1, y1 = int(x0), int(y0), max(int(round(x1)), int(x0) + 1), max(int(round(y1)), int(y0) + 1)
            patch = image[:, y0:y1, x0:x1]
            h, w = patch.shape[1:]
            if max(h, w) > crop_size:
                s = crop_size / max(h, w)
                patch = F.interpolate(patch[None], size=(max(1, int(h * s)), max(1, int(w * s))), mode="bilinear",
                                      align_corners=False, antialias=True)[0]
                h, w = patch.shape[1:]
            canvas = ((torch.zeros(3, 1, 1) - mean) / std).expand(3, crop_size, crop_size).clone()
            top, left = (crop_size - h) // 2, (crop_size - w) // 2
            canvas[:, top : top + h, left : left + w] = patch
            crops.append(canvas)
            labels.append(c)
            if len(crops) >= max_crops:
                return torch.stack(crops), torch.tensor(labels)
    return torch.stack(crops), torch.tensor(labels)


def pretrain_backbone(backbone: nn.Module, records: list[dict[str, Any]], num_classes: int, steps: int,
                      lr: float = 1e-3, batch_size: int = 64, crop_size: int = 32, seed: int = 0) -> dict[str, float]:
    """Train ``backbone`` (+ a discarded linear head on pooled features) for ``steps`` AdamW steps on
    :func:`box_crops`. Returns {"pretrain_loss", "pretrain_accuracy"} over the last 20 steps."""
    x, y = box_crops(records, crop_size, seed=seed)
    device = next(backbone.parameters()).device
    head = nn.Linear(backbone.out_channels, num_classes).to(device)
    params = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    was_training = backbone.training
    backbone.train()
    losses, hits = [], []
    for step in range(steps):
        idx = torch.randint(0, len(y), (min(batch_size, len(y)),), generator=g)
        xb, yb = x[idx].to(device), y[idx].to(device)
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()  # small translations
        xb = torch.roll(xb, shifts=shift, dims=(2, 3))
        logits = head(backbone(xb).mean((2, 3)))  # (B, K)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - 20:
            losses.append(float(loss.detach()))
            hits.append(float((logits.argmax(-1) == yb).float().mean()))
    backbone.train(was_training)
    return {"pretrain_loss": sum(losses) / max(len(losses), 1), "pretrain_accuracy": sum(hits) / max(len(hits), 1)}
