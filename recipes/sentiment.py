#!/usr/bin/env python
"""Recipe: sentiment classification with a from-scratch Transformer encoder.

    python recipes/sentiment.py                          # built-in movie-review snippets
    python recipes/sentiment.py --data ../shared/data/sst2/train.tsv \
        --valid-data ../shared/data/sst2/dev.tsv --test-data ../shared/data/sst2/test.tsv --baseline
    python recipes/sentiment.py --help                   # every option

Same as ``panformer train sentiment`` with the defaults below; flags override them.
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
}

if __name__ == "__main__":
    sys.exit(main(["train", "sentiment", *sys.argv[1:]], recipe_defaults=DEFAULTS))
