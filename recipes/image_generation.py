#!/usr/bin/env python
"""Recipe: a class-conditional ImageGPT on sklearn's 8x8 digits (17 grey levels, 64 pixel tokens).

    python recipes/image_generation.py                                   # built-in digits
    python recipes/image_generation.py --data path/to/imagefolder --image-size 16 --levels 16
    python recipes/image_generation.py --judge runs/vit-digits           # judge samples with your vit run
    panformer predict image-generation --run RUN --classes 3 7 --num-samples 8 --output grid.png
    python recipes/image_generation.py --help                            # every option

Same as ``panformer train image-generation`` with the defaults below; flags override them. The model:
class token + 64 pixels in raster order, width 128, 4 pre-LN decoder layers, 4 heads (805 k
parameters), dropout 0.1, AdamW + cosine, bf16 autocast where the CPU has it, best checkpoint by validation bits/dim,
15 minutes at most. Afterwards a small ViT judge (1,000 steps, cached in RUN/judge) measures how
often samples show the requested digit. bench/image_generation_digits.py runs it.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "max_steps": 4000,
    "max_time_minutes": 15,
    "schedule_clock": "first",  # the decay ends with the planned steps, or with the time limit on a slower machine
    "batch_size": 64,
    "lr": 1e-3,
    "schedule": "cosine",
    "warmup_steps": 100,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.1,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "eval_every": 250,
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 4,
    "dropout": 0.1,
    "judge_steps": 1000,
    "eval_samples_per_class": 20,
}

if __name__ == "__main__":
    sys.exit(main(["train", "image-generation", *sys.argv[1:]], recipe_defaults=DEFAULTS))
