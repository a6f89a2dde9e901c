"""Reading and writing BEIR folders: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from revela_hf.io import build_atomically


@dataclass
class BeirDataset:
    """A retrieval test set. `corpus` maps doc id -> {"title", "text"}; `queries` holds only judged queries."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def doc_texts(self) -> tuple[list[str], list[str]]:
        """Doc ids and their texts (title and body joined), in corpus order."""
        ids = list(self.corpus)
        return ids, [doc_text(self.corpus[i]) for i in ids]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str, str]]) -> BeirDataset:
        """One relevant document per query, from (key, query, document): ids `q<key>` and `d<key>`, untitled documents."""
        data = cls(corpus={}, queries={}, qrels={})
        for key, query, document in pairs:
            qid, did = f"q{key}", f"d{key}"
            if qid in data.queries:
                raise ValueError(f"duplicate pair key {key!r}")
            data.corpus[did] = {"title": "", "text": document}
            data.queries[qid] = query
            data.qrels[qid] = {did: 1}
        return data


def doc_text(doc: Mapping[str, str]) -> str:
    """The text a retriever sees for a BEIR document: title, a space, then body."""
    title, text = doc.get("title") or "", doc.get("text") or ""
    return f"{title} {text}".strip()


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"BEIR folder is missing {path.name}: {path}")
    return path


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Rows of a JSON-lines file, skipping blank lines."""
    with open(_require(Path(path)), encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from err


def row_field(row: dict, key: str, path: Path) -> str:
    """`row[key]` as a string; ValueError naming the file and the row when it is missing."""
    if not isinstance(row, dict) or row.get(key) is None:
        raise ValueError(f"{path}: a row has no {key!r} field: {json.dumps(row)[:120]}")
    return str(row[key])


def iter_corpus(data_dir: str | Path) -> Iterator[tuple[str, str]]:
    """Stream (doc id, text) from `corpus.jsonl` without holding the corpus in memory."""
    path = Path(data_dir) / "corpus.jsonl"
    for row in iter_jsonl(path):
        yield row_field(row, "_id", path), doc_text(row)


def read_query_texts(path: str | Path) -> list[str]:
    """Query texts from a BEIR `queries.jsonl` (each row's `text`) or a text file (one query per non-blank line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [row_field(row, "text", path) for row in iter_jsonl(path)]
    return [line.strip() for line in _require(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """A qrels TSV (header row, then query-id, corpus-id, score)."""
    qrels: dict[str, dict[str, int]] = {}
    with open(_require(Path(path)), encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        next(rows, None)
        for row in rows:
            if len(row) < 3:
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def load_beir(data_dir: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder; queries without judgments in `qrels/<split>.tsv` are dropped."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no BEIR folder at {root}")
    corpus_path, queries_path, qrels_path = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"
    corpus = {row_field(row, "_id", corpus_path): {"title": row.get("title") or "", "text": row.get("text") or ""}
              for row in iter_jsonl(corpus_path)}
    qrels = load_qrels(qrels_path)
    queries = {}
    for row in iter_jsonl(queries_path):
        query_id = row_field(row, "_id", queries_path)
        if query_id in qrels:
            queries[query_id] = row_field(row, "text", queries_path)
    missing = set(qrels) - set(queries)
    if missing:
        raise ValueError(f"{len(missing)} judged queries are missing from queries.jsonl, e.g. {sorted(missing)[:3]}")
    unknown = {doc_id for rels in qrels.values() for doc_id in rels} - set(corpus)
    if unknown:
        raise ValueError(f"{qrels_path} judges {len(unknown)} documents that are not in corpus.jsonl, e.g. {sorted(unknown)[:3]}")
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def write_beir(data_dir: str | Path, dataset: BeirDataset, split: str = "test") -> Path:
    """Write `dataset` as a BEIR folder and return its path."""
    root = Path(data_dir)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc_id, doc in dataset.corpus.items():
            handle.write(json.dumps({"_id": doc_id, "title": doc.get("title", ""), "text": doc.get("text", "")}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as handle:
        for query_id, text in dataset.queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        for query_id, rels in dataset.qrels.items():
            for doc_id, score in rels.items():
                writer.writerow([query_id, doc_id, score])
    return root


def build_beir_folder(output_dir: str | Path, make: Callable[[], BeirDataset], split: str = "test") -> Path:
    """Write `make()` as a BEIR folder at `output_dir` atomically; a finished folder is reused as is.

    A folder counts as finished once it holds `qrels/<split>.tsv`; a non-empty unfinished one is
    refused rather than overwritten (delete it to rebuild).
    """
    target = Path(output_dir)
    if (target / "qrels" / f"{split}.tsv").is_file():
        return target
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists, is not empty and is not a finished BEIR folder")
    if target.exists():
        target.rmdir()
    dataset = make()
    if not dataset.queries:
        raise ValueError(f"no query-document pairs to write to {target}")
    return build_atomically(target, lambda out: write_beir(out, dataset, split))
