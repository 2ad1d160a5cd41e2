#!/usr/bin/env python
"""Recipe: a small Vision Transformer trained from scratch on sklearn's handwritten digits.

    python recipes/vit.py                                   # built-in digits, fixed 25 % test split, + SVC baseline
    python recipes/vit.py --data path/to/imagefolder --image-size 32 --patch-size 4 --augment crop-flip
    python recipes/vit.py --data train.csv --test-data test.csv --image-column path --label-column label
    python recipes/vit.py --pretrained vit_b_16.pth --data DIR --epochs 5 --lr 1e-4 --batch-size 16   # fine-tune
    python recipes/vit.py --help                            # every option

Same as ``panformer train vit`` with the defaults below; flags override them. The model: 8x8 digits
upsampled to 16x16, 4x4 patches (16 tokens + [CLS]), width 128, 4 pre-LN layers, 4 heads, random
affine augmentation, label smoothing 0.1, AdamW + cosine, bf16 autocast where the CPU has it. bench/vit_digits.py runs it
against an SVC and a small CNN on the same split.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "max_time_minutes": 10.0,
    "schedule_clock": "time",  # the cosine spans the 10 minutes, however many steps this machine fits in them
    "max_steps": 1_000_000,
    "eval_every": 500,
    "load_best_model_at_end": False,  # 135 validation images cannot rank checkpoints; the decayed end is best
    "batch_size": 64,
    "lr": 2e-3,
    "schedule": "cosine",
    "warmup_steps": 200,
    "weight_decay": 0.05,
    "label_smoothing": 0.1,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 4,
    "d_ff": 256,
    "dropout": 0.1,
    "baseline": True,
}

if __name__ == "__main__":
    sys.exit(main(["train", "vit", *sys.argv[1:]], recipe_defaults=DEFAULTS))
