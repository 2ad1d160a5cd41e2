"""Ranking metrics for next-item prediction: HR@k, NDCG@k and MRR with one relevant item per user.

A user's target is ranked among candidates (100 sampled negatives, or the whole catalogue). With
``g`` candidates scoring strictly higher and ``t`` tied with the target, the target's 0-based rank is
uniform over ``g..g+t`` (random tie-breaking), and every metric is its exact expectation:

    HR@k   = clip(k - g, 0, t + 1) / (t + 1)
    NDCG@k = sum_{r=g}^{min(g+t, k-1)} 1 / log2(r + 2) / (t + 1)      (ideal DCG is 1)
    MRR    = sum_{r=g}^{g+t} 1 / (r + 1) / (t + 1)

So rank 0 gives HR = NDCG = MRR = 1, a constant scorer gets chance level rather than a lucky or
unlucky tie order, and NDCG equals ``sklearn.metrics.ndcg_score`` (which averages over ties);
the tests check all three against scikit-learn.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["KS", "rank_counts", "rank_counts_sampled", "ranking_metrics", "RankingAccumulator"]

KS: tuple[int, ...] = (5, 10, 20)


def rank_counts(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """scores float (B, C), target long (B,) column of the relevant candidate.

    Returns ``(greater, ties)``, long (B,): candidates scoring above the target, and other candidates
    scoring equal to it. NaN scores count as -inf.
    """
    s = torch.nan_to_num(scores.float(), nan=float("-inf"))
    t = s.gather(1, target[:, None])  # (B, 1)
    greater = (s > t).sum(1)
    ties = (s == t).sum(1) - 1
    return greater, ties


def rank_counts_sampled(scores: Tensor) -> tuple[Tensor, Tensor]:
    """scores (B, 1 + K) with the target in column 0 and K negatives after it."""
    return rank_counts(scores, torch.zeros(scores.size(0), dtype=torch.long, device=scores.device))


def _expected(greater: Tensor, ties: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    g = greater.double()
    n = ties.double() + 1.0  # size of the tied group, target included
    out: dict[str, Tensor] = {}
    for k in ks:
        out[f"hr@{k}"] = (k - g).clamp(min=0.0).minimum(n) / n
        disc = torch.tensor([0.0] + [1.0 / math.log2(r + 2) for r in range(k)], dtype=torch.float64,
                            device=g.device).cumsum(0)  # disc[m] = sum_{r<m} 1/log2(r+2)
        hi = (g + n).clamp(max=k).long()
        lo = g.clamp(max=k).long()
        out[f"ndcg@{k}"] = (disc[hi] - disc[lo]) / n
    # sum_{r=g}^{g+t} 1/(r+1) = H(g+t+1) - H(g), H(m) = digamma(m+1) + gamma
    tied = (torch.digamma(g + n + 1.0) - torch.digamma(g + 1.0)) / n
    out["mrr"] = torch.where(n == 1.0, 1.0 / (g + 1.0), tied)
    return out


def ranking_metrics(greater: Tensor, ties: Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean ``hr@k``, ``ndcg@k`` (for each k) and ``mrr`` over users, from :func:`rank_counts`."""
    if greater.numel() == 0:
        raise ValueError("no users to score")
    return {k: float(v.mean()) for k, v in _expected(greater, ties, ks).items()}


class RankingAccumulator:
    """Sums per-user metrics over batches; ``result(prefix)`` gives ``{prefix + name: mean}``."""

    def __init__(self, ks: Sequence[int] = KS) -> None:
        self.ks = tuple(ks)
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, greater: Tensor, ties: Tensor) -> None:
        for k, v in _expected(greater, ties, self.ks).items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.sum())
        self.count += int(greater.numel())

    def result(self, prefix: str = "") -> dict[str, float]:
        if not self.count:
            raise ValueError("no users to score")
        return {prefix + k: v / self.count for k, v in self.sums.items()}
