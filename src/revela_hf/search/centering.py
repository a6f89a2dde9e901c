"""Query-set centering: a calibration of a dense retriever's scores that needs a batch of queries.

A Revela retriever cut from a decoder LM embeds every query of one kind (short descriptions of code, dictionary
definitions) close to a shared direction: on the yardstick suite a query's cosine with its set's mean query is about
0.98. The part of a document's score that comes from that shared direction says how much the document resembles the
*kind* of query, not this query, and it ranks the same documents high for every query. Centering removes it:

    q_i' = (q_i - mean_Q) / |q_i - mean_Q|,    d_j' = (d_j - mean_D) / |d_j - mean_D|,    score_ij = q_i' . d_j'

with mean_Q the mean of the (normalised) query embeddings searched together and mean_D that of the corpus. It is
transductive: the queries' mean comes from the queries themselves (an evaluation set, a batch, a log of real
queries), so it serves evaluation and batch search, not a single query alone.
"""

from __future__ import annotations

import numpy as np


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def center_query_set(query_emb: np.ndarray, corpus_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(Q, E)` query and `(N, E)` corpus embeddings -> the same, each set centred on its own mean (of the unit
    rows) and normalised again; inner products of the results are the centred cosines. Needs Q >= 2 and N >= 2:
    one row minus its own mean is zero."""
    for name, emb in (("queries", query_emb), ("documents", corpus_emb)):
        if emb.ndim != 2:
            raise ValueError(f"query-set centering expects (rows, dim) {name} embeddings, got shape {emb.shape}")
        if len(emb) < 2:
            raise ValueError(f"query-set centering needs at least 2 {name}, got {len(emb)}: one row minus its own mean is zero")
    if query_emb.shape[1] != corpus_emb.shape[1]:
        raise ValueError(f"queries and documents have different widths: {query_emb.shape[1]} and {corpus_emb.shape[1]}")
    centred = []
    for emb in (query_emb, corpus_emb):
        unit = _unit_rows(np.asarray(emb, dtype=np.float32))
        centred.append(_unit_rows(unit - unit.mean(axis=0, keepdims=True)))
    return centred[0], centred[1]
