#!/usr/bin/env python
"""Recipe: speech recognition (CTC over characters or BPE units) with the core Transformer encoder.

    python recipes/speech.py                                   # built-in espeak-ng speech (3,000 clips)
    python recipes/speech.py --data ../shared/data/fsdd --sample-rate 8000 --n-mels 40 \\
        --test-speakers theo --units bpe --speed-perturb 0.1 \\
        --epochs 200 --schedule-clock time                     # FSDD connected digits, held-out speaker
    python recipes/speech.py --data my_audiofolder/ --alphabet auto --decode beam
    python recipes/speech.py --ctc-weight 0.3 --decode joint   # hybrid CTC/attention, joint rescoring
    python recipes/speech.py --help                            # every option

Same as ``panformer train speech`` with the defaults below; flags override them. On FSDD, ``--epochs 200
--schedule-clock time`` spreads the cosine over the whole 20 minutes (an explicit ``--epochs`` alone would plan the
decay over the 200 epochs, which 20 minutes do not reach).
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "epochs": 40,
    "batch_size": 32,
    "lr": 1.5e-3,
    "schedule": "cosine",
    "warmup_steps": 300,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "d_model": 144,
    "n_layers": 6,
    "metric_for_best": "cer",
    "max_time_minutes": 20,
    "schedule_clock": "first",  # the decay ends with the planned steps, or with the time limit on a slower machine
}

if __name__ == "__main__":
    sys.exit(main(["train", "speech", *sys.argv[1:]], recipe_defaults=DEFAULTS))
