"""`revela train`: train a retriever (Revela, REPLUG or DREAM) on a dataset written by `revela prepare`.

Its flags are those of `TrainRecipe` (data, models, objective) and of `RevelaTrainingArguments` (every
`TrainingArguments` flag), parsed by `transformers.HfArgumentParser` (`--max_steps` or `--max-steps`);
`--config recipe.yaml` gives any of them, and flags on the command line override the file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

from revela_hf.commands import int_at_least, layer_list, positive_float, positive_int
from revela_hf.defaults import (
    PAPER_TEMPERATURE,
    RECIPE_FREEZE_LM,
    RECIPE_INBATCH_LAYERS,
    RECIPE_RETRIEVER_LORA_R,
    RECIPE_TEMPERATURE,
)
from revela_hf.objectives.registry import DEFAULT_OBJECTIVE, OBJECTIVES, get_objective

HELP = "train LM + retriever on prepared groups (resumes from the last checkpoint)"
USAGE = "revela train [--config RECIPE.yaml] --data DIR --lm LM_DIR --output_dir RUN [FLAG VALUE ...]"
# `revela train`'s defaults where they differ from `RevelaTrainingArguments`'.
DEFAULTS = {"learning_rate": 3e-4, "lr_scheduler_type": "cosine", "save_steps": 50, "seed": 0}
# Defaults worked out from the other values after parsing (None until then), as `--help` states them.
DERIVED_DEFAULTS = {
    "max_steps": "100, or -1 (train num_train_epochs) when num_train_epochs is given",
    "num_train_epochs": "3; used only without max_steps",
    "warmup_steps": "max(1, max_steps // 10), or 0.1 (of the steps) with num_train_epochs",
    "retriever_max_length": "max_length",
    "eval_strategy": "'steps' with eval_data, else 'no'",
    "eval_steps": "save_steps",
}
# Range checks of the flags (and of the file's values), whose messages name the flag.
FLAG_TYPES = {
    "max_steps": positive_int,
    "learning_rate": positive_float,
    "max_length": positive_int,
    "gradient_accumulation_steps": positive_int,
    "retriever_layers": positive_int,
    "lora_r": int_at_least(0),
    "lm_lora_r": positive_int,
    "lora_alpha": positive_int,
    "temperature": positive_float,
    "inbatch_layers": layer_list,
    "inbatch_top_k": positive_int,
}


@dataclass
class TrainRecipe:
    """What `revela train` trains on and builds (its `ModelSpec`); the rest is `RevelaTrainingArguments`. The
    defaults are the training recipe's, `ModelSpec`'s too (`revela_hf.defaults`)."""

    _argument_group_name = "data and models"

    data: str = field(metadata={"help": "Folder written by `revela prepare`."})
    lm: str = field(metadata={"help": "Causal LM folder (transformers format)."})
    retriever: str | None = field(default=None, metadata={"help": "Retriever backbone folder (None: the LM's)."})
    retriever_layers: int | None = field(default=None, metadata={"help": "Keep only the first N retriever layers."})
    lora_r: int = field(default=RECIPE_RETRIEVER_LORA_R, metadata={"help": "Retriever LoRA rank (0 = train all weights)."})
    lm_lora_r: int | None = field(default=None, metadata={"help": "LoRA rank on the LM (needs train_lm)."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha of both adapters (None: 2 x the rank)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout of both adapters."})
    train_lm: bool = field(default=not RECIPE_FREEZE_LM, metadata={"help": "Train the LM too (False: the LM stays frozen)."})
    share_base: bool = field(
        default=False,
        metadata={"help": "The retriever is a LoRA adapter on the LM's own frozen weights (one copy in memory); "
                          "retriever, if given, must be a checkpoint cut from the LM's."},
    )
    objective: str = field(
        default=DEFAULT_OBJECTIVE,
        metadata={
            "choices": list(OBJECTIVES),
            "help": "Training objective; every one but revela keeps the LM frozen (dream trains on rows built from the groups).",
        },
    )
    inbatch_layers: list[int] | None = field(
        default_factory=lambda: list(RECIPE_INBATCH_LAYERS),
        metadata={"help": "LM layers that take the retriever's scores (Revela's in-batch attention, DREAM's biased "
                          "heads): comma-separated (negative = from the top), or 'all'."},
    )
    inbatch_top_k: int | None = field(default=None, metadata={"help": "Sparse in-batch attention: the k largest Sim per chunk."})
    temperature: float = field(
        default=RECIPE_TEMPERATURE,
        metadata={"help": f"Sim temperature (paper: {PAPER_TEMPERATURE:g}; this recipe's default is the value the README's runs used)."},
    )

    def model_spec(self) -> Any:
        """The `ModelSpec` this recipe builds."""
        from revela_hf.training import ModelSpec

        return ModelSpec(
            lm=self.lm,
            retriever=self.retriever,
            retriever_layers=self.retriever_layers,
            retriever_lora_r=self.lora_r,
            lm_lora_r=self.lm_lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            freeze_lm=not self.train_lm,
            share_base=self.share_base,
            inbatch_layers=self.inbatch_layers,
            temperature=self.temperature,
            config_overrides={"inbatch_top_k": self.inbatch_top_k, **get_objective(self.objective).config_kwargs(self.inbatch_layers)},
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    # The flags are parsed by `train_parser()` when the command runs: building it loads torch, which `revela --help` does not.
    parser = subparsers.add_parser("train", help=HELP, add_help=False)
    parser.set_defaults(func=_run, forward_argv=True)


def train_parser() -> argparse.ArgumentParser:
    """The `HfArgumentParser` of `TrainRecipe` and `RevelaTrainingArguments`, with `revela train`'s defaults."""
    from transformers import HfArgumentParser

    from revela_hf.trainer import RevelaTrainingArguments

    parser = HfArgumentParser(
        (TrainRecipe, RevelaTrainingArguments), prog="revela train", usage=USAGE, description=HELP,
    )
    parser.add_argument("--config", help="YAML recipe: keys are the flags' names (e.g. max_steps: 200); flags override it")
    parser.add_argument("--output", dest="output_dir", help="Same as --output_dir (the other commands' spelling).")
    parser.set_defaults(**DEFAULTS, **dict.fromkeys(DERIVED_DEFAULTS))
    for action in parser._actions:
        if action.dest in DERIVED_DEFAULTS and action.help is not None:
            action.help += f" revela train: {DERIVED_DEFAULTS[action.dest]}."
        if action.dest in FLAG_TYPES:
            action.type = FLAG_TYPES[action.dest]
        if action.dest == "inbatch_layers":
            action.nargs = None  # one comma-separated value, as in a YAML file
    return parser


