"""`revela encode --retriever R --input texts.txt --output emb.npy`: embed texts to a NumPy file."""

from __future__ import annotations

import argparse

from revela_hf.commands import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="embed texts (one per line) into a .npy file")
    parser.add_argument("--retriever", required=True, help="Revela retriever or sentence-transformers folder/Hub repo")
    parser.add_argument("--input", required=True, help="text file, one text per line")
    parser.add_argument("--output", required=True, help=".npy file for the (N, E) float32 embeddings")
    parser.add_argument("--queries", action="store_true", help="encode as queries (default: as passages)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from revela_hf.io import write_file_atomically
    from revela_hf.search import load_encoder

    texts = [line.rstrip("\n") for line in Path(args.input).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"{args.input} holds no text")
    encoder = load_encoder(args.retriever)
    encode = encoder.encode_queries if args.queries else encoder.encode_corpus
    embeddings = encode(texts, batch_size=args.batch_size)
    output = args.output if args.output.endswith(".npy") else f"{args.output}.npy"  # np.save's naming
    write_file_atomically(output, lambda handle: np.save(handle, embeddings), "wb")
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {output}")
    return 0
