"""A PNG grid of generated images: one row per class, the class name at the left of each row."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import Tensor

from panformer.core.checkpoint import atomic_path

__all__ = ["save_grid"]


def save_grid(images: Tensor, row_names: Sequence[str], path: str | Path, cell: int = 48, gap: int = 4) -> Path:
    """Draw uint8 images (R, K, S, S) (R rows of K greyscale images) to ``path`` as PNG, atomically.

    Each image is upscaled (nearest) to about ``cell`` pixels; rows are labelled with ``row_names``."""
    from PIL import Image, ImageDraw

    R, K, S = images.size(0), images.size(1), images.size(-1)
    scale = max(1, cell // S)
    side = S * scale
    label_w = 8 + 7 * max((len(n) for n in row_names), default=1)
    W, H = label_w + K * (side + gap) + gap, R * (side + gap) + gap
    canvas = Image.new("L", (W, H), color=128)
    draw = ImageDraw.Draw(canvas)
    for r in range(R):
        y = gap + r * (side + gap)
        draw.text((4, y + side // 2 - 5), str(row_names[r]), fill=255)
        for k in range(K):
            tile = Image.fromarray(images[r, k].numpy(), mode="L").resize((side, side), Image.NEAREST)
            canvas.paste(tile, (label_w + gap + k * (side + gap), y))
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
