"""``python -m panformer ...``: the same as the ``panformer`` command (used under ``torchrun``)."""
import sys

from panformer.tasks.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
