"""`revela project --retriever R --sources SRC... --output DIR`: a copy of a retriever with all-but-the-top
post-processing fitted on descriptions (`revela_hf.search.projection`)."""

from __future__ import annotations

import argparse

from revela_hf.commands import positive_int
from revela_hf.defaults import PROJECTION_DIRECTIONS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "project", help="fit all-but-the-top post-processing on descriptions and save it with a copy of the retriever",
        description="Encode descriptions (the docstrings of Python sources, or a file of them) as queries, fit their "
                    "mean and top principal directions, and write a copy of the retriever that removes them from every "
                    "query and document embedding (RevelaRetriever.from_pretrained, sentence-transformers, mteb and revela evaluate / index / search / encode apply it).")
    parser.add_argument("--retriever", required=True, help="retriever folder")
    parser.add_argument("--sources", nargs="*", default=[], metavar="SRC",
                        help=".py files or folders whose function docstrings are the descriptions (the training corpus's)")
    parser.add_argument("--installed-packages", action="store_true",
                        help="also the .py files of this environment's installed packages (the demo's training text)")
    parser.add_argument("--descriptions", metavar="FILE", help="descriptions, one per line (or a queries.jsonl)")
    parser.add_argument("--output", required=True, help="folder for the projected copy (must not exist)")
    parser.add_argument("--pooling", help="re-pool a Revela retriever first: eos, last, mean, cls or mean+eos (its mean and "
                                          "EOS states side by side); default: as saved")
    parser.add_argument("--directions", type=int,
                        help=f"top principal directions removed (default {PROJECTION_DIRECTIONS} per pooled vector: 32 for mean+eos)")
    parser.add_argument("--token-weights", metavar="DIR",
                        help="weigh the mean-pooled part's tokens by SIF weights counted over a prepared corpus (`revela prepare`'s "
                             "output, the training text); needs a pooling with a mean part")
    parser.add_argument("--mean-from-base", action="store_true",
                        help="read the mean-pooled part from the base model under the retriever's adapter (a second pass): "
                             "Revela trains the EOS state, and its adapter makes the base model's mean worse")
    parser.add_argument("--max-descriptions", type=positive_int, default=2000)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from revela_hf.evaluation.beir import read_query_texts
    from revela_hf.search.projection import corpus_chunks, docstring_descriptions, project_retriever

    files = [p for src in map(Path, args.sources) for p in (sorted(src.rglob("*.py")) if src.is_dir() else [src])]
    if args.installed_packages:
        from revela_hf.demo.assets import training_python_files

        files += training_python_files()
    descriptions = read_query_texts(args.descriptions) if args.descriptions else []
    descriptions += docstring_descriptions(files, args.max_descriptions)
    if not descriptions:
        raise ValueError("no descriptions: pass --sources (or --installed-packages) with documented Python functions, "
                         "or --descriptions FILE")
    weight_texts = corpus_chunks(args.token_weights) if args.token_weights else None
    projection = project_retriever(args.retriever, args.output, descriptions[: args.max_descriptions], k=args.directions,
                                   pooling=args.pooling, batch_size=args.batch_size, token_weight_texts=weight_texts,
                                   mean_from_base=args.mean_from_base)
    print(f"fitted on {min(len(descriptions), args.max_descriptions)} descriptions, {len(projection.directions)} directions removed; "
          f"projected retriever at {args.output}")
    return 0
