"""Read documents from local files, folders and `datasets` objects, lazily, counting everything that is skipped.

Supported: plain text, Markdown, reST, source code (by extension), JSONL / CSV / TSV / Parquet
with a text column, folders saved by `datasets` (`Dataset` or `DatasetDict`), and `datasets` objects
(`Dataset`, `IterableDataset` or a dict of splits, e.g. from `load_dataset`, streamed or not), all
read row by row through one path. Every document carries a `source` tag (the input's label) and an
id unique within the corpus.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator

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
        label, rest = split_source(value)
        path = Path(rest)
        return cls(path, label or path.resolve().name or str(path))


@dataclass(frozen=True)
class DatasetInput:
    """A `datasets` object (`Dataset`, `IterableDataset`, or a dict of splits) with the source tag its documents get."""

    dataset: Any
    source: str = "dataset"

    @property
    def paths(self) -> list[Path]:
        """The folders of the Arrow files behind the dataset (an output must not replace them)."""
        files = getattr(self.dataset, "cache_files", [])
        if isinstance(files, dict):
            files = [file for split in files.values() for file in split]
        return sorted({Path(file["filename"]).parent for file in files})


def split_source(value: str) -> tuple[str | None, str]:
    """`SOURCE=REST` -> (SOURCE, REST); anything else (an existing path with '=' too) -> (None, value)."""
    label, sep, rest = value.partition("=")
    return (label, rest) if sep and label and not os.path.exists(value) else (None, value)


def is_datasets_object(value: Any) -> bool:
    """Whether `value` is a `Dataset`, `IterableDataset` or a dict of their splits (without importing `datasets`)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(
        value, (datasets.Dataset, datasets.IterableDataset, datasets.DatasetDict, datasets.IterableDatasetDict))


def as_input(value: Any) -> InputSpec | DatasetInput:
    """An input as given to `DocumentReader`: a path or `SOURCE=PATH`, an `InputSpec`, a `DatasetInput` or a `datasets` object."""
    if isinstance(value, (InputSpec, DatasetInput)):
        return value
    if isinstance(value, (str, os.PathLike)):
        return InputSpec.parse(os.fspath(value))
    if is_datasets_object(value):
        return DatasetInput(value)
    raise TypeError(f"an input is a path, SOURCE=PATH, InputSpec, DatasetInput or datasets object, not {type(value).__name__}")


def load_dataset_input(path: str, name: str | None = None, *, split: str | None = None,
                       data_files: str | list[str] | None = None, streaming: bool = False,
                       source: str | None = None) -> DatasetInput:
    """`datasets.load_dataset(path, name, split=..., data_files=..., streaming=...)` as an input.

    `path` is a Hub dataset id, a local folder of data files, or a packaged builder (`json`, `csv`,
    `parquet`, `text`) with `data_files`; `split=None` reads every split. With `streaming=True` rows
    are read lazily as they are chunked, so the raw dataset is never held in memory or cached whole.
    A missing `path` that looks like a local path is an error, never a Hub download (`hf://ID` asks
    for the Hub explicitly). The source tag defaults to the path's final name.
    """
    import datasets

    from revela_hf.hub import HUB_PREFIX, _local_looking

    local = Path(path).expanduser()
    if path.startswith(HUB_PREFIX):
        target = path[len(HUB_PREFIX):]
    elif local.exists():
        target = str(local)
    elif reason := _local_looking(path):
        raise FileNotFoundError(f"no dataset at {path} ({reason}); check the path, or write {HUB_PREFIX}{path} "
                                "for the Hub dataset of that name")
    else:
        target = path  # a Hub id or a packaged builder
    loaded = datasets.load_dataset(target, name, split=split, data_files=data_files, streaming=streaming)
    default = local.resolve().name if target == str(local) else target.rsplit("/", 1)[-1]
    return DatasetInput(loaded, source or default)


def kind_of(path: Path) -> str | None:
    """The document kind a file extension maps to, or None for tables and unsupported files."""
    suffix = path.suffix.lower()
    if suffix in TEXT_EXTENSIONS:
        return TEXT_EXTENSIONS[suffix]
    return "code" if suffix in CODE_EXTENSIONS else None


def is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


class DocumentReader:
    """Iterate the documents of several inputs in a deterministic order, counting skips in `skipped`.

    `inputs` is one input or several (see `as_input`); rows of tables and datasets take their text from
    `text_column` and, if given, their id from `id_column` (else the row number).
    """

    def __init__(self, inputs: Any, text_column: str = "text", id_column: str | None = None):
        single = isinstance(inputs, (str, os.PathLike, InputSpec, DatasetInput)) or is_datasets_object(inputs)
        self.inputs = [as_input(i) for i in ([inputs] if single else inputs)]
        if not self.inputs:
            raise ValueError("no input given")
        for spec in self.inputs:
            if isinstance(spec, InputSpec) and not spec.path.exists():
                raise FileNotFoundError(f"input not found: {spec.path}")
        self.text_column = text_column
        self.id_column = id_column
        self.skipped: Counter[str] = Counter()

    @property
    def paths(self) -> list[Path]:
        """Every path the inputs read from (an output must not replace one)."""
        return [path for spec in self.inputs for path in (spec.paths if isinstance(spec, DatasetInput) else [spec.path])]

    def __iter__(self) -> Iterator[Document]:
        for spec in self.inputs:
            if isinstance(spec, DatasetInput):
                yield from self._read_dataset(spec.dataset, spec.source, spec.source)
            elif is_datasets_folder(spec.path):
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

    def _check_columns(self, columns: Collection, where: str) -> None:
        for role, name in (("text", self.text_column), ("id", self.id_column)):
            if name is not None and name not in columns:
                raise ValueError(f"{where}: no {role} column {name!r}; columns are {sorted(map(str, columns))}")

    def _row_document(self, row: dict, source: str, doc_id: str) -> Document | None:
        self._check_columns(row, doc_id)
        text = row[self.text_column]
        if not isinstance(text, str) or not text.strip():
            self.skipped["row with empty or non-text value"] += 1
            return None
        if self.id_column is not None:
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
        yield from self._read_dataset(loaded, source, doc_id, explicit)

    def _read_dataset(self, loaded: Any, source: str, doc_id: str, explicit: bool = True) -> Iterator[Document]:
        """Rows of a `Dataset` / `IterableDataset` (or of each split of a dict of them), one at a time, as documents."""
        import datasets

        splits = loaded.items() if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)) else [("", loaded)]
        rows = 0
        for split, dataset in splits:
            prefix = f"{doc_id}/{split}" if split else doc_id
            if dataset.column_names is not None:  # None: a stream whose columns are known only from its rows
                self._check_columns(dataset.column_names, prefix)
                dataset = dataset.select_columns(list(dict.fromkeys(c for c in (self.text_column, self.id_column) if c)))
            for index, row in enumerate(dataset):
                rows += 1
                document = self._row_document(row, source, f"{prefix}#{index}")
                if document is not None:
                    yield document
        if rows == 0:
            if explicit:
                raise ValueError(f"{doc_id}: the dataset is empty (no rows)")
            self.skipped["datasets folder without rows"] += 1
