"""``python tests/interrupt_at.py STEP panformer-args...``: run the panformer CLI and raise KeyboardInterrupt
right after optimizer step STEP, between two steps, in every process: what Ctrl-C in a terminal (SIGINT to
the whole process group) does, at a step chosen in advance. Used under ``torchrun`` by
tests/test_distributed.py and bench/ddp_throughput.py."""
import sys

from panformer.core.trainer import Trainer
from panformer.tasks.cli import main

stop_at = int(sys.argv.pop(1))
after_step = Trainer._after_step


def interrupting(self, lr, end_of_epoch):
    after_step(self, lr, end_of_epoch)
    if self.state.step == stop_at:
        raise KeyboardInterrupt


Trainer._after_step = interrupting
sys.exit(main(sys.argv[1:]))
