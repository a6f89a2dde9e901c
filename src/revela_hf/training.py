"""Building a RevelaForCausalLM from model folders and training it on a prepared dataset."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict, load_from_disk
from peft import LoraConfig
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainerState, set_seed

from revela_hf.configuration_revela import RevelaConfig
from revela_hf.defaults import RECIPE_FREEZE_LM, RECIPE_INBATCH_LAYERS, RECIPE_RETRIEVER_LORA_R, RECIPE_TEMPERATURE
from revela_hf.io import is_ours
from revela_hf.modeling_revela import RevelaForCausalLM
from revela_hf.objectives.registry import get_objective
from revela_hf.retriever import SETTINGS_FILE, RevelaRetriever
from revela_hf.trainer import RETRIEVER_SUBFOLDER, RevelaTrainer, RevelaTrainingArguments

TRAINER_STATE = "trainer_state.json"
logger = logging.getLogger(__name__)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelSpec:
    """What to build: LM and retriever folders, LoRA ranks, which LM layers get the in-batch term.

    Its defaults are the training recipe's (`revela_hf.defaults`, shared with `revela train` and `revela demo`):
    a frozen LM, the in-batch term in its top 4 layers, tau = 1e-3, a LoRA retriever of rank 16. They differ from
    `RevelaConfig`'s, which are the paper's (tau = 1e-4, the LM trained too).

    `share_base`: the retriever's LoRA adapter sits on the LM's own frozen weights (one copy in
    memory); `retriever` is then None (the LM's base model, cut to `retriever_layers`) or a
    checkpoint cut from the LM's (the base model its saved adapter names).

    `encoder_retriever`: `retriever` is an existing embedding model with its own tokenizer (e.g.
    all-MiniLM-L6-v2, a BERT): it keeps its `retriever_pooling` (mean), takes no prefixes, and its
    LoRA goes on `encoder_lora_targets` (BERT's attention and dense projections).
    """

    lm: str
    retriever: str | None = None  # None = the LM's folder
    retriever_layers: int | None = None  # keep only the first N retriever layers (fast CPU runs)
    share_base: bool = False
    retriever_lora_r: int = RECIPE_RETRIEVER_LORA_R
    lm_lora_r: int | None = None  # None = no LoRA on the LM
    lora_alpha: int | None = None  # both adapters' alpha; None = 2 x their rank
    lora_dropout: float = 0.0
    freeze_lm: bool = RECIPE_FREEZE_LM
    inbatch_layers: list[int] | None = field(default_factory=lambda: list(RECIPE_INBATCH_LAYERS))
    temperature: float = RECIPE_TEMPERATURE
    encoder_retriever: bool = False
    retriever_pooling: str = "mean"  # with encoder_retriever
    encoder_lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    config_overrides: dict[str, Any] = field(default_factory=dict)


def lora(r: int, *, targets: list[str] | None = None, alpha: int | None = None, dropout: float = 0.0) -> LoraConfig:
    """A LoRA config of rank `r` on `targets` (default: every projection of a decoder layer); alpha 2r unless given."""
    return LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules=targets or LORA_TARGETS)


def build_model(spec: ModelSpec) -> tuple[RevelaForCausalLM, Any]:
    """A RevelaForCausalLM (its LM frozen where `spec.freeze_lm`; its retriever holding its tokenizer) and the LM's
    tokenizer from `spec`."""
    tokenizer = AutoTokenizer.from_pretrained(spec.lm)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(spec.lm, dtype=torch.float32)
    retriever = None  # from_parts copies (or shares) the LM's base model, cut to retriever_layers
    if spec.encoder_retriever:
        if spec.retriever is None or spec.share_base:
            raise ValueError("encoder_retriever needs a retriever folder of its own (and no share_base)")
        retriever = RevelaRetriever.from_backbone(spec.retriever, pooling=spec.retriever_pooling, query_prefix="", passage_prefix="")
    elif spec.retriever is not None:
        retriever_kwargs = {"num_hidden_layers": spec.retriever_layers} if spec.retriever_layers else {}
        retriever = AutoModel.from_pretrained(spec.retriever, dtype=torch.float32, **retriever_kwargs)
    adapter = {"alpha": spec.lora_alpha, "dropout": spec.lora_dropout}
    model = RevelaForCausalLM.from_parts(
        lm,
        retriever,
        lm_lora=lora(spec.lm_lora_r, **adapter) if spec.lm_lora_r and not spec.freeze_lm else None,
        retriever_lora=lora(spec.retriever_lora_r, targets=spec.encoder_lora_targets if spec.encoder_retriever else None,
                            **adapter) if spec.retriever_lora_r else None,
        retriever_layers=spec.retriever_layers if retriever is None else None,
        retriever_tokenizer=None if spec.encoder_retriever else tokenizer,  # an encoder brings its own
        share_base=spec.share_base,
        inbatch_layers=spec.inbatch_layers,
        temperature=spec.temperature,
        **spec.config_overrides,
    )
    if spec.freeze_lm:
        model.lm.requires_grad_(False)
    return model, tokenizer


def train(
    spec: ModelSpec,
    data_dir: str | Path,
    args: RevelaTrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
    evaluator: Callable[[Any], dict[str, float]] | None = None,
    trainer_class: type[RevelaTrainer] = RevelaTrainer,
) -> RevelaTrainer:
    """Train on a `revela prepare` dataset; the retriever ends in `<output_dir>/retriever`. `evaluator` (default:
    one over `args.eval_data`, if set) scores the retriever when the trainer evaluates (`RevelaTrainer`);
    `trainer_class` a `RevelaTrainer` subclass to train with (e.g. one that adds a loss term)."""
    dataset = load_from_disk(str(data_dir))
    if isinstance(dataset, DatasetDict):
        raise ValueError(f"{data_dir} holds a DatasetDict (splits {list(dataset)}); pass the folder of one split")
    if len(dataset) == 0:
        raise ValueError(f"the prepared dataset at {data_dir} holds no group")
    set_seed(args.seed)  # the retriever's and LM's LoRA initialisation too, not only the Trainer's data order
    with _whole_weights(args):
        model, tokenizer = build_model(spec)
    dataset = rows_for_objective(dataset, model.config)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            callbacks=callbacks, evaluator=evaluator)
    last = _last_checkpoint(args.output_dir)
    if last is not None and _finished(last, args.max_steps):
        return _finish_done_run(trainer, last)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(args.output_dir)
    return trainer


@contextmanager
def _whole_weights(args: RevelaTrainingArguments) -> Iterator[None]:
    """Load and assemble the models unpartitioned even when `args` hold a ZeRO-3 config.

    Creating such `TrainingArguments` makes transformers load every later model already partitioned
    (`zero.Init`), which `from_parts` (cutting layers, attaching LoRA, copying the LM as retriever) cannot
    work on; DeepSpeed partitions the finished model when the Trainer starts its engine instead.
    """
    config = getattr(args, "hf_deepspeed_config", None)
    if config is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def rows_for_objective(dataset: Dataset, config: RevelaConfig) -> Dataset:
    """The training rows of `config.objective` from prepared groups: the groups themselves (Revela,
    REPLUG) or DREAM's label-free rows (query = a chunk's first `query_ratio`, candidates = its group)."""
    rows_from_groups = get_objective(config.objective).load_rows_from_groups()
    if rows_from_groups is None or "chunks" not in dataset.column_names:
        return dataset
    return Dataset.from_list(rows_from_groups(dataset, config.query_ratio))


def _last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint of a run, to resume from; what does not parse is skipped with a warning."""
    numbered = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            numbered.append((int(match[1]), path))
        else:
            logger.warning(f"ignoring {path}: not a checkpoint-<step> folder")
    for _, path in sorted(numbered, reverse=True):
        problem = _checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning(f"skipping the checkpoint {path}: {problem}; trying the one before")
    return None


def _checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint folder `path` cannot be resumed from (None if it can)."""
    try:
        TrainerState.load_from_json(str(path / TRAINER_STATE))
    except FileNotFoundError:
        return f"no {TRAINER_STATE} (it was cut short)"
    except (OSError, ValueError, TypeError) as err:
        return f"{TRAINER_STATE} is unreadable ({type(err).__name__}: {err})"
    retriever = path / RETRIEVER_SUBFOLDER
    if not (is_ours(retriever) or (retriever / SETTINGS_FILE).is_file()):
        return f"{retriever} is missing or incomplete"
    return None


def _finished(checkpoint: str, max_steps: int) -> bool:
    return max_steps > 0 and TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE)).global_step >= max_steps


def _finish_done_run(trainer: RevelaTrainer, checkpoint: str) -> RevelaTrainer:
    """A run whose last checkpoint reached max_steps trains no further: load that checkpoint (the best one with
    `load_best_model_at_end`, as the run ended on) and, if the final retriever was not saved (e.g. the process was
    killed while saving it), save it now."""
    output = Path(trainer.args.output_dir)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE))
    best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    trainer._load_from_checkpoint(best or checkpoint)
    if is_ours(output / RETRIEVER_SUBFOLDER):
        logger.warning(f"the run in {output} already finished ({trainer.state.global_step} steps, max_steps "
                       f"{trainer.args.max_steps}): nothing to train (raise max_steps to continue it); its retriever is "
                       f"{output / RETRIEVER_SUBFOLDER}")
    else:
        logger.warning(f"the run in {output} reached max_steps at {checkpoint}; saving its final retriever")
        trainer.save_model(str(output))
    return trainer
