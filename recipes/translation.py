#!/usr/bin/env python
"""Recipe: German→English translation with the core encoder-decoder (Multi30k-sized model).

    python recipes/translation.py                       # built-in num2words number/date expressions
    python recipes/translation.py --data ../shared/data/multi30k/train \
        --valid-data ../shared/data/multi30k/val --test-data ../shared/data/multi30k/test_2016_flickr
    python recipes/translation.py --source-file train.de --target-file train.en   # any parallel files
    python recipes/translation.py --help                # every option

Same as ``panformer train translation`` with the defaults below (3+3 pre-LN layers of 256, joint BPE
with tied embeddings, label smoothing 0.1, warm-up + inverse square root, bf16 where the CPU has it, 45 minutes at most,
average of the last 5 epoch checkpoints, beam 5); flags override them.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "epochs": 40,
    "max_time_minutes": 45,
    "batch_size": 128,
    "lr": 1e-3,
    "schedule": "inverse_sqrt",
    "warmup_steps": 1000,
    "label_smoothing": 0.1,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "vocab_size": 8000,
    "d_model": 256,
    "n_heads": 4,
    "n_layers": 3,
    "d_ff": 1024,
    "dropout": 0.2,
    "average_last": 5,
    "beam_size": 5,
    "length_penalty": 1.0,
}

if __name__ == "__main__":
    sys.exit(main(["train", "translation", *sys.argv[1:]], recipe_defaults=DEFAULTS))
