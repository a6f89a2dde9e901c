"""`prepare`: raw files or datasets -> chunks -> groups of B related chunks -> a `datasets.Dataset` on disk.

Output rows (one per group): {"chunks": [B texts], "sources": [...], "doc_ids": [...],
"full_chunk": [...]}, chunks shuffled inside each group. The result is a pure function of the
inputs, the options and the seed. The output folder appears atomically and complete, under a lock
(see `revela_hf.io`); `overwrite` replaces only an earlier dataset, never an input or other folder.

Memory: documents stream from the inputs (a streamed `IterableDataset` is never materialised) and
chunks are written to an Arrow file on disk as they come. Grouping needs every chunk at once, but
only as a few integers per chunk in memory (texts are read back from the memory-mapped file), and
`bm25` / `embedding` index at most `shard_size` chunks at a time; so memory grows with the number of
chunks, not with the size of the raw corpus.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from revela_hf.data.chunking import Chunker
from revela_hf.data.grouping import encode_to_memmap, group_chunks
from revela_hf.data.readers import DocumentReader
from revela_hf.data.store import ChunkStore
from revela_hf.encoders import Encoder
from revela_hf.io import publishing, temporary_sibling

GROUP_SCHEMA = pa.schema([
    ("chunks", pa.list_(pa.string())),
    ("sources", pa.list_(pa.string())),
    ("doc_ids", pa.list_(pa.string())),
    ("full_chunk", pa.list_(pa.bool_())),
])
SUMMARY_FILE = "prepare_summary.json"
DATASET_KIND = "dataset"


@dataclass
class PrepareSummary:
    """What `prepare` did: counts, skipped items by reason, and time per stage."""

    output: str
    strategy: str
    group_size: int
    documents: int
    chunks: int
    groups: int
    fallback_groups: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"wrote {self.groups} groups of {self.group_size} ({self.strategy}) to {self.output}",
            f"  documents: {self.documents}",
            f"  chunks:    {self.chunks}",
        ]
        if self.fallback_groups:
            lines.append(f"  groups filled at random (no unused neighbours left): {self.fallback_groups}")
        lines.append("  skipped:" + ("" if self.skipped else " nothing"))
        lines += [f"    {count:>8}  {reason}" for reason, count in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
        lines.append("  time: " + ", ".join(f"{stage} {secs:.1f}s" for stage, secs in self.seconds.items()))
        return "\n".join(lines)


def load_tokenizer(tokenizer):
    """A tokenizer object, or a local path/name loaded with `AutoTokenizer`."""
    if tokenizer is None or callable(tokenizer):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))


def write_groups(store: ChunkStore, groups: np.ndarray, path: Path, seed: int, batch: int = 1024,
                 show_progress: bool = False) -> None:
    """Write groups as an Arrow stream file of rows in GROUP_SCHEMA, shuffling chunks inside each group."""
    rng = np.random.default_rng([seed, 1])
    shuffled = rng.permuted(groups, axis=1)
    size = groups.shape[1]
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, GROUP_SCHEMA) as writer:
        for start in tqdm(range(0, len(shuffled), batch), desc="writing", unit="batch", disable=not show_progress):
            flat = shuffled[start:start + batch].reshape(-1)
            offsets = pa.array(np.arange(0, len(flat) + 1, size, dtype=np.int32))
            arrays = [pa.ListArray.from_arrays(offsets, pa.array(store.column(name, flat), type=GROUP_SCHEMA.field(col).type.value_type))
                      for name, col in (("text", "chunks"), ("source", "sources"), ("doc_id", "doc_ids"), ("full_chunk", "full_chunk"))]
            writer.write_batch(pa.record_batch(arrays, schema=GROUP_SCHEMA))


def prepare(
    inputs: Any,
    output_dir: str | Path,
    *,
    group_size: int = 16,
    strategy: str = "bm25",
    max_words: int = 120,
    max_tokens: int | None = None,
    tokenizer=None,
    min_words: int = 8,
    seed: int = 0,
    encoder: Encoder | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    full_chunk_sources: Mapping[str, bool] | None = None,
    code_units: str = "block",
    interleave_width: int = 4,
    shard_size: int = 500_000,
    overwrite: bool = False,
    show_progress: bool = True,
) -> PrepareSummary:
    """Read `inputs`, chunk, group into groups of `group_size` with `strategy`, save a Dataset to `output_dir`.

    `inputs` is one input or a list: paths or `SOURCE=PATH` strings, `InputSpec`s, `datasets` objects
    (`Dataset`, `IterableDataset` or a dict of splits, source tag `dataset`) or `DatasetInput(dataset,
    source)`s; rows of tables and datasets take their text from `text_column` and their id from
    `id_column` (default: the row number). `load_dataset_input` wraps `datasets.load_dataset`. The
    same texts give the same groups whichever form they come in. `full_chunk_sources` maps a source
    tag or a document kind (`code`, `text`, ...) to whether its chunks use the full chunk as query
    (default: True for code files, False for prose). `code_units="function"` starts a chunk at every
    Python function. The `embedding` strategy needs `encoder` (anything with `encode_corpus`).
    Raises ValueError for bad options, a missing text or id column, an empty dataset or a corpus too
    small for one group; then nothing is written.
    """
    output = Path(output_dir)
    if strategy == "embedding" and encoder is None:
        raise ValueError("strategy 'embedding' needs an encoder")
    reader = DocumentReader(inputs, text_column=text_column, id_column=id_column)
    chunker = Chunker(max_words=max_words, max_tokens=max_tokens, tokenizer=load_tokenizer(tokenizer), code_units=code_units)
    with publishing(output, DATASET_KIND, overwrite=overwrite, inputs=reader.paths) as staged, \
            temporary_sibling(output) as scratch:
        workdir = Path(scratch)
        seconds: dict[str, float] = {}
        clock = time.perf_counter()
        documents = tqdm(reader, desc="chunking", unit="doc", disable=not show_progress)
        store = ChunkStore.build(documents, chunker, workdir / "chunks.arrow", reader.skipped, min_words, full_chunk_sources)
        seconds["chunking"] = time.perf_counter() - clock

        clock = time.perf_counter()
        embeddings = None
        if strategy == "embedding" and len(store) >= group_size:
            embeddings = encode_to_memmap(encoder, store.texts, len(store), workdir / "embeddings.npy", show_progress=show_progress)
            seconds["encoding"] = time.perf_counter() - clock
            clock = time.perf_counter()
        try:
            grouping = group_chunks(strategy, len(store), group_size, seed, doc_index=store.doc_index, texts=store.texts,
                                    embeddings=embeddings, interleave_width=interleave_width, shard_size=shard_size,
                                    show_progress=show_progress)
        except ValueError as err:
            raise ValueError(f"{err}; {format_skipped(reader.skipped)}") from None
        seconds["grouping"] = time.perf_counter() - clock
        if grouping.leftover:
            reader.skipped[f"chunk left over after grouping (fewer than {group_size} remained)"] += grouping.leftover

        clock = time.perf_counter()
        write_groups(store, grouping.groups, workdir / "groups.arrow", seed, show_progress=show_progress)
        save_dataset(workdir / "groups.arrow", staged, show_progress)
        seconds["writing"] = time.perf_counter() - clock
        summary = PrepareSummary(str(output), strategy, group_size, store.documents, len(store), len(grouping.groups),
                                 grouping.fallback_groups, dict(reader.skipped), {k: round(v, 3) for k, v in seconds.items()})
        (staged / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def format_skipped(skipped: Mapping[str, int]) -> str:
    """What was skipped, by reason, in one line (for errors)."""
    if not skipped:
        return "nothing was skipped (the inputs hold too little text)"
    return "skipped: " + ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))


def save_dataset(arrow_file: Path, folder: Path, show_progress: bool) -> None:
    """Save the Arrow stream file `arrow_file` as a `datasets.Dataset` into the (existing, empty) `folder`."""
    import datasets

    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        datasets.Dataset.from_file(str(arrow_file)).save_to_disk(str(folder))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
