"""`revela export FOLDER OUTPUT --onnx`: a saved retriever as one ONNX graph (see `RevelaRetriever.export_onnx`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a retriever folder to ONNX",
                                   description="Write the retriever (LoRA merged, pooling, normalisation) as model.onnx "
                                               "with its tokenizer and settings; needs pip install 'revela-hf[onnx]'.")
    parser.add_argument("folder", help="retriever folder written by save_pretrained")
    parser.add_argument("output", help="folder to write (must not exist, or be empty)")
    parser.add_argument("--onnx", action="store_true", required=True, help="export to ONNX (the one format so far)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier ONNX export at OUTPUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from revela_hf.retriever import RevelaRetriever

    print(f"exported to {RevelaRetriever.from_pretrained(args.folder).export_onnx(args.output, overwrite=args.overwrite)}")
    return 0
