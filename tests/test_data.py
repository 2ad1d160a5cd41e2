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


# -- NAME[:CONFIG][:SPLIT]: one syntax for every task's --data / --valid-data / --test-data -------------------
def test_parse_hub_spec_names_configs_splits_and_paths(tmp_path, monkeypatch):
    from panformer.core.data import HubSpec, parse_hub_spec

    assert parse_hub_spec("glue:sst2:validation") == HubSpec("glue", "sst2", "validation")
    assert parse_hub_spec("glue:sst2") == HubSpec("glue", "sst2", None)  # not a split name: a config
    assert parse_hub_spec("org/name:test") == HubSpec("org/name", None, "test")  # detection's old NAME:SPLIT
    assert parse_hub_spec("glue:mnli:validation_matched") == HubSpec("glue", "mnli", "validation_matched")
    assert parse_hub_spec("imdb::train[:10%]") == HubSpec("imdb", None, "train[:10%]")  # ':' inside a slice
    assert parse_hub_spec("imdb:train[10:20]") == HubSpec("imdb", None, "train[10:20]")
    # Windows drive paths, file names and paths that exist are paths, never NAME:CONFIG
    for path in ("C:\\data\\train.csv", "C:/data/train", "d:\\x", "reviews.csv", "./data:x", "", "a:b:c:d"):
        assert parse_hub_spec(path) is None, path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x:y.csv").write_text("text,label\na,1\n")
    assert parse_hub_spec("x:y.csv") is None and parse_hub_spec(str(tmp_path / "x:y.csv")) is None
    (tmp_path / "my:data").mkdir()  # a local dataset folder whose name holds ':' keeps it
    assert parse_hub_spec("my:data") == HubSpec("my:data")
    assert parse_hub_spec("my:data:sst2:test") == HubSpec("my:data", "sst2", "test")
    assert parse_hub_spec("my:data:validation") == HubSpec("my:data", None, "validation")


@pytest.fixture
def saved_dict(tmp_path):
    import datasets

    parts = {"train": ["t1", "t2", "t3"], "validation": ["v1", "v2"], "test": ["s1"]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v, "label": [0] * len(v)})
                          for k, v in parts.items()}).save_to_disk(str(tmp_path / "dd"))
    return tmp_path / "dd"


def test_saved_datasetdict_reads_each_flags_split(saved_dict, tmp_path):
    from panformer.core.data import load_table

    d = str(saved_dict)
    assert load_table(d, "--data")["text"] == ["t1", "t2", "t3"]
    assert load_table(d, "--valid-data")["text"] == ["v1", "v2"]  # main read train for every flag
    assert load_table(d, "--test-data")["text"] == ["s1"]
    assert load_table(f"{d}:test", "--data")["text"] == ["s1"]  # an explicit split wins
    assert load_table(f"{d}::validation", "--test-data")["text"] == ["v1", "v2"]
    with pytest.raises(DataError, match=r"no split 'dev' \(splits: train, validation, test\)"):
        load_table(f"{d}:dev", "--valid-data")
    with pytest.raises(DataError, match="save_to_disk has no configs"):
        load_table(f"{d}:sst2:test", "--test-data")


def test_missing_validation_split_names_the_splits_or_takes_an_alias(tmp_path):
    import datasets

    from panformer.core.data import load_table

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]}),
                          "test": datasets.Dataset.from_dict({"text": ["b"]})}).save_to_disk(str(tmp_path / "no_val"))
    with pytest.raises(DataError, match=r"--valid-data .*no_val: no split 'validation' \(splits: train, test\); "
                                        r"name one as .*no_val:SPLIT"):
        load_table(str(tmp_path / "no_val"), "--valid-data")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]}),
                          "dev": datasets.Dataset.from_dict({"text": ["d"]})}).save_to_disk(str(tmp_path / "dev"))
    assert load_table(str(tmp_path / "dev"), "--valid-data")["text"] == ["d"]  # HF datasets that say dev
    with pytest.raises(DataError, match="no split 'validation'"):  # ... but a split asked for by name must exist
        load_table(str(tmp_path / "dev") + ":validation", "--data")
    datasets.Dataset.from_dict({"text": ["only"]}).save_to_disk(str(tmp_path / "one"))
    assert load_table(str(tmp_path / "one"), "--test-data")["text"] == ["only"]  # a saved Dataset is itself


def test_local_dataset_folder_with_configs_like_load_dataset(tmp_path):
    """A folder with data files and a README.md that declares configs, read as datasets.load_dataset(folder,
    config) does: NAME:CONFIG[:SPLIT]; without a config the error says how to name one."""
    from panformer.core.data import load_table

    root = tmp_path / "glue_like"
    for cfg, splits in {"sst2": ("train", "validation"), "cola": ("train",)}.items():
        (root / cfg).mkdir(parents=True)
        for split in splits:
            (root / cfg / f"{split}.csv").write_text(f"sentence,label\n{cfg} {split} one,1\n{cfg} {split} two,0\n")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: train\n    path: sst2/train.csv\n"
        "  - split: validation\n    path: sst2/validation.csv\n- config_name: cola\n  data_files:\n"
        "  - split: train\n    path: cola/train.csv\n---\n")
    assert load_table(f"{root}:sst2", "--valid-data")["sentence"] == ["sst2 validation one", "sst2 validation two"]
    assert load_table(f"{root}:sst2:train", "--valid-data")["sentence"][0] == "sst2 train one"
    assert load_table(f"{root}:cola", "--data")["sentence"][0] == "cola train one"
    with pytest.raises(DataError, match="Config name is missing.*name one as NAME:CONFIG"):
        load_table(str(root), "--data")
    with pytest.raises(DataError, match="'nope'"):
        load_table(f"{root}:nope", "--data")
    plain = tmp_path / "plain"  # a folder of data files alone: its one split is what the flag reads
    plain.mkdir()
    (plain / "part.csv").write_text("text,label\nx,1\n")
    assert load_table(str(plain), "--valid-data")["text"] == ["x"]


def test_hub_names_pass_config_and_split_to_load_dataset(monkeypatch):
    """main never passed the config (glue needs one) and read train for --valid-data; offline here, so the
    call into datasets is recorded instead of made."""
    import datasets

    from panformer.core.data import load_table

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kw):
        calls.append((name, config, split))
        dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"sentence": [f"{s} row"], "label": [1]})
                                   for s in ("train", "validation", "test")})
        return dd if split is None else dd[split.split("[")[0]]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_table("glue:sst2:validation", "--data")["sentence"] == ["validation row"]
    assert load_table("glue:sst2", "--valid-data")["sentence"] == ["validation row"]
    assert load_table("nyu-mll/glue:sst2", "--test-data")["sentence"] == ["test row"]
    assert load_table("imdb", "--data")["sentence"] == ["train row"]
    assert load_table("imdb:train[:50%]", "--data")["sentence"] == ["train row"]
    assert calls == [("glue", "sst2", None), ("glue", "sst2", None), ("nyu-mll/glue", "sst2", None),
                     ("imdb", None, None), ("imdb", None, "train[:50%]")]
