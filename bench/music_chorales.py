#!/usr/bin/env python
"""Bach chorales: validation perplexity and musical statistics of generated pieces within a time budget.

The recipe's model (recipes/music.py: 4 pre-LN layers x 192, context 256 events, bf16, transposition
augmentation) trains on the 280 training chorales of the seeded 80/10/10 split of music21's 350 distinct
chorale scores for at most ``--minutes`` (20). Reported:

* ``val_loss`` / ``val_perplexity`` (per event token, best checkpoint) and ``test_loss`` / ``test_perplexity``;
* for ``--samples`` (32) pieces generated from scratch (grammar-constrained, temperature 1, top-p 0.95)
  against the 35 held-out test chorales: ``pch_distance`` (key-normalised pitch-class histogram, total
  variation; 0 = identical), ``in_key_share``, ``duration_distance`` (``syntax_error_rate`` too with
  ``-- --constrained false``);
* for scale, the same statistics between real chorales: ``pch_distance_real_halves`` (the two halves of
  the test set) and ``pch_distance_real_train_sample`` (as many training chorales as generated pieces vs
  the test set: the value a perfect model would get at this sample size), ``in_key_share_real``.

    python bench/music_chorales.py                          # the full benchmark (20 minutes of training)
    python bench/music_chorales.py --minutes 3 --tag smoke  # a smoke run
    python bench/music_chorales.py -- --precision fp32      # extra panformer flags after --

``--steps auto`` (default) times a few training steps first and sets ``max_steps`` to fill 85 % of the
budget, so the cosine schedule completes; ``max_time_minutes`` stays the hard stop. Writes
``bench/out/music_chorales.json`` (``music_chorales_<tag>.json`` for another ``--tag``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panformer.core.runtime import autocast, seed_everything  # noqa: E402
from recipes.music import DEFAULTS  # noqa: E402
from panformer.tasks.cli import load_run, resolve_train_args, train  # noqa: E402
from panformer.tasks.music import MusicTask  # noqa: E402
from panformer.tasks.music.metrics import music_statistics  # noqa: E402


def seconds_per_step(argv: list[str], n: int = 6) -> float:
    """Median wall time of a training step (forward, backward, AdamW) of the configured model."""
    args, targs = resolve_train_args(MusicTask, argv, DEFAULTS)
    if targs.threads:
        torch.set_num_threads(targs.threads)
    task = MusicTask(args)
    task.load_data()
    task.fit_assets()
    seed_everything(0)
    model, ds = task.build_model(), task.train_dataset()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(n):
        t = time.perf_counter()
        batch = task.collate([ds[(i * targs.batch_size + j) * 7919 % len(ds)] for j in range(targs.batch_size)])
        with autocast(torch.device("cpu"), targs.precision):
            loss = task.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget (max_time_minutes)")
    p.add_argument("--steps", default="auto", help="max_steps, or auto: fill 85 %% of the budget")
    p.add_argument("--samples", type=int, default=32, help="pieces generated for the musical statistics")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/bench-music-chorales-<tag>)")
    p.add_argument("--tag", default="full", help="name of this run in bench/out/")
    p.add_argument("extra", nargs="*", help="more `panformer train music` flags (after --)")
    a = p.parse_args()
    run_dir = Path(a.run_dir or ROOT / "runs" / f"bench-music-chorales-{a.tag}")
    argv = ["--max-time-minutes", str(a.minutes), "--out", str(run_dir), "--overwrite", "--progress", "false",
            "--eval-samples", str(a.samples), *a.extra]
    t0 = time.time()
    step_s = None
    if a.steps == "auto":
        step_s = seconds_per_step(argv)
        steps = max(50, int(0.85 * a.minutes * 60 / step_s))
    else:
        steps = int(a.steps)
    argv += ["--max-steps", str(steps), "--eval-every", str(max(25, min(250, steps // 8)))]
    m = train("music", argv, recipe_defaults=DEFAULTS)

    task, model = load_run(run_dir, "cpu")
    task.load_data()
    val_loss, _ = task._nll(model, task.ids("valid"))
    real_test = [n for _, n in task.splits["test"]]
    sample = [n for _, n in task.splits["train"][: a.samples]]
    real = music_statistics(sample, real_test, task.vocab.max_dur)
    r4 = lambda x: round(float(x), 4)  # noqa: E731
    summary = {
        "benchmark": "Bach chorales: perplexity and pitch-class statistics of generated pieces", "tag": a.tag,
        "minutes_budget": a.minutes, "val_loss": r4(val_loss), "val_perplexity": r4(torch.tensor(val_loss).exp()),
        "test_loss": r4(m["loss"]), "test_perplexity": r4(m["perplexity"]),
        "generated": {k: r4(m[k]) for k in ("pch_distance", "in_key_share", "duration_distance", "syntax_error_rate",
                                            "notes_per_sample") if k in m},
        "real": {"pch_distance_real_halves": r4(m["pch_distance_real_halves"]),
                 "pch_distance_real_train_sample": r4(real["pch_distance"]),
                 "duration_distance_real_train_sample": r4(real["duration_distance"]),
                 "in_key_share_real": r4(m["in_key_share_real"])},
        "samples": a.samples, "test_pieces": len(real_test), "train_steps": m["train_steps"],
        "seconds_per_step": None if step_s is None else round(step_s, 3), "train_time_s": m["train_time_s"],
        "num_params": m["num_params"], "total_time_s": round(time.time() - t0, 1), "run_dir": str(run_dir),
        "samples_dir": str(run_dir / "samples"),
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "out" / ("music_chorales.json" if a.tag == "full" else f"music_chorales_{a.tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
