#!/usr/bin/env python
"""Recipe: sentiment classification with a from-scratch Transformer encoder.

    python recipes/sentiment.py                          # built-in movie-review snippets
    python recipes/sentiment.py --data ../shared/data/sst2/train.tsv \
        --valid-data ../shared/data/sst2/dev.tsv --test-data ../shared/data/sst2/test.tsv --baseline \
        --n-layers 3 --epochs 3 --dropout 0.2 --label-smoothing 0.1 --warmup-steps 500 \
        --ema-decay 0.999 --eval-every 350               # SST-2's best one-model setting: 82.2 % (BENCHMARKS.md)
    python recipes/sentiment.py --help                   # every option

Same as ``panformer train sentiment`` with the defaults below; flags override them. The SST-2 example's
extra flags are those of ``bench/sentiment_sst2.py --members 1``: on 67k phrases three epochs are enough, while
the defaults' ten epochs and short warm-up suit smaller sets such as the built-in 10,568 snippets.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "epochs": 10,
    "batch_size": 64,
    "lr": 5e-4,
    "schedule": "cosine",
    "warmup_steps": 200,
    "d_model": 256,
    "n_layers": 4,
    "baseline": True,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
}

if __name__ == "__main__":
    sys.exit(main(["train", "sentiment", *sys.argv[1:]], recipe_defaults=DEFAULTS))
