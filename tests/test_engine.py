"""Training engine: schedules, optimizer groups, checkpoints, runtime helpers, logging and the Trainer."""
from __future__ import annotations

import csv
import math
import os
import pickle
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from panformer.core import distributed as D
from panformer.core.checkpoint import (atomic_save_torch, atomic_write_json, atomic_write_text, load_torch, load_weights,
                             read_weights_metadata, save_weights)
from panformer.core.errors import ConfigError
from panformer.core.optim import build_optimizer, no_decay_names, param_groups
from panformer.core.run_log import RunLogger
from panformer.core.runtime import autocast, limit_blas_threads, resolve_device, rng_state, seed_everything, set_rng_state
from panformer.core.schedules import build_scheduler, lr_lambda
from panformer.core.trainer import Trainer, TrainingArguments, lower_is_better
from safetensors.torch import load_file

from conftest import InterruptAt

# --- tiny synthetic regression problem ------------------------------------------------------------


def make_data(n: int = 64, d: int = 8, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.linspace(-1, 1, d) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


def collate(items: list) -> dict:
    return {"x": torch.stack([i[0] for i in items]), "y": torch.stack([i[1] for i in items])}


def mse_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    loss = F.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])
    return loss, {"rmse": loss.detach().sqrt()}


def make_model(dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 1))


def make_eval(valid: TensorDataset):
    def eval_fn(model: nn.Module) -> dict:
        x, y = valid.tensors
        with torch.no_grad():
            err = model(x).squeeze(-1) - y
        return {"loss": float((err ** 2).mean()), "mae": float(err.abs().mean())}
    return eval_fn


def args(**kw) -> TrainingArguments:
    base = dict(epochs=3, batch_size=8, lr=1e-2, warmup_steps=2, device="cpu", progress=False, log_every=2,
                seed=3)
    base.update(kw)
    return TrainingArguments(**base)


def weights(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- schedules ------------------------------------------------------------------------------------

def test_inverse_sqrt_peaks_at_warmup_then_decays():
    f = lr_lambda("inverse_sqrt", warmup_steps=4)
    assert f(3) == pytest.approx(1.0)  # optimizer step 4 == warmup runs at the peak lr
    assert f(0) == pytest.approx(0.25) and f(1) == pytest.approx(0.5)
    assert f(15) == pytest.approx(math.sqrt(4 / 16)) and f(399) == pytest.approx(math.sqrt(4 / 400))
    assert max(f(k) for k in range(100)) == pytest.approx(1.0)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, "inverse_sqrt", 4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[3] == pytest.approx(0.1) and lrs[7] == pytest.approx(0.1 * math.sqrt(4 / 8))


def test_cosine_linear_constant():
    cos = lr_lambda("cosine", 10, 110, min_lr_ratio=0.1)
    assert cos(9) == pytest.approx(1.0) and cos(109) == pytest.approx(0.1) and cos(500) == pytest.approx(0.1)
    assert cos(59) == pytest.approx(0.55)  # half-way through the decay
    lin = lr_lambda("linear", 10, 110)
    assert lin(4) == pytest.approx(0.5) and lin(9) == pytest.approx(1.0) and lin(109) == pytest.approx(0.0)
    const = lr_lambda("constant", 5)
    assert const(0) == pytest.approx(0.2) and const(4) == 1.0 and const(1000) == 1.0
    with pytest.raises(ConfigError, match="unknown schedule"):
        lr_lambda("step", 0, 10)
    with pytest.raises(ConfigError, match="total_steps"):
        lr_lambda("cosine", 0, None)


def test_decay_follows_the_clock_with_a_progress_fn():
    spent = [0.0]
    cos = lr_lambda("cosine", 2, None, min_lr_ratio=0.1, progress_fn=lambda: spent[0])
    assert cos(0) == pytest.approx(0.5)  # warm-up still counts steps
    assert cos(5) == pytest.approx(1.0)
    spent[0] = 0.5
    assert cos(5) == pytest.approx(0.55)  # half the budget spent: half-way through the decay, whatever the step
    spent[0] = 1.0
    assert cos(6) == pytest.approx(0.1) and lr_lambda("linear", 0, None, progress_fn=lambda: 1.0)(3) == 0.0
    # first: whichever of the planned steps (here 12) and the clock is further spent
    spent[0] = 0.0
    first = lr_lambda("linear", 2, 12, progress_fn=lambda: spent[0], first=True)
    steps = lr_lambda("linear", 2, 12)
    assert [first(k) for k in range(14)] == [steps(k) for k in range(14)]  # the clock behind: the steps rule
    spent[0] = 0.75
    assert first(3) == pytest.approx(0.25) and first(10) == pytest.approx(steps(10))  # 0.75 vs 0.2, then 0.9
    with pytest.raises(ConfigError, match="total_steps"):
        lr_lambda("cosine", 0, None, progress_fn=lambda: 0.0, first=True)


# --- optimizer groups -----------------------------------------------------------------------------

class TinyLM(nn.Module):
    def __init__(self, vocab: int = 11, d: int = 6) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, d))
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.proj(self.tok(ids) + self.pos_embed[:, : ids.shape[1]])))


