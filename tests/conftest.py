"""Shared fixtures: where the real datasets live, and a CLI runner."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PANFORMER_SHARED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


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
