#!/usr/bin/env python
"""Recipe: a small decoder-only Transformer on the Bach chorales (note events, transposition augmentation).

    python recipes/music.py                                  # built-in chorales (music21's corpus)
    python recipes/music.py --data my_midi_folder/            # any folder of MIDI / MusicXML files
    python recipes/music.py --max-time-minutes 5 --transpose 0
    python recipes/music.py --help                           # every option

Same as ``panformer train music`` with the defaults below (bf16 autocast where the CPU has it, 4 pre-LN layers x 192, context
256 events, dropout 0.1, random transposition by up to 5 semitones, 20 minutes at most); flags override
them. Afterwards: ``panformer predict music --run DIR --num-samples 4`` writes MIDI files and piano rolls.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "max_steps": 6000,
    "max_time_minutes": 20,
    "schedule_clock": "first",  # the decay ends with the planned steps, or with the time limit on a slower machine
    "batch_size": 32,
    "lr": 1e-3,
    "schedule": "cosine",
    "warmup_steps": 100,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.1,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "eval_every": 250,
    "block_size": 256,
    "d_model": 192,
    "n_heads": 6,
    "n_layers": 4,
    "dropout": 0.1,
    "transpose": 5,
    "eval_samples": 16,
}

if __name__ == "__main__":
    sys.exit(main(["train", "music", *sys.argv[1:]], recipe_defaults=DEFAULTS))
