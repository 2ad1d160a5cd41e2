"""core.mlm: masked-token self-pretraining of an embedding + encoder."""
import torch

from panformer.core import Encoder, TransformerConfig
from panformer.core.embedding import TokenEmbedding
from panformer.core.masks import IGNORE_INDEX
from panformer.core.mlm import MaskedLM, _Collator, masked_lm_pretrain
from panformer.core.trainer import TrainingArguments


def _modules(d=32, vocab=20):
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=d, n_heads=2, n_layers=1, d_ff=64, dropout=0.0, max_len=32)
    return TokenEmbedding(vocab, d, 0), Encoder(cfg)


def test_head_is_tied_to_the_embedding():
    emb, enc = _modules()
    mlm = MaskedLM(emb, enc, pad_id=0)
    assert mlm.head.embedding.weight is emb.weight
    logits = mlm(torch.tensor([[5, 6, 7, 0]]))
    assert logits.shape == (1, 4, 20)


def test_collator_never_targets_special_or_padding_tokens():
    torch.manual_seed(0)
    col = _Collator(pad_id=0, mask_id=4, vocab_size=20, special=torch.tensor([0, 1, 2, 3, 4]), prob=0.9)
    batch = col([[2, 7, 8, 9, 3], [2, 10, 3]])
    labels, inputs = batch["labels"], batch["ids"]
    original = torch.tensor([[2, 7, 8, 9, 3], [2, 10, 3, 0, 0]])
    special = torch.isin(original, torch.tensor([0, 1, 2, 3, 4]))
    assert (labels[special] == IGNORE_INDEX).all()
    assert (inputs[special] == original[special]).all()  # specials and padding are never corrupted
    assert (labels[~special & (labels != IGNORE_INDEX)] == original[~special & (labels != IGNORE_INDEX)]).all()
    assert (labels != IGNORE_INDEX).sum() >= 3  # prob 0.9 selects most of the 5 ordinary tokens
    assert ((inputs >= 5) | (inputs == 4))[~special].all()  # [MASK] or ordinary ids (random ones too)


def test_pretraining_learns_and_updates_modules_in_place():
    emb, enc = _modules()
    before = emb.weight.detach().clone()
    seqs = [[5 + (i % 3), 9 + (i % 3)] * 6 for i in range(300)]  # each token is predictable from its neighbours
    args = TrainingArguments(max_steps=150, batch_size=32, lr=3e-3, schedule="cosine", warmup_steps=10,
                             progress=False, log_every=10, threads=1)
    s = masked_lm_pretrain(emb, enc, seqs, pad_id=0, mask_id=4, special_ids=[0, 1, 2, 3, 4], args=args)
    assert s["steps"] == 150
    assert s["last_loss"] < 0.5 * s["first_loss"]
    assert not torch.equal(before, emb.weight.detach().cpu())  # the Trainer may have moved it to a GPU


def test_sentiment_self_pretraining_rejects_recurrent_encoders(tmp_path, capsys):
    from panformer.tasks.cli import main

    out = tmp_path / "run"
    code = main(["train", "sentiment", "--quick", "--arch", "lstm", "--mlm-pretrain-steps", "5", "--out", str(out)])
    assert code == 2
    assert "--mlm-pretrain-steps needs the Transformer encoder" in capsys.readouterr().err
    assert not out.exists()  # no half-written run directory


def test_collator_always_selects_a_token():
    col = _Collator(pad_id=0, mask_id=4, vocab_size=20, special=torch.tensor([0, 1, 2, 3, 4]), prob=0.0)
    batch = col([[7, 8], [9]])
    assert (batch["labels"] != IGNORE_INDEX).sum() == 1 and (batch["ids"] == 4).sum() == 1

