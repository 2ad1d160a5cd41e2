#!/usr/bin/env python
"""tinyshakespeare, character level: validation loss after a wall-time budget.

nanoGPT's split (first 90 % train, last 10 % validation) and shape (6 layers x 192, 6 heads, block
128, batch 64, no dropout), bf16 autocast, cosine schedule. Target: validation loss <= 1.60 within
15 minutes of training (nanoGPT's CPU recipe: 1.88).

    python bench/generation_tinyshakespeare.py                          # the full benchmark (15 minutes)
    python bench/generation_tinyshakespeare.py --minutes 4 --tag smoke  # a smoke run
    python bench/generation_tinyshakespeare.py -- --precision fp32      # extra panformer flags after --
    python bench/generation_tinyshakespeare.py --step-time-only         # only the step-time comparison

Before training it times one training step of panformer's model (built by the generation task from the
recipe's settings, its loss, the Trainer's optimizer) beside the nanoGPT configuration's
(``bench/nanogpt_config.py``), same shape, batch and precision, the two steps taken in turns.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

from recipes.generation import DEFAULTS  # noqa: E402
from panformer.tasks.cli import train  # noqa: E402


def step_times(data: str, batch_size: int, precision: str, repeats: int = 30, warmup: int = 5) -> dict:
    """Median ms of a training step (forward, loss, backward, optimizer) of panformer's model and of the
    nanoGPT configuration, alternating, on the same random batches; and the median of the per-pair ratios."""
    import torch

    from bench.nanogpt_config import PeerConfig, PeerGPT, peer_optimizer
    from panformer.core.optim import build_optimizer
    from panformer.core.runtime import autocast, limit_blas_threads, retain_freed_memory
    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args

    cls = get_task("generation")
    # the same model as the peer's configuration: no dropout (the recipe's 0.1 is a training choice, timed apart)
    args, targs = resolve_train_args(cls, ["--data", data, "--batch-size", str(batch_size), "--precision", precision,
                                           "--dropout", "0"], DEFAULTS)
    task = cls(args)
    task.load_data()
    task.fit_assets()
    torch.manual_seed(0)
    ours = task.build_model()
    ds = task.train_dataset()
    V, T = ours.vocab_size, args.block_size
    peer = PeerGPT(PeerConfig(vocab_size=V, block_size=T, n_layer=args.n_layers, n_head=args.n_heads,
                              n_embd=args.d_model, dropout=0.0))
    opt_ours = build_optimizer(ours, targs.lr, targs.weight_decay, (targs.adam_beta1, targs.adam_beta2), targs.adam_eps)
    opt_peer = peer_optimizer(peer, targs.lr)
    g = torch.Generator().manual_seed(0)
    device = torch.device("cpu")

    def step_ours(i: int) -> None:
        batch = task.collate([ds[j] for j in torch.randint(len(ds), (batch_size,), generator=g).tolist()])
        with autocast(device, precision):
            loss = task.loss(ours, batch)
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_peer(i: int) -> None:
        ids = torch.randint(V, (batch_size, T + 1), generator=g)
        with autocast(device, precision):
            loss = peer(ids[:, :-1], ids[:, 1:])
        loss.backward()
        opt_peer.step()
        opt_peer.zero_grad(set_to_none=True)

    retain_freed_memory()  # as the Trainer does on a CPU, for both
    ours.train(), peer.train()
    times: dict[str, list[float]] = {"panformer": [], "nanogpt_config": []}
    with limit_blas_threads():
        for i in range(warmup + repeats):
            for name, fn in (("panformer", step_ours), ("nanogpt_config", step_peer)):
                t = time.perf_counter()
                fn(i)
                if i >= warmup:
                    times[name].append((time.perf_counter() - t) * 1000)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    ratios = sorted(a / b for a, b in zip(times["panformer"], times["nanogpt_config"]))
    return {"batch_size": batch_size, "block_size": T, "precision": precision, "threads": torch.get_num_threads(),
            "panformer_ms": round(med["panformer"], 1), "nanogpt_config_ms": round(med["nanogpt_config"], 1),
            "panformer_over_nanogpt": round(ratios[len(ratios) // 2], 3),
            "params": {"panformer": sum(p.numel() for p in ours.parameters()),
                       "nanogpt_config": sum(p.numel() for p in peer.parameters())}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"))
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget (max_time_minutes)")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/bench-tinyshakespeare-<tag>)")
    p.add_argument("--tag", default="full", help="name of this run in bench/out/")
    p.add_argument("--step-time-only", action="store_true", help="only time the two models' training steps")
    p.add_argument("--step-batch", type=int, default=32, help="batch size of the step-time comparison")
    p.add_argument("--step-precision", default="auto", help="precision of the step-time comparison (auto: bf16 where the CPU has it)")
    p.add_argument("extra", nargs="*", help="more `panformer train generation` flags (after --)")
    a = p.parse_args()
    if not Path(a.data).is_file():
        sys.exit(f"tinyshakespeare not found: {a.data}")
    steps = step_times(a.data, a.step_batch, a.step_precision)
    print(json.dumps({"step_time": steps}, indent=2), flush=True)
    if a.step_time_only:
        out = ROOT / "bench" / "out" / f"generation_tinyshakespeare_steps_{a.tag}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(steps, indent=2) + "\n")
        return
    run_dir = Path(a.run_dir or ROOT / "runs" / f"bench-tinyshakespeare-{a.tag}")
    argv = ["--data", a.data, "--max-time-minutes", str(a.minutes), "--out", str(run_dir), "--overwrite",
            "--progress", "false", "--prompt", "ROMEO:", "--max-new-tokens", "300", *a.extra]
    machine = describe()  # before the run: CPU, bf16 flags, fp32 speed, load (bench/machine.py)
    t0 = time.time()
    m = train("generation", argv, recipe_defaults=DEFAULTS)
    summary = {
        "benchmark": "tinyshakespeare char-level validation loss", "tag": a.tag, "minutes_budget": a.minutes,
        "val_loss": round(m["loss"], 4), "bits_per_char": round(m["bits_per_char"], 4),
        "train_time_s": m["train_time_s"], "train_steps": m["train_steps"], "num_params": m["num_params"],
        "examples_per_s": round(m["examples_per_s"] or 0.0, 1), "total_time_s": round(time.time() - t0, 1),
        "run_dir": str(run_dir), "target": "val_loss <= 1.48 within 15 minutes (issue 18; the nanoGPT configuration 1.509 at 12 min here)",
        "step_time": steps,
    }
    summary["machine"] = machine
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "out" / f"generation_tinyshakespeare_{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
