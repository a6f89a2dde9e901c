"""Hybrid retrieval: reciprocal-rank fusion of ranked runs (Cormack, Clarke & Buettcher, SIGIR 2009).

RRF needs no score calibration between a lexical and a dense retriever, only ranks:
score(d) = sum over runs of 1 / (k + rank of d in that run), ranks from 1, k = 60 as in the paper.
"""

from __future__ import annotations

from collections import defaultdict

Run = dict[str, dict[str, float]]  # {query id: {doc id: score}}


def reciprocal_rank_fusion(runs: list[Run], k: int = 60, top_k: int = 100) -> Run:
    """The fused run of `runs` (each {query id: {doc id: score}}), `top_k` docs per query, best first."""
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    fused: Run = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        scores: dict[str, float] = defaultdict(float)
        for run in runs:
            ranked = sorted(run.get(qid, {}).items(), key=lambda item: -item[1])
            for rank, (doc, _) in enumerate(ranked, start=1):
                scores[doc] += 1.0 / (k + rank)
        best = sorted(scores.items(), key=lambda item: -item[1])[:top_k]
        fused[qid] = dict(best)
    return fused
