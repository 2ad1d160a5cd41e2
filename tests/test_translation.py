"""Translation task: learning a reversal task to exact match, cache/beam behaviour, data formats, errors."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from panformer.core.checkpoint import read_weights_metadata
from panformer.tasks.cli import load_run, main
from panformer.tasks.translation import TranslationTask, average_state_dicts, number_expression_pairs
from panformer.tasks.translation.data import read_source
from panformer.tasks.translation.decode import pad_batch, sequence_log_probs, translate_ids

pytest.importorskip("num2words")


pytestmark = pytest.mark.usefixtures("one_thread")


def write_lines(path: Path, lines: list[str]) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return str(path)


def reversal_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    src = [" ".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 5))) for _ in range(n)]
    return src, [" ".join(reversed(s.split())) for s in src]


@pytest.fixture(scope="module")
def reversal_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("reversal")
    src, tgt = reversal_pairs(3000, 0)
    vsrc, vtgt = reversal_pairs(200, 1)
    out = d / "run"
    rc = main(["train", "translation", "--source-file", write_lines(d / "train.src.gz", src),
               "--target-file", write_lines(d / "train.tgt.gz", tgt),
               "--valid-source-file", write_lines(d / "valid.src", vsrc), "--valid-target-file", write_lines(d / "valid.tgt", vtgt),
               "--tokenizer", "word", "--d-model", "64", "--n-heads", "4", "--n-layers", "2", "--d-ff", "128",
               "--dropout", "0", "--label-smoothing", "0", "--max-steps", "450", "--batch-size", "64", "--lr", "3e-3",
               "--warmup-steps", "50", "--eval-every", "150", "--average-last", "2", "--beam-size", "3",
               "--test-fraction", "0.05", "--progress", "false", "--out", str(out)])
    assert rc == 0
    return out


def test_learns_reversal_to_exact_match_with_checkpoint_averaging(reversal_run):
    m = json.loads((reversal_run / "metrics.json").read_text())
    assert {"bleu", "chrf", "exact_match", "loss", "bleu_greedy"} <= set(m)
    assert m["exact_match"] >= 0.9, m
    assert m["bleu"] >= 90
    assert m["checkpoints_averaged"] == 2
    assert read_weights_metadata(reversal_run / "model.safetensors")["averaged_checkpoints"] == "2"
    assert (reversal_run / "cross_attention_0.png").stat().st_size > 1000
    assert (reversal_run / "translations_test.tsv").read_text().startswith("source\treference\ttranslation\n")


def test_predict_and_evaluate_from_run(reversal_run, capsys):
    assert main(["predict", "translation", "--run", str(reversal_run), "a b c d", "h g"]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == ["d c b a", "g h"]
    assert main(["evaluate", "translation", "--run", str(reversal_run), "--split", "valid"]) == 0
    assert json.loads(capsys.readouterr().out)["exact_match"] >= 0.9


def test_cached_decoding_equals_uncached_and_beam_beats_greedy(reversal_run):
    task, model = load_run(reversal_run, "cpu")
    src = task._encode_src(reversal_pairs(24, 7)[0] + ["a b c d e f g h a b"])
    kw = task._decode_kwargs(1)
    for beam in (1, 3):
        kw["beam_size"] = beam
        cached, _ = translate_ids(model, src, use_cache=True, **kw)
        uncached, _ = translate_ids(model, src, use_cache=False, **kw)
        assert cached == uncached
    kw.update(beam_size=4, length_penalty=0.0)
    beam, beam_scores = translate_ids(model, src, **kw)
    greedy, greedy_scores = translate_ids(model, src, **{**kw, "beam_size": 1})
    eos, pad = task.tgt_tok.eos_id, task.tgt_tok.pad_id
    rescored = sequence_log_probs(model, pad_batch(src, pad), pad_batch([h + [eos] for h in beam], pad), task.tgt_tok.bos_id, eos, pad)
    assert torch.allclose(rescored, torch.tensor(beam_scores), atol=1e-4)  # beam's raw score is the model's score
    # With the stopping rule of core.beam_search (final only when no live hypothesis can still win), beam
    # loses to greedy only if the greedy prefix itself falls out of the beam: 4 other prefixes would have
    # to beat it, while this model puts most of its mass on the greedy path. tests/test_beam_search.py
    # checks the rule itself against exhaustive search, independent of any trained model's weights.
    assert all(b >= g - 1e-4 for b, g in zip(beam_scores, greedy_scores))


def test_label_smoothed_loss_matches_reference():
    task = TranslationTask(SimpleNamespace(label_smoothing=0.1))
    task.tgt_tok = SimpleNamespace(pad_id=0)
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    model = lambda src, tgt_in: logits  # noqa: E731
    tgt = torch.tensor([[2, 5, 6, 3, 0], [2, 4, 3, 0, 0]])
    ref_logp = logits.log_softmax(-1)
    mask = tgt[:, 1:] != 0
    nll = -ref_logp.gather(-1, tgt[:, 1:, None]).squeeze(-1)
    smooth = -ref_logp.mean(-1)
    ref = ((0.9 * nll + 0.1 * smooth) * mask).sum() / mask.sum()
    assert torch.allclose(task.loss(model, {"src": None, "tgt": tgt}), ref, atol=1e-6)
    assert torch.allclose(F.cross_entropy(logits[mask], tgt[:, 1:][mask], label_smoothing=0.1), ref, atol=1e-6)


def test_average_state_dicts_is_elementwise_mean():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 7


def test_builtin_number_pairs_are_deterministic_and_aligned():
    from num2words import num2words

    src, tgt = number_expression_pairs(300, seed=3)
    assert (src, tgt) == number_expression_pairs(300, seed=3)
    assert len(set(src)) == 300
    years = [(s, t) for s, t in zip(src, tgt) if s.startswith("im Jahr ")]
    assert years and all(t.startswith("in the year ") for _, t in years)
    cardinals = [(s, t) for s, t in zip(src, tgt) if " " not in s and not s.startswith(("der", "im"))]
    words = {num2words(i, lang="de"): num2words(i, lang="en") for i in range(1000)}
    assert any(s in words and words[s] == t for s, t in cardinals)


def test_tables_prefixes_and_hub_layouts(tmp_path):
    a = SimpleNamespace(source_lang="de", target_lang="en", source_column=None, target_column=None)
    (tmp_path / "p.csv").write_text("de,en\nHallo Welt,hello world\nzwei,two\n")
    assert read_source(str(tmp_path / "p.csv"), "--data", a) == (["Hallo Welt", "zwei"], ["hello world", "two"])
    (tmp_path / "p.jsonl").write_text('{"translation": {"de": "eins", "en": "one"}}\n')
    assert read_source(str(tmp_path / "p.jsonl"), "--data", a) == (["eins"], ["one"])
    write_lines(tmp_path / "train.de.gz", ["ja", "nein"])
    write_lines(tmp_path / "train.en", ["yes", "no"])
    assert read_source(str(tmp_path / "train"), "--data", a) == (["ja", "nein"], ["yes", "no"])


def test_bad_inputs_give_one_line_errors(tmp_path, train_error):
    s = write_lines(tmp_path / "s.txt", ["eins", "zwei", "drei"])
    err = train_error("translation", "--source-file", s, "--target-file", write_lines(tmp_path / "t.txt", ["one", "two"]))
    assert "has 3 lines" in err and "t.txt has 2" in err
    err = train_error("translation", "--source-file", s, "--target-file", write_lines(tmp_path / "e.txt", ["one", "", "three"]))
    assert "e.txt: line 2 is empty" in err
    err = train_error("translation", "--source-file", write_lines(tmp_path / "z.txt", []), "--target-file", s)
    assert "z.txt is empty" in err
    assert "needs --target-file" in train_error("translation", "--source-file", s)
    (tmp_path / "c.csv").write_text("src,english\na,b\n")
    err = train_error("translation", "--data", str(tmp_path / "c.csv"), "--target-column", "en")
    assert "no column 'en'" in err and "--target-column" in err
    assert "--shared-vocab" in train_error("translation", "--shared-vocab", "false")
