#!/usr/bin/env python
"""Recipe: text-to-speech (Transformer-TTS with guided attention, Griffin-Lim vocoder) on the core encoder-decoder.

    python recipes/tts.py                                     # built-in espeak-ng speech (one voice, 1,000 clips)
    python recipes/tts.py --judge runs/speech-...             # also report the speech model's CER on the synthesis
    python recipes/tts.py --data my_audiofolder/              # metadata.csv with file_name,transcription
    python recipes/tts.py --help                              # every option
    panformer predict tts --run runs/tts-... "turn on the red light"   # writes wav + png files

Same as ``panformer train tts`` with the defaults below; flags override them.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "epochs": 400,
    "batch_size": 32,
    "lr": 1e-3,
    "schedule": "cosine",
    "warmup_steps": 200,
    "d_model": 128,
    "n_layers": 2,
    "decoder_layers": 2,
    "reduction": 3,
    "metric_for_best": "mel_l1",
    "max_time_minutes": 60,
    "schedule_clock": "first",  # the decay ends with the planned steps, or with the time limit on a slower machine
}

if __name__ == "__main__":
    sys.exit(main(["train", "tts", *sys.argv[1:]], recipe_defaults=DEFAULTS))
