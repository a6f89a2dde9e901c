"""Hybrid retrieval: fusing ranked runs of a lexical and a dense retriever.

- `score_fusion` (the default): a convex combination of each run's scores, min-max normalised per query
  (Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval", TOIS 2023, who find it ahead
  of RRF): score(d) = sum over runs of w_r * (s_r(d) - min_r) / (max_r - min_r), with equal weights; a
  document a run did not return counts 0 there. It keeps how far apart a run's scores are, which ranks drop.
- `reciprocal_rank_fusion` (Cormack, Clarke & Buettcher, SIGIR 2009): ranks only,
  score(d) = sum over runs of 1 / (k + rank of d in that run), ranks from 1, k = 60 as in the paper.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

Run = dict[str, dict[str, float]]  # {query id: {doc id: score}}

DEFAULT_FUSION = "score"
FUSION_LABELS = {"score": "score fusion", "rrf": "RRF"}


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")


def _best(scores: dict[str, float], top_k: int) -> dict[str, float]:
    return dict(sorted(scores.items(), key=lambda item: -item[1])[:top_k])


def _queries(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(q for run in runs for q in run))


def reciprocal_rank_fusion(runs: list[Run], k: int = 60, top_k: int = 100) -> Run:
    """The fused run of `runs` (each {query id: {doc id: score}}), `top_k` docs per query, best first."""
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    _check_top_k(top_k)
    fused: Run = {}
    for qid in _queries(runs):
        scores: dict[str, float] = defaultdict(float)
        for run in runs:
            ranked = sorted(run.get(qid, {}).items(), key=lambda item: -item[1])
            for rank, (doc, _) in enumerate(ranked, start=1):
                scores[doc] += 1.0 / (k + rank)
        fused[qid] = _best(scores, top_k)
    return fused


def score_fusion(runs: list[Run], weights: Sequence[float] | None = None, top_k: int = 100) -> Run:
    """The fused run of `runs`: per query, each run's scores min-max normalised to [0, 1] (all equal: 1), weighted
    by `weights` (default equal, summing to 1) and summed; `top_k` docs per query, best first."""
    _check_top_k(top_k)
    weights = [1.0 / len(runs)] * len(runs) if weights is None else list(weights)
    if len(weights) != len(runs) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"score_fusion needs one non-negative weight per run (not all 0), got {weights} for {len(runs)} runs")
    fused: Run = {}
    for qid in _queries(runs):
        scores: dict[str, float] = defaultdict(float)
        for run, weight in zip(runs, weights):
            docs = run.get(qid, {})
            if not docs:
                continue
            low, high = min(docs.values()), max(docs.values())
            for doc, score in docs.items():
                scores[doc] += weight * ((score - low) / (high - low) if high > low else 1.0)
        fused[qid] = _best(scores, top_k)
    return fused


FUSIONS = {"score": score_fusion, "rrf": reciprocal_rank_fusion}


def fuse(runs: list[Run], fusion: str = DEFAULT_FUSION, top_k: int = 100) -> Run:
    """`runs` fused by `fusion` ("score" or "rrf", with their defaults), `top_k` docs per query."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    return FUSIONS[fusion](runs, top_k=top_k)
