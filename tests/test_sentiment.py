"""Sentiment end to end through the CLI: run directory, evaluate, predict, learning, bad input."""
import json

import pytest
import torch

from conftest import shared_path

QUICK = ["--quick", "--progress", "false"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from panformer.tasks.cli import main

    out = tmp_path_factory.mktemp("runs") / "sent"
    assert main(["train", "sentiment", *QUICK, "--max-steps", "150", "--out", str(out)]) == 0
    return out


def test_run_directory_layout(quick_run):
    for name in ("config.json", "metrics.json", "model.safetensors", "log.csv", "curves.png",
                 "confusion_matrix.png", "assets/tokenizer.json", "assets/labels.json"):
        assert (quick_run / name).is_file(), name
    assert (quick_run / "tensorboard").is_dir()
    m = json.loads((quick_run / "metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "loss"):
        assert 0.0 <= m[key] <= (1.0 if key != "loss" else 10.0)
    assert m["split"] == "test" and m["num_params"] > 0
    assert m["compute_precision"] == "fp32"  # the task's default; the recipes say auto
    assert m["accuracy"] > 0.55  # built-in snippets are balanced: chance is 0.5


def test_evaluate_matches_training_metrics(quick_run, cli):
    code, out, _ = cli("evaluate", "sentiment", "--run", quick_run)
    assert code == 0
    m = json.loads(out)
    trained = json.loads((quick_run / "metrics.json").read_text())
    assert m["accuracy"] == pytest.approx(trained["accuracy"])


def test_ensemble_of_runs(quick_run, tmp_path, cli):
    import shutil

    from panformer.tasks.cli import load_runs
    other = tmp_path / "bpe"  # another kind of tokenizer: each member encodes the text for itself
    code, _, err = cli("train", "sentiment", *QUICK, "--tokenizer", "bpe", "--seed", "1", "--max-steps", "40",
                       "--out", other)
    assert code == 0, err
    task, ens = load_runs([quick_run, other], "cpu")
    texts = ["a wonderful, moving film", "dull and tedious", "the plot"]
    members = [t.text_logits(m, texts).log_softmax(-1) for t, m in zip(ens.tasks, ens.members)]
    assert not torch.allclose(members[0], members[1])
    torch.testing.assert_close(task.text_logits(ens, texts), (members[0] + members[1]) / 2)
    # a run with itself scores exactly as the run alone
    code, out, err = cli("evaluate", "sentiment", "--run", quick_run, "--run", quick_run)
    assert code == 0, err
    trained = json.loads((quick_run / "metrics.json").read_text())
    for key in ("accuracy", "loss"):
        assert json.loads(out)[key] == pytest.approx(trained[key], rel=1e-5), key
    code, out, err = cli("predict", "sentiment", "--run", quick_run, "--run", other, *texts[:2])
    assert code == 0 and len(out.strip().splitlines()) == 2, err
    relabelled = tmp_path / "relabelled"  # the same run with its label order swapped cannot join
    shutil.copytree(quick_run, relabelled)
    labels = json.loads((relabelled / "assets/labels.json").read_text())
    (relabelled / "assets/labels.json").write_text(json.dumps(labels[::-1]))
    code, _, err = cli("evaluate", "sentiment", "--run", quick_run, "--run", relabelled)
    assert code == 2 and "labels" in err and "same labels" in err, err


def test_predict(quick_run, cli):
    code, out, _ = cli("predict", "sentiment", "--run", quick_run, "a wonderful, moving film", "dull and tedious")
    assert code == 0
    preds = [json.loads(line) for line in out.strip().splitlines()]
    assert len(preds) == 2 and {p["label"] for p in preds} <= {"positive", "negative"}
    assert all(0.5 <= p["probability"] <= 1.0 for p in preds)


def test_config_file_and_flag_precedence(tmp_path, cli):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("d_model: 32\nn_heads: 2\nmax_steps: 5\nlr: 0.01\n")
    out = tmp_path / "run"
    code, _, err = cli("train", "sentiment", *QUICK, "--config", cfg, "--lr", "0.002", "--out", out)
    assert code == 0, err
    args = json.loads((out / "config.json").read_text())["args"]
    assert args["d_model"] == 32 and args["max_steps"] == 5 and args["lr"] == 0.002


def test_same_seed_same_metrics(tmp_path, cli):
    runs = []
    for name in ("a", "b"):
        code, _, err = cli("train", "sentiment", *QUICK, "--max-steps", "20", "--seed", "3", "--out", tmp_path / name)
        assert code == 0, err
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    for key in ("accuracy", "f1", "loss"):
        assert runs[0][key] == runs[1][key]


def test_learns_sst2(tmp_path, cli):
    """A short run on real SST-2 phrases clearly beats the majority class on the dev set."""
    sst = shared_path("sst2")
    out = tmp_path / "sst"
    code, _, err = cli("train", "sentiment", "--data", sst / "train.tsv", "--valid-data", sst / "dev.tsv",
                       "--test-data", sst / "dev.tsv", "--max-examples", "20000", "--max-steps", "300",
                       "--batch-size", "64", "--d-model", "64", "--n-heads", "2", "--n-layers", "1", "--d-ff", "128",
                       "--vocab-size", "4000", "--warmup-steps", "30", "--lr", "2e-3", "--eval-every", "150",
                       "--progress", "false", "--precision", "bf16", "--out", out)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    majority = 0.509  # share of the larger class in dev.tsv
    assert m["accuracy"] > majority + 0.15, m


# -- bad input: one clear line (nothing else on stderr), exit status 2, no run directory (conftest.train_error)

def test_missing_file(tmp_path, train_error):
    assert "file not found" in train_error("sentiment", "--data", tmp_path / "nope.csv")


def test_missing_column(tmp_path, train_error):
    f = tmp_path / "d.csv"
    f.write_text("review,label\ngood,1\nbad,0\n")
    assert "no column 'body'" in train_error("sentiment", "--data", f, "--text-column", "body")


def test_empty_dataset(tmp_path, train_error):
    f = tmp_path / "empty.csv"
    f.write_text("text,label\n")
    assert "no rows" in train_error("sentiment", "--data", f)


def test_unknown_label(tmp_path, train_error):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(30)))
    test.write_text("text,label\nfine,neutral\n")
    assert "unknown label 'neutral'" in train_error("sentiment", "--data", train, "--test-data", test)


def test_undecodable_text(tmp_path, train_error):
    f = tmp_path / "latin1.csv"
    f.write_bytes("text,label\ncaf\xe9 cr\xe8me,1\nbad,0\n".encode("latin-1"))
    assert "not valid UTF-8" in train_error("sentiment", "--data", f)


def test_empty_text_cell(tmp_path, train_error):
    f = tmp_path / "d.csv"
    f.write_text("text,label\ngood,1\n,0\n")
    assert "row 2" in train_error("sentiment", "--data", f)


def test_word_dropout_hides_ordinary_tokens_only_in_training():
    from types import SimpleNamespace

    from panformer.core.tokenizer import train_tokenizer
    from panformer.tasks.sentiment import SentimentTask

    task = SentimentTask(SimpleNamespace(token_dropout=0.5, label_smoothing=0.0))
    tok = task.tokenizer = train_tokenizer(["good film", "bad film"] * 5, "word", 50, min_frequency=1)
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, ids):
            seen["ids"] = ids
            return torch.zeros(ids.shape[0], 2, requires_grad=True)

    good, film = tok.encode("good film")
    ids = torch.tensor([[tok.bos_id, good, film, tok.eos_id, tok.pad_id]] * 400)
    batch = {"ids": ids, "labels": torch.zeros(400, dtype=torch.long)}
    torch.manual_seed(0)
    task.loss(Recorder().train(), batch)
    out = seen["ids"]
    assert torch.equal(out[:, [0, 3, 4]], ids[:, [0, 3, 4]])  # bos, eos and padding are never hidden
    hidden = (out[:, 1:3] == tok.unk_id).float().mean().item()
    assert hidden == pytest.approx(0.5, abs=0.05)
    assert ((out[:, 1:3] == ids[:, 1:3]) | (out[:, 1:3] == tok.unk_id)).all()
    task.loss(Recorder().eval(), batch)
    assert torch.equal(seen["ids"], ids)  # evaluation sees the text as it is
