#!/usr/bin/env python
"""Recipe: a character-level GPT (nanoGPT's Shakespeare-char shape: 6 layers x 192, block 128).

    python recipes/generation.py                              # built-in pydoc_data.topics
    python recipes/generation.py --data ../shared/data/tinyshakespeare/input.txt
    python recipes/generation.py --data my_texts/ --tokenizer bpe --vocab-size 8000
    python recipes/generation.py --pretrained gpt2-dir/ --data notes.txt     # fine-tune GPT-2 weights
    python recipes/generation.py predict --pretrained gpt2-dir/ --prompt "Once upon a time"
    python recipes/generation.py --help                       # every option

Same as ``panformer train generation`` with the defaults below (bf16 autocast where the CPU has it, dropout 0.1, GPT-2
initialisation, peak lr 2e-3, a cosine schedule over 15 minutes); flags override them. ``predict --pretrained DIR`` samples straight from a
GPT-2-format directory without training.
"""
import sys

from panformer.tasks.cli import main

DEFAULTS = {
    "max_time_minutes": 15,
    "schedule_clock": "time",  # the cosine spans the 15 minutes, however many steps this machine fits in them
    "max_steps": 1_000_000,
    "batch_size": 32,
    "lr": 2e-3,  # with GPT-2's init and dropout 0.1: 1.480 vs 1.501 at 1e-3 in the 15 minutes (BENCHMARKS.md, issue 18)
    "schedule": "cosine",
    "warmup_steps": 100,
    "min_lr_ratio": 0.1,
    "precision": "auto",  # bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16 / AMX), else fp32
    "eval_every": 500,
    "block_size": 128,
    "d_model": 192,
    "n_heads": 6,
    "n_layers": 6,
    "dropout": 0.1,  # without it this model overfits tinyshakespeare within the 15 minutes (BENCHMARKS.md, issue 18)
    "init": "gpt2",  # N(0, 0.02), residual projections / sqrt(2 n_layers): 1.525 vs 1.542 with PyTorch's defaults
}


def predict_pretrained(argv: list[str]) -> int:
    """``predict --pretrained DIR [--prompt ...] [decoding options]`` without a run directory."""
    import argparse
    import json

    from panformer.core.cli_args import add_dataclass_arguments
    from panformer.core.errors import PanformerError
    from panformer.tasks.generation import GenerationArguments, from_pretrained

    p = argparse.ArgumentParser(prog="recipes/generation.py predict")
    p.add_argument("inputs", nargs="*", help="prompts (or --prompt)")
    add_dataclass_arguments(p, GenerationArguments, "generation options", {})
    ns = vars(p.parse_args(argv))
    inputs = ns.pop("inputs")
    if not ns.get("pretrained"):
        p.error("--pretrained DIR is required")
    try:
        task, model = from_pretrained(ns.pop("pretrained"), **ns)
        for pred in task.predict(model, inputs):
            print(pred if isinstance(pred, str) else json.dumps(pred, ensure_ascii=False))
    except PanformerError as e:
        print(f"panformer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["predict"]:
        sys.exit(predict_pretrained(sys.argv[2:]))
    sys.exit(main(["train", "generation", *sys.argv[1:]], recipe_defaults=DEFAULTS))
