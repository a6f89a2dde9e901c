"""`revela push REPO_ID FOLDER [--merge-lora]`: publish a saved retriever folder to the Hub (repo id first, as
`hf upload REPO_ID LOCAL_PATH`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("push", help="upload a retriever folder to the Hugging Face Hub",
                                   description="Load a retriever folder and push it (adapter, tokenizer, settings, "
                                               "sentence-transformers files, model card) to a Hub repo.")
    parser.add_argument("repo_id", help="target repo, e.g. user/revela-135m")
    parser.add_argument("folder", help="retriever folder written by save_pretrained")
    parser.add_argument("--base-model", help="Hub id of the base model, recorded in the adapter config")
    parser.add_argument("--merge-lora", action="store_true",
                        help="upload the LoRA adapter merged into full weights, which load without peft")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--commit-message", default="Upload Revela retriever")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from revela_hf.retriever import RevelaRetriever

    if Path(args.repo_id).is_dir() and not Path(args.folder).is_dir():
        raise SystemExit(f"revela push takes the repo id first, then the folder (as hf upload): "
                         f"revela push {args.folder} {args.repo_id}")
    retriever = RevelaRetriever.from_pretrained(args.folder)
    url = retriever.push_to_hub(args.repo_id, private=args.private or None, commit_message=args.commit_message, base_model=args.base_model,
                                 merge_lora=args.merge_lora)
    print(f"pushed to {url}")
    return 0
