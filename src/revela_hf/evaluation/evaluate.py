"""Retrieval evaluation on BEIR folders: dense retrievers and BM25 in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revela_hf.environment import environment
from revela_hf.evaluation.beir import BeirDataset, load_beir
from revela_hf.search.bm25 import BM25Retriever
from revela_hf.search.fusion import DEFAULT_FUSION, FUSION_LABELS, Run, fuse
from revela_hf.evaluation.metrics import retrieval_metrics
from revela_hf.io import write_json_atomically
from revela_hf.search.centering import center_for_search
from revela_hf.search.encoders import as_encoder, load_encoder
from revela_hf.search.index import new_faiss_index, search_faiss

HEADLINE_METRICS = ("ndcg@10", "mrr@10", "recall@100")
BM25 = "bm25"


def is_bm25(retriever: Any) -> bool:
    """Whether `retriever` names the BM25 baseline."""
    return isinstance(retriever, str) and retriever.lower() == BM25


def retrieve(retriever: Any, dataset: BeirDataset, top_k: int = 100, batch_size: int = 32, center: bool | int = False) -> Run:
    """Run every query of `dataset` against its corpus: {query id: {doc id: score}} for the `top_k` best docs.

    `retriever` is "bm25", a folder or Hub repo id (Revela or sentence-transformers), or a model
    object (RevelaRetriever, SentenceTransformer, anything with encode_queries/encode_corpus).
    Dense scores are inner products, so retrievers are expected to normalise (Revela does); with `center`,
    of query-set centred embeddings (`revela_hf.search.centering`; dense retrievers only): True centres the queries
    on their own mean, an int k each query on the mean of k held-out queries (`center_held_out`).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if is_bm25(retriever):
        if center:
            raise ValueError("query-set centering applies to dense retrievers, not BM25")
        doc_ids, doc_texts = dataset.doc_texts()
        query_ids = list(dataset.queries)
        return dict(zip(query_ids, BM25Retriever(doc_ids, doc_texts).search([dataset.queries[q] for q in query_ids], top_k)))
    return dense_runs(retriever, dataset, top_k, batch_size, centrings=(center,))[center]


def dense_runs(
    retriever: Any, dataset: BeirDataset, top_k: int = 100, batch_size: int = 32, centrings: tuple[bool | int, ...] = (False,)
) -> dict[bool | int, Run]:
    """{centring: run} of a dense retriever for each of `centrings` (False: plain cosine; True or a number of
    held-out queries: query-set centred, as `retrieve`'s `center`), from one encoding of the set."""
    doc_ids, doc_texts = dataset.doc_texts()
    query_ids = list(dataset.queries)
    encoder = load_encoder(retriever) if isinstance(retriever, (str, Path)) else as_encoder(retriever)
    corpus_emb = encoder.encode_corpus(doc_texts, batch_size=batch_size)  # (N, E)
    query_emb = encoder.encode_queries([dataset.queries[q] for q in query_ids], batch_size=batch_size)  # (Q, E)
    runs = {}
    for centred in centrings:
        queries, corpus = center_for_search(query_emb, corpus_emb, centred) if centred else (query_emb, corpus_emb)
        scores, rows = search_faiss(new_faiss_index(corpus), queries, top_k)
        runs[centred] = {
            qid: {doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows) if r >= 0}
            for qid, q_scores, q_rows in zip(query_ids, scores, rows)
        }
    return runs


def evaluate_retrieval(
    retriever: Any,
    data_dir: str | Path,
    k_values: tuple[int, ...] = (10, 100),
    batch_size: int = 32,
    split: str = "test",
    hybrid: bool = False,
    fusion: str = DEFAULT_FUSION,
    center: bool | int = False,
) -> dict[str, float]:
    """nDCG@k, MRR@k and Recall@k (every k of `k_values`) of `retriever` on a BEIR folder; with
    `hybrid`, of the retriever's run fused with BM25's by `fusion` (`revela_hf.search.fusion`); with `center`, of
    query-set centred embeddings (as `retrieve`'s `center`)."""
    dataset = load_beir(data_dir, split=split)
    top_k = max(k_values)
    run = retrieve(retriever, dataset, top_k=top_k, batch_size=batch_size, center=center)
    if hybrid:
        run = hybrid_runs({"dense": run}, dataset, top_k, fusion)[hybrid_name("dense", fusion)]
    return retrieval_metrics(dataset.qrels, run, k_values)