def parse_train_args(argv: list[str]) -> tuple[TrainRecipe, Any]:
    """`(TrainRecipe, RevelaTrainingArguments)` from `revela train`'s flags and the `--config` file they name."""
    from revela_hf.trainer import RevelaTrainingArguments

    parser = train_parser()
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument("--config")
    config = config_flag.parse_known_args(argv)[0].config
    if config:
        _set_defaults_from_yaml(parser, config)
    values = vars(parser.parse_args(argv))
    del values["config"]
    if values["output_dir"] is None:
        parser.error("the following arguments are required: --output_dir (or --output)")
    _derive_defaults(values)
    recipe = TrainRecipe(**{f.name: values.pop(f.name) for f in fields(TrainRecipe)})
    return recipe, RevelaTrainingArguments(**values)


def _set_defaults_from_yaml(parser: argparse.ArgumentParser, path: str) -> None:
    """The file's values become the flags' defaults (as in trl's `TrlParser`): flags given override them. A scalar
    goes through the flag's type, as if it were typed on the command line."""
    import yaml

    with open(path, encoding="utf-8") as file:
        recipe = yaml.safe_load(file) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping of flag names to values, got {type(recipe).__name__}")
    unknown = sorted(set(recipe) - {action.dest for action in parser._actions} - {"help", "config"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}: not flags of `revela train` (see `revela train --help`)")
    parser.set_defaults(**{key: str(value) if isinstance(value, (bool, int, float)) else value for key, value in recipe.items()})
    for action in parser._actions:
        action.required = action.required and action.dest not in recipe


def _derive_defaults(values: dict[str, Any]) -> None:
    """Fill the values `DERIVED_DEFAULTS` describes (those not given) and check that the given ones fit."""
    if values["eval_steps"] is not None and not values["eval_data"]:
        raise ValueError("--eval-steps needs --eval-data (the BEIR folder to evaluate on)")
    epochs_given = values["num_train_epochs"] is not None
    if not epochs_given:
        del values["num_train_epochs"]
    if values["max_steps"] is None:
        values["max_steps"] = -1 if epochs_given else 100
    if values["warmup_steps"] is None:
        values["warmup_steps"] = max(1, values["max_steps"] // 10) if values["max_steps"] > 0 else 0.1
    if values["retriever_max_length"] is None:
        values["retriever_max_length"] = values["max_length"]
    if values["eval_strategy"] is None:
        values["eval_strategy"] = "steps" if values["eval_data"] else "no"
    if values["eval_steps"] is None and values["eval_data"]:
        values["eval_steps"] = values["save_steps"]


def _run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    import torch

    from revela_hf.distributed import exit_launched_process
    from revela_hf.io import output_lock
    from revela_hf.training import train

    recipe, training_args = parse_train_args(args.argv)
    # One process of a launch (torchrun, accelerate, deepspeed) holds the lock for all: a second
    # `revela train` on this output fails at once, the launch's other ranks do not.
    first = training_args.process_index == 0
    with output_lock(training_args.output_dir) if first else nullcontext():
        trainer = train(recipe.model_spec(), recipe.data, training_args)
    if first:
        print(f"retriever saved to {training_args.output_dir}/retriever ({trainer.state.global_step} steps)")
    if torch.distributed.is_initialized():
        exit_launched_process(0)
    return 0
