"""Sequential recommendation: metrics vs hand-computed cases and scikit-learn, readers, no leakage,
SASRec causality, learning on the built-in data against most-popular, predict, and bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import label_ranking_average_precision_score, ndcg_score, top_k_accuracy_score

from conftest import shared_path
from panformer.core import TransformerConfig
from panformer.core.errors import DataError
from panformer.tasks.recommendation import RecommendationTask
from panformer.tasks.recommendation.data import (Columns, ItemVocab, leave_one_out, markov_sequences, read_interactions,
                                       sample_negatives)
from panformer.tasks.recommendation.metrics import rank_counts, rank_counts_sampled, ranking_metrics
from panformer.tasks.recommendation.models import BERT4Rec, SASRec

QUICK = ["--quick", "--progress", "false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_txt(path, seqs: dict[str, list[str]]) -> None:
    path.write_text("".join(f"{u} {i}\n" for u, s in seqs.items() for i in s))


# -- metrics ---------------------------------------------------------------------------------------
def metrics_of(scores: list[list[float]], target: list[int], ks=(1, 3, 10)) -> dict[str, float]:
    return ranking_metrics(*rank_counts(torch.tensor(scores), torch.tensor(target)), ks)


def test_metrics_hand_computed():
    m = metrics_of([[5.0, 1.0, 2.0, 3.0]], [0])  # rank 0
    assert m["hr@1"] == m["ndcg@1"] == m["ndcg@10"] == m["mrr"] == 1.0
    m = metrics_of([[0.1, 0.9, 0.8, 0.7, 0.0]], [0])  # three items above the target: rank 3
    assert m["hr@3"] == 0.0 and m["ndcg@3"] == 0.0 and m["hr@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(5)) and m["mrr"] == pytest.approx(0.25)
    m = metrics_of([[1.0] * 4], [2])  # all tied: uniform rank over 0..3
    assert m["hr@1"] == pytest.approx(0.25) and m["hr@3"] == pytest.approx(0.75)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    m = metrics_of([[float("nan"), 2.0, 1.0]], [0])  # a NaN target is ranked last, never first
    assert m["hr@1"] == 0.0 and m["mrr"] < 0.5
    g, t = rank_counts_sampled(torch.tensor([[0.5, 0.1, 0.9, 0.5]]))  # target first, 3 negatives
    assert (int(g), int(t)) == (1, 1)


def test_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    B, C = 64, 30
    tied = rng.integers(0, 6, size=(B, C)).astype(float)  # many ties
    target = rng.integers(0, C, size=B)
    onehot = np.eye(C)[target]
    for k in (1, 5, 10):
        ours = metrics_of(tied.tolist(), target.tolist(), (k,))
        assert ours[f"ndcg@{k}"] == pytest.approx(ndcg_score(onehot, tied, k=k, ignore_ties=False), abs=1e-9)
    cont = rng.normal(size=(B, C))  # no ties: hit rate and MRR too
    ours = metrics_of(cont.tolist(), target.tolist(), (1, 5, 10))
    for k in (1, 5, 10):
        assert ours[f"hr@{k}"] == pytest.approx(top_k_accuracy_score(target, cont, k=k, labels=np.arange(C)))
        assert ours[f"ndcg@{k}"] == pytest.approx(ndcg_score(onehot, cont, k=k))
    assert ours["mrr"] == pytest.approx(label_ranking_average_precision_score(onehot, cont))


# -- data ------------------------------------------------------------------------------------------
def test_readers_agree_and_sort_by_time(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("uid,movie,stars,when\n1,10,5,300\n1,11,2,100\n2,10,4,50\n1,12,4,200\n2,13,5,50\n")
    cols = Columns(user="uid", item="movie", time="when")
    assert read_interactions(str(csv), cols) == {"1": ["11", "12", "10"], "2": ["10", "13"]}  # ties keep file order
    cols = Columns(user="uid", item="movie", time="when", rating="stars", min_rating=4)
    assert read_interactions(str(csv), cols) == {"1": ["12", "10"], "2": ["10", "13"]}
    inter = tmp_path / "toy.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t3\t1\t20\n7\t4\t1\t10\n")
    assert read_interactions(str(tmp_path), Columns()) == {"7": ["4", "3"]}  # a RecBole folder
    txt = tmp_path / "seq.txt"
    txt.write_text("1 5\n1 6\n\n2 5\n")
    assert read_interactions(str(txt), Columns()) == {"1": ["5", "6"], "2": ["5"]}


def test_movielens_shared_inter():
    path = shared_path("movielens-100k", "ml-100k.inter")
    seqs = read_interactions(str(path), Columns())
    assert len(seqs) == 943 and sum(map(len, seqs.values())) == 100_000


def test_negatives_are_unseen_and_seeded():
    users = [[1, 2, 3], [4], [1, 5, 6, 7, 8, 9]]
    a = sample_negatives(users, 10, 50, seed=1)
    assert a.shape == (3, 50) and a.min() >= 1 and a.max() <= 10
    for row, seen in zip(a, users):
        assert not set(row.tolist()) & set(seen)
    assert (a == sample_negatives(users, 10, 50, seed=1)).all()
    assert not (a == sample_negatives(users, 10, 50, seed=2)).all()


def task_for(tmp_path, seqs, **over) -> RecommendationTask:
    path = tmp_path / "data.txt"
    write_txt(path, seqs)
    from panformer.tasks.cli import resolve_train_args

    args, _ = resolve_train_args(RecommendationTask, ["--data", str(path), *QUICK, *sum(
        ([f"--{k.replace('_', '-')}", str(v)] for k, v in over.items()), [])])
    task = RecommendationTask(args)
    task.load_data()
    task.fit_assets()
    return task


def test_no_leakage(tmp_path):
    """Items are unique per user, so a target showing up in what the model sees would be a leak."""
    seqs = {str(u): [str(100 * u + j) for j in range(3 + u % 5)] for u in range(1, 40)}
    task = task_for(tmp_path, seqs, max_len=4)
    train_items = {i for s in task.train_dataset() for i in s}
    for split in ("valid", "test"):
        _, targets, _ = task.eval_examples(split)
        assert not train_items & set(targets), split
    model = task.build_model()
    seen: list[torch.Tensor] = []
    orig = model.user_states
    model.user_states = lambda ids: (seen.append(ids.clone()), orig(ids))[1]
    for split, offset in (("valid", 2), ("test", 1)):
        seen.clear()
        m = task.evaluate(model, split)
        assert m["users"] == 39
        rows = torch.cat([torch.nn.functional.pad(x, (40 - x.size(1), 0)) for x in seen])
        _, targets, _ = task.eval_examples(split)
        seen_items = {v for r in rows.tolist() for v in r if v}
        assert not seen_items & set(targets), split  # no target ever reaches the model
        # the histories end right before the target: the item `offset` positions from the end
        ends = {task.vocab.index[s[-offset - 1]] for s in seqs.values()}
        assert {r[-1] for r in rows.tolist()} == ends


def test_leave_one_out_split():
    s = leave_one_out({"u": ["a", "b", "c", "d"]})
    assert s["test"] == [("u", ["a", "b", "c"], "d")] and s["valid"] == [("u", ["a", "b"], "c")]
    assert s["train"] == [("u", ["a"], "b")]


# -- models ----------------------------------------------------------------------------------------
def tiny_cfg(**kw) -> TransformerConfig:
    return TransformerConfig(**{**dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0, max_len=8,
                                       positional="learned", norm_first=True), **kw})


def test_sasrec_is_causal_and_bert4rec_bidirectional():
    torch.manual_seed(0)
    ids = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    changed = ids.clone()
    changed[:, 4:] = torch.tensor([9, 8])
    for cls, causal in ((SASRec, True), (BERT4Rec, False)):
        model = cls(tiny_cfg(), num_items=10).eval()
        h, h2 = model(ids), model(changed)
        assert h.shape == (2, 6, 16)
        real = ids[:, :4].gt(0)  # outputs at padding are ignored (and may see anything)
        same_prefix = torch.allclose(h[:, :4][real], h2[:, :4][real], atol=1e-6)
        assert same_prefix == causal, cls.__name__
        scores = model.score_all(h[:, -1])
        assert scores.shape == (2, 11) and torch.isinf(scores[:, 0]).all()
        assert torch.allclose(scores[:, 1:], model.score_items(h[:, -1], torch.arange(1, 11).expand(2, -1)), atol=1e-5)
    # right-aligned positions: extra left padding does not change the prediction
    model = SASRec(tiny_cfg(), num_items=10).eval()
    short, padded = torch.tensor([[3, 4, 5]]), torch.tensor([[0, 0, 3, 4, 5]])
    assert torch.allclose(model.user_states(short), model.user_states(padded), atol=1e-5)


def test_bert4rec_batches_use_core_masking(tmp_path):
    task = task_for(tmp_path, markov_sequences(60, 30, 12), model="bert4rec", max_len=10, mask_prob=0.3)
    ds = task.train_dataset()
    torch.manual_seed(0)
    batch = task.collate([ds[i] for i in range(32)])
    ids = task._left_pad([ds[i] for i in range(32)])
    sel = batch["labels"].ne(-100)
    assert sel.any(1).all()  # every row predicts something
    assert (batch["labels"][sel] == ids[sel]).all() and (batch["inputs"][~sel] == ids[~sel]).all()
    assert (batch["inputs"][sel] == task.vocab.mask_id).float().mean() > 0.6  # 80 % masked, 10 % random, 10 % kept
    loss, _ = task.loss(task.build_model(), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)


# -- end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from panformer.tasks.cli import main

    out = tmp_path_factory.mktemp("runs") / "rec"
    try:
        from panformer.tasks.recommendation.data import movielens_100k

        movielens_100k()
    except DataError as e:
        pytest.skip(f"built-in data unavailable: {e}")
    assert main(["train", "recommendation", *QUICK, "--max-steps", "120", "--baseline", "--out", str(out)]) == 0
    return out


def test_quick_run_beats_most_popular(quick_run):
    m = json.loads((quick_run / "metrics.json").read_text())
    for proto in ("sampled", "full"):
        for key in ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"):
            assert 0.0 <= m[f"{proto}/{key}"] <= 1.0
    base = m["baseline"]
    assert base["model"] == "most-popular" and m["users"] == base["users"] == 943
    assert m["sampled/hr@10"] > base["sampled/hr@10"] + 0.05, (m, base)
    assert m["sampled/ndcg@10"] > base["sampled/ndcg@10"] + 0.03
    assert m["full/ndcg@10"] > base["full/ndcg@10"]


def test_evaluate_and_predict(quick_run, cli):
    code, out, err = cli("evaluate", "recommendation", "--run", quick_run)
    assert code == 0, err
    trained = json.loads((quick_run / "metrics.json").read_text())
    assert json.loads(out)["sampled/ndcg@10"] == pytest.approx(trained["sampled/ndcg@10"])
    code, out, err = cli("predict", "recommendation", "--run", quick_run, "--history", "50,172,181", "--top-k", "5")
    assert code == 0, err
    pred = json.loads(out)
    items = [r["item"] for r in pred["recommendations"]]
    assert len(items) == 5 and not {50, 172, 181} & set(items)
    scores = [r["score"] for r in pred["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    code, _, err = cli("predict", "recommendation", "--run", quick_run, "--history", "50,999999")
    assert code == 2 and "999999" in err and "catalogue" in err


def test_ensemble_of_runs(quick_run, tmp_path, cli):
    from panformer.tasks.cli import load_runs
    other = tmp_path / "seed1"
    code, _, err = cli("train", "recommendation", *QUICK, "--seed", "1", "--max-steps", "20", "--out", other)
    assert code == 0, err
    task, ens = load_runs([quick_run, other], "cpu")
    ids = task.model_inputs([task.vocab.encode(["50", "172", "181"]), task.vocab.encode(["1", "2"])])
    members = [m.scores(ids).float().log_softmax(-1) for m in ens.members]
    assert torch.allclose(ens.scores(ids), (members[0] + members[1]) / 2)
    # a run with itself ranks exactly as the run alone
    code, out, err = cli("evaluate", "recommendation", "--run", quick_run, "--run", quick_run)
    assert code == 0, err
    trained = json.loads((quick_run / "metrics.json").read_text())
    assert json.loads(out)["sampled/ndcg@10"] == pytest.approx(trained["sampled/ndcg@10"])
    code, out, err = cli("predict", "recommendation", "--run", quick_run, "--run", other, "--history", "50,172,181", "--top-k", "3")
    assert code == 0 and len(json.loads(out)["recommendations"]) == 3, err
    data = tmp_path / "markov.txt"  # another catalogue
    write_txt(data, markov_sequences(50, 30, 8, seed=1))
    code, _, err = cli("train", "recommendation", *QUICK, "--data", data, "--max-steps", "2", "--out", tmp_path / "mk")
    assert code == 0, err
    code, _, err = cli("evaluate", "recommendation", "--run", quick_run, "--run", tmp_path / "mk")
    assert code == 2 and "catalogue" in err and "same data" in err, err


def test_bert4rec_learns_markov_chain(tmp_path, cli):
    data = tmp_path / "markov.txt"
    write_txt(data, markov_sequences(400, 50, 15, seed=1))
    out = tmp_path / "b4r"
    code, _, err = cli("train", "recommendation", *QUICK, "--data", data, "--model", "bert4rec", "--max-len", "12",
                       "--max-steps", "300", "--lr", "5e-3", "--dropout", "0", "--mask-prob", "0.4", "--baseline", "--out", out)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["sampled/hr@10"] > m["baseline"]["sampled/hr@10"] + 0.2, m  # successors are predictable


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,extra,message", [
    ("user,item,timestamp\n1,2,3\n", ["--item-column", "product"], "no column 'product'"),
    ("user,item,timestamp\n" + "".join(f"1,{i},{i}\n" for i in range(30)) + "1,abc,99\n", [], "row 31"),
    ("", [], "empty"),
    ("user,item,timestamp\n1,2,x\n", [], "timestamp"),
])
def test_bad_tables(tmp_path, cli, content, extra, message):
    path = tmp_path / "log.csv"
    path.write_text(content)
    out = tmp_path / "run"
    code, _, err = cli("train", "recommendation", *QUICK, "--data", path, *extra, "--out", out)
    assert code == 2 and err.startswith("panformer: error:") and message in err, err
    assert not out.exists()


def test_bad_sasrec_txt_and_filtering(tmp_path, cli):
    out = tmp_path / "run"
    bad = tmp_path / "bad.txt"
    bad.write_text("1 5\n1 6\n1 x7\n")
    code, _, err = cli("train", "recommendation", *QUICK, "--data", bad, "--out", out)
    assert code == 2 and "line 3" in err and "'x7'" in err and not out.exists()
    ones = tmp_path / "ones.txt"  # every user has a single interaction: all are filtered out
    ones.write_text("".join(f"{u} {u}\n" for u in range(1, 50)))
    code, _, err = cli("train", "recommendation", *QUICK, "--data", ones, "--out", out)
    assert code == 2 and "49 users dropped" in err and not out.exists()
    code, _, err = cli("train", "recommendation", *QUICK, "--data", ones, "--min-user-interactions", "1", "--out", out)
    assert code == 2 and ">= 3" in err
    mixed = {str(u): [str(i) for i in range(1, 6)] for u in range(1, 30)}
    mixed["99"] = ["1"]  # one short user is dropped (documented), the rest train
    task = task_for(tmp_path, mixed)
    assert "99" not in task.sequences and task.filter_stats["users_dropped"] == 1


def test_vocab_round_trip():
    v = ItemVocab.build({"a": ["10", "2", "33"], "b": ["2"]})  # numeric ids sort as numbers
    assert v.items == ["2", "10", "33"] and v.encode(["33", "404"]) == [3] and v.decode(1) == "2"
    assert v.num_items == 3 and v.mask_id == 4