def test_param_groups_decay_split_and_tied_once():
    model = TinyLM()
    groups = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [tuple(p.shape) for p in groups[0]["params"]] == [(6, 6)]  # only proj.weight decays
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(model.parameters()))
    assert no_decay_names(model) == {"tok.weight", "pos_embed", "proj.bias", "norm.weight", "norm.bias"}
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.98)
    with pytest.raises(ConfigError):
        build_optimizer(model, lr=0.0)


def test_optimizer_steps_match_reference_adamw():
    """build_optimizer may pick PyTorch's fused kernel: its updates must be the reference AdamW's."""
    torch.manual_seed(0)
    ours, ref = TinyLM(), TinyLM()
    ref.load_state_dict(ours.state_dict())
    opt = build_optimizer(ours, lr=1e-2, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(param_groups(ref, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-9, foreach=False)
    ids = torch.randint(0, 10, (4, 5))
    for _ in range(5):
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            model(ids).square().mean().backward()
            o.step()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(ours.proj.weight, TinyLM().proj.weight)


# --- checkpoints ----------------------------------------------------------------------------------

def test_safetensors_round_trip_restores_tied_weights(tmp_path):
    src = TinyLM()
    nn.init.normal_(src.pos_embed)
    path = tmp_path / "w" / "model.safetensors"
    save_weights(src, path, metadata={"step": 7, "note": "hi"})
    assert sorted(os.listdir(path.parent)) == ["model.safetensors"]  # no temporary file left behind
    assert "head.weight" not in load_file(str(path))  # stored once
    assert read_weights_metadata(path) == {"step": "7", "note": "hi"}
    torch.manual_seed(123)
    dst = TinyLM()
    load_weights(dst, path, strict=True)
    assert_same(weights(src), weights(dst))
    assert dst.head.weight is dst.tok.weight
    # views of one storage that are not the same tensor are cloned rather than refused
    base = torch.arange(6.0)
    save_weights({"a": base, "b": base[2:4], "c": base}, tmp_path / "views.safetensors")
    assert load_file(str(tmp_path / "views.safetensors"))["b"].tolist() == [2.0, 3.0]


def test_load_weights_errors_name_the_tensors(tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), path)
    with pytest.raises(ConfigError, match=r"shape mismatch: 1\.weight \(file \[2, 3\] vs model \[5, 3\]\)"):
        load_weights(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5)), path)
    with pytest.raises(ConfigError, match=r"missing tensors: 2\.weight, 2\.bias"):
        load_weights(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 2)), path)
    with pytest.raises(ConfigError, match=r"unexpected tensors: 1\.bias, 1\.weight"):
        load_weights(nn.Sequential(nn.Linear(4, 3)), path)
    assert load_weights(nn.Sequential(nn.Linear(4, 3)), path, strict=False) == ([], ["1.bias", "1.weight"])
    with pytest.raises(ConfigError, match="not found"):
        load_weights(nn.Linear(1, 1), tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage!")
    with pytest.raises(ConfigError, match="safetensors"):
        load_weights(nn.Linear(1, 1), tmp_path / "bad.safetensors")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_atomic_files_and_safe_torch_load(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1, "p": tmp_path})
    atomic_write_text(tmp_path / "b.txt", "hello")
    assert (tmp_path / "b.txt").read_text() == "hello" and '"x": 1' in (tmp_path / "a.json").read_text()
    obj = {"t": torch.arange(3), "n": 4, "l": [1.5, None]}
    atomic_save_torch(obj, tmp_path / "s.pt")
    back = load_torch(tmp_path / "s.pt")
    assert torch.equal(back["t"], obj["t"]) and back["l"] == [1.5, None]
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(ConfigError, match="cannot read state"):
        load_torch(tmp_path / "evil.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt", "evil.pt", "s.pt"]


