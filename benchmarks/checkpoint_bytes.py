"""Bytes written per checkpoint: a full-model save (every weight, as before adapter-only checkpoints) vs
the adapter-only save `RevelaTrainer` does now.

Both variants train the same model (`revela train`'s recipe: frozen LM with the in-batch term in its
top `--inbatch-layers`, a rank-`--lora-r` LoRA retriever) for one step on one synthetic group and
save `checkpoint-1` (model, retriever folder, optimizer, scheduler, RNG and trainer state) and the
final folder. `full_model` is `RevelaTrainer` with the Trainer's own `_save` (`model.safetensors`
holding every weight, then `retriever/`); `adapter_only` is `RevelaTrainer` as it is. Defaults: the
demo's models (SmolLM2-135M-Instruct as the LM, its first 6 layers as the retriever). Prints one
JSON object: bytes per variant (total and the largest files), and full_model / adapter_only.

    PYTHONPATH=src python benchmarks/checkpoint_bytes.py [--lm LM_DIR --retriever RETRIEVER_DIR --lora-r 16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from datasets import Dataset
from transformers import PrinterCallback, Trainer, set_seed

from revela_hf.trainer import RETRIEVER_SUBFOLDER, RevelaTrainer, RevelaTrainingArguments
from revela_hf.training import ModelSpec, build_model

WORDS = "the retriever reads a chunk and the language model predicts the next token of its neighbour".split()
LARGEST = 4  # files listed per variant


class FullModelTrainer(RevelaTrainer):
    """Checkpoints as they were before adapter-only saving: the Trainer's `_save`, then `retriever/`."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        Trainer._save(self, output_dir, state_dict)
        self.accelerator.unwrap_model(self.model).retriever.save_pretrained(os.path.join(output_dir, RETRIEVER_SUBFOLDER))


def folder_bytes(folder: Path, skip: str | None = None) -> dict:
    """Total bytes of the files under `folder` (those under a sub-folder named `skip*` left out) and the largest."""
    sizes = {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
             if p.is_file() and not (skip and p.relative_to(folder).parts[0].startswith(skip))}
    largest = dict(sorted(sizes.items(), key=lambda item: -item[1])[:LARGEST])
    return {"bytes": sum(sizes.values()), "files": len(sizes), "largest": largest}


def measure(trainer_class: type[RevelaTrainer], spec: ModelSpec, args: argparse.Namespace, output: Path) -> dict:
    set_seed(0)
    model, tokenizer = build_model(spec)
    chunks = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(args.words)) for i in range(args.group)]
    group = Dataset.from_list([{"chunks": chunks, "sources": ["text"] * args.group, "doc_ids": [f"d{i}" for i in range(args.group)]}])
    training_args = RevelaTrainingArguments(output_dir=str(output), max_steps=1, save_steps=1, report_to=[], use_cpu=True,
                                            disable_tqdm=True, max_length=args.max_length, retriever_max_length=args.max_length)
    trainer = trainer_class(model=model, args=training_args, train_dataset=group, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # stdout carries the JSON only
    trainer.train()
    trainer.save_model(str(output))
    weights = {f"{kind}_weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad == trains)
               for kind, trains in (("frozen", False), ("trainable", True))}
    return {"checkpoint": folder_bytes(output / "checkpoint-1"), "final_folder": folder_bytes(output, skip="checkpoint-"), **weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", help="LM folder (default: SmolLM2-135M-Instruct, revela_hf.demo.assets.smollm2_path())")
    parser.add_argument("--retriever", help="retriever folder (default: the LM's first 6 layers, as in the demo)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--inbatch-layers", default="-4,-3,-2,-1")
    parser.add_argument("--group", type=int, default=8, help="chunks in the training group")
    parser.add_argument("--words", type=int, default=60, help="words per chunk")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    if args.lm is None or args.retriever is None:
        from revela_hf.demo.assets import smollm2_path

        args.lm = args.lm or smollm2_path()
        args.retriever = args.retriever or smollm2_path(num_hidden_layers=6)
    spec = ModelSpec(lm=args.lm, retriever=args.retriever, retriever_lora_r=args.lora_r,
                     inbatch_layers=[int(i) for i in args.inbatch_layers.split(",")])
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: measure(trainer_class, spec, args, Path(tmp) / name)
                   for name, trainer_class in (("full_model", FullModelTrainer), ("adapter_only", RevelaTrainer))}
    before, after = results["full_model"], results["adapter_only"]
    ratio = {key: round(before[key]["bytes"] / after[key]["bytes"], 1) for key in ("checkpoint", "final_folder")}
    print(json.dumps({"benchmark": "bytes written per checkpoint: full model vs adapter-only", "lm": args.lm,
                      "retriever": args.retriever, "lora_r": args.lora_r, "inbatch_layers": spec.inbatch_layers,
                      **results, "full_model_vs_adapter_only": ratio}, indent=2))


if __name__ == "__main__":
    main()
