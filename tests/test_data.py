"""core.data: seeded splits and the train / valid / test assembly every task shares."""
from __future__ import annotations

import pytest

from panformer.core.data import assemble_splits, seeded_split
from panformer.core.errors import DataError


def _take(ids: list[int]) -> list[str]:
    return [f"x{i}" for i in ids]


def test_seeded_split_is_a_deterministic_partition():
    a = seeded_split(100, [0.1, 0.2], seed=3)
    assert [len(p) for p in a] == [70, 10, 20]
    assert sorted(i for p in a for i in p) == list(range(100))
    assert a == seeded_split(100, [0.1, 0.2], seed=3) and a != seeded_split(100, [0.1, 0.2], seed=4)


def test_assemble_cuts_what_is_not_given():
    s = assemble_splits(100, _take, valid_fraction=0.1, test_fraction=0.2, seed=3)
    ids = seeded_split(100, [0.1, 0.2], seed=3)
    assert s == {"train": _take(ids[0]), "valid": _take(ids[1]), "test": _take(ids[2])}


def test_given_splits_are_used_and_take_nothing_from_train():
    s = assemble_splits(50, _take, valid=["v"], test_fraction=0.2, seed=0)
    assert s["valid"] == ["v"] and len(s["train"]) == 40 and len(s["test"]) == 10
    s = assemble_splits(50, _take, valid=["v"], test=["t"], seed=0)
    assert s["train"] == _take(seeded_split(50, [0.0, 0.0], 0)[0]) and s["test"] == ["t"]


def test_max_examples_keeps_the_first_training_examples():
    full = assemble_splits(100, _take, seed=1)
    capped = assemble_splits(100, _take, seed=1, max_examples=7)
    assert capped["train"] == full["train"][:7] and capped["valid"] == full["valid"] and capped["test"] == full["test"]


def test_fixed_indices_and_custom_size():
    s = assemble_splits(6, lambda ids: (ids, [i * 10 for i in ids]), indices=([0, 1, 2], [3], []),
                        size=lambda part: len(part[0]))
    assert s == {"train": ([0, 1, 2], [0, 10, 20]), "valid": ([3], [30]), "test": None}


def test_empty_splits_name_the_flag_to_change():
    with pytest.raises(DataError, match="no training examples"):
        assemble_splits(0, _take, valid=["v"], test=["t"])
    with pytest.raises(DataError, match="--valid-fraction or pass --valid-data / --valid-source-file"):
        assemble_splits(10, _take, valid_fraction=0.0, valid_hint="--valid-data / --valid-source-file")
    with pytest.raises(DataError, match="leave no training"):
        assemble_splits(10, _take, valid_fraction=0.6, test_fraction=0.5)
