#!/usr/bin/env python
"""SASRec paper, Table 3, Amazon Games: HR@10 / NDCG@10 under the sampled protocol (leave-one-out,
100 random negatives the user never interacted with), with full-ranking numbers beside them, BERT4Rec
on the same data and the most-popular baseline of the same run.

Trains ``recipes/recommendation.py``'s configuration on ``../shared/data/sasrec/Video.txt`` for at
most ``--minutes`` per model (target: SASRec HR@10 >= 0.7410 and NDCG@10 >= 0.5360 within 30 minutes
of training on the 2-core CPU), then scores the test items of every user.

    python bench/recommendation_games.py                              # the full benchmark (2 x 30 minutes)
    python bench/recommendation_games.py --minutes 2 --tag smoke      # a smoke run
    python bench/recommendation_games.py --models sasrec -- --loss bce   # extra panformer flags after --

``--member FLAGS`` (repeatable) trains SASRec runs side by side instead, one process each at one
thread, for ``--minutes`` of wall-clock time, and scores their ensemble (``panformer evaluate
recommendation --run A --run B ...``): two or three members share the two cores of the machine.

    python bench/recommendation_games.py --tag ens3 --member "--loss ce" \
        --member "--loss bce --num-negatives 8 --epochs 400 --early-stopping-patience 30" \
        --member "--loss bce --num-negatives 8 --epochs 400 --early-stopping-patience 30 --seed 1"
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.recommendation import DEFAULTS  # noqa: E402
from panformer.tasks.cli import load_runs, train  # noqa: E402

PAPER = {"sampled/hr@10": 0.7410, "sampled/ndcg@10": 0.5360}  # Kang & McAuley 2018, Table 3, Games
PMIXER = {"sampled/hr@10": 0.726, "sampled/ndcg@10": 0.516, "full/hr@10": 0.063, "full/ndcg@10": 0.031,
          "note": "pmixer SASRec.pytorch, BCE, 60 epochs (18 minutes) on this machine"}
KEYS = ("sampled/hr@10", "sampled/ndcg@10", "sampled/mrr", "full/hr@10", "full/ndcg@10", "full/mrr",
        "sampled/hr@5", "sampled/ndcg@5", "sampled/hr@20", "sampled/ndcg@20",
        "full/hr@5", "full/ndcg@5", "full/hr@20", "full/ndcg@20")
MODEL_FLAGS = {"sasrec": ["--model", "sasrec"],
               "bert4rec": ["--model", "bert4rec", "--n-heads", "2", "--dropout", "0.2", "--mask-prob", "0.4"]}


def _pick(m: dict) -> dict:
    return {k: round(m[k], 4) for k in KEYS if k in m}


def _run_dir(model: str, tag: str) -> Path:
    return ROOT / "runs" / f"bench-games-{model}-{tag}"


def _summary_path(tag: str) -> Path:
    return ROOT / "bench" / "out" / f"recommendation_games_{tag}.json"


def _beats_paper(m: dict) -> bool:
    return m["sampled/hr@10"] >= PAPER["sampled/hr@10"] and m["sampled/ndcg@10"] >= PAPER["sampled/ndcg@10"]


def _write(summary: dict) -> None:
    print(json.dumps(summary, indent=2))
    out = _summary_path(summary["tag"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sasrec" / "Video.txt"),
                   help="SASRec-format Games file (user item per line, time-ordered)")
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget per model (max_time_minutes)")
    p.add_argument("--models", default="sasrec,bert4rec", help="comma-separated: sasrec, bert4rec")
    p.add_argument("--tag", default="full", help="name of this run in bench/out/")
    p.add_argument("--member", action="append", default=[], metavar="FLAGS",
                   help="train this SASRec configuration as an ensemble member (repeat; members run side by side)")
    p.add_argument("extra", nargs="*", help="more `panformer train recommendation` flags (after --)")
    a = p.parse_args()
    if not Path(a.data).is_file():
        sys.exit(f"Games data not found: {a.data}")
    if a.member:
        return ensemble(a)
    summary: dict = {"benchmark": "SASRec Table 3, Amazon Games (leave-one-out)", "tag": a.tag,
                     "minutes_budget_per_model": a.minutes, "paper_sasrec": PAPER, "pmixer_sasrec": PMIXER,
                     "target": "SASRec sampled hr@10 >= 0.7410 and ndcg@10 >= 0.5360 within 30 minutes of training"}
    for i, name in enumerate(x.strip() for x in a.models.split(",")):
        if name not in MODEL_FLAGS:
            sys.exit(f"unknown model {name!r}; choose from {', '.join(MODEL_FLAGS)}")
        run_dir = _run_dir(name, a.tag)
        argv = ["--data", a.data, "--max-time-minutes", str(a.minutes), "--out", str(run_dir), "--overwrite",
                "--progress", "false", "--baseline", "true" if i == 0 else "false", *MODEL_FLAGS[name], *a.extra]
        t0 = time.time()
        m = train("recommendation", argv, recipe_defaults=DEFAULTS)
        summary[name] = {**_pick(m), "train_time_s": m["train_time_s"], "train_steps": m["train_steps"],
                         "best_step": m["best_step"], "num_params": m["num_params"], "users": m["users"],
                         "total_time_s": round(time.time() - t0, 1), "run_dir": str(run_dir)}
        if "baseline" in m:
            summary["most_popular"] = _pick(m["baseline"])
    if "sasrec" in summary:
        s = summary["sasrec"]
        summary["target_met"] = _beats_paper(s) and s["train_time_s"] <= 30 * 60 + 60
    _write(summary)


def ensemble(a: argparse.Namespace) -> None:
    """Train the members side by side (one process and one thread each), then score them one by one
    and as an ensemble on the test users, all against the first member's sampled negatives."""
    t0 = time.time()
    tags = [f"{a.tag}-m{i}" for i in range(len(a.member))]
    runs = [_run_dir("sasrec", tag) for tag in tags]
    procs = [subprocess.Popen([sys.executable, __file__, "--data", a.data, "--minutes", str(a.minutes), "--models",
                               "sasrec", "--tag", tag, "--", "--threads", "1", *shlex.split(flags), *a.extra],
                              stdout=subprocess.DEVNULL) for tag, flags in zip(tags, a.member)]
    if any([p.wait() for p in procs]):  # a list: wait for every member, not just up to the first failure
        sys.exit("a member's training failed; see its run directory")
    members = [json.loads(_summary_path(tag).read_text()) for tag in tags]
    task, model = load_runs(runs, "cpu")
    task.load_data()
    summary: dict = {"benchmark": "SASRec Table 3, Amazon Games (leave-one-out), ensemble", "tag": a.tag,
                     "minutes_budget_wall_clock": a.minutes, "paper_sasrec": PAPER, "pmixer_sasrec": PMIXER,
                     "members": [], "most_popular": members[0].get("most_popular")}
    for flags, run, m, member in zip(a.member, runs, members, model.members):
        summary["members"].append({"flags": flags, "run_dir": str(run), **_pick(task.evaluate(member, "test")),
                                   **{k: m["sasrec"][k] for k in ("train_time_s", "train_steps", "best_step", "num_params")}})
    summary["ensemble"] = _pick(task.evaluate(model, "test"))
    summary["ensemble_valid"] = _pick(task.evaluate(model, "valid"))
    summary["wall_s"] = round(time.time() - t0, 1)
    summary["target_met"] = _beats_paper(summary["ensemble"])
    _write(summary)


if __name__ == "__main__":
    main()
