"""Vision Transformer image classification on the core Transformer (issue 4, ``vit``).

Public API::

    from panformer.tasks.vit import from_torchvision, VisionTransformer, ViTConfig
    model = from_torchvision(torchvision.models.vit_b_16(weights=None))   # or a state dict / .pth path
    logits = model(images)                                                # (B, 3, H, W) -> (B, 1000)

The ``vit`` task (``panformer train vit``) is :class:`tasks.vit.task.VitTask`.
"""
from .convert import config_from_torchvision_state, convert_torchvision_state, from_torchvision, load_state_file
from .data import build_transform, digits, digits_split, open_source
from .model import PatchEmbedding, ViTConfig, VisionTransformer, attention_rollout, interpolate_pos_embed
from .task import VitArguments, VitTask

__all__ = [
    "from_torchvision", "config_from_torchvision_state", "convert_torchvision_state", "load_state_file",
    "ViTConfig", "VisionTransformer", "PatchEmbedding", "interpolate_pos_embed", "attention_rollout",
    "VitTask", "VitArguments", "digits", "digits_split", "open_source", "build_transform",
]
