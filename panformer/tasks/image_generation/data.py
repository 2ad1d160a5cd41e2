"""Images as pixel-token sequences: greyscale, resized, quantised to ``levels`` grey levels, raster order.

Sources are those of the ``vit`` task (:func:`tasks.vit.data.open_source`): the built-in sklearn digits
(8x8, 17 grey levels, the vit task's fixed 25 % test split), an ``imagefolder`` tree (``ROOT/<class>/
<image>``), a table of image paths and labels, a Hugging Face or torchvision dataset. Every image is
decoded to greyscale, its short side resized to ``size`` (antialiased) and centre-cropped to
``size x size``, then quantised::

    q = round(x * (levels - 1) / 255)          x: uint8 grey value, q in 0 .. levels - 1
    x' = round(q * 255 / (levels - 1))         back to uint8 (pictures, the ViT judge)

With 17 levels the sklearn digits (values 0..16 scaled by 255/16) are reproduced exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from panformer.core.errors import ConfigError, DataError

__all__ = ["PixelSet", "quantise", "dequantise", "to_pixels", "encode_source", "class_names", "check_sizes"]


def quantise(images: Tensor, levels: int) -> Tensor:
    """uint8 (..., H, W) → long levels 0..levels-1, same shape."""
    return torch.round(images.float() * ((levels - 1) / 255.0)).long()


def dequantise(pixels: Tensor, levels: int) -> Tensor:
    """long levels (..., H, W) → uint8 grey values 0..255, same shape."""
    return torch.round(pixels.float() * (255.0 / (levels - 1))).clamp(0, 255).to(torch.uint8)


def to_pixels(image: Tensor, size: int, levels: int) -> Tensor:
    """uint8 (1, H, W) → long (size * size,) quantised levels in raster order (row by row)."""
    if image.shape[-2:] != (size, size):
        image = TF.resize(image, size, antialias=True)  # short side → size
        image = TF.center_crop(image, [size, size])
    return quantise(image[0], levels).flatten()


def class_names(labels: Sequence[Any]) -> list[str]:
    """Sorted distinct labels as strings (ints numerically, like the vit task)."""
    distinct = sorted(set(labels), key=lambda v: (str(type(v)), v))
    return [str(v) for v in distinct]


@dataclass
class PixelSet:
    """A split: ``pixels`` long (N, S*S) in 0..levels-1, ``labels`` long (N,) class indices."""

    pixels: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.pixels.size(0)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.pixels[i], int(self.labels[i])


def encode_source(source: Any, classes: list[str], size: int, levels: int, what: str) -> PixelSet:
    """Decode every image of a :class:`tasks.vit.data.ImageSource` (greyscale) into a :class:`PixelSet`.

    Raises DataError for an image that cannot be decoded or a label outside ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    pixels, labels = [], []
    for i in range(len(source)):
        name = str(source.labels[i])
        if name not in index:
            raise DataError(f"{what}: {source.describe(i)}: unknown class {name!r}; training classes are {classes[:20]}")
        img = source.load(i)  # uint8 (1, H, W)
        if img.dim() != 3 or img.size(0) != 1 or min(img.shape[1:]) < 1:
            raise DataError(f"{what}: {source.describe(i)}: expected a greyscale image, got shape {tuple(img.shape)}")
        pixels.append(to_pixels(img, size, levels))
        labels.append(index[name])
    if not pixels:
        raise DataError(f"{what}: no images")
    return PixelSet(torch.stack(pixels), torch.tensor(labels, dtype=torch.long))


def check_sizes(size: int, levels: int) -> None:
    if not 2 <= levels <= 256:
        raise ConfigError(f"--levels must be between 2 and 256, got {levels}")
    if not 1 <= size <= 64:
        raise ConfigError(f"--image-size must be between 1 and 64 (sequence length size**2), got {size}")
