#!/usr/bin/env python
"""Training on a corpus larger than a third of this machine's memory: generation from a token cache.

Writes >= 8 GB of generated English text to /tmp (CPython's pydoc help sentences, shuffled, two words of
each replaced at random: the point is the size), then trains ``generation`` for 200 steps through the CLI
in a subprocess with ``--cache-dir``, twice: the first run tokenises the corpus into the memory-mapped
cache, the second must reuse it (no second tokenisation). Measures each run's peak RSS (``os.wait4``),
the tokenisation passes and the time until training starts. Targets: peak RSS < 3 GB in both runs; the
second run's data preparation ~0 s. Deletes the corpus and the cache at the end (``--keep`` keeps them).

    python bench/generation_big_corpus.py                        # the benchmark: 8 GB (~30-60 min here)
    python bench/generation_big_corpus.py --gb 1 --tag 1gb       # a 1 GB rehearsal
    python bench/generation_big_corpus.py -- --tokenizer bpe     # extra `panformer train generation` flags after --
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PART_BYTES = 1 << 30  # one file per GiB: a folder of .txt documents

# a small GPT (the --quick shape): the benchmark measures the data path, not the model
TRAIN = ["--max-steps", "200", "--d-model", "64", "--n-layers", "2", "--n-heads", "2", "--block-size", "64",
         "--batch-size", "16", "--lr", "3e-3", "--warmup-steps", "10", "--eval-every", "100", "--threads", "1",
         "--eval-max-tokens", "8192", "--valid-fraction", "0.0001", "--max-new-tokens", "100", "--progress", "false"]


def _sentences() -> tuple[list[list[str]], list[str]]:
    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics))
    sents = [s.strip().split(" ") for s in re.split(r"(?<=[.!?])\s+", text) if 20 < len(s.strip()) < 400]
    return sents, sorted(set(re.findall(r"[A-Za-z]{3,}", text)))


def write_part(job: tuple[Path, int, int]) -> int:
    """Write ``size`` bytes (about) of generated text to ``path`` with seed ``seed``; returns bytes written."""
    path, size, seed = job
    sents, words = _sentences()
    rng = random.Random(seed)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        while n < size:
            buf = []
            for _ in range(4000):
                ws = list(rng.choice(sents))
                for _ in range(2):
                    ws[rng.randrange(len(ws))] = rng.choice(words)
                buf.append(" ".join(ws))
                buf.append("\n\n" if rng.random() < 0.15 else " ")
            chunk = "".join(buf)
            f.write(chunk)
            n += len(chunk.encode("utf-8"))
    return n


def make_corpus(folder: Path, gb: float, workers: int) -> tuple[int, float]:
    """(bytes, seconds); an existing complete corpus of the same size is reused."""
    marker = folder / "COMPLETE.json"
    if marker.is_file() and json.loads(marker.read_text())["gb"] == gb:
        return json.loads(marker.read_text())["bytes"], 0.0
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "text").mkdir(parents=True)
    total, t0 = int(gb * 1e9), time.time()
    jobs = [(folder / "text" / f"part{i:03d}.txt", min(PART_BYTES, total - i * PART_BYTES), i)
            for i in range((total + PART_BYTES - 1) // PART_BYTES)]
    with Pool(workers) as pool:
        written = sum(pool.map(write_part, jobs))
    marker.write_text(json.dumps({"gb": gb, "bytes": written}))
    return written, time.time() - t0


def run_cli(argv: list[str], log_path: Path) -> dict:
    """``python -m panformer train generation ARGV`` in a subprocess: exit code, wall time, peak RSS (GB),
    and the seconds at which each stderr line appeared."""
    cmd = [sys.executable, "-m", "panformer", "train", "generation", *argv]
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in p.stderr:
            lines.append((round(time.time() - t0, 2), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    _, status, usage = os.wait4(p.pid, 0)
    reader.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    log_path.write_text("".join(f"{t:9.2f}  {line}\n" for t, line in lines))
    ready = next((t for t, line in lines if "] generation on " in line), None)
    return {"command": " ".join(["python -m panformer train generation", *argv]), "exit_code": p.returncode,
            "wall_s": round(time.time() - t0, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3),
            "data_ready_s": ready, "cache_lines": [line for _, line in lines if "token cache" in line]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=8.0, help="corpus size in GB (10^9 bytes)")
    p.add_argument("--corpus-dir", default="/tmp/panformer-big-corpus", help="corpus, cache and runs go here")
    p.add_argument("--workers", type=int, default=2, help="processes writing the corpus")
    p.add_argument("--keep", action="store_true", help="keep the corpus and the cache")
    p.add_argument("--tag", default="8gb", help="name of this run in bench/out/")
    p.add_argument("extra", nargs="*", help="more `panformer train generation` flags (after --)")
    a = p.parse_args()
    folder = Path(a.corpus_dir)
    load0 = os.getloadavg()
    nbytes, gen_s = make_corpus(folder, a.gb, a.workers)
    print(f"corpus: {nbytes / 1e9:.2f} GB in {folder / 'text'} ({gen_s:.0f} s)", flush=True)
    cache = folder / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    runs = []
    try:
        for i in (1, 2):
            argv = ["--data", str(folder / "text"), "--cache-dir", str(cache), "--out", str(folder / f"run{i}"),
                    "--overwrite", *TRAIN, *a.extra]
            r = run_cli(argv, folder / f"run{i}.log")
            r["metrics"] = json.loads((folder / f"run{i}" / "metrics.json").read_text()) if r["exit_code"] == 0 else None
            runs.append(r)
            print(json.dumps(r, indent=2), flush=True)
            if r["exit_code"] != 0:
                sys.exit(f"run {i} failed; see {folder / f'run{i}.log'}")
        manifest = json.loads(next(cache.glob("generation-*/manifest.json")).read_text())
        cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    finally:
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)
    summary = {
        "benchmark": "generation from a corpus larger than a third of RAM (token cache)", "tag": a.tag,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "machine": f"{os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}",
        "load_average_before": [round(x, 2) for x in load0], "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "corpus_gb": round(nbytes / 1e9, 3), "corpus_write_s": round(gen_s, 1), "cache_gb": round(cache_bytes / 1e9, 3),
        "train_tokens": manifest["fields"]["train"]["length"], "tokenise_s": manifest["build_seconds"],
        "run1": runs[0], "run2": runs[1], "cache_reused_by_run2": any("reused" in l for l in runs[1]["cache_lines"]),
        "builds": manifest["builds"], "target": "peak RSS < 3 GB; run 2 reuses the cache (no second tokenisation)",
        "met": all(r["peak_rss_gb"] < 3.0 for r in runs) and manifest["builds"] == 1,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("run1", "run2")}, indent=2))
    out = ROOT / "bench" / "out" / f"generation_big_corpus_{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