def centred_name(retriever: str, center: bool | int = True) -> str:
    """The results-table row of `retriever`'s query-set centred run (`center` as `retrieve`'s)."""
    return f"{retriever} (query-set centred)" if center is True else f"{retriever} (centred on {center} held-out queries)"


def named_runs(
    name: str, retriever: Any, dataset: BeirDataset, top_k: int = 100, batch_size: int = 32, center: bool | int = False
) -> dict[str, Run]:
    """{name: the run of `retriever`}, and with `center` (a dense retriever) {centred_name(name, center): its run of
    query-set centred embeddings}, from one encoding."""
    if is_bm25(retriever):
        return {name: retrieve(BM25, dataset, top_k=top_k)}
    runs = dense_runs(retriever, dataset, top_k, batch_size, centrings=(False, center) if center else (False,))
    return {centred_name(name, centred) if centred else name: run for centred, run in runs.items()}


def hybrid_name(retriever: str, fusion: str = DEFAULT_FUSION) -> str:
    """The results-table row of `retriever` fused with BM25 by `fusion`."""
    return f"{retriever} + BM25 ({FUSION_LABELS[fusion]})"


def hybrid_runs(runs: dict[str, Run], dataset: BeirDataset, top_k: int = 100, fusion: str = DEFAULT_FUSION) -> dict[str, Run]:
    """Every dense run of `runs` ({name: run}) fused with BM25's by `fusion`, keyed by `hybrid_name`; BM25's run
    is computed once, or taken from `runs` when it is there."""
    lexical = next((run for name, run in runs.items() if is_bm25(name)), None)
    if lexical is None:
        lexical = retrieve(BM25, dataset, top_k=top_k)
    return {
        hybrid_name(name, fusion): fuse([run, lexical], fusion, top_k) for name, run in runs.items() if not is_bm25(name)
    }


def evaluate_table(
    retrievers: list[str],
    data_dir: str | Path,
    k_values: tuple[int, ...] = (10, 100),
    batch_size: int = 32,
    split: str = "test",
    hybrid: bool = False,
    fusion: str = DEFAULT_FUSION,
    center: bool | int = False,
) -> dict[str, dict[str, float]]:
    """{retriever name: metrics} for several retrievers on the same BEIR folder; with `center`, a row more per
    dense retriever: its query-set centred run (`centred_name`); with `hybrid`, a row more per dense run: fused
    with BM25's by `fusion` (each retriever encodes the set once)."""
    dataset = load_beir(data_dir, split=split)
    top_k = max(k_values)
    runs = {}
    for name in retrievers:
        runs.update(named_runs(name, name, dataset, top_k, batch_size, center))
    if hybrid:
        runs.update(hybrid_runs(runs, dataset, top_k, fusion))
    return {name: retrieval_metrics(dataset.qrels, run, k_values) for name, run in runs.items()}


def format_table(table: dict[str, dict[str, float]], metrics: tuple[str, ...] = HEADLINE_METRICS) -> str:
    """A Markdown table of `table` with scores in percent."""
    header = "| retriever | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---:|" * len(metrics)
    rows = [f"| {name} | " + " | ".join(f"{100 * scores[m]:.2f}" for m in metrics) + " |" for name, scores in table.items()]
    return "\n".join([header, rule, *rows])


def save_table(table: dict[str, dict[str, float]], path: str | Path, data_dir: str | Path) -> Path:
    """Write the results table as JSON, with the data folder it was measured on and the environment it was measured
    in (`revela_hf.environment`: versions, CPU and accelerator, date), so that a figure can be reproduced."""
    write_json_atomically(path, {"data": str(data_dir), "results": table, "environment": environment()})
    return Path(path)
