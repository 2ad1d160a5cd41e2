"""DETR on the core Transformer: backbone → 1x1 projection → core Encoder (2-D sine positions added to
queries and keys in every layer) → core Decoder over learned object queries → class and box heads."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from panformer.core import Decoder, Encoder, TransformerConfig, sine_positional_2d

from .backbone import build_backbone

__all__ = ["DETR", "MLP", "detr_config", "detr_r50", "postprocess"]


class MLP(nn.Module):
    """``n_layers`` linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int) -> None:
        super().__init__()
        dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def detr_config(d_model: int = 256, n_heads: int = 8, n_encoder_layers: int = 6, n_decoder_layers: int = 6,
                d_ff: int = 2048, dropout: float = 0.1) -> TransformerConfig:
    """The core config of DETR's transformer: post-LN, ReLU, no input positions (the model adds 2-D
    sines and query embeddings itself) and no final norm in the stacks (DETR normalises only the
    decoder output, which :class:`DETR` does with its own LayerNorm)."""
    return TransformerConfig(d_model=d_model, n_heads=n_heads, n_layers=n_encoder_layers, n_decoder_layers=n_decoder_layers,
                             d_ff=d_ff, dropout=dropout, activation="relu", norm_first=False, positional="none",
                             final_norm=False)


class DETR(nn.Module):
    """End-to-end set prediction (Carion et al. 2020).

    forward(images (B, 3, H, W), mask bool (B, H, W) True at padding) →
        {"pred_logits": (B, Q, K+1) with no-object last, "pred_boxes": (B, Q, 4) cxcywh in [0, 1] of the
         unpadded image, "aux_outputs": the same for decoder layers 1..L-1 (when ``aux_loss``)}.
    """

    def __init__(self, backbone: nn.Module, cfg: TransformerConfig, num_classes: int, num_queries: int = 100,
                 aux_loss: bool = True) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg, self.num_classes, self.num_queries, self.aux_loss = cfg, num_classes, num_queries, aux_loss
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.out_channels, d, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, d)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross_attention=True)
        self.decoder_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)
        for p in (*self.encoder.parameters(), *self.decoder.parameters()):
            if p.dim() > 1:  # DETR's Transformer._reset_parameters
                nn.init.xavier_uniform_(p)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict[str, Any]:
        B = images.size(0)
        if mask is None:
            mask = torch.zeros(B, *images.shape[-2:], dtype=torch.bool, device=images.device)
        feat = self.input_proj(self.backbone(images))  # (B, d, h, w)
        h, w = feat.shape[-2:]
        fmask = F.interpolate(mask[:, None].float(), size=(h, w)).to(torch.bool)[:, 0]  # (B, h, w)
        pos = sine_positional_2d(fmask, self.cfg.d_model).flatten(1, 2).to(feat.dtype)  # (B, hw, d)
        src = feat.flatten(2).transpose(1, 2)  # (B, hw, d)
        key_mask = fmask.flatten(1)  # (B, hw)
        memory = self.encoder(src, key_mask, pos=pos)  # (B, hw, d)
        query_pos = self.query_embed.weight[None].expand(B, -1, -1)  # (B, Q, d)
        tgt = torch.zeros_like(query_pos)
        hs = self.decoder(tgt, memory, memory_padding_mask=key_mask, pos=pos, query_pos=query_pos, causal=False,
                          return_intermediate=True)  # (L, B, Q, d)
        hs = self.decoder_norm(hs)
        logits = self.class_embed(hs)  # (L, B, Q, K+1)
        boxes = self.bbox_embed(hs).sigmoid()  # (L, B, Q, 4)
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return out


def detr_r50(num_classes: int = 91, num_queries: int = 100, trainable_backbone_layers: int = 5,
             backbone_weights: str | None = None) -> DETR:
    """DETR-R50: ResNet-50 with frozen BatchNorm, d=256, 8 heads, 6+6 layers, FFN 2048, 100 queries.

    41,524,768 parameters (all trainable with ``trainable_backbone_layers=5``; 41,302,368 with 3, the
    paper's recipe from ImageNet weights, which also freezes conv1 and layer1)."""
    backbone = build_backbone("resnet50", trainable_backbone_layers, backbone_weights)
    return DETR(backbone, detr_config(), num_classes, num_queries)


@torch.no_grad()
def postprocess(outputs: dict[str, Tensor], orig_sizes: Tensor) -> list[dict[str, Tensor]]:
    """Model outputs → per image {"scores": (Q,), "labels": (Q,), "boxes": (Q, 4) absolute xyxy pixels}.

    Score and label are the most likely real class of each query (no-object excluded), as in DETR.
    ``orig_sizes`` (B, 2) holds [H, W] of the original images."""
    prob = outputs["pred_logits"].float().softmax(-1)[..., :-1]  # (B, Q, K)
    scores, labels = prob.max(-1)
    boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy")  # (B, Q, 4)
    H, W = orig_sizes.float().unbind(1)
    boxes = boxes * torch.stack([W, H, W, H], dim=1)[:, None, :].to(boxes.device)
    return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, boxes)]
