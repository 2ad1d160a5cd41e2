#!/usr/bin/env python
"""Long sequences: training-step time and peak memory at T = 512..8192, the bf16 kernel crossover, and
KV-cache decoding time per token at 1k..8k of context.

The model is bench/core_speed.py's (d_model 256, 4 heads, d_ff 1024, 4 layers, dropout 0.1, post-LN), at
batch 1, training step = forward + backward + AdamW (the Trainer's optimizer and allocator setting):

* ``panformer``: the encoder with the attention kernel chosen per call (``core.attention.choose_kernel``);
* ``explicit``: the same encoder forced onto the explicit matmul + softmax kernel (the bf16 CPU choice
  before, at every length);
* ``torch``: ``torch.nn.TransformerEncoder`` (its dropout on attention probabilities takes SDPA off its
  fused kernel);
* ``panformer_decoder``: the decoder-only stack (causal self-attention), kernel chosen per call.

Each (model, precision, length) runs in a fresh process whose peak resident memory (``VmHWM`` of
/proc/self/status) is reported, with what it held before the first step. A configuration whose
projected peak (the previous length's growth x 4) exceeds ``--max-gib`` or the memory available is
skipped and reported as such.

``crossover``: bf16 and fp32 training steps at T = 64..4096 with 4,096 tokens per batch (core_speed's
32 x 128 at T = 128), the explicit and the fused kernel forced in turns in one process (median of the
per-pair ratios: the VM's drift hits both), the evidence for ``BF16_EXPLICIT_MAX_KEYS``; on a loaded
machine ``--crossover-threads 1 --clock cpu`` counts CPU time, which other processes do not inflate.

``decode``: a 4-layer d 256 decoder-only LM (vocabulary 256) with the KV cache, prompt of L - 64 tokens,
then 63 steps timed, at L = 1k..8k, on one thread (``--decode-threads``); the growing cache against the
concatenating one used before (three rounds in turns).

    python bench/long_context.py                       # everything (~30 min on the 2-core CPU)
    python bench/long_context.py --parts decode --update   # rerun one part, keep the others in --out
    python bench/long_context.py --parts train --models panformer explicit --precisions bf16
    python bench/long_context.py --parts train --update --train-threads 1   # CPU times steady under load

Writes bench/out/long_context.json and bench/out/long_context.png (``--out``, ``--plot``) and prints
the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MODELS = ("panformer", "explicit", "torch", "panformer_decoder")
QUADRATIC = ("explicit", "torch")  # models whose attention memory grows as T^2


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def _build(model: str):
    from core_speed import build

    from panformer import core
    if model == "panformer_decoder":
        cfg = core.TransformerConfig(d_model=256, n_heads=4, n_layers=4, d_ff=1024, dropout=0.1, positional="none")
        return core.Decoder(cfg, cross_attention=False)
    return build("torch" if model == "torch" else "panformer")


def child(model: str, precision: str, T: int, repeats: int, threads: int) -> dict:
    """One configuration in this (fresh) process: median training-step ms (wall and CPU time) and peak
    memory. With one thread the CPU time is the step's work whatever else runs on the machine."""
    from core_speed import train_step_fn

    from panformer.core.attention import set_attention_impl
    from panformer.core.runtime import limit_blas_threads, retain_freed_memory
    retain_freed_memory()
    torch.set_num_threads(threads)
    set_attention_impl("math" if model == "explicit" else "auto")
    torch.manual_seed(0)
    m = _build(model)
    x = torch.randn(1, T, 256)
    if model == "panformer_decoder":
        step = _decoder_step_fn(m, x, precision)
    else:
        step = train_step_fn(m, x, None, precision)
    start_mb = _status_mb("VmRSS")
    times, cpu = [], []
    with limit_blas_threads():
        for i in range(1 + repeats):  # one warm-up step
            t, c = time.perf_counter(), time.process_time()
            step()
            if i:
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
    peak = _status_mb("VmHWM")
    return {"threads": threads, "step_ms": round(sorted(times)[len(times) // 2], 1),
            "step_cpu_ms": round(sorted(cpu)[len(cpu) // 2], 1), "step_ms_all": [round(t, 1) for t in times],
            "start_rss_mb": round(start_mb), "peak_rss_mb": round(peak), "growth_mb": round(peak - start_mb)}


def _decoder_step_fn(model, x, precision):
    from panformer.core.optim import build_optimizer
    opt = build_optimizer(model, lr=1e-4)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def run_train(lengths, precisions, models, repeats, max_gib, threads: int) -> list[dict]:
    rows, growth = [], {}
    for T in lengths:
        for precision in precisions:
            for model in models:
                key = (model, precision)
                row = {"model": model, "precision": precision, "T": T}
                if key in growth:
                    prev_T, prev_growth, start = growth[key]
                    factor = (T / prev_T) ** (2 if model in QUADRATIC else 1)
                    projected = start + prev_growth * factor
                    budget = min(max_gib * 1024, 0.8 * _mem_available_mb())
                    if projected > budget:
                        row.update(skipped=f"projected peak {projected / 1024:.1f} GiB > {budget / 1024:.1f} GiB")
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        continue
                cmd = [sys.executable, __file__, "--child", model, precision, str(T), str(repeats), str(threads)]
                res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                if res.returncode:
                    row.update(failed=(res.stderr.strip().splitlines() or ["?"])[-1][:300])
                else:
                    row.update(json.loads(res.stdout.strip().splitlines()[-1]))
                    growth[key] = (T, row["growth_mb"], row["start_rss_mb"])
                row["load_avg_1min"] = round(os.getloadavg()[0], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def run_crossover(lengths, repeats, threads: int, clock: str, tokens: int = 4096) -> list[dict]:
    """Explicit vs fused kernel in turns, same model weights, training steps of ``tokens`` tokens.

    ``clock="cpu"`` times the process's CPU time instead of wall time: with one thread that is the step's
    work whatever else the machine runs (a preempted step waits without consuming CPU), so it gives
    steady ratios on a loaded machine; with two threads it would count spin-waits."""
    from core_speed import train_step_fn

    from panformer.core.attention import set_attention_impl
    from panformer.core.runtime import limit_blas_threads
    now = time.process_time if clock == "cpu" else time.perf_counter
    torch.set_num_threads(threads)
    rows = []
    with limit_blas_threads():
        for precision in ("bf16", "fp32"):
            for T in lengths:
                torch.manual_seed(0)
                models = {k: _build("panformer") for k in ("math", "sdpa")}
                models["sdpa"].load_state_dict(models["math"].state_dict())
                x = torch.randn(max(1, tokens // T), T, 256)
                steps = {k: train_step_fn(m, x, None, precision) for k, m in models.items()}
                times: dict[str, list[float]] = {"math": [], "sdpa": []}
                for i in range(2 + repeats):
                    for k in (("math", "sdpa") if i % 2 else ("sdpa", "math")):
                        set_attention_impl(k)
                        t = now()
                        steps[k]()
                        if i >= 2:
                            times[k].append((now() - t) * 1000)
                set_attention_impl("auto")
                ratios = sorted(s / m for s, m in zip(times["sdpa"], times["math"]))
                med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
                row = {"precision": precision, "T": T, "batch": x.size(0), "threads": threads, "clock": clock,
                       "explicit_ms": round(med["math"], 1),
                       "sdpa_ms": round(med["sdpa"], 1), "sdpa_over_explicit": round(ratios[len(ratios) // 2], 3),
                       "q1_q3": [round(ratios[len(ratios) // 4], 3), round(ratios[3 * len(ratios) // 4], 3)],
                       "load_avg_1min": round(os.getloadavg()[0], 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _concat_kv(part: dict, k, v):
    """The cache before: one concatenation of the whole cache per step."""
    if "k" in part:
        k, v = torch.cat([part["k"], k], dim=2), torch.cat([part["v"], v], dim=2)
    part["k"], part["v"] = k, v
    return k, v


def run_decode(lengths, threads: int, new_tokens: int = 64, rounds: int = 3) -> list[dict]:
    """ms per generated token at context ~L: growing cache vs concatenating cache, in turns. On ``threads``
    threads: a step's ops are small, and on a loaded machine two threads wait for each other at every op."""
    from panformer import core
    from panformer.core import attention as A
    from panformer.core.cache import append_kv
    from panformer.core.runtime import limit_blas_threads
    rows = []
    torch.set_num_threads(threads)
    with limit_blas_threads():
        for precision in ("fp32", "bf16"):
            for L in lengths:
                torch.manual_seed(0)
                cfg = core.TransformerConfig(d_model=256, n_heads=4, n_layers=4, d_ff=1024, dropout=0.0,
                                             max_len=L, norm_first=True)
                lm = core.CausalTransformerLM(cfg, 256).eval()
                prompt = torch.randint(0, 256, (1, L - new_tokens))
                times: dict[str, list[float]] = {"grow": [], "concat": []}
                for r in range(rounds):
                    for mode in (("grow", "concat") if r % 2 == 0 else ("concat", "grow")):
                        A.append_kv = append_kv if mode == "grow" else _concat_kv
                        state = lm.init_decode_state()
                        tokens = prompt
                        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                            lm.decode_step(tokens, state)  # the prompt (not timed)
                            for _ in range(new_tokens - 1):
                                nxt = torch.randint(0, 256, (1, 1))
                                tokens = torch.cat([tokens, nxt], dim=1)
                                t = time.perf_counter()
                                lm.decode_step(tokens, state)
                                times[mode].append((time.perf_counter() - t) * 1000)
                A.append_kv = append_kv
                med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
                row = {"precision": precision, "context": L, "threads": threads, "ms_per_token_grow": round(med["grow"], 2),
                       "ms_per_token_concat": round(med["concat"], 2), "load_avg_1min": round(os.getloadavg()[0], 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def tables(res: dict) -> str:
    out = []
    if res.get("train"):
        out += ["| model | precision | T | step ms (wall) | step ms (CPU) | peak RSS MB | growth MB |",
                "|---|---|---|---|---|---|---|"]
        for r in res["train"]:
            if "step_ms" in r:
                out.append(f"| {r['model']} | {r['precision']} | {r['T']} | {r['step_ms']:,.0f} | "
                           f"{r.get('step_cpu_ms', float('nan')):,.0f} | {r['peak_rss_mb']:,} | {r['growth_mb']:,} |")
            else:
                out.append(f"| {r['model']} | {r['precision']} | {r['T']} | {r.get('skipped') or r.get('failed')} | | | |")
    if res.get("crossover"):
        out += ["", "| precision | T | batch | threads, clock | explicit ms | sdpa ms | sdpa / explicit (q1-q3) |",
                "|---|---|---|---|---|---|---|"]
        for r in res["crossover"]:
            out.append(f"| {r['precision']} | {r['T']} | {r['batch']} | {r.get('threads', 2)}, {r.get('clock', 'wall')} | "
                       f"{r['explicit_ms']:,.0f} | {r['sdpa_ms']:,.0f} | "
                       f"{r['sdpa_over_explicit']:.2f} ({r['q1_q3'][0]:.2f}-{r['q1_q3'][1]:.2f}) |")
    if res.get("decode"):
        out += ["", "| precision | context | ms/token, growing cache | ms/token, concatenating cache |", "|---|---|---|---|"]
        for r in res["decode"]:
            out.append(f"| {r['precision']} | {r['context']} | {r['ms_per_token_grow']:.2f} | {r['ms_per_token_concat']:.2f} |")
    return "\n".join(out)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [p for p in ("train", "decode") if res.get(p)]
    if not panels:
        return
    n = 2 * ("train" in panels) + ("decode" in panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6))
    axes = list(axes) if n > 1 else [axes]
    styles = {"fp32": "-", "bf16": "--"}
    colors = {"panformer": "C0", "explicit": "C3", "torch": "C1", "panformer_decoder": "C2"}
    if "train" in panels:
        ax_t, ax_m = axes[0], axes[1]
        for (model, prec) in sorted({(r["model"], r["precision"]) for r in res["train"]}):
            pts = [r for r in res["train"] if r["model"] == model and r["precision"] == prec and "step_ms" in r]
            if not pts:
                continue
            T = [r["T"] for r in pts]
            kw = dict(color=colors.get(model), linestyle=styles[prec], marker="o", markersize=3, label=f"{model} {prec}")
            ax_t.plot(T, [r["step_cpu_ms" if r.get("threads") == 1 else "step_ms"] / 1000 for r in pts], **kw)
            ax_m.plot(T, [r["growth_mb"] / 1024 for r in pts], **kw)
        one = all(r.get("threads") == 1 for r in res["train"] if "step_ms" in r)
        step_title = "training step, CPU s (1 thread), batch 1" if one else "training step (s, 2 threads), batch 1"
        for ax, title in ((ax_t, step_title), (ax_m, "peak memory growth (GiB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        ax_m.legend(fontsize=6)
    if "decode" in panels:
        ax = axes[-1]
        for prec in ("fp32", "bf16"):
            pts = [r for r in res["decode"] if r["precision"] == prec]
            ax.plot([r["context"] for r in pts], [r["ms_per_token_grow"] for r in pts], "C0" + styles[prec], marker="o",
                    markersize=3, label=f"growing cache {prec}")
            ax.plot([r["context"] for r in pts], [r["ms_per_token_concat"] for r in pts], "C3" + styles[prec], marker="o",
                    markersize=3, label=f"concatenating {prec}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        threads = res["decode"][0].get("threads", 1)
        ax.set_title(f"KV-cache decoding (ms / token, {threads} thread{'s' * (threads > 1)})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, precision, T, repeats, threads = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
        print(json.dumps(child(model, precision, T, repeats, threads)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["train", "crossover", "decode"], choices=["train", "crossover", "decode"])
    p.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--crossover-lengths", nargs="+", type=int, default=[64, 128, 256, 512, 1024, 2048, 4096])
    p.add_argument("--decode-lengths", nargs="+", type=int, default=[1024, 2048, 4096, 8192])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=3, help="timed training steps per configuration (after one warm-up)")
    p.add_argument("--train-threads", type=int, default=2, help="threads of each training configuration's process "
                   "(1: its CPU time, step_cpu_ms, is steady on a loaded machine)")
    p.add_argument("--crossover-repeats", type=int, default=8)
    p.add_argument("--crossover-threads", type=int, default=2)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="crossover: wall time, or CPU time (steady on a loaded machine, with --crossover-threads 1)")
    p.add_argument("--decode-threads", type=int, default=1)
    p.add_argument("--max-gib", type=float, default=14.0, help="skip configurations projected to need more")
    p.add_argument("--update", action="store_true", help="keep the other parts' results already in --out")
    p.add_argument("--out", default="bench/out/long_context.json")
    p.add_argument("--plot", default="bench/out/long_context.png")
    a = p.parse_args()
    out = Path(a.out)
    res: dict = json.loads(out.read_text()) if a.update and out.is_file() else {}
    for part in a.parts:  # each part records when and how it ran
        res[f"{part}_run"] = {"config": vars(a), "torch": torch.__version__,
                              "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "load_avg_start": os.getloadavg()}
        if part == "train":
            res["train"] = run_train(a.lengths, a.precisions, a.models, a.repeats, a.max_gib, a.train_threads)
        elif part == "crossover":
            res["crossover"] = run_crossover(a.crossover_lengths, a.crossover_repeats, a.crossover_threads, a.clock)
        else:
            res["decode"] = run_decode(a.decode_lengths, a.decode_threads)
        res[f"{part}_run"]["load_avg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    plot(res, Path(a.plot))
    print(tables(res))


if __name__ == "__main__":
    main()
