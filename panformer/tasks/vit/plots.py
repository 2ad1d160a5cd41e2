"""Pictures written by ``vit`` evaluation: attention-rollout overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core.checkpoint import atomic_path

from .model import attention_rollout

__all__ = ["rollout_pngs"]


@torch.no_grad()
def rollout_pngs(model: nn.Module, images: Tensor, true_names: Sequence[str], class_names: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], out_dir: Path) -> list[Path]:
    """For normalised images (B, C, S, S) write ``attention_rollout_{i}.png``: the image, and the image
    with the rollout of [CLS] attention (the core Encoder's ``output_attentions=True``) overlaid."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    device = next(model.parameters()).device
    logits, maps = model(images.to(device), output_attentions=True)
    probs = logits.float().softmax(-1).cpu()
    heat = attention_rollout(maps).cpu()  # (B, N)
    g = int(round(heat.size(1) ** 0.5))
    S = images.size(-1)
    heat = F.interpolate(heat.reshape(-1, 1, g, g), size=(S, S), mode="bilinear", align_corners=False)[:, 0]  # (B, S, S)
    pix = images.float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    pix = pix.clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, S, S, C)
    paths = []
    for i in range(images.size(0)):
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        img = pix[i][..., 0] if pix.shape[-1] == 1 else pix[i]
        cmap = "gray" if pix.shape[-1] == 1 else None
        ax1.imshow(img, cmap=cmap)
        ax1.set_title(f"true: {true_names[i]}")
        ax2.imshow(img, cmap=cmap)
        ax2.imshow(heat[i].numpy(), cmap="jet", alpha=0.5)
        k = int(probs[i].argmax())
        ax2.set_title(f"pred: {class_names[k]} ({probs[i, k]:.2f}); rollout")
        for ax in (ax1, ax2):
            ax.axis("off")
        path = Path(out_dir) / f"attention_rollout_{i}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        paths.append(path)
    plt.close("all")
    return paths
