"""Retrieval evaluation: metrics, BEIR folders, the BM25 baseline, result tables and plots."""

from revela_hf.evaluation.beir import BeirDataset, build_beir_folder, iter_corpus, load_beir, write_beir
from revela_hf.search.bm25 import BM25Retriever
from revela_hf.evaluation.evaluate import (
    centred_name, evaluate_retrieval, evaluate_table, format_table, hybrid_name, hybrid_runs, named_runs, retrieve, save_table,
)
from revela_hf.evaluation.evaluator import RetrievalEvaluator
from revela_hf.search.fusion import reciprocal_rank_fusion
from revela_hf.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k, retrieval_metrics
from revela_hf.evaluation.plots import plot_results

__all__ = [
    "BM25Retriever",
    "BeirDataset",
    "RetrievalEvaluator",
    "build_beir_folder",
    "centred_name",
    "evaluate_retrieval",
    "evaluate_table",
    "format_table",
    "hybrid_name",
    "hybrid_runs",
    "iter_corpus",
    "load_beir",
    "mrr_at_k",
    "named_runs",
    "ndcg_at_k",
    "plot_results",
    "reciprocal_rank_fusion",
    "recall_at_k",
    "retrieval_metrics",
    "retrieve",
    "save_table",
    "write_beir",
]
