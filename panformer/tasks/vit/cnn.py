"""A small convolutional classifier: the pre-Transformer baseline of the ``vit`` task (``--arch cnn``).

Images (B, C, S, S) → ``blocks`` x [3x3 conv + BatchNorm + ReLU, 3x3 conv + BatchNorm + ReLU, 2x2 max-pool]
(channels ``width``, 2 x ``width``, ...) → flatten → dropout → linear (``hidden``) + ReLU → dropout →
linear → logits (B, num_classes). The defaults at 16 px are the "small CNN" of ``bench/vit_digits.py``
(197,866 parameters for 10 classes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from panformer.core.errors import ConfigError

__all__ = ["CNNConfig", "SmallCNN"]


@dataclass
class CNNConfig:
    """Shape of a :class:`SmallCNN`."""

    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 16
    width: int = 32  # channels of the first block; each later block doubles them
    blocks: int = 2
    hidden: int = 128
    dropout: float = 0.25

    def __post_init__(self) -> None:
        if min(self.width, self.blocks, self.hidden, self.num_classes) < 1:
            raise ConfigError("CNN width, blocks, hidden and num_classes must be positive")
        if self.image_size % 2 ** self.blocks:
            raise ConfigError(f"--arch cnn: image_size {self.image_size} must be divisible by {2 ** self.blocks} "
                              f"({self.blocks} 2x2 poolings); pass another --image-size")

    @property
    def feature_size(self) -> int:
        """Flattened features after the last block: channels x (S / 2^blocks)^2."""
        return self.width * 2 ** (self.blocks - 1) * (self.image_size // 2 ** self.blocks) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    """images (B, C, S, S) with S = ``cfg.image_size`` → logits (B, num_classes)."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.in_channels] + [cfg.width * 2 ** i for i in range(cfg.blocks)]
        self.features = nn.Sequential(*[_block(i, o) for i, o in zip(widths, widths[1:])])  # S -> S / 2^blocks
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(cfg.feature_size, cfg.hidden),
                                        nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.num_classes))

    def forward(self, images: Tensor) -> Tensor:
        S = self.cfg.image_size
        if images.shape[-2:] != (S, S):
            raise ValueError(f"SmallCNN expects {S}x{S} images, got {tuple(images.shape[-2:])}")
        return self.classifier(self.features(images))  # (B, c, S', S') -> (B, num_classes)
