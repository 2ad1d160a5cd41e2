"""The ViT judge of class-conditional samples: the toolkit's own ``vit`` classifier.

``class_accuracy`` = the fraction of generated images that a ViT classifies as the class they were
generated for. The judge is either a run of ``panformer train vit`` given with ``--judge RUN_DIR``
(its class names must include this run's), or a small ViT trained here on the quantised training
split (validation split for the best checkpoint), cached as a loadable vit run directory
(``<run>/judge/``: config.json, assets/, model.safetensors, metrics.json) and reused afterwards.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from panformer.core.checkpoint import atomic_write_json, save_weights
from panformer.core.errors import ConfigError
from panformer.core.runtime import seed_everything

__all__ = ["Judge", "train_judge", "load_judge"]


class Judge:
    """A loaded ViT classifier: ``classify`` uint8 images (N, 1, S, S) → class names."""

    def __init__(self, task: Any, model: nn.Module, source: str) -> None:
        self.task, self.model, self.source = task, model.eval(), source
        self.names = [str(v) for v in task.labels]

    def check_classes(self, classes: list[str]) -> None:
        missing = [c for c in classes if c not in self.names]
        if missing:
            raise ConfigError(f"--judge {self.source}: the judge does not know the classes {missing[:10]} "
                              f"(its classes: {self.names[:20]}); train it on the same labels")

    @torch.no_grad()
    def classify(self, images: Tensor, batch_size: int = 256) -> list[str]:
        from panformer.tasks.vit.data import build_transform

        p = self.task.prep  # resize to the judge's input size, normalise as in its training
        tf = build_transform(p["vit"]["image_size"], p["mean"], p["std"], "none", train=False)
        device = next(self.model.parameters()).device
        out: list[str] = []
        for s in range(0, images.size(0), batch_size):
            chunk = images[s : s + batch_size]
            if self.task.channels == 3:
                chunk = chunk.expand(-1, 3, -1, -1)
            x = torch.stack([tf(img) for img in chunk]).to(device)
            out += [self.names[int(i)] for i in self.model(x).float().argmax(-1).cpu()]
        return out

    def accuracy(self, images: Tensor, names: list[str]) -> float:
        pred = self.classify(images)
        return sum(p == t for p, t in zip(pred, names)) / max(len(names), 1)


def load_judge(run_dir: str | Path) -> Judge:
    """A vit run directory (``panformer train vit`` or a cached judge) → :class:`Judge` on the CPU."""
    from panformer.tasks.cli import load_run

    run_dir = Path(run_dir)
    cfg = run_dir / "config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("task") != "vit":
        raise ConfigError(f"--judge {run_dir}: not a vit run (task {json.loads(cfg.read_text()).get('task')!r})")
    task, model = load_run(run_dir, "cpu")
    return Judge(task, model, str(run_dir))


def judge_options(image_size: int, steps: int, seed: int, precision: str) -> dict[str, Any]:
    """vit options of the built-in judge: 16 patches, width 64, 3 layers (~110 k parameters)."""
    size = image_size * max(1, 16 // image_size)  # 8x8 digits → 16x16, as the vit task does
    return dict(image_size=size, patch_size=max(1, size // 4), channels=1, d_model=64, n_heads=4, n_layers=3, d_ff=128,
                dropout=0.1, augment="affine", max_steps=steps, batch_size=64, lr=2e-3, schedule="cosine",
                warmup_steps=min(50, max(steps // 10, 1)), weight_decay=0.05, label_smoothing=0.1,
                metric_for_best="accuracy", eval_every=max(steps // 4, 1), precision=precision, seed=seed,
                progress=False, rollout_images=0, verify_images=False)


def train_judge(images: dict[str, Tensor], names: dict[str, list[str]], out_dir: Path, image_size: int,
                steps: int, seed: int = 0, precision: str = "fp32") -> Judge:
    """Train the built-in judge on uint8 images ``images["train"]`` (N, 1, S, S) with class ``names``,
    pick its best step on ``images["valid"]`` and write it to ``out_dir`` (all or nothing)."""
    from panformer.core.trainer import Trainer
    from panformer.tasks.cli import resolve_train_args
    from panformer.tasks.vit import VitTask
    from panformer.tasks.vit.data import TensorImages

    args, targs = resolve_train_args(VitTask, [], judge_options(image_size, steps, seed, precision))
    task = VitTask(args)
    task.channels = 1
    task.splits = {k: TensorImages(images[k], names[k], 1, f"quantised {k} images") for k in ("train", "valid")}
    task.fit_assets()
    seed_everything(seed)
    model = task.build_model()
    t0 = time.time()
    Trainer(model, targs, task.train_dataset(), task.collate, task.loss,
            eval_fn=lambda m: task.evaluate(m, "valid")).train()
    model.eval()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        atomic_write_json(tmp / "config.json", {"task": "vit", "args": vars(args)})
        (tmp / "assets").mkdir()
        task.save_assets(tmp / "assets")
        save_weights(model, tmp / "model.safetensors")
        valid = task.evaluate(model, "valid")
        atomic_write_json(tmp / "metrics.json", {"valid_accuracy": valid["accuracy"], "train_time_s": round(time.time() - t0, 2),
                                                 "train_images": len(names["train"]), "steps": steps})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Judge(task, model, str(out_dir))
