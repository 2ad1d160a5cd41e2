#!/usr/bin/env python
"""Generation speed: new tokens per second of the core GPT with and without the key/value cache, and of
the transformers library's ``GPT2LMHeadModel.generate`` at the same size (random weights, same shapes:
6 layers x 256, 8 heads, vocabulary 65, context 256 → 4.8 M parameters). Batch 1 and 8, greedy and
beam 4, fp32, every sequence runs to exactly ``--new-tokens`` (no EOS). Target: >= 1.0x transformers
with the cache.

    python bench/generation_speed.py                       # full: 200 new tokens, 3 repeats
    python bench/generation_speed.py --new-tokens 32 --repeats 1 --threads 1 --tag smoke
    python bench/generation_speed.py --batches 8 --modes beam4 --no-uncached --threads 1 --tag b8-beam4
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

from panformer.core import CausalTransformerLM, TransformerConfig, beam_search, count_parameters, greedy_search  # noqa: E402


def ours(layers: int, d: int, heads: int, vocab: int, ctx: int) -> CausalTransformerLM:
    cfg = TransformerConfig(d_model=d, n_heads=heads, n_layers=layers, d_ff=4 * d, dropout=0.0, activation="gelu_tanh",
                            norm_first=True, max_len=ctx, positional="learned")
    return CausalTransformerLM(cfg, vocab, tie_output=True, scale_embeddings=False).eval()


def hf(layers: int, d: int, heads: int, vocab: int, ctx: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=d, n_layer=layers, n_head=heads, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=None, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--modes", nargs="+", default=["greedy", "beam4"], choices=["greedy", "beam4"])
    p.add_argument("--no-hf", action="store_true", help="skip the transformers comparison")
    p.add_argument("--no-uncached", action="store_true", help="skip the (slow) runs without the key/value cache")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--tag", default="full")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    shape = (a.layers, a.d_model, a.heads, a.vocab, a.context)
    model = ours(*shape)
    ref = None if a.no_hf else hf(*shape)
    n = a.new_tokens
    rows = []
    for batch in a.batches:
        prompt = torch.randint(0, a.vocab, (batch, a.prompt_len))
        for mode in a.modes:
            row = {"batch": batch, "decoding": mode}
            with torch.inference_mode():
                for name, cache in (("panformer_cached", True), ("panformer_uncached", False))[: 1 if a.no_uncached else 2]:
                    def run(cache=cache):
                        state = model.init_decode_state(batch, use_cache=cache)
                        if mode == "beam4":  # batched: B inputs x 4 beams
                            beam_search(model, state, prompt, 4, n, eos_id=-1)
                        else:
                            greedy_search(model, state, prompt, n)
                    row[f"{name}_tok_s"] = round(batch * n / best_time(run, a.repeats), 1)
                if ref is not None:
                    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                              num_beams=4 if mode == "beam4" else 1, pad_token_id=0)
                    row["transformers_tok_s"] = round(
                        batch * n / best_time(lambda: ref.generate(prompt, attention_mask=torch.ones_like(prompt), **kw),
                                              a.repeats), 1)
                    row["speedup_cached_vs_transformers"] = round(row["panformer_cached_tok_s"] / row["transformers_tok_s"], 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    summary = {"benchmark": "generation speed (new tokens/s, fp32, CPU)", "tag": a.tag,
               "params_panformer": count_parameters(model),
               "params_transformers": None if ref is None else sum(p.numel() for p in ref.parameters()),
               "new_tokens": n, "prompt_len": a.prompt_len, "threads": torch.get_num_threads(), "rows": rows,
               "target": "panformer_cached >= 1.0x transformers"}
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "out" / f"generation_speed_{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
