#!/usr/bin/env python
"""Recipe: DETR object detection with the core Transformer.

    python recipes/detection.py                                   # built-in digit scenes (64x64, 1-4 digits)
    python recipes/detection.py --data instances_train.json --image-dir train_images/ \
        --valid-data instances_val.json --valid-image-dir val_images/ \
        --backbone resnet50 --d-model 256 --n-encoder-layers 6 --n-decoder-layers 6 --d-ff 2048 \
        --num-queries 100 --image-size 800 --max-size 1333 --lr 1e-4 --hflip --backbone-pretrain-steps 0
    python recipes/detection.py --help                            # every option

Same as ``panformer train detection`` with the defaults below; flags override them.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "epochs": 60,
    "batch_size": 32,
    "lr": 5e-4,
    "schedule": "cosine",
    "warmup_steps": 200,
    "weight_decay": 1e-4,
    "grad_clip": 0.1,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "d_model": 128,
    "n_encoder_layers": 3,
    "n_decoder_layers": 3,
    "num_queries": 12,
    "backbone_pretrain_steps": 600,
    "metric_for_best": "map",
}

if __name__ == "__main__":
    sys.exit(main(["train", "detection", *sys.argv[1:]], recipe_defaults=DEFAULTS))
