#!/usr/bin/env python
"""Benchmark: class-conditional ImageGPT on sklearn's 8x8 digits (17 grey levels): bits/dim on the
held-out digits and how often a ViT recognises the requested class in samples.

Split: the vit task's fixed 25 % stratified test set (450 images, ``random_state=0``); 10 % of the
remaining 1,347 (``random_state=seed``) validates (best checkpoint by bits/dim); 1,212 train. The
judge is the toolkit's ViT: trained on the same 1,212 training digits unless ``--judge RUN_DIR``
names a ``panformer train vit`` run; its own accuracy on the 450 real test digits is recorded too.
``class_accuracy`` = judged samples (``--samples-per-class`` per digit, ancestral sampling at each of
``--temperatures``) showing the digit they were generated for. Target: >= 90 % at temperature 1.

    .venv/bin/python bench/image_generation_digits.py                       # full: the recipe, 15 min
    .venv/bin/python bench/image_generation_digits.py --minutes 3 --judge-steps 400 --tag smoke \\
        --d-model 96 --n-layers 3                                          # a ~5-minute smoke run

Extra flags go to ``panformer train image-generation``. Prints a JSON summary and writes it to
``bench/out/image_generation_digits[-TAG].json`` (the run directory: ``bench/out/image_generation_digits_run``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panformer.tasks.cli import load_run, train  # noqa: E402

TARGET = 0.90


def recipe_defaults() -> dict:
    spec = importlib.util.spec_from_file_location("image_generation_recipe", ROOT / "recipes" / "image_generation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return dict(mod.DEFAULTS)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=15.0, help="training budget of the pixel model in minutes")
    p.add_argument("--judge-steps", type=int, default=1000, help="training steps of the built-in ViT judge")
    p.add_argument("--judge", default=None, help="a `panformer train vit` run directory to judge with instead")
    p.add_argument("--samples-per-class", type=int, default=50, help="samples per digit judged")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.8], help="sampling temperatures judged")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split, initialisation and data order")
    p.add_argument("--run-dir", default=str(ROOT / "bench" / "out" / "image_generation_digits_run"))
    p.add_argument("--tag", default="", help="suffix of the output file name, e.g. 'smoke'")
    a, extra = p.parse_known_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    defaults = recipe_defaults()
    defaults.update(max_time_minutes=a.minutes, judge_steps=a.judge_steps, seed=a.seed, judge=a.judge,
                    eval_samples_per_class=a.samples_per_class, temperature=a.temperatures[0])
    t0 = time.time()
    m = train("image-generation", ["--out", a.run_dir, "--overwrite", "--progress", "false", *extra], defaults)
    judged = {str(a.temperatures[0]): m["class_accuracy"]}
    for t in a.temperatures[1:]:
        task, model = load_run(a.run_dir, "cpu", {"temperature": t})
        task.load_data()
        judged[str(t)] = task.evaluate(model, "test")["class_accuracy"]
    cfg = json.loads((Path(a.run_dir) / "assets" / "model.json").read_text())["config"]
    judge_meta = json.loads((Path(m["judge"]) / "metrics.json").read_text()) if (Path(m["judge"]) / "metrics.json").is_file() else {}
    result = {
        "benchmark": "image_generation_digits",
        "split": "sklearn digits: 25% stratified test (450, random_state 0); train 1212 / valid 135 (seed "
                 f"{a.seed}); 8x8, 17 grey levels (lossless)",
        "bits_per_dim": m["bits_per_dim"], "loss_nats_per_dim": m["loss"], "uniform_bits_per_dim": 4.087,
        "class_accuracy": m["class_accuracy"], "class_accuracy_by_temperature": judged,
        "class_accuracy_per_class": m["class_accuracy_per_class"], "samples_per_class": m["samples_per_class"],
        "judge": {"source": "built-in ViT (tasks.vit) on the 1,212 training digits" if not a.judge else a.judge,
                  "test_accuracy_real_digits": m["judge_accuracy"], **judge_meta},
        "target_class_accuracy": TARGET, "meets_target": bool(m["class_accuracy"] >= TARGET),
        "model": {k: cfg[k] for k in ("d_model", "n_heads", "n_layers", "d_ff", "dropout")} | {"num_params": m["num_params"]},
        "train_steps": m["train_steps"], "best_step": m["best_step"], "train_time_s": m["train_time_s"],
        "budget_minutes": a.minutes, "extra_flags": extra, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "total_time_s": round(time.time() - t0, 1), "tag": a.tag or None,
    }
    out = ROOT / "bench" / "out" / (f"image_generation_digits-{a.tag}.json" if a.tag else "image_generation_digits.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
