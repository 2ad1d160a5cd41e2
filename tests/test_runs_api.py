"""Runs are reusable: evaluate a moved run on new data, reuse its config.json, resume it from itself, fine-tune
it (--init-from), load it from Python (panformer.load); plus hub-style dataset names inside the tasks."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import panformer
from panformer.tasks import cli as cli_module
from panformer.tasks.builtin_data import movie_review_snippets

from conftest import ROOT, InterruptAt

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ["--quick", "--progress", "false", "--max-steps", "40", "--eval-every", "20"]


def _csv(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    texts, labels = movie_review_snippets()
    rows = list(zip(texts, labels))
    d = tmp_path_factory.mktemp("data")
    # train on the first 2,000 snippets; "new" data: 300 others the run never saw
    return {"train": _csv(d / "reviews.csv", rows[:2000]), "new": _csv(d / "new.csv", rows[5000:5300])}


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    assert cli_module.main(["train", "sentiment", *QUICK, "--data", str(data["train"]), "--out", str(out)]) == 0
    return out


def _rows(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _one_line_error(code: int, err: str) -> str:
    assert code == 2 and err.startswith("panformer: error: ") and len(err.strip().splitlines()) == 1, err
    return err


# -- evaluate reads what it is asked for --------------------------------------------------------------------
def test_a_moved_run_whose_data_is_gone_is_evaluated_on_new_test_data(run, data, tmp_path, cli):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    gone = data["train"].with_suffix(".gone")
    data["train"].rename(gone)  # the run's --data is no more
    try:
        code, _, err = cli("evaluate", "sentiment", "--run", moved)
        err = _one_line_error(code, err)
        assert "file not found" in err and "--test-data" in err  # says how to evaluate it anyway
        code, out, err = cli("evaluate", "sentiment", "--run", moved, "--test-data", data["new"])
        assert code == 0, err  # main re-read the original --data first and failed here
        metrics = json.loads(out)
        # the metrics are those of the run's predictions on exactly the 300 new rows
        texts, labels = _rows(data["new"])
        preds = panformer.load(moved, device="cpu").predict(texts)
        assert metrics["accuracy"] == pytest.approx(np.mean([p["label"] == y for p, y in zip(preds, labels)]))
        code, out, err = cli("evaluate", "sentiment", "--run", moved, "--valid-data", data["new"], "--split", "valid")
        assert code == 0, err
        assert json.loads(out)["accuracy"] == metrics["accuracy"]
        code, out, err = cli("evaluate", "sentiment", "--run", moved, "--data", data["new"])  # its seeded test cut
        assert code == 0, err
        assert 0 < json.loads(out)["accuracy"] <= 1 and json.loads(out) != metrics
        # the same through Python, which also writes metrics.json where asked
        api = panformer.load(moved, device="cpu").evaluate(test_data=str(data["new"]), out_dir=tmp_path / "ev")
        assert api == metrics == json.loads((tmp_path / "ev" / "metrics.json").read_text())
    finally:
        gone.rename(data["train"])


def _write_wavs(folder: Path, texts: list[str]) -> Path:
    import soundfile as sf

    from panformer.tasks.speech.espeak import ESPEAK_RATE, espeak_synthesize

    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(texts):
        sf.write(folder / f"{i}.wav", espeak_synthesize(t).astype(np.float32) / 32768, ESPEAK_RATE)
    (folder / "metadata.csv").write_text("file_name,transcription\n" + "".join(f"{i}.wav,{t}\n" for i, t in enumerate(texts)))
    return folder


@pytest.mark.parametrize("task_name", ["sentiment", "generation", "translation", "speech"])
def test_load_split_reads_the_split_alone(task_name, tmp_path, monkeypatch):
    """The general mechanism behind `evaluate --test-data`: Task.load_split reads the split's own source through
    the task's read_split; the --data it was trained on (gone here) is never opened."""
    from panformer.tasks import get_task

    monkeypatch.setenv("PANFORMER_CACHE", str(tmp_path / "cache"))
    if task_name == "speech":
        test = str(_write_wavs(tmp_path / "af", ["one two", "nine"]))
    elif task_name == "translation":
        test = str(tmp_path / "t.csv")
        Path(test).write_text("de,en\neins,one\nzwei,two\n")
    else:
        test = str(_csv(tmp_path / "t.csv", [("a fine film", "pos"), ("a dull one", "neg")]))
    task_cls = get_task(task_name)
    args, _ = cli_module.resolve_train_args(task_cls, ["--data", str(tmp_path / "gone.csv"), "--test-data", test])
    task = task_cls(args)
    task.load_split("test")
    assert list(task.splits) == ["test"]
    got = task.splits["test"]
    if task_name == "speech":
        assert task.texts["test"] == ["one two", "nine"] and len(task.features["test"]) == 2
    elif task_name == "generation":
        assert got == "a fine film\n\na dull one"
    else:
        assert got[0] == (["eins", "zwei"] if task_name == "translation" else ["a fine film", "a dull one"])


