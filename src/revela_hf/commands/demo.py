"""`revela demo`: the main job, end to end on this CPU (see revela_hf.demo)."""

from __future__ import annotations

import argparse

from revela_hf.commands import positive_int
from revela_hf.data.grouping import STRATEGIES
from revela_hf.objectives.registry import DEFAULT_OBJECTIVE, OBJECTIVES
from revela_hf.demo.recipes import BUDGETS, DEMO_GROUPING, RETRIEVERS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train SmolLM2-135M into a code retriever from raw source code and report HumanEval nDCG@10",
        description="Prepare local source code, train with Revela (frozen LM, top-4-layer in-batch attention, LoRA "
        "retriever), evaluate before/after next to BM25 and all-MiniLM-L6-v2; writes results.json and results.png.",
    )
    parser.add_argument("--output", default="revela-demo", help="working folder (resumes if it exists)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default", help="default: <= 25 min on 2 cores")
    parser.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        default=DEFAULT_OBJECTIVE,
        help=f"training objective (the LM stays frozen): {', '.join(OBJECTIVES)} (default {DEFAULT_OBJECTIVE})",
    )
    parser.add_argument("--inbatch-top-k", type=positive_int, help="sparse in-batch attention: the k largest Sim per chunk (Revela)")
    parser.add_argument("--grouping", choices=STRATEGIES, default=DEMO_GROUPING,
                        help=f"how chunks are grouped (default {DEMO_GROUPING}; random is the control: unrelated chunks)")
    parser.add_argument("--retriever", choices=sorted(RETRIEVERS), default="smollm2",
                        help="smollm2 (default): SmolLM2-135M cut to 6 layers, trained from scratch; minilm: "
                        "all-MiniLM-L6-v2 adapted to the corpus")
    parser.add_argument("--temperature", type=float, help="Sim temperature tau (default: the retriever's recipe, "
                        + ", ".join(f"{k} {r.temperature:g}" for k, r in RETRIEVERS.items()) + ")")
    parser.add_argument("--pooling", help="the retriever's pooling: eos, last, mean or cls (default: its recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from revela_hf.demo import run_demo

    run_demo(args.output, args.budget, args.seed, objective=args.objective, inbatch_top_k=args.inbatch_top_k,
             grouping=args.grouping, temperature=args.temperature, pooling=args.pooling, retriever=args.retriever)
    return 0
