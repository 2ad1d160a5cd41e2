#!/usr/bin/env python
"""Two processes with one thread each (``torchrun --standalone --nproc_per_node=2``, gloo) beside one
process with two threads, the same command and global batch, on sentiment's built-in data; then whether
the two runs, and an interrupted-and-resumed 2-process run, end the same.

Each round runs both configurations (which goes first alternates: the VM's speed drifts) and reads
``examples_per_s`` (training steps only, evaluation excluded) and ``train_time_s`` from ``metrics.json``;
the result is the median of the per-round ratios. The runs use ``--dropout 0`` (so that one and two
processes take the same steps) and ``--grad-accum 2``.

Checks, on the last round's runs and on a third 2-process run interrupted after half the steps (Ctrl-C
between two steps on both ranks: tests/interrupt_at.py) and resumed with ``--resume``:

* the same files in both run directories (tensorboard event names aside);
* final weights: 2 x 1 vs 1 x 2 to rounding (``weights_max_abs_diff``), resumed vs uninterrupted bit
  for bit;
* ``metrics.json`` (timings aside) and ``log.csv`` (the same rows; values to rounding or exactly).

    python bench/ddp_throughput.py [--rounds 3] [--steps 60] [--d-model 128]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"train_time_s", "total_time_s", "examples_per_s"}

INTERRUPT_AT = ROOT / "tests" / "interrupt_at.py"  # Ctrl-C between two steps, on every rank


def command(a: argparse.Namespace) -> list[str]:
    return ["train", "sentiment", "--tokenizer", "bpe", "--vocab-size", "4000", "--dropout", "0",
            "--d-model", str(a.d_model), "--n-heads", "4", "--n-layers", str(a.n_layers), "--d-ff", str(4 * a.d_model),
            "--batch-size", str(a.batch_size), "--grad-accum", "2", "--max-steps", str(a.steps),
            "--warmup-steps", "10", "--eval-every", str(a.steps // 2), "--log-every", "5", "--progress", "false"]


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    return env


def launch(nproc: int, argv: list[str], entry: list[str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """``nproc`` processes of ``2 // nproc`` threads each; returns (wall seconds, result)."""
    threads = 2 // nproc
    entry = entry or ["-m", "panformer"]
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 \
        else [sys.executable]
    cmd = [*prefix, *entry, *argv, "--threads", str(threads)]
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True)
    return time.perf_counter() - t, res


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and "tensorboard" not in p.parts)


def _rows(d: Path) -> list[dict]:
    with open(d / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def compare(a: Path, b: Path) -> dict:
    """How two run directories of the same training differ."""
    import torch
    from safetensors.torch import load_file
    out: dict = {"same_files": _files(a) == _files(b)}
    m_a, m_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    out["metrics_differ"] = {k: [m_a[k], m_b.get(k)] for k in m_a if k not in TIMING and m_a[k] != m_b.get(k)}
    diff, equal = 0.0, True
    for name in ("model.safetensors", "checkpoint/model.safetensors"):
        w_a, w_b = load_file(str(a / name)), load_file(str(b / name))
        for k, v in w_a.items():
            if k.endswith("k_proj.bias"):  # gradient exactly 0: Adam turns rounding noise into lr-sized steps
                continue
            diff = max(diff, (v - w_b[k]).abs().max().item())
            equal &= torch.equal(v, w_b[k])
    rows_a, rows_b = _rows(a), _rows(b)
    rel = 0.0
    for ra, rb in zip(rows_a, rows_b):
        for k, v in ra.items():
            if v and rb.get(k) and k not in ("step", "split", "epoch"):
                rel = max(rel, abs(float(v) - float(rb[k])) / max(abs(float(v)), 1e-12))
    out.update(weights_max_abs_diff=diff, weights_bit_identical=equal, log_rows_equal=rows_a == rows_b,
               log_same_rows=[(r["step"], r["split"]) for r in rows_a] == [(r["step"], r["split"]) for r in rows_b],
               log_max_rel_diff=rel)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (each of 2 processes takes half)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--out", default="bench/out/ddp_throughput.json")
    a = p.parse_args()
    argv = command(a)
    res: dict = {"command": "panformer " + " ".join(argv), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "load_avg_start": os.getloadavg(), "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(a.rounds):
            row = {}
            for nproc in ((2, 1) if r % 2 == 0 else (1, 2)):
                name = "2x1" if nproc == 2 else "1x2"
                out = tmp / f"{name}-{r}"
                wall, run = launch(nproc, [*argv, "--out", str(out)])
                if run.returncode:
                    sys.exit(f"{name} failed:\n{(run.stdout + run.stderr)[-3000:]}")
                m = json.loads((out / "metrics.json").read_text())
                row[name] = {"examples_per_s": round(m["examples_per_s"], 1), "train_time_s": m["train_time_s"],
                             "wall_s": round(wall, 1), "accuracy": m["accuracy"]}
            row["ratio_2x1_over_1x2"] = round(row["2x1"]["examples_per_s"] / row["1x2"]["examples_per_s"], 3)
            row["load_avg_1min"] = round(os.getloadavg()[0], 2)
            print(json.dumps(row), flush=True)
            res["rounds"].append(row)
        last = a.rounds - 1
        res["2x1_vs_1x2"] = compare(tmp / f"1x2-{last}", tmp / f"2x1-{last}")
        resumed = tmp / "resumed"
        _, run = launch(2, [str(a.steps // 2 + 1), *argv, "--out", str(resumed)], entry=[str(INTERRUPT_AT)])
        interrupted = run.returncode != 0 and "interrupted (resume with --resume)" in run.stderr
        _, run = launch(2, [*argv, "--out", str(resumed), "--resume"])
        if run.returncode:
            sys.exit(f"resume failed:\n{(run.stdout + run.stderr)[-3000:]}")
        res["resumed_vs_uninterrupted_2x1"] = {"interrupted_at_step": a.steps // 2 + 1, "interrupted": interrupted,
                                               **compare(tmp / f"2x1-{last}", resumed)}
    ratios = sorted(r["ratio_2x1_over_1x2"] for r in res["rounds"])
    res["median_ratio_2x1_over_1x2"] = ratios[len(ratios) // 2]
    res["load_avg_end"] = os.getloadavg()
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
