"""Multi-process Revela training with DeepSpeed (the paper's recipe by default); see train_distributed.md.

    accelerate launch --num_processes 4 examples/train_distributed.py \
        --data groups/ --lm meta-llama/Llama-3.2-1B --retriever HuggingFaceTB/SmolLM2-135M \
        --output run/ --deepspeed examples/zero3_paper_recipe.json

Defaults mirror METHOD.md §1: LoRA r=256 (alpha 64, dropout 0.1) on q,k,v,o,gate,up,down of BOTH
models, LM trained through its LoRA, in-batch term in every layer, tau=1e-4, lr 1e-4 with 100
warm-up steps then linear decay, bf16, gradient accumulation 8, one epoch. The group size B (16 in the
paper) is fixed when the data are prepared: `revela prepare ... --group-size 16`.
"""

from __future__ import annotations

import argparse
import json

import torch
from datasets import load_from_disk
from peft import LoraConfig
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from revela_hf import RevelaForCausalLM
from revela_hf.trainer import RETRIEVER_SUBFOLDER, RevelaTrainer, RevelaTrainingArguments
from revela_hf.training import LORA_TARGETS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder written by `revela prepare` (one group per row)")
    p.add_argument("--lm", required=True, help="causal LM (folder or Hub id)")
    p.add_argument("--retriever", help="retriever backbone (default: the LM's)")
    p.add_argument("--output", required=True)
    p.add_argument("--deepspeed", help="DeepSpeed JSON (examples/zero3_paper_recipe.json); none = plain DDP")
    p.add_argument("--lora-r", type=int, default=256)
    p.add_argument("--lora-alpha", type=int, default=64)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--freeze-lm", action="store_true", help="keep the LM fixed (no LM LoRA)")
    p.add_argument("--inbatch-layers", default="all", help="'all' or comma-separated indices, e.g. -4,-3,-2,-1")
    p.add_argument("--inbatch-top-k", type=int, help="sparse in-batch attention over the k largest Sim per chunk")
    p.add_argument("--detach-clean-kv", action="store_true")
    p.add_argument("--temperature", type=float, default=1e-4)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--gradient-accumulation-steps", type=int, default=8)
    p.add_argument("--num-train-epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--save-steps", type=int, default=500)
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--cpu", action="store_true", help="run on CPU (gloo; DS_ACCELERATOR=cpu for DeepSpeed): smoke tests")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_model(args: argparse.Namespace) -> tuple[RevelaForCausalLM, AutoTokenizer]:
    # Built BEFORE the TrainingArguments on purpose: with a ZeRO-3 config active, transformers would
    # load the weights already partitioned (zero.Init), which `from_parts` (LoRA attachment, optional
    # copy of the LM as retriever) does not expect. DeepSpeed partitions the finished model at engine
    # start instead; each process briefly holds one full copy in host memory.
    tokenizer = AutoTokenizer.from_pretrained(args.lm)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(args.lm, dtype=torch.float32)
    retriever = AutoModel.from_pretrained(args.retriever, dtype=torch.float32) if args.retriever else None
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=LORA_TARGETS)
    layers = None if args.inbatch_layers == "all" else [int(i) for i in args.inbatch_layers.split(",")]
    model = RevelaForCausalLM.from_parts(
        lm,
        retriever,
        lm_lora=None if args.freeze_lm else lora,
        retriever_lora=lora,
        freeze_lm=args.freeze_lm,
        inbatch_layers=layers,
        inbatch_top_k=args.inbatch_top_k,
        detach_clean_kv=args.detach_clean_kv,
        temperature=args.temperature,
    )
    return model, tokenizer


def fill_bucket_sizes(ds_config: dict, model: RevelaForCausalLM) -> dict:
    """Resolve the hidden-size "auto" entries of a ZeRO config as transformers would for a plain LM.

    transformers derives them from `model.config.hidden_size`, which the composite RevelaConfig does
    not have (it holds an LM and a retriever config): use the larger of the two hidden sizes.
    """
    hidden = max(model.config.lm_config.hidden_size, model.config.retriever_config.hidden_size)
    zero = ds_config.get("zero_optimization", {})
    defaults = {
        "reduce_bucket_size": hidden * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    for key, value in defaults.items():
        if zero.get(key) == "auto":
            zero[key] = value
    return ds_config


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model, tokenizer = build_model(args)
    deepspeed = None
    if args.deepspeed:
        with open(args.deepspeed, encoding="utf-8") as f:
            deepspeed = fill_bucket_sizes(json.load(f), model)
    training_args = RevelaTrainingArguments(
        output_dir=args.output,
        deepspeed=deepspeed,
        bf16=args.precision == "bf16",
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type="linear",
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        max_length=args.max_length,
        gradient_checkpointing=args.gradient_checkpointing,
        use_cpu=args.cpu,
        ddp_backend="gloo" if args.cpu else None,
        report_to=[],
        seed=args.seed,
    )
    trainer = RevelaTrainer(model=model, args=training_args, train_dataset=load_from_disk(args.data),
                            processing_class=tokenizer)
    trainer.train()
    trainer.save_model(args.output)  # every rank: ZeRO-3 gathers collectively, the main process writes
    if trainer.is_world_process_zero():
        print(json.dumps({"retriever": f"{args.output}/{RETRIEVER_SUBFOLDER}", "steps": trainer.state.global_step}))
    if torch.distributed.is_initialized():  # a live gloo thread at interpreter exit aborts the process
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
