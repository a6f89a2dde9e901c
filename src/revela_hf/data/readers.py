"""Read documents from local files and folders, lazily, counting everything that is skipped.

Supported: plain text, Markdown, reST, source code (by extension), JSONL / CSV / TSV / Parquet
with a text column, and folders saved by `datasets` (`Dataset` or `DatasetDict`). Every document
carries a `source` tag (the input's label) and an id unique within the corpus.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

TEXT_EXTENSIONS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".rst": "rest", ".rest": "rest"}
CODE_EXTENSIONS = frozenset(
    ".py .pyi .c .h .cc .cpp .cxx .hpp .java .js .jsx .ts .tsx .go .rs .rb .php .cs .kt .scala .swift"
    " .m .lua .pl .r .jl .sh .bash .sql .hs .ml .ex .exs .erl .clj .dart .vue".split()
)
TABLE_EXTENSIONS = frozenset({".jsonl", ".ndjson", ".csv", ".tsv", ".parquet"})
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", ".git", ".hg", ".svn", ".tox", ".venv", "venv"})
_BINARY_SNIFF = 8192


@dataclass(frozen=True)
class Document:
    """One document: its text, its kind (text, markdown, rest, code), source tag and id."""

    text: str
    kind: str
    source: str
    doc_id: str


@dataclass(frozen=True)
class InputSpec:
    """An input path with the source tag its documents get."""

    path: Path
    source: str

    @classmethod
    def parse(cls, value: str) -> "InputSpec":
        """Parse `PATH` or `SOURCE=PATH` (the source defaults to the path's final name)."""
        label, sep, rest = value.partition("=")
        if sep and label and not os.path.exists(value):
            return cls(Path(rest), label)
        path = Path(value)
        return cls(path, path.resolve().name or str(path))


def kind_of(path: Path) -> str | None:
    """The document kind a file extension maps to, or None for tables and unsupported files."""
    suffix = path.suffix.lower()
    if suffix in TEXT_EXTENSIONS:
        return TEXT_EXTENSIONS[suffix]
    return "code" if suffix in CODE_EXTENSIONS else None


def is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


class DocumentReader:
    """Iterate the documents of several inputs in a deterministic order, counting skips in `skipped`."""

    def __init__(self, inputs: Iterable[str | Path | InputSpec], text_column: str = "text", id_column: str | None = None):
        self.inputs = [i if isinstance(i, InputSpec) else InputSpec.parse(str(i)) for i in inputs]
        if not self.inputs:
            raise ValueError("no input given")
        for spec in self.inputs:
            if not spec.path.exists():
                raise FileNotFoundError(f"input not found: {spec.path}")
        self.text_column = text_column
        self.id_column = id_column
        self.skipped: Counter[str] = Counter()

    def __iter__(self) -> Iterator[Document]:
        for spec in self.inputs:
            if is_datasets_folder(spec.path):
                yield from self._read_datasets_folder(spec.path, spec.source, spec.source)
            elif spec.path.is_dir():
                yield from self._read_tree(spec)
            else:
                yield from self._read_file(spec.path, spec.source, f"{spec.source}:{spec.path.name}", explicit=True)

    def _read_tree(self, spec: InputSpec) -> Iterator[Document]:
        for root, dirs, files in os.walk(spec.path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
            root_path = Path(root)
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = root_path / name
                yield from self._read_file(path, spec.source, f"{spec.source}:{path.relative_to(spec.path).as_posix()}")
            datasets_dirs = [d for d in dirs if is_datasets_folder(root_path / d)]
            for d in datasets_dirs:
                dirs.remove(d)
                path = root_path / d
                yield from self._read_datasets_folder(path, spec.source, f"{spec.source}:{path.relative_to(spec.path).as_posix()}",
                                                      explicit=False)

    def _read_file(self, path: Path, source: str, doc_id: str, explicit: bool = False) -> Iterator[Document]:
        suffix = path.suffix.lower()
        if suffix in TABLE_EXTENSIONS:
            try:
                yield from self._read_table(path, source, doc_id)
            except ValueError:
                if explicit:
                    raise
                self.skipped[f"table file without a usable {self.text_column!r} column"] += 1
            return
        kind = kind_of(path) or ("text" if explicit else None)
        if kind is None:
            self.skipped[f"unsupported file type ({suffix or 'no extension'})"] += 1
            return
        text = self._read_text(path)
        if text is not None:
            yield Document(text, kind, source, doc_id)

    def _read_text(self, path: Path) -> str | None:
        """The file's text, or None (counted) if it is empty, binary, not UTF-8 or unreadable."""
        try:
            data = path.read_bytes()
        except OSError as err:
            self.skipped[f"unreadable file ({err.strerror or type(err).__name__})"] += 1
            return None
        if b"\0" in data[:_BINARY_SNIFF]:
            self.skipped["binary file"] += 1
            return None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            self.skipped["file not valid UTF-8"] += 1
            return None
        if not text.strip():
            self.skipped["empty file"] += 1
            return None
        return text

    def _row_document(self, row: dict, source: str, doc_id: str) -> Document | None:
        if self.text_column not in row:
            raise ValueError(f"{doc_id}: no text column {self.text_column!r}; columns are {sorted(map(str, row))}")
        text = row[self.text_column]
        if not isinstance(text, str) or not text.strip():
            self.skipped["row with empty or non-text value"] += 1
            return None
        if self.id_column is not None:
            if self.id_column not in row:
                raise ValueError(f"{doc_id}: no id column {self.id_column!r}; columns are {sorted(map(str, row))}")
            doc_id = f"{source}:{row[self.id_column]}"
        return Document(text, "text", source, doc_id)

    def _rows(self, path: Path) -> Iterator[dict]:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        elif suffix in {".csv", ".tsv"}:
            csv.field_size_limit(2**31 - 1)
            with open(path, newline="", encoding="utf-8") as handle:
                yield from csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
        else:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
                    if not isinstance(row, dict):
                        raise ValueError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
                    yield row

    def _read_table(self, path: Path, source: str, doc_id: str) -> Iterator[Document]:
        rows = 0
        try:
            for rows, row in enumerate(self._rows(path), 1):
                document = self._row_document(row, source, f"{doc_id}#{rows - 1}")
                if document is not None:
                    yield document
        except UnicodeDecodeError:
            self.skipped["file not valid UTF-8"] += 1
            return
        if rows == 0:
            self.skipped["table file without rows"] += 1

    def _read_datasets_folder(self, path: Path, source: str, doc_id: str, explicit: bool = True) -> Iterator[Document]:
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except (ValueError, OSError, KeyError, TypeError) as err:
            if not explicit:
                self.skipped["unreadable datasets folder"] += 1
                return
            raise ValueError(f"{path} is not a readable datasets folder ({type(err).__name__}: {err})") from None
        splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
        for split, dataset in splits:
            prefix = f"{doc_id}/{split}" if split else doc_id
            for index, row in enumerate(dataset):
                document = self._row_document(row, source, f"{prefix}#{index}")
                if document is not None:
                    yield document
