"""`RetrievalEvaluator`: a retriever's scores on one fixed test set, named for training logs."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from revela_hf.evaluation.beir import BeirDataset, load_beir
from revela_hf.evaluation.evaluate import HEADLINE_METRICS, retrieve
from revela_hf.evaluation.metrics import retrieval_metrics

METRIC_PATTERN = re.compile(r"(ndcg|mrr|recall)@([1-9]\d*)")


class RetrievalEvaluator:
    """Scores a retriever on a retrieval test set, in the spirit of sentence-transformers'
    `InformationRetrievalEvaluator`: `evaluator(retriever)` returns `{f"{name}_ndcg@10": ..., ...}`, the
    same numbers as `evaluate_retrieval` (the same search and metrics). `RevelaTrainer(evaluator=...)` logs
    them during training as `eval_<name>_ndcg@10`, ...

    Args:
        queries (`Mapping[str, str]`):
            Query id -> query text. Queries without a relevant document are not searched.
        corpus (`Mapping[str, str | Mapping[str, str]]`):
            Doc id -> text, or a BEIR document `{"title": ..., "text": ...}`.
        relevant_docs (`Mapping[str, Collection[str] | Mapping[str, int]]`):
            Query id -> its relevant doc ids (a set, as sentence-transformers takes them) or graded qrels
            (doc id -> relevance, as BEIR stores them).
        name (`str`, *optional*, defaults to `""`):
            Prefixes every metric: `f"{name}_ndcg@10"`; no prefix when empty.
        metrics (`tuple[str, ...]`, *optional*, defaults to `("ndcg@10", "mrr@10", "recall@100")`):
            What to report, each `ndcg@k`, `mrr@k` or `recall@k`; the search returns the largest k documents.
        batch_size (`int`, *optional*, defaults to 32):
            Texts per encoding batch.
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str | Mapping[str, str]],
        relevant_docs: Mapping[str, Collection[str] | Mapping[str, int]],
        name: str = "",
        metrics: tuple[str, ...] = HEADLINE_METRICS,
        batch_size: int = 32,
    ) -> None:
        unknown = [m for m in metrics if not METRIC_PATTERN.fullmatch(m)]
        if not metrics or unknown:
            raise ValueError(f"metrics must be ndcg@k, mrr@k or recall@k (k >= 1), got {list(metrics)}")
        qrels = {qid: dict(rels) if isinstance(rels, Mapping) else dict.fromkeys(rels, 1) for qid, rels in relevant_docs.items()}
        missing = sorted(set(qrels) - set(queries))
        if missing:
            raise ValueError(f"{len(missing)} queries with relevant documents have no text, e.g. {missing[:3]}")
        self.dataset = BeirDataset(
            corpus={did: dict(doc) if isinstance(doc, Mapping) else {"title": "", "text": doc} for did, doc in corpus.items()},
            queries={qid: queries[qid] for qid in qrels},
            qrels=qrels,
        )
        self.name, self.metrics, self.batch_size = name, tuple(metrics), batch_size
        self.k_values = tuple(sorted({int(METRIC_PATTERN.fullmatch(m)[2]) for m in self.metrics}))

    @classmethod
    def from_beir(cls, data_dir: str | Path, split: str = "test", name: str | None = None, **kwargs: Any) -> RetrievalEvaluator:
        """An evaluator over a BEIR folder's `split`, named after the folder unless `name` is given."""
        dataset = load_beir(data_dir, split=split)
        return cls(dataset.queries, dataset.corpus, dataset.qrels, name=Path(data_dir).name if name is None else name, **kwargs)

    def metric_key(self, metric: str) -> str:
        """The key `metric` (e.g. "ndcg@10") is reported under."""
        return f"{self.name}_{metric}" if self.name else metric

    @property
    def primary_metric(self) -> str:
        """The key of the first metric (nDCG@10 by default), e.g. for `metric_for_best_model=f"eval_{...}"`."""
        return self.metric_key(self.metrics[0])

    def __call__(self, retriever: Any) -> dict[str, float]:
        """The metrics of `retriever` (anything `revela_hf.evaluation.retrieve` takes), keyed by `metric_key`."""
        run = retrieve(retriever, self.dataset, top_k=max(self.k_values), batch_size=self.batch_size)
        scores = retrieval_metrics(self.dataset.qrels, run, self.k_values)
        return {self.metric_key(metric): scores[metric] for metric in self.metrics}
