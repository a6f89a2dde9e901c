"""DREAM training rows: `{"query": str, "target": str, "candidates": [str, ...], "positives"?: [bool, ...]}`.

A "group row" holds lists instead (`query: [N]`, `target: [N]`, `candidates: [N][K]`, ...): N
queries that `DreamDataCollator` turns into one batch, so `RevelaTrainer` (one dataset row per
device step) still trains on N queries a step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from revela_hf.collator import leading_words


def _group(rows: list[dict[str, Any]]) -> dict[str, list]:
    keys = rows[0].keys()
    return {key: [row[key] for row in rows] for key in keys}


def dream_rows_from_groups(
    groups: Iterable[dict[str, Any]], query_ratio: float = 0.5, per_group: bool = True
) -> list[dict[str, Any]]:
    """Label-free DREAM rows from groups of raw-text chunks (`revela prepare` rows `{"chunks", "doc_ids"?}`).

    For chunk i of a group: query = its first `query_ratio` of words, target = the rest (leading
    whitespace kept, so query + target is the chunk), candidates = the group's OTHER chunks (chunk i
    itself would hold the target), `positives` = candidates from the same document when the group
    has `doc_ids`. Chunks of a single word have no target and are skipped. `per_group`: one group row
    per group (else one row per query).
    """
    if not 0 < query_ratio < 1:
        raise ValueError(f"query_ratio must be in (0, 1) so that a target remains, got {query_ratio}")
    out: list[dict[str, Any]] = []
    for g, group in enumerate(groups):
        chunks = list(group["chunks"])
        if len(chunks) < 2:
            raise ValueError(f"group {g} needs at least 2 chunks to give each query a candidate, got {len(chunks)}")
        doc_ids = group.get("doc_ids")
        rows = []
        for i, chunk in enumerate(chunks):
            query = leading_words(chunk, query_ratio)
            target = chunk[len(query) :]
            if not target.strip():
                continue
            row = {"query": query, "target": target, "candidates": chunks[:i] + chunks[i + 1 :]}
            if doc_ids:
                row["positives"] = [doc_ids[j] == doc_ids[i] for j in range(len(chunks)) if j != i]
            rows.append(row)
        if rows:
            out.extend([_group(rows)] if per_group else rows)
    return out


def dream_rows_from_pairs(
    pairs: Iterable[dict[str, Any]],
    negatives: Sequence[str] | Callable[[str], list[str]],
    num_candidates: int = 8,
    group_size: int | None = None,
    target_template: str = " {answer}",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """DREAM rows from real (query, answer) pairs with their supporting passages.

    pairs: `{"query": str, "answer": str, "positives": [passage, ...]}` (at least one positive).
    negatives: a pool of passages to sample from, or a function `query -> ranked passages` (e.g.
    BM25 hard negatives; passages equal to a positive are dropped).
    Each row's candidates are its positives (at most `num_candidates - 1`) plus negatives up to
    `num_candidates`, shuffled; `positives` flags them. The target
    is `target_template` filled with the answer (the query is used as is, for both the LLM and
    the retriever). `group_size`: pack that many rows into one group row.
    """
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be at least 2 (a positive and a negative), got {num_candidates}")
    rng = random.Random(seed)
    rows = []
    for p, pair in enumerate(pairs):
        positives = list(pair.get("positives") or [])
        if not positives:
            raise ValueError(f"pair {p} has no positive passage")
        positives = positives[: num_candidates - 1]
        if callable(negatives):
            pool = [text for text in negatives(pair["query"]) if text not in positives]
            chosen = pool[: num_candidates - len(positives)]
        else:
            pool = [text for text in negatives if text not in positives]
            chosen = rng.sample(pool, min(len(pool), num_candidates - len(positives)))
        candidates = [(text, True) for text in positives] + [(text, False) for text in chosen]
        rng.shuffle(candidates)
        rows.append(
            {
                "query": pair["query"],
                "target": target_template.format(answer=pair["answer"]),
                "candidates": [text for text, _ in candidates],
                "positives": [flag for _, flag in candidates],
            }
        )
    if group_size is None:
        return rows
    if group_size < 1:
        raise ValueError(f"group_size must be positive, got {group_size}")
    return [_group(rows[start : start + group_size]) for start in range(0, len(rows), group_size)]
