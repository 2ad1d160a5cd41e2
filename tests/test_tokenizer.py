"""core.tokenizer: trained vocabularies are the same in every process (same data -> same run)."""
import os
import subprocess
import sys

import pytest

from panformer.core.tokenizer import train_tokenizer

SCRIPT = """
import hashlib, sys
from panformer.core.tokenizer import train_tokenizer
texts = [f"the {w}ing of {v}ed things, {w}{v}ly!" for w in ("walk", "talk", "sing", "bring", "zap")
         for v in ("jump", "hop", "skip", "trip", "zig", "quux")] * 3
print(hashlib.md5(train_tokenizer(texts, sys.argv[1], vocab_size=300, lowercase=True).tok.to_str().encode()).hexdigest())
"""


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "word"])
def test_training_is_deterministic_across_processes(kind):
    # two string-hash seeds that order sets and dicts of words differently: a tokenizer that iterated one would
    # learn different merges or ids in the two processes
    digests = [subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert digests[0] and digests[0] == digests[1]


def test_wordpiece_covers_every_character_and_round_trips_words():
    tok = train_tokenizer(["hello world", "help the world", "yellow fellow"] * 5, "wordpiece", vocab_size=200,
                          lowercase=True)
    ids = tok.encode("Hello yellowy hold weld")  # unseen words, seen characters
    assert tok.unk_id not in ids
    assert tok.decode(ids) == "hello yellowy hold weld"
    assert tok.encode("q") == [tok.unk_id]  # a character never seen in training
