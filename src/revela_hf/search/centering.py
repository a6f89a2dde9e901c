"""Query-set centering: a calibration of a dense retriever's scores by the mean of the queries it is asked.

A Revela retriever cut from a decoder LM embeds every query of one kind (short descriptions of code, dictionary
definitions) close to a shared direction: on the yardstick suite a query's cosine with its set's mean query is about
0.98. The part of a document's score that comes from that shared direction says how much the document resembles the
*kind* of query, not this query, and it ranks the same documents high for every query. Centering removes it:

    q_i' = (q_i - mean_Q) / |q_i - mean_Q|,    d_j' = (d_j - mean_D) / |d_j - mean_D|,    score_ij = q_i' . d_j'

with mean_D the mean of the (normalised) corpus embeddings and mean_Q that of queries of the kind searched. The
query mean must come from such queries: means of other text (the corpus, training docstrings) do not help.

- `center_query_set`: mean_Q of the queries searched together (an evaluation set, a batch): transductive.
- `center_held_out`: each query centred on the mean of `k` *other* queries (the queries split in two halves at
  random, each half centred on `k` queries drawn from the other), what a search index calibrated once on `k`
  unlabelled example queries (`revela index --calibration-queries`) does for a query it has never seen.
"""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """`x` (..., E) as float32 with every row scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embedding_mean(emb: np.ndarray, name: str = "rows") -> np.ndarray:
    """The mean `(E,)` of the unit rows of `(N, E)` embeddings, N >= 2 (one row minus its own mean is zero)."""
    if emb.ndim != 2:
        raise ValueError(f"query-set centering expects (rows, dim) {name} embeddings, got shape {emb.shape}")
    if len(emb) < 2:
        raise ValueError(f"query-set centering needs at least 2 {name}, got {len(emb)}: one row minus its own mean is zero")
    return unit_rows(emb).mean(axis=0)


def center(emb: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """`(N, E)` embeddings (or one `(E,)`) normalised, minus `mean` `(E,)`, normalised again."""
    if emb.shape[-1] != mean.shape[-1]:
        raise ValueError(f"embeddings of width {emb.shape[-1]} cannot be centred on a mean of width {mean.shape[-1]}")
    return unit_rows(unit_rows(emb) - mean)


def _check_widths(query_emb: np.ndarray, corpus_emb: np.ndarray) -> None:
    if query_emb.shape[-1] != corpus_emb.shape[-1]:
        raise ValueError(f"queries and documents have different widths: {query_emb.shape[-1]} and {corpus_emb.shape[-1]}")


def center_query_set(query_emb: np.ndarray, corpus_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(Q, E)` query and `(N, E)` corpus embeddings -> the same, each set centred on its own mean; inner products
    of the results are the centred cosines. Needs Q >= 2 and N >= 2."""
    query_mean, corpus_mean = embedding_mean(query_emb, "queries"), embedding_mean(corpus_emb, "documents")
    _check_widths(query_emb, corpus_emb)
    return center(query_emb, query_mean), center(corpus_emb, corpus_mean)


def center_held_out(
    query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Like `center_query_set`, but no query's mean holds the query itself: the queries are split in two halves at
    random (`seed`) and each half is centred on the mean of `k` queries drawn from the other. Needs Q >= 2k."""
    if k < 2:
        raise ValueError(f"held-out centering needs k >= 2 calibration queries, got {k}")
    if query_emb.ndim != 2 or len(query_emb) < 2 * k:
        raise ValueError(f"held-out centering on k={k} queries needs (Q, E) query embeddings with Q >= {2 * k}, "
                         f"got shape {query_emb.shape}")
    corpus_mean = embedding_mean(corpus_emb, "documents")
    _check_widths(query_emb, corpus_emb)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(query_emb))
    halves = order[: len(order) // 2], order[len(order) // 2 :]
    centred = np.empty(query_emb.shape, dtype=np.float32)
    for scored, other in (halves, halves[::-1]):
        calibration = query_emb[rng.choice(other, size=k, replace=False)]  # (k, E)
        centred[scored] = center(query_emb[scored], embedding_mean(calibration, "queries"))
    return centred, center(corpus_emb, corpus_mean)


def center_for_search(query_emb: np.ndarray, corpus_emb: np.ndarray, center: bool | int) -> tuple[np.ndarray, np.ndarray]:
    """`center` True: `center_query_set`; an int k >= 2: `center_held_out` on k queries (seed 0)."""
    if center is True:
        return center_query_set(query_emb, corpus_emb)
    if isinstance(center, bool) or not isinstance(center, int):
        raise ValueError(f"center must be True or a number of held-out queries, got {center!r}")
    return center_held_out(query_emb, corpus_emb, center)
