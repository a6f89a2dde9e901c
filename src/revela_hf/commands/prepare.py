"""`revela prepare INPUT... --output DIR` (or `--dataset NAME_OR_PATH`): raw text to a dataset of training groups."""

from __future__ import annotations

import argparse

from revela_hf.commands import int_at_least, positive_int
from revela_hf.data.chunking import CODE_UNITS
from revela_hf.data.grouping import STRATEGIES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="chunk raw text and build groups of related chunks",
        description="Read text/Markdown/reST/code files, folders, JSONL/CSV/Parquet, `datasets` folders or a dataset "
                    "of datasets.load_dataset, cut sentence-aware chunks and save groups of related chunks as a datasets.Dataset.")
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="a path, or SOURCE=PATH to name its source tag")
    parser.add_argument("--dataset", metavar="[SOURCE=]NAME_OR_PATH",
                        help="also read datasets.load_dataset(NAME_OR_PATH): a Hub id (hf://ID), a local folder of data files, "
                             "or json/csv/parquet/text with --data-files")
    parser.add_argument("--dataset-config", help="the dataset's configuration name")
    parser.add_argument("--data-files", action="append", metavar="FILE", help="data files of --dataset (repeatable)")
    parser.add_argument("--split", help="the split of --dataset to read (default: every split)")
    parser.add_argument("--streaming", action="store_true", help="stream --dataset row by row instead of caching it first")
    parser.add_argument("--output", required=True, help="folder to write the dataset to (created atomically)")
    parser.add_argument("--group-size", type=int_at_least(2), default=16, help="chunks per group, B (default 16)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="bm25", help="how to group chunks (default bm25)")
    parser.add_argument("--max-words", type=positive_int, default=120, help="words per chunk at most (default 120)")
    parser.add_argument("--max-tokens", type=positive_int, help="tokens per chunk at most (needs --tokenizer; overrides --max-words)")
    parser.add_argument("--tokenizer", help="tokenizer folder for --max-tokens")
    parser.add_argument("--min-words", type=int_at_least(0), default=8, help="drop (and count) chunks shorter than this (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", help="sentence-transformers folder for --strategy embedding, or 'hashing' for a bag-of-words encoder")
    parser.add_argument("--text-column", default="text", help="text column of JSONL/CSV/Parquet/datasets inputs (default text)")
    parser.add_argument("--id-column", help="document id column of table and datasets inputs (default: file and row number)")
    parser.add_argument("--full-chunk", action="append", default=[], metavar="SOURCE",
                        help="queries of this source (or kind: code, text, markdown, rest) use the full chunk (default only for code)")
    parser.add_argument("--first-half", action="append", default=[], metavar="SOURCE",
                        help="queries of this source (or kind) use the first half of the chunk (default for prose)")
    parser.add_argument("--code-units", choices=CODE_UNITS, default="block",
                        help="code chunks: 'block' packs statements as they come; 'function' starts a chunk at every Python function; 'function-head' keeps each function's first chunk only")
    parser.add_argument("--interleave-width", type=positive_int, default=4, help="documents interleaved at a time (strategy interleave)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _encoder(name: str | None):
    if name is None:
        return None
    from revela_hf.data.encoders import HashingEncoder
    from revela_hf.encoders import SentenceTransformerEncoder

    return HashingEncoder() if name == "hashing" else SentenceTransformerEncoder(name, normalize=True)


def _inputs(args: argparse.Namespace) -> list:
    """The positional inputs, then `--dataset` loaded with `load_dataset_input`."""
    if not args.inputs and args.dataset is None:
        raise ValueError("give at least one INPUT path or --dataset NAME_OR_PATH")
    if args.dataset is None:
        given = [name for name, value in (("--dataset-config", args.dataset_config), ("--data-files", args.data_files),
                                          ("--split", args.split), ("--streaming", args.streaming)) if value]
        if given:
            raise ValueError(f"{', '.join(given)} need --dataset")
        return list(args.inputs)
    from revela_hf.data.readers import load_dataset_input, split_source

    source, path = split_source(args.dataset)
    return [*args.inputs, load_dataset_input(path, args.dataset_config, split=args.split, data_files=args.data_files,
                                             streaming=args.streaming, source=source)]


def run(args: argparse.Namespace) -> int:
    from revela_hf.data.prepare import prepare

    both = set(args.full_chunk) & set(args.first_half)
    if both:
        raise ValueError(f"sources given to both --full-chunk and --first-half: {sorted(both)}")
    if args.strategy == "embedding" and args.encoder is None:
        raise ValueError("--strategy embedding needs --encoder (a sentence-transformers folder, or 'hashing')")
    flags = {source: True for source in args.full_chunk} | {source: False for source in args.first_half}
    summary = prepare(
        _inputs(args), args.output, group_size=args.group_size, strategy=args.strategy, max_words=args.max_words,
        max_tokens=args.max_tokens, tokenizer=args.tokenizer, min_words=args.min_words, seed=args.seed,
        encoder=_encoder(args.encoder), text_column=args.text_column, id_column=args.id_column,
        full_chunk_sources=flags, code_units=args.code_units, interleave_width=args.interleave_width, overwrite=args.overwrite,
        show_progress=not args.no_progress,
    )
    print(summary.format())
    return 0
