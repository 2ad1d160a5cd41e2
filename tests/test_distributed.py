"""Multi-process training under a real ``torchrun`` (2 gloo processes on CPU) and the error plumbing
of core.distributed.

Equality with one process holds because the global batch is split across ranks and each shard's loss
is weighted by its share of the batch (exact for losses that are means over examples, such as
sentiment's cross-entropy); the runs below include an odd-sized last batch (uneven 5 / 4 shards)
and gradient accumulation. A 2-process run interrupted between two steps and resumed ends bit for bit
as the uninterrupted one (weights, metrics and the logged losses).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from panformer.core import distributed as D
from panformer.core.errors import ConfigError, PanformerError, PeerError

ROOT = Path(__file__).resolve().parents[1]

# torchrun could not start its processes here (no free port, no loopback networking): not a panformer bug
_LAUNCH_FAILURE = re.compile(r"RendezvousConnectionError|RendezvousTimeoutError|DistNetworkError|EADDRINUSE|"
                             r"Address already in use|could not join the process group")
_TIMING = {"train_time_s", "total_time_s", "examples_per_s"}


def _torchrun(*argv: str, nproc: int = 2, entry: tuple[str, ...] = ("-m", "panformer")) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    # this checkout's panformer first, also for a script outside it (sys.path[0] is the script's folder)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    if os.environ.get("PANFORMER_TEST_SEED") and "train" in argv[:2] and "--seed" not in argv:  # [:2]: interrupt_at.py STEP
        argv = (*argv, "--seed", os.environ["PANFORMER_TEST_SEED"])  # what conftest gives in-process runs
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *entry, *argv]
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 240 s: {(e.stderr or '')[-3000:]}")
    out = res.stdout + res.stderr
    if res.returncode != 0 and _LAUNCH_FAILURE.search(out) and "panformer: error: run directory" not in out:
        line = next((ln for ln in out.splitlines() if _LAUNCH_FAILURE.search(ln)), "")
        pytest.skip(f"torchrun cannot start {nproc} processes on this machine: {line.strip()[:300]}")
    return res


def _rows(path: Path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_close_rows(a: list[dict], b: list[dict]) -> None:
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for ra, rb in zip(a, b):
        for k, v in ra.items():
            if v and k not in ("step", "split", "epoch"):
                assert float(rb[k]) == pytest.approx(float(v), rel=1e-4, abs=1e-6), (ra["step"], ra["split"], k)


# the BPE tokenizer: WordPiece training breaks ties in hash order, so two processes may fit other vocabularies
# (under torchrun every rank then adopts rank 0's assets, see test_other_ranks_adopt_rank0_assets)
# 1001 examples in batches of 32: a last batch of 9, cut in shards of 5 and 4; 2 micro-batches per step
SENTIMENT = ["train", "sentiment", "--quick", "--tokenizer", "bpe", "--dropout", "0", "--max-examples", "1001",
             "--batch-size", "32", "--grad-accum", "2", "--max-steps", "16", "--eval-every", "8", "--log-every", "4",
             "--progress", "false"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted 2-process SENTIMENT run, shared by the tests that compare against it."""
    ddp = tmp_path_factory.mktemp("ddp") / "run"
    res = _torchrun(*SENTIMENT, "--out", str(ddp))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return ddp, res


