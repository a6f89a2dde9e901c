"""An on-disk, memory-mapped store of chunks, written as they stream in (memory stays bounded)."""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa

from revela_hf.data.chunking import Chunker
from revela_hf.data.readers import Document

CHUNK_SCHEMA = pa.schema([("text", pa.large_string()), ("source", pa.string()), ("doc_id", pa.string()), ("full_chunk", pa.bool_())])
_BATCH = 8192


def _fingerprint(text: str) -> int:
    """A 64-bit hash of the text with whitespace and case normalised (for duplicate detection)."""
    digest = hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class ChunkStore:
    """Chunks in corpus order, deduplicated; `doc_index[i]` is the ordinal of chunk i's document."""

    def __init__(self, path: Path, keep: np.ndarray, doc_index: np.ndarray, documents: int):
        self.path = path
        self._table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        self.keep = keep
        self.doc_index = doc_index
        self.documents = documents

    def __len__(self) -> int:
        return len(self.keep)

    def column(self, name: str, positions: np.ndarray) -> list:
        """Values of a column (text, source, doc_id, full_chunk) for kept-chunk positions."""
        return self._table.column(name).take(pa.array(self.keep[np.asarray(positions, dtype=np.int64)])).to_pylist()

    def texts(self, positions: np.ndarray) -> list[str]:
        return self.column("text", positions)

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        chunker: Chunker,
        path: Path,
        skipped: Counter,
        min_words: int = 8,
        full_chunk_sources: Mapping[str, bool] | None = None,
    ) -> "ChunkStore":
        """Chunk `documents` into an Arrow file at `path`, counting short and duplicate chunks in `skipped`.

        A chunk's `full_chunk` flag comes from `full_chunk_sources[source]`, else from
        `full_chunk_sources[kind]` (`code`, `text`, ...), else it is True for code documents (the
        retriever's query side then uses the whole chunk).
        """
        overrides = dict(full_chunk_sources or {})
        hashes = array("Q")
        doc_ordinals = array("q")
        columns: dict[str, list] = {name: [] for name in CHUNK_SCHEMA.names}
        n_documents = 0
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, CHUNK_SCHEMA) as writer:

            def flush() -> None:
                writer.write_batch(pa.record_batch([pa.array(columns[n], type=CHUNK_SCHEMA.field(n).type) for n in CHUNK_SCHEMA.names], schema=CHUNK_SCHEMA))
                for values in columns.values():
                    values.clear()

            for document in documents:
                full_chunk = overrides.get(document.source, overrides.get(document.kind, document.kind == "code"))
                produced = 0
                for text in chunker.chunks(document.text, document.kind):
                    if len(text.split()) < min_words:
                        skipped[f"chunk shorter than {min_words} words"] += 1
                        continue
                    hashes.append(_fingerprint(text))
                    doc_ordinals.append(n_documents)
                    for name, value in zip(CHUNK_SCHEMA.names, (text, document.source, document.doc_id, full_chunk)):
                        columns[name].append(value)
                    produced += 1
                    if len(columns["text"]) >= _BATCH:
                        flush()
                if produced:
                    n_documents += 1
                else:
                    skipped["document without a usable chunk"] += 1
            if columns["text"]:
                flush()
        fingerprints = np.frombuffer(hashes, dtype=np.uint64)
        _, first = np.unique(fingerprints, return_index=True)
        keep = np.sort(first).astype(np.int64)
        if len(fingerprints) > len(keep):
            skipped["duplicate chunk"] += len(fingerprints) - len(keep)
        doc_index = np.frombuffer(doc_ordinals, dtype=np.int64)[keep]
        return cls(path, keep, doc_index, n_documents)
