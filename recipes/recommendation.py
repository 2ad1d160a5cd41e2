#!/usr/bin/env python
"""Recipe: sequential recommendation with SASRec (or BERT4Rec) on the core Transformer encoder.

    python recipes/recommendation.py                                    # built-in MovieLens-100K
    python recipes/recommendation.py --data ../shared/data/sasrec/Video.txt --max-time-minutes 30
    python recipes/recommendation.py --model bert4rec --mask-prob 0.4   # BERT4Rec instead
    python recipes/recommendation.py --help                             # every option

Same as ``panformer train recommendation`` with the defaults below (SASRec, softmax cross-entropy
over the whole catalogue, bf16 where the CPU has it, an average of the weights, most-popular baseline); flags override them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panformer.tasks.cli import main  # noqa: E402

DEFAULTS = {
    "model": "sasrec",
    "loss": "ce",
    "max_len": 50,
    "d_model": 64,
    "n_heads": 1,
    "n_layers": 2,
    "d_ff": 256,
    "dropout": 0.5,
    "epochs": 200,
    "batch_size": 128,
    "lr": 3e-3,
    "schedule": "constant",
    "warmup_steps": 100,
    "ema_decay": 0.999,  # evaluate and keep the weight average: test HR@10 0.716 -> 0.724 (BENCHMARKS.md)
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "max_eval_users": 10000,
    "early_stopping_patience": 10,
    "baseline": True,
}

if __name__ == "__main__":
    sys.exit(main(["train", "recommendation", *sys.argv[1:]], recipe_defaults=DEFAULTS))