def _assert_same_run(a: Path, b: Path) -> None:
    """Two run directories of the same training: the same files, config (but ``--out``/``--resume``), metrics
    (but timings), weights and log rows, bit for bit."""
    assert sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and "tensorboard" not in p.parts) == \
        sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and "tensorboard" not in p.parts)
    m_a, m_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in m_a.items() if k not in _TIMING} == {k: v for k, v in m_b.items() if k not in _TIMING}
    for weights in ("model.safetensors", "checkpoint/model.safetensors"):  # best and last
        w_a, w_b = (load_file(str(d / weights)) for d in (a, b))
        assert w_a.keys() == w_b.keys()
        for k in w_a:
            assert torch.equal(w_a[k], w_b[k]), f"{weights}: {k}"
    assert _rows(a / "log.csv") == _rows(b / "log.csv")


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, cli, ddp_run):
    ddp, res = ddp_run
    logs = res.stderr
    assert logs.count("[panformer] test metrics:") == 1 and "2 processes" in logs  # rank 0 alone logs
    code, _, err = cli(*SENTIMENT, "--out", tmp_path / "one")
    assert code == 0, err
    one = tmp_path / "one"
    # the same run directory, written once: no temporary or per-rank leftovers
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(ddp.rglob("*.tmp*")) and not (ddp / "checkpoint.old").exists()
    cfg_one, cfg_ddp = (json.loads((d / "config.json").read_text()) for d in (one, ddp))
    assert cfg_ddp["args"] == {**cfg_one["args"], "out": str(ddp)}
    # identical test metrics (timings aside): the metric is computed by rank 0 on the same weights
    m_one, m_ddp = (json.loads((d / "metrics.json").read_text()) for d in (one, ddp))
    assert m_one.keys() == m_ddp.keys() and m_one["train_steps"] == 16
    for k, v in m_one.items():
        if k not in _TIMING:
            assert m_ddp[k] == (pytest.approx(v, rel=1e-5) if isinstance(v, float) else v), k
    # identical training: weights, validation metrics and the logged (batch-weighted) training loss
    # (weighting the 5 / 4 shards equally instead moves 18 tensors by up to 1e-3: this fails)
    for weights in ("model.safetensors", "checkpoint/model.safetensors"):  # best and last
        w_one, w_ddp = (load_file(str(d / weights)) for d in (one, ddp))
        assert w_one.keys() == w_ddp.keys()
        for k, v in w_one.items():
            if k.endswith("k_proj.bias"):
                # softmax is shift-invariant, so this bias's gradient is exactly 0 and only rounding noise is
                # left, which Adam normalises into lr-sized steps: it differs between any two summation orders
                # (and has no effect on any output)
                continue
            # atol 1e-4: Adam turns rounding differences in near-zero gradients (e.g. embedding rows of rare
            # tokens) into differences up to ~3e-5; the wrong shard weighting moves weights by up to 1e-3
            torch.testing.assert_close(w_ddp[k], v, rtol=1e-4, atol=1e-4, msg=f"{weights}: {k}")
    _assert_close_rows(_rows(one / "log.csv"), _rows(ddp / "log.csv"))

    # every rank rejects the option, one of them reports it: one error line, exit status 2, nothing written
    res = _torchrun(*SENTIMENT, "--warmup-steps", "-1", "--out", str(tmp_path / "never"))
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("panformer: error:")]
    assert res.returncode != 0 and errors == ["panformer: error: warmup_steps must be >= 0, got -1"], res.stderr[-3000:]
    assert "exitcode  : 2" in res.stderr and not (tmp_path / "never").exists()


# interrupted at a step that is neither a log row (every 4) nor an evaluation / checkpoint (every 8): the
# checkpoint is the one the interrupt writes, and the logging window holds two steps of it
@pytest.mark.slow
def test_torchrun_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, ddp_run):
    from panformer.core.checkpoint import load_torch

    ddp, _ = ddp_run
    run = tmp_path / "run"
    res = _torchrun("6", *SENTIMENT, "--out", str(run), entry=(str(ROOT / "tests" / "interrupt_at.py"),))
    assert res.returncode != 0 and "panformer: interrupted (resume with --resume)" in res.stderr, res.stderr[-3000:]
    assert load_torch(run / "checkpoint" / "trainer_state.pt")["step"] == 6
    assert not (run / "metrics.json").exists() and [r["step"] for r in _rows(run / "log.csv")] == ["4"]
    res = _torchrun(*SENTIMENT, "--out", str(run), "--resume")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    # the same weights, metrics, log rows (the training loss of steps 5-8 included) and files as without
    # the interrupt: the resumed run takes the same steps with the same gradients, bit for bit
    _assert_same_run(ddp, run)
    assert json.loads((run / "config.json").read_text())["args"]["resume"] is True


