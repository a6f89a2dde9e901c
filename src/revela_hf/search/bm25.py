"""BM25 (bm25s, Anserini's BEIR settings k1 = 0.9, b = 0.4, English stop words): the lexical side of evaluation and hybrid search."""

from __future__ import annotations

import json
from pathlib import Path

import bm25s

DOC_IDS_FILE = "doc_ids.json"


class BM25Retriever:
    """Lexical retriever over an in-memory corpus."""

    def __init__(self, doc_ids: list[str], texts: list[str], k1: float = 0.9, b: float = 0.4) -> None:
        if not doc_ids:
            raise ValueError("BM25 needs a non-empty corpus")
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} doc ids for {len(texts)} texts")
        self.doc_ids = list(doc_ids)
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def save(self, folder: str | Path) -> None:
        """Write the index (bm25s' files) and the doc ids into `folder`."""
        self.model.save(str(folder), show_progress=False)
        (Path(folder) / DOC_IDS_FILE).write_text(json.dumps(self.doc_ids), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "BM25Retriever":
        """A retriever saved by `save`."""
        path = Path(folder) / DOC_IDS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no BM25 index at {folder} (missing {DOC_IDS_FILE})")
        retriever = cls.__new__(cls)
        retriever.doc_ids = json.loads(path.read_text(encoding="utf-8"))
        retriever.model = bm25s.BM25.load(str(folder), show_progress=False)
        return retriever

    def search(self, queries: list[str], top_k: int = 100) -> list[dict[str, float]]:
        """For every query, the `top_k` best docs with a positive score as {doc id: score}."""
        tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
        docs, scores = self.model.retrieve(tokens, k=min(top_k, len(self.doc_ids)), show_progress=False)
        return [
            {self.doc_ids[int(d)]: float(s) for d, s in zip(row_docs, row_scores) if s > 0}
            for row_docs, row_scores in zip(docs, scores)
        ]
