"""CNN backbones for DETR: torchvision ResNets with frozen BatchNorm, or a small conv net.

A backbone maps images (B, 3, H, W) to a feature map (B, C, H/s, W/s) and exposes
``out_channels`` (C) and ``stride`` (s).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from panformer.core.errors import ConfigError

__all__ = ["ResNetBackbone", "SmallConvBackbone", "build_backbone", "BACKBONES"]

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
BACKBONES = ("small", *RESNETS)


class ResNetBackbone(nn.Module):
    """torchvision ResNet up to ``layer4`` (stride 32) with :class:`FrozenBatchNorm2d`, as in DETR.

    ``trainable_layers`` (0-5) counts trainable stages from the top, torchvision's convention:
    5 trains every convolution, 3 trains layer2-4 (DETR's recipe with ImageNet weights), 0 none.
    BatchNorm statistics and affine parameters are frozen buffers either way.
    ``weights``: a torchvision ResNet state-dict file (.pth / .safetensors) to start from.
    """

    def __init__(self, name: str = "resnet50", trainable_layers: int = 5, weights: str | Path | None = None) -> None:
        super().__init__()
        import torchvision

        if name not in RESNETS:
            raise ConfigError(f"unknown ResNet {name!r}; choose one of {', '.join(RESNETS)}")
        if not 0 <= trainable_layers <= 5:
            raise ConfigError(f"trainable_backbone_layers must be in 0..5, got {trainable_layers}")
        net = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        if weights is not None:
            _load_resnet_weights(net, Path(weights))
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        stages = [["layer4"], ["layer3"], ["layer2"], ["layer1"], ["conv1", "bn1"]][:trainable_layers]
        keep = {n for s in stages for n in s}
        for mod_name, module in net.named_children():
            if mod_name in ("fc", "avgpool"):
                continue
            for p in module.parameters():
                p.requires_grad_(mod_name in keep)
        self.out_channels = net.fc.in_features  # 512 (18/34) or 2048 (50/101)
        self.stride = 32

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, C, ceil(H/32), ceil(W/32))."""
        return self.body(x)


def _load_resnet_weights(net: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"--backbone-weights: file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - reported as one line
        raise ConfigError(f"--backbone-weights {path}: cannot read ({type(e).__name__}: {e})") from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ConfigError(f"--backbone-weights {path}: not a matching torchvision ResNet state dict "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


class SmallConvBackbone(nn.Module):
    """For small images: ``len(channels)`` stride-2 blocks of conv3x3-BN-ReLU + conv3x3-BN-ReLU.

    (B, 3, H, W) → (B, channels[-1], H / 2^n, W / 2^n).
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.out_channels = c_in
        self.stride = 2 ** len(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def build_backbone(name: str, trainable_layers: int = 5, weights: str | None = None,
                   small_channels: tuple[int, ...] = (32, 64, 128)) -> nn.Module:
    """``small`` or a torchvision ResNet name (see :data:`BACKBONES`)."""
    if name == "small":
        if weights is not None:
            raise ConfigError("--backbone-weights needs a ResNet --backbone, not 'small'")
        return SmallConvBackbone(small_channels)
    if name not in RESNETS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return ResNetBackbone(name, trainable_layers, weights)
