"""`RevelaTrainingArguments` and `RevelaTrainer`: a `transformers.Trainer` for in-batch LM training."""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import speed_metrics

from revela_hf.checkpoint import has_trainable_state, load_trainable_state, save_trainable_state, trainable_parameters
from revela_hf.dependency_versions import check_versions
from revela_hf.io import fault_point

if TYPE_CHECKING:
    from revela_hf.model_card import CardInfo
    from revela_hf.retriever import RevelaRetriever

RETRIEVER_SUBFOLDER = "retriever"
MIN_LENGTH = 2  # LM tokens per chunk: one to predict, then EOS
logger = logging.getLogger(__name__)


@dataclass
class RevelaTrainingArguments(TrainingArguments):
    r"""[`TrainingArguments`] for [`RevelaTrainer`], with the defaults of in-batch training and a few fields of its own.

    One optimisation example is one GROUP of chunks, so a device step takes exactly one group
    (`per_device_train_batch_size=1`); use `gradient_accumulation_steps` for more groups per update (the paper:
    8 steps on each of 4 GPUs). Every other [`TrainingArguments`] field keeps its meaning and default. Building the
    arguments checks the installed versions of the stack (deepspeed's too, when `deepspeed` is set). Below are the
    fields this class adds and those whose default it changes; the `help` of each field (what
    `revela train --help` prints) says the same in short.

    Args:
        per_device_train_batch_size (`int`, *optional*, defaults to 1):
            Groups per device step. [`RevelaTrainer`] accepts only 1 (TrainingArguments' default is 8).
        learning_rate (`float`, *optional*, defaults to 1e-4):
            The initial learning rate, the paper's (TrainingArguments' default is 5e-5).
        max_length (`int`, *optional*, defaults to 160):
            Added. LM tokens per chunk, EOS included (the paper's 160); longer chunks are truncated by the data
            collator. [`RevelaTrainer`] requires at least 2 (a token to predict, then EOS). For DREAM rows it caps
            each candidate.
        retriever_max_length (`int`, *optional*, defaults to 160):
            Added. Retriever tokens per query and per passage, prefix and EOS included, in the training batches
            the data collator builds (the retriever's own `max_length` applies when it encodes text).
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Dataset rows hold text that the data collator tokenises, so no column is dropped before it sees them
            (TrainingArguments' default is `True`).
        logging_steps (`int` or `float`, *optional*, defaults to 10):
            Log every `logging_steps` update steps, or, below 1, that fraction of the total (TrainingArguments'
            default is 500).
        eval_data (`str`, *optional*):
            Added. A BEIR folder (its `test` split) to evaluate the retriever on: [`RevelaTrainer`] then builds a
            `RetrievalEvaluator.from_beir(eval_data)`, whose scores are logged as `eval_<folder name>_ndcg@10` and
            so on. Evaluation runs when `evaluate()` is called or, during training, as `eval_strategy` says.
        base_model (`str`, *optional*):
            Added. The Hub id of the retriever's base model (e.g. `"HuggingFaceTB/SmolLM2-135M"`) when its backbone
            loads from a local folder: the retriever's model card names it, and `push_to_hub` points the adapter
            at it. The local run keeps loading from the folder.

    Example:

    ```python
    >>> from revela_hf import RevelaTrainingArguments

    >>> args = RevelaTrainingArguments(output_dir="revela-run", gradient_accumulation_steps=8, max_length=128)
    >>> args.per_device_train_batch_size, args.learning_rate, args.retriever_max_length
    (1, 0.0001, 160)

    ```
    """

    _argument_group_name = "training (RevelaTrainingArguments: TrainingArguments with in-batch defaults)"

    per_device_train_batch_size: int = field(default=1, metadata={"help": "Groups per device step (must be 1)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "The initial learning rate (the paper's: 1e-4)."})
    max_length: int = field(
        default=160, metadata={"help": "LM tokens per chunk, EOS included (the paper: 160; at least 2)."}
    )
    retriever_max_length: int = field(
        default=160, metadata={"help": "Retriever tokens per query/passage in training batches, prefix and EOS included."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Rows hold text; the collator tokenises."})
    logging_steps: float = field(
        default=10, metadata={"help": "Log every N update steps (below 1: that fraction of the total)."}
    )
    eval_data: str | None = field(
        default=None,
        metadata={"help": "BEIR folder the retriever is evaluated on (metrics eval_<folder name>_ndcg@10, ...)."},
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of the retriever's base model, for its model card and push_to_hub (the backbone "
                          "may load from a local folder)."},
    )

    def __post_init__(self) -> None:
        check_versions(("deepspeed",) if self.deepspeed else ())  # before deepspeed's config is read
        super().__post_init__()


class RevelaTrainer(Trainer):
    r"""A [`Trainer`] that trains a [`RevelaForCausalLM`] (LM and retriever together) on groups of raw-text chunks.

    Each dataset row is one group, e.g. `{"chunks": [...B texts], "sources"?: [...], "doc_ids"?: [...]}` as
    `revela prepare` writes them (for `objective="dream"`, DREAM rows: see [`DreamDataCollator`]); the data collator
    turns one row into one training step's batch. Besides the loss it logs `sim_entropy` (mean entropy of the Sim
    rows in nats: high means undecided), `sim_max` (mean largest weight) and, when rows have `doc_ids`,
    `top1_same_doc` (share of chunks whose top neighbour comes from the same document).

    Every checkpoint (and the folder `save_model` writes) holds the trainable state only, never a copy of frozen
    weights: the trainable tensors (`revela_trainable.safetensors`), the config, the tokenizer, the training
    arguments, the optimizer, scheduler and RNG states in checkpoints, and the retriever in its own `retriever/`
    sub-folder, which [`RevelaRetriever.from_pretrained`] loads. Resuming rebuilds the frozen weights from the model
    folders the config names. This holds under DeepSpeed ZeRO-3 too, where the shards are gathered before saving.

    Evaluation scores the retriever, not the LM: `evaluate()` (and, during training, `eval_strategy="steps"` with
    `eval_steps=N`) runs `evaluator` on `model.retriever` and logs its scores with the `eval_` prefix, e.g.
    `eval_<name>_ndcg@10`, which `metric_for_best_model` and `load_best_model_at_end` can use.

    `push_to_hub()` (and, with `push_to_hub=True`, every save unless `hub_strategy="end"`) uploads the
    retriever alone to the root of `hub_model_id`, with its card and `base_model` as the Hub id: the repository loads
    like any retriever (`RevelaRetriever.from_pretrained`, sentence-transformers, peft); the LM, the run's trainable
    state and the checkpoints stay local.

    Args:
        model ([`RevelaForCausalLM`]):
            The model to train.
        args ([`RevelaTrainingArguments`], *optional*):
            The training arguments. Defaults to `RevelaTrainingArguments(output_dir="revela-output")`.
            `per_device_train_batch_size` must be 1 and `max_length` at least 2.
        train_dataset (`datasets.Dataset` or `torch.utils.data.Dataset`, *optional*):
            The training rows, one group per row.
        eval_dataset (`datasets.Dataset` or `torch.utils.data.Dataset`, *optional*):
            Rows for the [`Trainer`]'s own evaluation (the model's loss on them). Cannot be combined with an
            `evaluator` or `args.eval_data`.
        processing_class ([`PreTrainedTokenizerBase`], *optional*):
            The LM's tokenizer. Required unless a `data_collator` is given; saved with every checkpoint. The retriever
            reads with its own (`model.retriever.tokenizer`, given at construction) and, where it holds none (a
            retriever cut from the LM), with this one; the model is never changed.
        data_collator (`Callable`, *optional*):
            Turns a list of one row into model inputs. Defaults to the collator of `model.config.objective`
            ([`DreamDataCollator`] for `"dream"`, [`RevelaDataCollator`] otherwise) with the config's retriever
            settings and `args.max_length` / `args.retriever_max_length`.
        evaluator (`Callable[[RevelaRetriever], dict[str, float]]`, *optional*):
            Scores a retriever, e.g. a `RetrievalEvaluator`. Defaults to
            `RetrievalEvaluator.from_beir(args.eval_data)` when `args.eval_data` is set. Takes the place of an
            `eval_dataset`.
        kwargs:
            Passed on to [`Trainer`] (e.g. `callbacks`).

    Example:

    ```python
    >>> import tempfile
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import LlamaConfig, PreTrainedTokenizerFast
    >>> from revela_hf import RevelaConfig, RevelaForCausalLM, RevelaRetriever, RevelaTrainer, RevelaTrainingArguments

    >>> words = "[PAD] [UNK] [EOS] Query: Passage: the cat sat on a mat dog ran in park".split()
    >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    >>> backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    >>> tokenizer = PreTrainedTokenizerFast(
    ...     tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    ... )
    >>> lm_config = LlamaConfig(
    ...     vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...     num_attention_heads=4, pad_token_id=0, bos_token_id=None, eos_token_id=2,
    ... )
    >>> model = RevelaForCausalLM(RevelaConfig(lm_config=lm_config))

    >>> # Four groups of four chunks each; a real run reads the rows `revela prepare` writes
    >>> groups = [{"chunks": ["the cat sat on a mat", "a dog ran in the park", "the cat ran", "a dog sat"]}] * 4
    >>> with tempfile.TemporaryDirectory() as output_dir:  # doctest: +ELLIPSIS
    ...     args = RevelaTrainingArguments(output_dir=output_dir, max_steps=2, max_length=16, report_to="none")
    ...     trainer = RevelaTrainer(model, args, train_dataset=groups, processing_class=tokenizer)
    ...     train_result = trainer.train()  # prints the run's metrics
    ...     trainer.save_model()  # the trainable state, and the retriever in retriever/
    ...     retriever = RevelaRetriever.from_pretrained(f"{output_dir}/retriever")
    {'train_runtime': ...}
    >>> train_result.global_step
    2

    ```
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: RevelaTrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        data_collator: Any = None,
        evaluator: Callable[[Any], dict[str, float]] | None = None,
        **kwargs: Any,
    ) -> None:
        args = args or RevelaTrainingArguments(output_dir="revela-output")
        if evaluator is None and getattr(args, "eval_data", None):
            from revela_hf.evaluation.evaluator import RetrievalEvaluator

            evaluator = RetrievalEvaluator.from_beir(args.eval_data)
        if evaluator is not None and eval_dataset is not None:
            raise ValueError("RevelaTrainer evaluates with an evaluator (or args.eval_data) or on an eval_dataset, not both")
        self.evaluator = evaluator
        if args.per_device_train_batch_size != 1:
            raise ValueError(
                "RevelaTrainer trains on one group per device step: set per_device_train_batch_size=1 and use "
                f"gradient_accumulation_steps (got per_device_train_batch_size={args.per_device_train_batch_size})"
            )
        if args.max_length < MIN_LENGTH:
            raise ValueError(f"max_length must be at least {MIN_LENGTH} (a token to predict and EOS), got {args.max_length}")
        if data_collator is None:
            if processing_class is None:
                raise ValueError("RevelaTrainer needs the LM tokenizer as processing_class (or a data_collator)")
            from revela_hf.objectives import data_collator_for

            data_collator = data_collator_for(
                model.config,
                processing_class,
                model.retriever.tokenizer,
                max_length=args.max_length,
                retriever_max_length=args.retriever_max_length,
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # The loss is a per-group mean; let the Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self._group_metrics: dict[str, list[float]] = defaultdict(list)
        self._training_data: tuple[str, list[str]] | None = None  # the card's training data in words and samples, read once

    def _validate_args(self) -> None:
        # An evaluator takes the place of the eval_dataset the Trainer asks for with an eval_strategy.
        eval_dataset = self.eval_dataset
        if self.evaluator is not None:
            self.eval_dataset = self.evaluator
        try:
            super()._validate_args()
        finally:
            self.eval_dataset = eval_dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        same_document = inputs.pop("same_document", None)
        outputs = model(**inputs)
        self._record_group_metrics(outputs.inbatch_weights, same_document)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    @torch.no_grad()
    def _record_group_metrics(self, weights: torch.Tensor, same_document: torch.Tensor | None) -> None:
        w = weights.detach().float()  # (B, B)
        entropy = -(w * w.clamp_min(1e-12).log()).sum(dim=-1)
        self._group_metrics["sim_entropy"].append(entropy.mean().item())
        self._group_metrics["sim_max"].append(w.max(dim=-1).values.mean().item())
        if same_document is not None:
            top1 = w.argmax(dim=-1)
            hits = same_document.to(top1.device)[torch.arange(len(top1), device=top1.device), top1]
            self._group_metrics["top1_same_doc"].append(hits.float().mean().item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs or "train_loss" in logs:  # the group metrics go with the training loss, not an evaluation
            for key, values in self._group_metrics.items():
                if values:
                    logs[key] = round(sum(values) / len(values), 4)
            self._group_metrics.clear()
        super().log(logs, start_time)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Score `model.retriever` with the evaluator (in eval mode, without gradients) and log the scores as
        `f"{metric_key_prefix}_{key}"`, with `{metric_key_prefix}_runtime`. Without an evaluator, or given an
        `eval_dataset`, the Trainer's own evaluation."""
        if self.evaluator is None or eval_dataset is not None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        self._memory_tracker.start()
        start_time = time.time()
        retriever = self._retriever(self.accelerator.unwrap_model(self.model))
        with _eval_mode(retriever), torch.no_grad():
            scores = self.evaluator(retriever)
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in scores.items()}
        metrics.update(speed_metrics(metric_key_prefix, start_time))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write the trainable state and no frozen weight: the trainable tensors (`revela_trainable.safetensors`,
        see `revela_hf.checkpoint`), the config naming the model folders, the tokenizer, the training arguments
        and `retriever/`. The Trainer's `state_dict` (a consolidated copy of every weight under DeepSpeed) is
        not needed: the trainable parameters are read from the model."""
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        # Every rank calls `_save`. Under DeepSpeed ZeRO-3 each holds only a shard of every parameter
        # (reading them directly writes EMPTY tensors), so all ranks gather what is written, then the main
        # process alone writes it.
        with _gathered(_saved_parameters(model)):
            if self.args.should_save:
                os.makedirs(output_dir, exist_ok=True)
                save_trainable_state(model, output_dir)
                model.config.save_pretrained(output_dir)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(output_dir)
                torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
                self._retriever(model).save_pretrained(os.path.join(output_dir, RETRIEVER_SUBFOLDER), card=self._card_info(model))
        fault_point("trainer:saved")  # model and retriever written; a checkpoint's optimizer and state not yet

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Save the model, then upload its retriever (see the class docstring) to `args.hub_model_id` (default: the
        output folder's name); returns the commit URL on the main process. The upload always blocks (`blocking` is
        accepted for the Trainer's signature); `kwargs` (the Trainer's model-card fields) are not used: the
        retriever's card comes from the run."""
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        return self._upload_retriever(commit_message or "End of training", token, revision or self.args.hub_revision)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self.args.hub_strategy != "end":
            self._upload_retriever(f"Training in progress, step {self.state.global_step}", self.args.hub_token, self.args.hub_revision)

    def _upload_retriever(self, commit_message: str, token: str | None, revision: str | None) -> str | None:
        """Upload the retriever from the main process (its ZeRO-3 shards gathered: every process calls this)."""
        model = self.accelerator.unwrap_model(self.model)
        with _gathered(_saved_parameters(model)):
            if not self.is_world_process_zero():
                return None
            self.callback_handler.on_push_begin(self.args, self.state, self.control)
            return self._retriever(model).push_to_hub(self.hub_model_id, token=token, commit_message=commit_message,
                                                      card=self._card_info(model), revision=revision)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Copy a checkpoint's trainable tensors into the model, whose frozen weights come from its model
        folders (TrainableStateMismatchError if they do not fit); a checkpoint holding a full
        `model.safetensors` (written before adapter-only checkpoints) loads as the Trainer loads it."""
        if not has_trainable_state(resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        logger.info(f"Loading the trainable parameters from {resume_from_checkpoint}")
        load_trainable_state(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)

    def _load_best_model(self) -> None:
        # Under DeepSpeed the Trainer reloads the best checkpoint from the engine's own state.
        if self.is_deepspeed_enabled or not has_trainable_state(self.state.best_model_checkpoint):
            super()._load_best_model()
        else:
            self._load_from_checkpoint(self.state.best_model_checkpoint)

    def _weights_step(self) -> int:
        """The step the model's weights were trained to: the best checkpoint's once `load_best_model_at_end` restored
        it at the end of training, else the current step."""
        best = self.args.load_best_model_at_end and not self.is_in_train and self.state.best_global_step
        return self.state.best_global_step if best else self.state.global_step

    def _retriever(self, model: torch.nn.Module) -> RevelaRetriever:
        """What evaluation, saving and upload encode with: `model.retriever`, reading with the LM's tokenizer where
        it holds none of its own."""
        return model.retriever.with_default_tokenizer(self.processing_class)

    def _card_info(self, model: torch.nn.Module) -> CardInfo:
        """The retriever's `CardInfo`, from the run itself: the objective and its settings, whether the LM trained,
        the LoRA settings, the training arguments (non-default ones and all), the training data in words, the base model's Hub id, the
        framework versions, the hardware and the time of the last `train()` call, and from `state.log_history`
        (so a resumed run's card holds what was logged before the interruption) the training logs and the
        evaluation of the saved weights (the last one at or before their step, see `_weights_step`)."""
        from revela_hf.environment import accelerator, cpu_name
        from revela_hf.model_card import (dataset_samples, dataset_summary, evaluation_at, framework_versions, lora_summary,
                                          training_arguments, training_logs)
        from revela_hf.objectives import card_info

        if self._training_data is None and self.train_dataset is not None:
            self._training_data = dataset_summary(self.train_dataset), dataset_samples(self.train_dataset)
        summary, samples = self._training_data or ("", [])
        args, state = self.args, self.state
        non_default, every = training_arguments(args)
        config = model.config
        loras = {part: getattr(config, f"{part}_lora") for part in ("retriever", "lm")}
        hyperparameters = {
            "lm_frozen": model.lm_is_frozen,
            **{f"{part}_lora": lora_summary(lora) for part, lora in loras.items() if lora},
            "groups_per_update": args.gradient_accumulation_steps * args.world_size,
            "steps": state.global_step,
            **non_default,
        }
        logs = training_logs(state.log_history)
        evaluated = evaluation_at(logs, self._weights_step()) if self.evaluator is not None else None
        results = {}
        if evaluated is not None:  # scores keyed "eval_<name>_ndcg@10" in the log, "ndcg@10" under the name in the card
            name = getattr(self.evaluator, "name", "")
            prefix = f"eval_{name}_" if name else "eval_"
            scores = {k.removeprefix(prefix): v for k, v in evaluated.items() if k.startswith(prefix) and not k.endswith("loss")}
            results = {name or "evaluation": scores}
        runtime = next((entry["train_runtime"] for entry in reversed(state.log_history) if "train_runtime" in entry), None)
        time = {} if runtime is None else {  # the Trainer times one train() call, from the step it started (resumed) at
            "seconds": runtime, "from_step": getattr(self, "_initial_global_step", 0), "to_step": state.global_step}
        hardware = {"cpu": cpu_name(), "accelerator": accelerator(args.device), "processes": str(args.world_size)}
        return card_info(config, hyperparameters=hyperparameters, all_hyperparameters=every, eval_results=results,
                         evaluated_at_step=evaluated["step"] if evaluated else None, training_logs=logs, hardware=hardware,
                         training_time=time, base_model=args.base_model, training_summary=summary,
                         training_samples=samples, framework_versions=framework_versions())


def _saved_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters `RevelaTrainer._save` writes: the trainable ones, and those the retriever folder stores
    (the adapter's when a PEFT adapter is attached, else all of the backbone's)."""
    backbone = model.retriever.backbone
    adapters = tuple(getattr(backbone, "peft_config", {}) or {}) if getattr(backbone, "_hf_peft_config_loaded", False) else ()
    retriever = [p for n, p in backbone.named_parameters() if not adapters or any(f".{a}." in f".{n}." for a in adapters)]
    return list({id(p): p for p in [*trainable_parameters(model).values(), *retriever]}.values())


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """`module` in eval mode for the duration, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextmanager
def _gathered(params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Gather the ZeRO-3-partitioned `params` on every rank for the duration; a no-op without ZeRO-3.
    A collective call: every rank must enter it."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield
