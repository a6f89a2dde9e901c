"""Retrieval evaluation on BEIR folders: dense retrievers and BM25 in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revela_hf.evaluation.beir import BeirDataset, load_beir
from revela_hf.evaluation.bm25 import BM25Retriever
from revela_hf.evaluation.metrics import retrieval_metrics
from revela_hf.io import write_json_atomically
from revela_hf.search.encoders import as_encoder, load_encoder
from revela_hf.search.index import new_faiss_index, search_faiss

HEADLINE_METRICS = ("ndcg@10", "mrr@10", "recall@100")
BM25 = "bm25"


def retrieve(retriever: Any, dataset: BeirDataset, top_k: int = 100, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Run every query of `dataset` against its corpus: {query id: {doc id: score}} for the `top_k` best docs.

    `retriever` is "bm25", a folder or Hub repo id (Revela or sentence-transformers), or a model
    object (RevelaRetriever, SentenceTransformer, anything with encode_queries/encode_corpus).
    Dense scores are inner products, so retrievers are expected to normalise (Revela does).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    doc_ids, doc_texts = dataset.doc_texts()
    query_ids = list(dataset.queries)
    query_texts = [dataset.queries[q] for q in query_ids]
    if isinstance(retriever, str) and retriever.lower() == BM25:
        return dict(zip(query_ids, BM25Retriever(doc_ids, doc_texts).search(query_texts, top_k)))
    encoder = load_encoder(retriever) if isinstance(retriever, (str, Path)) else as_encoder(retriever)
    index = new_faiss_index(encoder.encode_corpus(doc_texts, batch_size=batch_size))
    scores, rows = search_faiss(index, encoder.encode_queries(query_texts, batch_size=batch_size), top_k)
    return {
        qid: {doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows) if r >= 0}
        for qid, q_scores, q_rows in zip(query_ids, scores, rows)
    }


def evaluate_retrieval(
    retriever: Any,
    data_dir: str | Path,
    k_values: tuple[int, ...] = (10, 100),
    batch_size: int = 32,
    split: str = "test",
) -> dict[str, float]:
    """nDCG@k, MRR@k and Recall@k (every k of `k_values`) of `retriever` on a BEIR folder."""
    dataset = load_beir(data_dir, split=split)
    results = retrieve(retriever, dataset, top_k=max(k_values), batch_size=batch_size)
    return retrieval_metrics(dataset.qrels, results, k_values)


def evaluate_table(
    retrievers: list[str],
    data_dir: str | Path,
    k_values: tuple[int, ...] = (10, 100),
    batch_size: int = 32,
    split: str = "test",
) -> dict[str, dict[str, float]]:
    """{retriever name: metrics} for several retrievers on the same BEIR folder."""
    return {name: evaluate_retrieval(name, data_dir, k_values, batch_size, split) for name in retrievers}


def format_table(table: dict[str, dict[str, float]], metrics: tuple[str, ...] = HEADLINE_METRICS) -> str:
    """A Markdown table of `table` with scores in percent."""
    header = "| retriever | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---:|" * len(metrics)
    rows = [f"| {name} | " + " | ".join(f"{100 * scores[m]:.2f}" for m in metrics) + " |" for name, scores in table.items()]
    return "\n".join([header, rule, *rows])


def save_table(table: dict[str, dict[str, float]], path: str | Path, data_dir: str | Path) -> Path:
    """Write the results table as JSON, with the data folder it was measured on."""
    write_json_atomically(path, {"data": str(data_dir), "results": table})
    return Path(path)