# -- a run's config.json is a config ------------------------------------------------------------------------
def test_config_of_a_run_reproduces_it_and_refuses_other_tasks(run, tmp_path, cli):
    again = tmp_path / "again"
    code, _, err = cli("train", "sentiment", "--config", run, "--out", again)  # main: "file not found"
    assert code == 0, err
    # same options, data and seed: the same weights, bit for bit
    a, b = load_file(str(run / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    mine, theirs = (json.loads((d / "config.json").read_text())["args"] for d in (run, again))
    assert {k for k in mine if mine[k] != theirs[k]} == {"out", "config"}
    short = tmp_path / "short"  # its config.json too, with flags on top (main: unknown option(s) ['args', 'task'])
    code, _, err = cli("train", "sentiment", "--config", run / "config.json", "--max-steps", "3", "--out", short)
    assert code == 0, err
    assert json.loads((short / "metrics.json").read_text())["train_steps"] == 3
    code, _, err = cli("train", "translation", "--config", run, "--out", tmp_path / "never")
    assert "a 'sentiment' run, not 'translation'" in _one_line_error(code, err)
    assert not (tmp_path / "never").exists()


def test_resume_alone_continues_the_run_exactly(run, data, tmp_path, cli, monkeypatch):
    interrupted = tmp_path / "interrupted"

    class Interrupted(cli_module.Trainer):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.callbacks.append(InterruptAt(25))

    monkeypatch.setattr(cli_module, "Trainer", Interrupted)
    code, _, err = cli("train", "sentiment", *QUICK, "--data", data["train"], "--out", interrupted)
    assert code == 130 and (interrupted / "checkpoint" / "trainer_state.pt").is_file(), err
    monkeypatch.undo()
    code, _, err = cli("train", "sentiment", "--resume", interrupted)  # the rest of the command comes from the run
    assert code == 0, err
    a, b = load_file(str(run / "model.safetensors")), load_file(str(interrupted / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical to the run never interrupted
    ref, got = (json.loads((d / "metrics.json").read_text()) for d in (run, interrupted))
    assert got["train_steps"] == ref["train_steps"] == 40 and got["accuracy"] == ref["accuracy"]
    # `--resume --out RUN` is the same command; two different runs are an error
    cls = cli_module.get_task("sentiment")
    assert (cli_module.resolve_train_args(cls, ["--resume", str(interrupted)])[0]
            == cli_module.resolve_train_args(cls, ["--resume", "--out", str(interrupted)])[0])
    with pytest.raises(cli_module.ConfigError, match="name two runs"):
        cli_module.resolve_train_args(cls, ["--resume", str(interrupted), "--out", str(tmp_path / "other")])


# -- --init-from: fine-tune a run on new data -----------------------------------------------------------------
def test_init_from_starts_at_the_runs_weights_with_its_assets(run, data, tmp_path, cli):
    tuned = tmp_path / "tuned"
    # a learning rate so small that the weights cannot move measurably: what is saved is what was loaded
    code, _, err = cli("train", "sentiment", "--init-from", run, "--data", data["new"], "--lr", "1e-9",
                       "--max-steps", "3", "--progress", "false", "--out", tuned)
    assert code == 0, err
    a, b = load_file(str(run / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    # Adam moves each weight by at most ~lr per step (3e-9 here); training the run from its own initialisation
    # moved them by far more than 1e-4, so this fails if the run's weights were not loaded
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    for name in ("tokenizer.json", "labels.json"):  # ids as the weights know them, not refitted on new.csv
        assert (tuned / "assets" / name).read_bytes() == (run / "assets" / name).read_bytes()
    assert json.loads((tuned / "config.json").read_text())["args"]["init_from"] == str(run)


def test_init_from_errors(run, tmp_path, train_error):
    err = train_error("sentiment", "--init-from", run, "--d-model", "32")
    assert "--init-from" in err and "shape mismatch" in err
    assert "a 'sentiment' run, not 'generation'" in train_error("generation", "--init-from", run)
    odd = _csv(tmp_path / "odd.csv", [("fine", "positive"), ("meh", "neutral")] * 10)
    assert "unknown label 'neutral'" in train_error("sentiment", "--init-from", run, "--data", odd)
    assert "no config.json" in train_error("sentiment", "--init-from", tmp_path)


# -- the Python API and --version -----------------------------------------------------------------------------
def test_python_api_predicts_and_evaluates_like_the_cli(run, cli):
    texts = ["a wonderful, moving film", "dull and tedious", "the plot"]
    trained = panformer.load(run, device="cpu")
    assert trained.task.name == "sentiment" and isinstance(trained.model, torch.nn.Module)
    assert trained.config["d_model"] == 64 and not trained.model.training
    code, out, err = cli("predict", "sentiment", "--run", run, *texts)
    assert code == 0, err
    assert trained.predict(texts) == [json.loads(line) for line in out.splitlines()]
    assert trained.predict(texts[0]) == trained.predict(texts)[:1]
    code, out, err = cli("evaluate", "sentiment", "--run", run)
    assert code == 0, err
    assert trained.evaluate() == json.loads(out)
    assert trained.evaluate()["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["accuracy"])
    both = panformer.load([run, run], device="cpu")  # an ensemble of a run with itself is that run
    for p, q in zip(both.predict(texts), trained.predict(texts)):
        assert p["label"] == q["label"] and p["probability"] == pytest.approx(q["probability"], abs=2e-4)
    with pytest.raises(panformer.core.errors.ConfigError, match="no config.json"):
        panformer.load(run / "assets")


def test_version_and_a_cheap_import(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out == f"panformer {panformer.__version__}\n"
    probe = "import sys, panformer; print(callable(panformer.load), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(panformer.__file__).parents[1])
    assert done.stdout.split() == ["True", "False"]  # panformer.load exists; torch is not imported for it


# -- dataset names inside the tasks --------------------------------------------------------------------------
def test_speech_valid_data_reads_the_validation_split_of_a_saved_dataset(tmp_path, monkeypatch):
    """main read the train split for --valid-data / --test-data NAME (tasks/speech/data.py)."""
    import datasets

    from panformer.tasks.speech.data import load_source

    monkeypatch.setenv("PANFORMER_CACHE", str(tmp_path / "cache"))
    _write_wavs(tmp_path / "wav", ["one", "two", "three"])
    parts = {"train": ["one", "two"], "validation": ["three"]}
    index = {"one": 0, "two": 1, "three": 2}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"audio": [str(tmp_path / "wav" / f"{index[t]}.wav") for t in v],
                                                         "sentence": v}) for k, v in parts.items()}
                         ).save_to_disk(str(tmp_path / "hf"))
    assert [u.text for u in load_source(str(tmp_path / "hf"), "--valid-data")] == ["three"]
    assert [u.text for u in load_source(str(tmp_path / "hf"), "--data")] == ["one", "two"]
    assert [u.text for u in load_source(f"{tmp_path / 'hf'}:validation", "--data")] == ["three"]


@pytest.mark.parametrize("recipe", ["vit", "generation"])
def test_a_clock_budget_recipe_gives_way_to_explicit_steps_or_epochs(recipe):
    """recipes/vit.py and recipes/generation.py schedule over a wall-clock budget; ``--epochs N`` or
    ``--max-steps N`` (as in README's fine-tuning example) replaces it, as it replaces ``--quick``'s."""
    import importlib.util

    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args

    spec = importlib.util.spec_from_file_location(f"recipe_{recipe}", ROOT / "recipes" / f"{recipe}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = get_task(recipe)
    _, t = resolve_train_args(cls, [], mod.DEFAULTS)
    assert t.schedule_clock == "time" and t.max_time_minutes == mod.DEFAULTS["max_time_minutes"]
    _, t = resolve_train_args(cls, ["--max-steps", "50"], mod.DEFAULTS)
    assert (t.max_steps, t.schedule_clock, t.max_time_minutes) == (50, "steps", None)
    if recipe == "vit":  # generation's task defaults bound its steps (max_steps 5000) whatever the epochs
        _, t = resolve_train_args(cls, ["--epochs", "5"], mod.DEFAULTS)
        assert (t.epochs, t.max_steps, t.schedule_clock) == (5, None, "steps")
    _, t = resolve_train_args(cls, ["--max-steps", "50", "--schedule-clock", "time", "--max-time-minutes", "2"],
                              mod.DEFAULTS)
    assert (t.max_steps, t.schedule_clock, t.max_time_minutes) == (50, "time", 2)  # flags still win


@pytest.mark.parametrize("recipe", ["speech", "music", "image_generation", "tts"])
def test_a_recipe_with_planned_steps_and_a_time_limit_decays_by_whichever_ends_first(recipe):
    """These recipes plan their steps (epochs or max_steps) and cap them with a time limit; their schedule follows
    whichever is further spent, so on a slow machine the limit does not cut the decay off half-way. Explicit
    ``--epochs`` / ``--max-steps`` count steps alone (reproducible step for step), the time limit kept."""
    import importlib.util

    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args

    spec = importlib.util.spec_from_file_location(f"recipe_{recipe}", ROOT / "recipes" / f"{recipe}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = get_task(recipe.replace("_", "-"))
    _, t = resolve_train_args(cls, [], mod.DEFAULTS)
    assert t.schedule_clock == "first" and t.max_time_minutes == mod.DEFAULTS["max_time_minutes"]
    assert t.schedule in ("cosine", "linear")  # a decay that has an end to reach
    _, t = resolve_train_args(cls, ["--max-steps", "50"], mod.DEFAULTS)
    assert (t.max_steps, t.schedule_clock, t.max_time_minutes) == (50, "steps", mod.DEFAULTS["max_time_minutes"])
