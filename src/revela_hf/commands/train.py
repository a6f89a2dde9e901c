"""`revela train`: train a retriever (Revela, REPLUG or DREAM) on a dataset written by `revela prepare`."""

from __future__ import annotations

import argparse

from revela_hf.commands import int_at_least, layer_list, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train LM + retriever on prepared groups (resumes from the last checkpoint)")
    parser.add_argument("--data", required=True, help="folder written by `revela prepare`")
    parser.add_argument("--lm", required=True, help="causal LM folder (transformers format)")
    parser.add_argument("--retriever", help="retriever backbone folder (default: the LM's)")
    parser.add_argument("--retriever-layers", type=positive_int, help="keep only the first N retriever layers")
    parser.add_argument("--output", required=True, help="output folder; the retriever ends in OUTPUT/retriever")
    parser.add_argument("--max-steps", type=positive_int, default=100)
    parser.add_argument("--learning-rate", type=positive_float, default=3e-4)
    parser.add_argument("--temperature", type=positive_float, default=1e-3, help="Sim temperature (paper: 1e-4)")
    parser.add_argument("--lora-r", type=int_at_least(0), default=16, help="retriever LoRA rank (0 = train all weights)")
    parser.add_argument("--lm-lora-r", type=positive_int, help="LoRA rank on the LM (needs --train-lm)")
    parser.add_argument("--train-lm", action="store_true", help="train the LM too (default: frozen)")
    parser.add_argument(
        "--share-base",
        action="store_true",
        help="the retriever is a LoRA adapter on the LM's own frozen weights (one copy in memory); --retriever, "
        "if given, must be a checkpoint cut from the LM's",
    )
    parser.add_argument(
        "--objective",
        choices=["revela", "replug", "dream"],
        default="revela",
        help="revela (default), replug or dream (both keep the LM frozen; dream trains on rows built from the groups)",
    )
    parser.add_argument(
        "--inbatch-layers",
        type=layer_list,
        default=[-4, -3, -2, -1],
        help="LM layers that take the retriever's scores (Revela's in-batch attention, DREAM's biased heads), or 'all'",
    )
    parser.add_argument("--inbatch-top-k", type=positive_int, help="sparse in-batch attention: the k largest Sim per chunk")
    parser.add_argument("--max-length", type=positive_int, default=160)
    parser.add_argument("--gradient-accumulation-steps", type=positive_int, default=1)
    parser.add_argument("--save-steps", type=positive_int, default=50)
    parser.add_argument(
        "--eval-data",
        help="BEIR folder to evaluate the retriever on during training (nDCG@10, MRR@10, Recall@100 in the logs and "
        "trainer_state.json as eval_<folder name>_ndcg@10, ...)",
    )
    parser.add_argument("--eval-steps", type=positive_int, help="evaluate every N steps (default: --save-steps; needs --eval-data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from revela_hf.trainer import RevelaTrainingArguments
    from revela_hf.io import output_lock
    from revela_hf.training import ModelSpec, objective_settings, train

    if args.eval_steps and not args.eval_data:
        raise ValueError("--eval-steps needs --eval-data (the BEIR folder to evaluate on)")
    layers = args.inbatch_layers
    spec = ModelSpec(
        lm=args.lm,
        retriever=args.retriever,
        retriever_layers=args.retriever_layers,
        retriever_lora_r=args.lora_r,
        lm_lora_r=args.lm_lora_r,
        freeze_lm=not args.train_lm,
        share_base=args.share_base,
        inbatch_layers=layers,
        temperature=args.temperature,
        config_overrides={"inbatch_top_k": args.inbatch_top_k, **objective_settings(args.objective, layers)},
    )
    training_args = RevelaTrainingArguments(
        output_dir=args.output,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        warmup_steps=max(1, args.max_steps // 10),
        lr_scheduler_type="cosine",
        max_length=args.max_length,
        retriever_max_length=args.max_length,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        save_steps=args.save_steps,
        eval_data=args.eval_data,
        eval_strategy="steps" if args.eval_data else "no",
        eval_steps=args.eval_steps or args.save_steps,
        report_to=[],
        seed=args.seed,
    )
    with output_lock(args.output):  # a second `revela train` on this output fails at once
        trainer = train(spec, args.data, training_args)
    print(f"retriever saved to {args.output}/retriever ({trainer.state.global_step} steps)")
    return 0