# --- runtime --------------------------------------------------------------------------------------

def test_rng_state_round_trips_through_weights_only(tmp_path):
    seed_everything(5)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    atomic_save_torch(rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    set_rng_state(load_torch(tmp_path / "rng.pt"))
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == first


def test_auto_device_under_torchrun_with_more_processes_than_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks, one GPU: every rank trains on the CPU (gloo)
    for local_rank in ("0", "1"):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="only 1 GPU"):
        resolve_device("cuda")  # asked for explicitly: rank 1 has no GPU of its own


def test_devices_precision_and_blas_limit():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="precision"):
        autocast(torch.device("cpu"), "fp8")
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with limit_blas_threads():
        assert float(np.ones((4, 4)).dot(np.ones(4)).sum()) == 16.0


@pytest.mark.parametrize("flags, expected", [(set(), "fp32"), ({"avx2", "fma"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16"),
                                             ({"amx_bf16", "amx_tile"}, "bf16"), ({"asimd", "bf16"}, "bf16")])
def test_precision_auto_follows_the_cpu(monkeypatch, capsys, flags, expected):
    from panformer.core import runtime

    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(runtime, "_WARNED_SLOW_BF16", set())
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu) == expected
    assert runtime.resolve_precision("fp32", cpu) == "fp32"
    with autocast(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    assert "warning" not in capsys.readouterr().err
    # an explicit bf16 is kept, with one warning where it is slow
    assert runtime.resolve_precision("bf16", cpu) == runtime.resolve_precision("bf16", cpu) == "bf16"
    assert capsys.readouterr().err.count("warning: --precision bf16") == (expected == "fp32")
    # the Trainer resolves auto once and reports what it used
    result = Trainer(make_model(), args(precision="auto", epochs=1), make_data(16), collate, mse_loss).train()
    assert result["precision"] == expected


def test_cpu_flags_are_read_from_proc_cpuinfo():
    from panformer.core import runtime

    flags = runtime._cpu_flags()
    if Path("/proc/cpuinfo").is_file() and os.uname().machine in ("x86_64", "AMD64"):
        assert "sse2" in flags  # every x86-64 CPU has it: the parser found the flags line
    assert runtime.native_bf16(torch.device("cpu")) == bool(flags & {"avx512_bf16", "amx_bf16", "bf16", "svebf16"})


_PAGE_FAULTS_PER_STEP = """
import resource, torch
from panformer import core
from panformer.core.runtime import retain_freed_memory
print(retain_freed_memory())
torch.manual_seed(0)
enc = core.Encoder(core.TransformerConfig(d_model=128, n_heads=4, n_layers=2, d_ff=512, positional="none"))
opt = torch.optim.AdamW(enc.parameters())
x = torch.randn(16, 128, 128)
def step():
    enc(x).square().mean().backward(); opt.step(); opt.zero_grad()
for _ in range(3): step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5): step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_retain_freed_memory_stops_page_faults():
    """Training steps re-fault their activations in with glibc's defaults, hardly at all once tuned."""
    def faults(tuning: str) -> tuple[bool, float]:
        env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
        env["PANFORMER_MALLOC_TUNING"] = tuning
        out = subprocess.run([sys.executable, "-c", _PAGE_FAULTS_PER_STEP], env=env, capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        applied, per_step = out.stdout.split()[-2:]
        return applied == "True", float(per_step)

    (_, default), (applied, tuned) = faults("0"), faults("1")
    if not applied:
        pytest.skip("no glibc mallopt here (musl?): nothing to tune")
    assert default > 1000  # 4,400 per step here: 4 KiB pages of the freshly mapped activations
    assert tuned < default / 5  # 200 here


# --- run log --------------------------------------------------------------------------------------

def test_run_logger_csv_columns_resume_and_curves(tmp_path):
    log = RunLogger(tmp_path, tensorboard=False)
    log.log(1, 0.1, "train", lr=0.5, loss=2.0)
    log.log(2, 0.2, "valid", loss=1.5, accuracy=0.25)  # a new column rewrites the header
    log.log(3, 0.3, "train", lr=0.25, loss=1.0)
    rows = read_csv(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "epoch", "split", "lr", "loss", "accuracy"]
    assert [r["accuracy"] for r in rows] == ["", "0.25", ""] and rows[2]["lr"] == "0.25"
    state = {"n_rows": 2}
    assert log.plot_curves() == tmp_path / "curves.png" and (tmp_path / "curves.png").stat().st_size > 1000
    resumed = RunLogger(tmp_path, resume=True, tensorboard=False)
    resumed.load_state_dict(state, step=2)
    assert [r["step"] for r in read_csv(tmp_path / "log.csv")] == ["1", "2"]
    assert RunLogger(tmp_path, tensorboard=False).rows == [] and not (tmp_path / "log.csv").exists()


# --- trainer --------------------------------------------------------------------------------------

def test_training_arguments_have_help_and_validate():
    from dataclasses import fields
    assert all(f.metadata.get("help") for f in fields(TrainingArguments))
    with pytest.raises(ConfigError, match="batch_size"):
        TrainingArguments(batch_size=0)
    with pytest.raises(ConfigError, match="schedule"):
        TrainingArguments(schedule="exp")
    assert lower_is_better("valid_loss") and lower_is_better("wer") and lower_is_better("bits_per_char")
    assert not lower_is_better("accuracy") and not lower_is_better("answer_f1")
    assert TrainingArguments(metric_for_best="f1").higher_is_better


def test_train_logs_evaluates_and_saves(tmp_path):
    valid = make_data(32, seed=1)
    trainer = Trainer(make_model(), args(eval_every=4), make_data(), collate, mse_loss, make_eval(valid),
                      run_dir=tmp_path)
    before = make_eval(valid)(trainer.model)["loss"]
    out = trainer.train()
    assert out["steps"] == 24 and out["epochs"] == 3.0 and not out["stopped_early"]
    assert out["best_metric"] < before and out["examples_per_s"] > 0
    assert out["best_metric"] == pytest.approx(make_eval(valid)(trainer.model)["loss"])  # best reloaded
    rows = read_csv(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "epoch", "split", "lr", "loss", "rmse", "grad_norm", "mae"]
    assert [r["step"] for r in rows if r["split"] == "valid"] == ["4", "8", "12", "16", "20", "24"]
    assert float(rows[0]["lr"]) == pytest.approx(1e-2)  # step 2 == warmup: the peak lr
    for name in ("model.safetensors", "curves.png", "checkpoint/model.safetensors", "checkpoint/trainer_state.pt"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def _run(tmp, callbacks=None, loss_fn=mse_loss, resume=False, **kw):
    model = make_model(dropout=0.2)
    a = args(grad_accum=2, eval_every=3, resume=resume, **kw)
    trainer = Trainer(model, a, make_data(), collate, loss_fn, make_eval(make_data(32, seed=1)), run_dir=tmp,
                      callbacks=callbacks)
    return trainer, trainer.train()


@pytest.mark.parametrize("ema", [0.0, 0.8], ids=["plain", "ema"])
@pytest.mark.parametrize("where", ["after_step_5", "after_eval_step_6", "inside_step_7"])
def test_interrupt_and_resume_is_bit_identical(tmp_path, where, ema):
    ref_trainer, ref = _run(tmp_path / "ref", ema_decay=ema)
    callbacks, loss_fn = None, mse_loss
    if where.startswith("after"):
        callbacks = [InterruptAt(int(where[-1]))]
    else:
        calls = [0]

        def loss_fn(model, batch):  # noqa: F811 - raise in the 2nd micro-batch of step 7
            calls[0] += 1
            if calls[0] == 14:
                raise KeyboardInterrupt
            return mse_loss(model, batch)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "run", callbacks=callbacks, loss_fn=loss_fn, ema_decay=ema)
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.pt").is_file()
    trainer, out = _run(tmp_path / "run", resume=True, ema_decay=ema)
    if ema:  # the weight average goes on exactly too
        assert trainer.ema.updates == ref_trainer.ema.updates == out["steps"]
        assert_same(ref_trainer.ema.shadow, trainer.ema.shadow)
    assert_same(weights(ref_trainer.model), weights(trainer.model))  # best weights, reloaded
    assert_same(load_file(str(tmp_path / "ref/checkpoint/model.safetensors")),
                load_file(str(tmp_path / "run/checkpoint/model.safetensors")))  # final weights
    for k in ("steps", "best_metric", "best_step", "last_metrics"):
        assert out[k] == ref[k], k
    assert read_csv(tmp_path / "ref/log.csv") == read_csv(tmp_path / "run/log.csv")


def test_weight_ema_is_evaluated_selected_and_saved(tmp_path):
    from panformer.core.ema import WeightEMA

    # the average itself: d = min(decay, (1 + n) / (10 + n)), tied weights once, integer buffers untouched
    lin = nn.Linear(2, 2)
    lin.register_buffer("count", torch.tensor(3))
    ema = WeightEMA(lin, decay=0.5)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)  # n=1: d = min(0.5, 2/11)
    torch.testing.assert_close(ema.shadow["weight"], w0 + (1 - 2 / 11))
    assert "count" not in ema.shadow and set(ema.shadow) == {"weight", "bias"}
    with ema.averaged(lin):
        torch.testing.assert_close(lin.weight, w0 + (1 - 2 / 11))
    torch.testing.assert_close(lin.weight, w0 + 1)  # its own weights again

    # the Trainer evaluates the average, keeps it as the best model and trains on from the raw weights
    seen = []
    inner = make_eval(make_data(32, seed=1))

    def eval_fn(model):
        seen.append(weights(model))
        return inner(model)
    model = make_model()
    trainer = Trainer(model, args(ema_decay=0.9, eval_every=100, max_steps=12), make_data(), collate, mse_loss,
                      eval_fn, run_dir=tmp_path)
    trainer.train()  # one evaluation, at the last step
    assert len(seen) == 1 and trainer.ema.updates == 12
    assert_same(seen[0], {k: trainer.ema.shadow.get(k, v) for k, v in seen[0].items()})
    assert_same(weights(trainer.model), seen[0])  # the best (averaged) weights are the result...
    assert_same(load_file(str(tmp_path / "model.safetensors")), seen[0])  # ...and model.safetensors
    raw = load_file(str(tmp_path / "checkpoint/model.safetensors"))  # the checkpoint holds the raw weights
    assert not torch.equal(raw["0.weight"], seen[0]["0.weight"])
    # without evaluation the average is the result as well
    plain = Trainer(make_model(), args(ema_decay=0.9, max_steps=12), make_data(), collate, mse_loss)
    plain.train()
    assert_same(weights(plain.model), {k: plain.ema.shadow[k] for k in weights(plain.model)})
    with pytest.raises(ConfigError, match="ema_decay"):
        args(ema_decay=1.0)


def test_same_seed_same_run_and_bf16_path():
    data, valid = make_data(), make_eval(make_data(32, seed=1))
    outs = [Trainer(make_model(0.1), args(), data, collate, mse_loss, valid).train() for _ in range(2)]
    assert outs[0]["last_metrics"] == outs[1]["last_metrics"]
    other = Trainer(make_model(0.1), args(seed=4), data, collate, mse_loss, valid).train()
    assert other["last_metrics"] != outs[0]["last_metrics"]
    bf16 = Trainer(make_model(), args(precision="bf16", max_steps=5), data, collate, mse_loss, valid).train()
    assert bf16["steps"] == 5 and math.isfinite(bf16["best_metric"])


def test_early_stopping_keeps_and_reloads_best(tmp_path):
    scores = iter([1.0, 0.5, 0.7, 0.6, 0.9, 0.1])
    snapshots = {}

    def eval_fn(model):
        snapshots[len(snapshots) + 1] = weights(model)
        return {"loss": next(scores)}
    trainer = Trainer(make_model(), args(eval_every=1, early_stopping_patience=3, epochs=5), make_data(),
                      collate, mse_loss, eval_fn, run_dir=tmp_path)
    out = trainer.train()
    assert out["stopped_early"] and out["steps"] == 5 and out["best_step"] == 2 and out["best_metric"] == 0.5
    assert_same(weights(trainer.model), snapshots[2])
    assert_same(load_file(str(tmp_path / "model.safetensors")), snapshots[2])
    acc = iter([0.2, 0.9, 0.4])
    out = Trainer(make_model(), args(eval_every=1, max_steps=3, metric_for_best="acc"), make_data(), collate,
                  mse_loss, lambda m: {"acc": next(acc)}).train()
    assert out["best_step"] == 2  # "acc": greater is better


def test_load_best_model_at_end_false_keeps_and_saves_the_last_weights(tmp_path):
    scores = iter([0.1, 0.5, 0.7, 0.9])  # the first evaluation is the best

    def eval_fn(model):
        return {"loss": next(scores)}
    trainer = Trainer(make_model(), args(eval_every=1, max_steps=4, load_best_model_at_end=False), make_data(),
                      collate, mse_loss, eval_fn, run_dir=tmp_path)
    last = {}
    trainer.callbacks.append(type("Last", (), {"on_step_end": lambda self, t, logs: last.update(weights(t.model))})())
    out = trainer.train()
    assert out["best_step"] == 1 and out["best_metric"] == 0.1  # still tracked and reported
    assert_same(weights(trainer.model), last)  # ... but the result is the last step's weights
    assert_same(load_file(str(tmp_path / "model.safetensors")), last)


def test_time_limit_stops_cleanly_and_still_evaluates(tmp_path):
    out = Trainer(make_model(), args(max_time_minutes=1e-9), make_data(), collate, mse_loss,
                  make_eval(make_data(32, seed=1)), run_dir=tmp_path).train()
    assert out["steps"] == 1 and out["best_step"] == 1
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "checkpoint/trainer_state.pt").is_file()
    with pytest.raises(ConfigError, match="metric_for_best 'acc'"):
        Trainer(make_model(), args(metric_for_best="acc"), make_data(), collate, mse_loss,
                make_eval(make_data(32, seed=1))).train()


class _FakeClock:
    """Every step takes exactly ``seconds`` of the Trainer's clock, however fast or loaded the machine is."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.now = seconds, 0.0

    def attach(self, trainer: Trainer) -> Trainer:
        trainer._elapsed = lambda: self.now  # the clock the time budget and the time schedules read
        trainer.callbacks.append(self)
        return trainer

    def on_step_end(self, trainer, logs) -> None:
        self.now += self.seconds


def _clock_run(tmp_path, clock: str, max_steps: int, minutes: float) -> tuple[dict, list[float]]:
    a = args(max_steps=max_steps, max_time_minutes=minutes, schedule="cosine", warmup_steps=1, schedule_clock=clock,
             log_every=1, eval_every=None)
    trainer = _FakeClock(0.06).attach(Trainer(make_model(), a, make_data(), collate, mse_loss, run_dir=tmp_path))
    out = trainer.train()
    return out, [float(r["lr"]) for r in read_csv(tmp_path / "log.csv") if r["split"] == "train"]


@pytest.mark.parametrize("clock", ["steps", "time", "first"])
def test_schedule_clock_time_spreads_the_decay_over_the_budget(tmp_path, clock):
    """A 0.6 s budget and steps of 0.06 s (a fake clock): 10-11 of the 10,000 allowed steps run. Following the clock
    (time, and first, whose 10,000 planned steps are far behind it) the cosine has decayed to near its end by the
    last of them; counted in steps it has barely begun."""
    out, lrs = _clock_run(tmp_path / "a", clock, 10_000, 0.01)
    assert 10 <= out["steps"] <= 11 and len(lrs) == out["steps"]
    if clock in ("time", "first"):
        assert lrs[-1] < 0.05 * lrs[0] and lrs == sorted(lrs, reverse=True)  # progress >= 0.9: cos at <= 2.5 %
    else:
        assert lrs[-1] > 0.99 * lrs[0]
    if clock == "first":  # 12 planned steps that fit in the 10 minutes: the steps rule, as with --schedule-clock steps
        assert _clock_run(tmp_path / "b", "first", 12, 10.0)[1] == _clock_run(tmp_path / "c", "steps", 12, 10.0)[1]
    with pytest.raises(ConfigError, match="needs max_time_minutes"):
        TrainingArguments(schedule_clock=clock if clock != "steps" else "time")


def test_custom_batch_sampler_and_no_eval(tmp_path):
    def sampler(epoch, seed):  # e.g. length bucketing: deterministic in (epoch, seed), uneven sizes
        g = torch.Generator().manual_seed(seed * 100 + epoch)
        perm = torch.randperm(64, generator=g).tolist()
        return [perm[:10], perm[10:40], perm[40:]]
    out = Trainer(make_model(), args(epochs=2), make_data(), collate, mse_loss, run_dir=tmp_path,
                  batch_sampler_fn=sampler).train()
    assert out["steps"] == 6 and out["best_step"] is None
    assert (tmp_path / "model.safetensors").is_file()  # final weights when there is no eval_fn


# --- DDP: 2 gloo processes == 1 process with the same global batch -------------------------------

def _ddp_args() -> TrainingArguments:
    return args(batch_size=16, grad_accum=2, epochs=2, eval_every=2)


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(make_model(), _ddp_args(), make_data(), collate, mse_loss, make_eval(make_data(32, seed=1)))
    result = trainer.train()
    if rank == 0:
        torch.save({"weights": weights(trainer.model), "best": result["best_metric"]}, out)
    D.cleanup()


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = Trainer(make_model(), _ddp_args(), make_data(), collate, mse_loss, make_eval(make_data(32, seed=1)))
    best = single.train()["best_metric"]
    assert best == pytest.approx(ddp["best"], rel=1e-5)
    for k, v in weights(single.model).items():
        torch.testing.assert_close(ddp["weights"][k], v, rtol=1e-5, atol=1e-6)