@pytest.mark.slow
def test_torchrun_custom_batch_sampler_task_writes_one_run(tmp_path):
    """translation: length-bucketed batches under a token budget (uneven shards), beam-search metrics."""
    from panformer.tasks.cli import load_run

    out = tmp_path / "mt"
    res = _torchrun("train", "translation", "--quick", "--builtin-size", "400", "--max-steps", "4", "--eval-every",
                    "2", "--log-every", "1", "--eval-max-examples", "16", "--progress", "false", "--out", str(out))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert res.stderr.count("[panformer] test metrics:") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 4 and 0.0 <= metrics["chrf"] <= 100.0
    assert json.loads((out / "config.json").read_text())["task"] == "translation"
    rows = _rows(out / "log.csv")
    assert [(r["step"], r["split"]) for r in rows] == [("1", "train"), ("2", "train"), ("2", "valid"),
                                                        ("3", "train"), ("4", "train"), ("4", "valid")]
    for name in ("model.safetensors", "checkpoint/model.safetensors", "checkpoint/trainer_state.pt", "curves.png",
                 "translations_test.tsv"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp*"))
    task, model = load_run(out, device="cpu")
    assert len(task.predict(model, ["zwei"])) == 1


def test_other_ranks_adopt_rank0_assets(tmp_path, monkeypatch):
    from panformer.tasks import get_task
    from panformer.tasks.cli import _adopt_assets, _files, resolve_train_args

    rows = [f"{w} film number {i},{'positive' if w in ('great', 'fine') else 'negative'}"
            for i in range(30) for w in ("great", "awful", "fine", "dull")]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")

    def fitted(vocab: int):
        cls = get_task("sentiment")
        args, _ = resolve_train_args(cls, ["--data", str(tmp_path / "d.csv"), "--tokenizer", "word",
                                           "--vocab-size", str(vocab)])
        task = cls(args)
        task.load_data()
        task.fit_assets()
        return task
    rank0, other = fitted(40), fitted(12)
    (tmp_path / "a").mkdir()
    rank0.save_assets(tmp_path / "a")
    files = _files(tmp_path / "a")
    _adopt_assets(other, files)  # on rank 0 (one process): nothing to adopt
    assert other.tokenizer.vocab_size == 12
    monkeypatch.setattr(D, "rank", lambda: 1)
    _adopt_assets(other, files)
    assert other.tokenizer.vocab_size == rank0.tokenizer.vocab_size > 12
    text = "great film number 7"
    assert other.tokenizer.encode(text) == rank0.tokenizer.encode(text)
    assert other.labels == rank0.labels


# --- error plumbing: a failure on one rank raises on every rank, one of them reports it -----------

def _errors_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    D.init_distributed(torch.device("cpu"), timeout_minutes=2)
    seen: dict[str, object] = {}

    def load() -> str:
        if rank == 1:
            raise ConfigError("data missing on this node")
        return "ok"
    try:
        D.main_process_first(load)
    except Exception as e:  # noqa: BLE001
        seen["first"] = (type(e).__name__, str(e), getattr(e, "quiet", False))
    seen["main"] = D.run_on_main(lambda: {"rank": D.rank(), "acc": 0.5})
    try:
        D.run_on_main(lambda: 1 / 0)
    except Exception as e:  # noqa: BLE001
        seen["eval"] = (type(e).__name__, str(e), getattr(e, "quiet", False))
    D.sync_errors(None)  # nobody failed: returns on both ranks
    torch.save(seen, f"{out}.{rank}")
    D.cleanup()


@pytest.mark.slow
def test_errors_propagate_to_every_rank(tmp_path):
    import torch.multiprocessing as mp
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    except OSError as e:
        pytest.skip(f"no free local port for the process group: {e}")
    mp.spawn(_errors_worker, args=(port, str(tmp_path / "seen")), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{tmp_path / 'seen'}.{r}", weights_only=False) for r in (0, 1))
    # rank 1 failed after rank 0 had loaded: rank 0 reports rank 1's message, rank 1 keeps quiet
    assert r0["first"] == ("PeerError", "rank 1 failed: data missing on this node", False)
    assert r1["first"] == ("ConfigError", "data missing on this node", True)
    assert r0["main"] == r1["main"] == {"rank": 0, "acc": 0.5}  # rank 0's result on every rank
    assert r0["eval"] == ("ZeroDivisionError", "division by zero", False)
    assert r1["eval"] == ("PeerError", "rank 0 failed: ZeroDivisionError: division by zero", True)
    assert issubclass(PeerError, PanformerError)  # the CLI prints it as one line, exit status 2
    assert not D.is_distributed() and D.run_on_main(lambda: 3) == 3  # one process: plain calls


@pytest.mark.slow
def test_torchrun_rank0_builds_the_token_cache_once(tmp_path):
    """--cache-dir under torchrun: rank 0 tokenises (main_process_first), the other rank reuses its cache."""
    from panformer.tasks.generation.data import pydoc_topics

    data = tmp_path / "corpus.txt"
    data.write_text("\n\n".join(pydoc_topics()[:10]))
    cache, out = tmp_path / "cache", tmp_path / "run"
    res = _torchrun("train", "generation", "--data", str(data), "--cache-dir", str(cache), "--max-steps", "4",
                    "--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--block-size", "32", "--batch-size", "8",
                    "--eval-every", "1000", "--eval-max-tokens", "2048", "--max-new-tokens", "2", "--progress", "false",
                    "--out", str(out))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    folders = list(cache.iterdir())
    assert len(folders) == 1 and json.loads((folders[0] / "manifest.json").read_text())["builds"] == 1
    assert res.stderr.count("token cache") >= 1 and "built in" in res.stderr
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 4
