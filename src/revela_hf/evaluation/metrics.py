"""Ranking metrics over BEIR-style qrels and run results.

`qrels` maps query id -> {doc id: graded relevance}; `results` maps query id -> {doc id: score}.
Every metric is averaged over the queries of `qrels` (a query with no results scores 0), and uses
linear gains for nDCG, as trec_eval and BEIR do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

Qrels = Mapping[str, Mapping[str, int]]
Results = Mapping[str, Mapping[str, float]]


def _ranked(scores: Mapping[str, float], k: int) -> list[str]:
    """The `k` best doc ids, by descending score (ties broken by doc id for determinism)."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]]


def _mean_over_queries(qrels: Qrels, results: Results, k: int, per_query: Callable[[Mapping[str, int], list[str]], float]) -> float:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    judged = {qid: rels for qid, rels in qrels.items() if any(r > 0 for r in rels.values())}
    if not judged:
        raise ValueError("qrels hold no query with a relevant document")
    total = sum(per_query(rels, _ranked(results.get(qid, {}), k)) for qid, rels in judged.items())
    return total / len(judged)


def _dcg(gains: list[float]) -> float:
    return sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))


def ndcg_at_k(qrels: Qrels, results: Results, k: int) -> float:
    """Normalised discounted cumulative gain of the top `k` results."""

    def one(rels: Mapping[str, int], ranking: list[str]) -> float:
        ideal = _dcg(sorted((float(r) for r in rels.values() if r > 0), reverse=True)[:k])
        return _dcg([float(max(rels.get(doc, 0), 0)) for doc in ranking]) / ideal

    return _mean_over_queries(qrels, results, k, one)


def mrr_at_k(qrels: Qrels, results: Results, k: int) -> float:
    """Mean reciprocal rank of the first relevant document in the top `k`."""

    def one(rels: Mapping[str, int], ranking: list[str]) -> float:
        return next((1.0 / (rank + 1) for rank, doc in enumerate(ranking) if rels.get(doc, 0) > 0), 0.0)

    return _mean_over_queries(qrels, results, k, one)


def recall_at_k(qrels: Qrels, results: Results, k: int) -> float:
    """Share of the relevant documents found in the top `k`."""

    def one(rels: Mapping[str, int], ranking: list[str]) -> float:
        relevant = {doc for doc, r in rels.items() if r > 0}
        return len(relevant.intersection(ranking)) / len(relevant)

    return _mean_over_queries(qrels, results, k, one)


def retrieval_metrics(qrels: Qrels, results: Results, k_values: tuple[int, ...] = (10, 100)) -> dict[str, float]:
    """nDCG, MRR and recall at every cut-off of `k_values`, keyed like ``"ndcg@10"``."""
    metrics: dict[str, float] = {}
    for name, fn in (("ndcg", ndcg_at_k), ("mrr", mrr_at_k), ("recall", recall_at_k)):
        for k in k_values:
            metrics[f"{name}@{k}"] = fn(qrels, results, k)
    return metrics
