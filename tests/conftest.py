"""Shared fixtures: where the real datasets live, and a CLI runner.

The suite must pass on any machine, whatever the arithmetic's last bits. To check that, vary:

* threads: ``PANFORMER_TEST_THREADS=1`` (or ``OMP_NUM_THREADS=1``; default: 2, or fewer cores);
* test order: pytest-randomly (a dev dependency) shuffles it on every run and prints the
  ``--randomly-seed=N`` that repeats an order; ``-p no:randomly`` keeps the file order;
* hash seeds: ``PYTHONHASHSEED=N``;
* training seeds: ``PANFORMER_TEST_SEED=N`` makes N the default ``--seed`` of every run trained in-process
  through the CLI (tests that pass ``--seed`` themselves keep theirs).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PANFORMER_SHARED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(int(os.environ.get("PANFORMER_TEST_THREADS", os.environ.get("OMP_NUM_THREADS", 0)) or
                          min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _training_seed():
    """``PANFORMER_TEST_SEED=N``: the default seed of runs trained through the CLI (see the module docstring)."""
    seed = os.environ.get("PANFORMER_TEST_SEED")
    if not seed:
        yield
        return
    from panformer.tasks import cli

    resolve = cli.resolve_train_args

    def with_seed(task_cls, argv, recipe_defaults=None):
        return resolve(task_cls, argv, {"seed": int(seed), **(recipe_defaults or {})})
    cli.resolve_train_args = with_seed
    yield
    cli.resolve_train_args = resolve


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data, or skip the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared dataset not found: {p}")
    return p


class InterruptAt:
    """A Trainer callback that raises KeyboardInterrupt (Ctrl-C) after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, logs) -> None:
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


@pytest.fixture
def cli(capsys):
    """Run ``panformer ARGS...`` in-process; returns (exit_code, stdout, stderr)."""
    from panformer.tasks.cli import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) on one thread. A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def train_error(tmp_path, capsys):
    """``train_error(task, *argv)`` runs ``panformer train TASK --quick ARGV``, asserts that it fails the way bad
    input must (exit 2, exactly one ``panformer: error: ...`` line, no run directory left behind) and returns
    that line."""
    from panformer.tasks.cli import main

    def run(task: str, *argv: str) -> str:
        out = tmp_path / "never"
        rc = main(["train", task, "--quick", "--out", str(out), *map(str, argv)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("panformer: error: ") and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
        return err

    return run
