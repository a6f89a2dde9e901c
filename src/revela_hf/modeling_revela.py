"""`RevelaForCausalLM`: a decoder LM with similarity-weighted in-batch attention and an attached retriever.

One training example is a group of B chunks. The retriever scores every pair (Sim, `(B, B)`); the
LM runs twice: a clean pass records each selected layer's key/value (the e-stream), then a
second pass (the h-stream) adds `sum_j Sim(i, j) * b_ij` in those layers and computes the
next-token loss. The gradient of that loss reaches the retriever only through Sim.

With `config.share_base` the retriever backbone holds the LM's own base-model parameters (one copy
in memory) in modules of its own, so its LoRA adapter wraps only the retriever's modules.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from accelerate import init_empty_weights
from peft import LoraConfig
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from revela_hf.attention import InBatchContext, enable_inbatch_attention
from revela_hf.configuration_revela import RevelaConfig
from revela_hf.modeling_outputs import RevelaOutput
from revela_hf.objectives.registry import get_objective
from revela_hf.ops import check_inbatch_weights, similarity_weights
from revela_hf.retriever import RevelaRetriever, base_model_of


class RevelaPreTrainedModel(PreTrainedModel):
    config_class = RevelaConfig
    base_model_prefix = "revela"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # Sub-models initialise their own weights; delegate to the one that owns `module`.
        for sub in (self.lm, self.retriever.backbone):
            if any(m is module for m in sub.modules()):
                sub._init_weights(module)
                return

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict[str, str]:
        # transformers reads `_tied_weights_keys` only when the config ties word embeddings; the
        # `share_base` ties (set by `__init__`) hold regardless, so saving drops the retriever's
        # names of the shared weights and loading points them back at the LM's.
        return {**super().get_expanded_tied_weights_keys(all_submodels), **(self._tied_weights_keys or {})}


class RevelaForCausalLM(RevelaPreTrainedModel):
    r"""A causal language model trained together with a retriever through in-batch attention (Revela).

    One training example is a group of B text chunks. The retriever (`model.retriever`, a [`RevelaRetriever`]) embeds
    every chunk as a query and as a passage and turns their cosines into in-batch weights Sim `(B, B)`. The LM
    (`model.lm`) then runs twice: a clean pass records the keys and values of the layers in
    `config.inbatch_layers`, and a second pass adds, in those layers, the attention of chunk i over every other
    chunk j weighted by Sim(i, j), and computes the next-token loss. That loss reaches the retriever only through
    Sim, so the retriever learns which chunks help the LM predict a chunk. With `config.objective` set to
    `"replug"` or `"dream"` the same model trains the retriever alone against a frozen LM instead (see
    `revela_hf.objectives`). After training, `model.retriever` is the dense retriever to keep.

    Args:
        config ([`RevelaConfig`]):
            Model configuration. Built from the configuration alone, both networks are randomly initialised; use
            [`RevelaForCausalLM.from_parts`] to start from pretrained models.
        lm ([`PreTrainedModel`], *optional*):
            The causal LM to use instead of a new one built from `config.lm_config`. Its attention layers are patched
            to take the in-batch term.
        retriever_backbone ([`PreTrainedModel`], *optional*):
            The base model the retriever encodes with, instead of a new one built from `config.retriever_config`.
            Must be left unset with `config.share_base`, where the backbone is built on the LM's own weights.
        retriever_tokenizer ([`PreTrainedTokenizerBase`], *optional*):
            The tokenizer `model.retriever` encodes texts with (`encode_queries`, `save_pretrained`). A retriever cut
            from the LM reads the LM's tokens; [`RevelaTrainer`] then lends it the LM's tokenizer when none is given.

    Example:

    ```python
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import LlamaConfig, PreTrainedTokenizerFast
    >>> from revela_hf import RevelaConfig, RevelaDataCollator, RevelaForCausalLM

    >>> # A word-level tokenizer built in memory (ids 0-2 are [PAD], [UNK], [EOS])
    >>> words = "[PAD] [UNK] [EOS] Query: Passage: the cat sat on a mat dog ran in park".split()
    >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    >>> backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    >>> tokenizer = PreTrainedTokenizerFast(
    ...     tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    ... )

    >>> # A tiny 2-layer LM; the retriever gets the same architecture
    >>> lm_config = LlamaConfig(
    ...     vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...     num_attention_heads=4, pad_token_id=0, bos_token_id=None, eos_token_id=2,
    ... )
    >>> model = RevelaForCausalLM(RevelaConfig(lm_config=lm_config))

    >>> # One group of B = 3 chunks -> LM inputs and retriever inputs
    >>> collator = RevelaDataCollator.from_model_config(tokenizer, None, model.config)
    >>> batch = collator([{"chunks": ["the cat sat on a mat", "a dog ran in the park", "the cat ran"]}])
    >>> outputs = model(**batch)
    >>> outputs.logits.shape  # (B, L, vocab)
    torch.Size([3, 7, 15])
    >>> outputs.inbatch_weights.shape  # Sim, (B, B): each row sums to 1, zero on the diagonal
    torch.Size([3, 3])

    >>> # The next-token loss trains the retriever too
    >>> outputs.loss.backward()
    >>> model.retriever.backbone.embed_tokens.weight.grad is not None
    True

    ```
    """

    def __init__(
        self,
        config: RevelaConfig,
        lm: PreTrainedModel | None = None,
        retriever_backbone: PreTrainedModel | None = None,
        retriever_tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__(config)
        # The configured objective's own forward (REPLUG, DREAM), resolved once; None = the in-batch pass below.
        self._objective_forward = get_objective(config.objective).load_forward()
        self.lm = lm if lm is not None else AutoModelForCausalLM.from_config(config.lm_config)
        enable_inbatch_attention(self.lm)
        if config.share_base:
            if retriever_backbone is not None:
                raise ValueError("with share_base the retriever backbone is built on the LM's base model; pass none")
            backbone = shared_base_model(base_model_of(self.lm), config.retriever_config)
        elif retriever_backbone is not None:
            backbone = retriever_backbone
        else:
            backbone = AutoModel.from_config(config.retriever_config)
        if backbone.config._attn_implementation is None:  # composite-config init leaves sub-models unset
            backbone.set_attn_implementation("sdpa" if backbone._supports_sdpa else "eager")
        self.retriever = RevelaRetriever(
            backbone,
            retriever_tokenizer,
            pooling=config.pooling,
            query_prefix=config.query_prefix,
            passage_prefix=config.passage_prefix,
            max_length=config.retriever_max_length,
        )
        if config.share_base:  # the shared base weights stay fixed: the LM trains through `lm_lora` or not at all
            self.lm.requires_grad_(False)
        if config.lm_lora is not None:
            self.lm.add_adapter(LoraConfig(**config.lm_lora))
        if config.retriever_lora is not None:
            self.retriever.backbone.add_adapter(LoraConfig(**config.retriever_lora))
        if config.share_base:
            self._tied_weights_keys = self._shared_weight_names()
        self.post_init()
        # What the config makes trainable (adapters only where LoRA is set, no shared base weight): weight loading
        # replaces every parameter with a new, trainable one, so `from_pretrained` puts these flags back. Freezing
        # the LM (`model.lm.requires_grad_(False)`) is a training choice, made after construction, as in transformers.
        self._trainable_names = frozenset(name for name, param in self.named_parameters() if param.requires_grad)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> RevelaForCausalLM:
        """`PreTrainedModel.from_pretrained`, then the trainable parameters the config sets (LoRA adapters only)."""
        model = super().from_pretrained(*args, **kwargs)
        for name, param in model.named_parameters():
            param.requires_grad_(name in model._trainable_names)
        return model

    @classmethod
    def from_parts(
        cls,
        lm: PreTrainedModel,
        retriever: PreTrainedModel | RevelaRetriever | None = None,
        lm_lora: LoraConfig | dict | None = None,
        retriever_lora: LoraConfig | dict | None = None,
        retriever_layers: int | None = None,
        retriever_tokenizer: PreTrainedTokenizerBase | None = None,
        **config_kwargs,
    ) -> RevelaForCausalLM:
        """Build from a pretrained causal LM and a retriever backbone.

        retriever None: the LM's base model, cut to its first `retriever_layers` layers when given;
        a copy of it, or with `share_base=True` its very weights (one copy in memory). A
        `RevelaRetriever` brings its pooling, prefixes and max length into the config. With
        `share_base=True` a given retriever must hold the LM's base weights (e.g. a checkpoint cut
        from the LM's): its config is kept, so the saved adapter names that checkpoint as its base
        model, and its weights give way to the LM's. `retriever_tokenizer` becomes `model.retriever.tokenizer`
        (default: a given `RevelaRetriever`'s own).
        """
        base = base_model_of(lm)
        share_base = config_kwargs.get("share_base", False)
        if retriever is None:
            retriever_config = first_layers_config(base.config, retriever_layers)
            backbone = None if share_base else copy.deepcopy(shared_base_model(base, retriever_config))
        else:
            if retriever_layers is not None:
                raise ValueError("retriever_layers cuts the LM's base model; load a given retriever with num_hidden_layers=N")
            if isinstance(retriever, RevelaRetriever):
                backbone = retriever.backbone
                retriever_tokenizer = retriever_tokenizer or retriever.tokenizer
                for key, value in retriever.settings().items():
                    config_kwargs.setdefault("retriever_max_length" if key == "max_length" else key, value)
                config_kwargs.pop("normalize", None)
            else:
                backbone = base_model_of(retriever)
            retriever_config = backbone.config
            if share_base:
                _check_holds_base_weights(backbone, base)
                backbone = None
        config = RevelaConfig(
            lm_config=lm.config,
            retriever_config=retriever_config,
            lm_lora=_lora_dict(lm_lora),
            retriever_lora=_lora_dict(retriever_lora),
            **config_kwargs,
        )
        return cls(config, lm=lm, retriever_backbone=backbone, retriever_tokenizer=retriever_tokenizer)

    def _shared_weight_names(self) -> dict[str, str]:
        """{retriever parameter name: LM parameter name} of every parameter the two hold in common."""
        lm_names: dict[int, str] = {}
        for name, param in self.lm.named_parameters(prefix="lm", remove_duplicate=False):
            lm_names.setdefault(id(param), name)
        named = self.retriever.named_parameters(prefix="retriever", remove_duplicate=False)
        return {name: lm_names[id(param)] for name, param in named if id(param) in lm_names}

    @property
    def lm_is_frozen(self) -> bool:
        """Whether no LM weight trains (`model.lm.requires_grad_(False)`, or a shared base without `lm_lora`): the
        clean pass then runs without gradients and a top block of `inbatch_layers` is all the in-batch pass runs."""
        return not any(param.requires_grad for param in self.lm.parameters())

    # ------------------------------------------------------------------ plain-LM plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def generate(self, *args, **kwargs):
        """Generate with the LM alone (no in-batch context)."""
        return self.lm.generate(*args, **kwargs)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Checkpoint the decoder layers of the LM and the retriever (what `gradient_checkpointing=True` in the
        Trainer calls). Non-reentrant only: Sim reaches the layers inside the in-batch context, a keyword
        argument that reentrant checkpointing does not differentiate through."""
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        if kwargs["use_reentrant"]:
            raise ValueError("in-batch training needs non-reentrant checkpointing: use_reentrant=False")
        super().activation_checkpointing_enable(kwargs, every_n_layers=every_n_layers, offload=offload)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        query_input_ids: torch.LongTensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        passage_input_ids: torch.LongTensor | None = None,
        passage_attention_mask: torch.Tensor | None = None,
        inbatch_weights: torch.Tensor | None = None,
        detach_clean_kv: bool = False,
        **kwargs,
    ) -> RevelaOutput:
        r"""Run one group of chunks through the retriever and the in-batch LM, and compute the loss.

        With `config.objective="revela"` the retriever scores the group (unless `inbatch_weights` are given), the LM
        runs its clean pass and then the in-batch pass, and the loss is the next-token loss of that second pass.
        Without retriever inputs and without weights this is a plain LM forward. With another `config.objective`,
        and retriever inputs or weights given, the call goes to that objective's forward (`revela_hf.objectives`),
        which documents its own inputs and output.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`):
                Token ids of the B chunks of one group, one chunk per row (right padding, as
                [`RevelaDataCollator`] builds them).
            attention_mask (`torch.Tensor` of shape `(B, L)`, *optional*):
                1 on real tokens, 0 on padding. Padding tokens of chunk j are also masked out of the attention of
                the other chunks over chunk j.
            labels (`torch.LongTensor` of shape `(B, L)`, *optional*):
                Next-token targets, -100 where no loss is taken (usually `input_ids` with -100 on padding; the LM
                shifts them itself). Without labels no loss is computed.
            query_input_ids (`torch.LongTensor` of shape `(B, Lq)`, *optional*):
                The retriever's query side of every chunk (its prefix and first part, EOS-ended for `"eos"`
                pooling).
            query_attention_mask (`torch.Tensor` of shape `(B, Lq)`, *optional*):
                Attention mask of `query_input_ids`.
            passage_input_ids (`torch.LongTensor` of shape `(B, Lp)`, *optional*):
                The retriever's passage side of every chunk (its prefix and the whole chunk). Needed whenever
                `query_input_ids` are given.
            passage_attention_mask (`torch.Tensor` of shape `(B, Lp)`, *optional*):
                Attention mask of `passage_input_ids`.
            inbatch_weights (`torch.Tensor` of shape `(B, B)`, *optional*):
                Weights to use instead of the retriever's Sim (ablations, oracle tests); the retriever then does not
                run. They must be floating point, finite and non-negative, and each row must sum to 1 (or be all
                zero: no in-batch context for that chunk). B must be at least 2.
            detach_clean_kv (`bool`, *optional*, defaults to `False`):
                Whether to stop gradients through the keys and values the clean pass records (a trainable LM then
                learns through the in-batch pass alone; cheaper, see `benchmarks/passes.py`).
            kwargs:
                Passed on to the LM in a plain LM forward, and to the objective's forward for `"replug"` and
                `"dream"` (e.g. DREAM's `candidate_spans` and `candidate_mask`).

        Returns:
            [`RevelaOutput`]: `loss` (the next-token loss of the in-batch pass, when `labels` are given), `logits`
            `(B, L, vocab_size)`, `similarity` (the retriever's cosines `(B, B)`; `None` when `inbatch_weights` were
            given) and `inbatch_weights` (the `(B, B)` weights used). A plain LM forward fills `loss` and `logits`
            only. The other objectives return a [`ReplugOutput`] or a [`DreamOutput`].

        Example:

        ```python
        >>> import torch
        >>> from transformers import LlamaConfig
        >>> from revela_hf import RevelaConfig, RevelaForCausalLM

        >>> lm_config = LlamaConfig(
        ...     vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
        ... )
        >>> model = RevelaForCausalLM(RevelaConfig(lm_config=lm_config))
        >>> input_ids = torch.randint(3, 32, (4, 10))  # a group of B = 4 chunks of 10 tokens

        >>> # In-batch pass with given weights: each chunk reads the next one
        >>> weights = torch.roll(torch.eye(4), shifts=1, dims=1)
        >>> outputs = model(input_ids, labels=input_ids, inbatch_weights=weights)
        >>> outputs.logits.shape, outputs.similarity is None
        (torch.Size([4, 10, 32]), True)

        >>> # No retriever inputs and no weights: a plain LM forward
        >>> model(input_ids, labels=input_ids).inbatch_weights is None
        True

        ```
        """
        if inbatch_weights is None and query_input_ids is None:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
            return RevelaOutput(loss=out.loss, logits=out.logits)
        if self._objective_forward is not None:  # REPLUG / DREAM: revela_hf.objectives
            return self._objective_forward(
                self, input_ids=input_ids, attention_mask=attention_mask, labels=labels, query_input_ids=query_input_ids,
                query_attention_mask=query_attention_mask, passage_input_ids=passage_input_ids,
                passage_attention_mask=passage_attention_mask, inbatch_weights=inbatch_weights, **kwargs,
            )
        similarity = None
        if inbatch_weights is None:
            if passage_input_ids is None:
                raise ValueError("query_input_ids were given without passage_input_ids")
            similarity, inbatch_weights = self.score_group(
                query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask
            )
        check_inbatch_weights(inbatch_weights, input_ids.shape[0])
        out = self._inbatch_lm_forward(input_ids, attention_mask, labels, inbatch_weights, detach_clean_kv)
        return RevelaOutput(loss=out.loss, logits=out.logits, similarity=similarity, inbatch_weights=inbatch_weights)

    def retriever_embeddings(
        self,
        query_input_ids: torch.LongTensor,
        query_attention_mask: torch.Tensor,
        passage_input_ids: torch.LongTensor,
        passage_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The retriever's `(N, E)` query and `(M, E)` passage embeddings."""
        return self.retriever(query_input_ids, query_attention_mask), self.retriever(passage_input_ids, passage_attention_mask)

    def score_group(
        self,
        query_input_ids: torch.LongTensor,
        query_attention_mask: torch.Tensor,
        passage_input_ids: torch.LongTensor,
        passage_attention_mask: torch.Tensor,
        temperature: float | None = None,
        exclude_diagonal: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Retriever cosine `(B, B)` and the in-batch weights Sim `(B, B)` of one group (temperature and
        diagonal: the config's unless given)."""
        query_emb, passage_emb = self.retriever_embeddings(query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask)
        temperature = self.config.temperature if temperature is None else temperature
        exclude_diagonal = self.config.exclude_diagonal if exclude_diagonal is None else exclude_diagonal
        return similarity_weights(query_emb, passage_emb, temperature, exclude_diagonal)

    def _inbatch_lm_forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        weights: torch.Tensor,
        detach_clean_kv: bool,
    ):
        """Clean pass (records key/value), then the in-batch pass with the loss."""
        layers = self.config.resolved_inbatch_layers()
        num_layers = self.config.lm_config.num_hidden_layers
        decoder = self.lm.get_decoder()
        frozen = self.lm_is_frozen
        # With a frozen LM and a top block of layers, the in-batch pass starts at that block.
        start = layers[0] if frozen and layers == list(range(layers[0], num_layers)) else 0
        record = InBatchContext("record", layers=frozenset(layers), detach_kv=detach_clean_kv)
        captured: dict[str, torch.Tensor] = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            with _capture_input(decoder.layers[start], captured) if start else nullcontext():
                decoder(input_ids=input_ids, attention_mask=attention_mask, revela_context=record)
        inject = InBatchContext(
            "inject",
            layers=frozenset(layers),
            weights=weights,
            key_padding_mask=attention_mask.bool() if attention_mask is not None else None,
            v_norm=self.config.v_norm,
            top_k=self.config.inbatch_top_k,
            kv=record.kv,
        )
        lm = _view_from_layer(self.lm, start, captured["hidden"]) if start else self.lm
        return lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, revela_context=inject)


class _Replay(nn.Module):
    """Stands in for the lower decoder layers: the first returns the recorded hidden state, the rest pass it on."""

    def __init__(self, hidden: torch.Tensor | None) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.hidden if self.hidden is not None else hidden_states


@contextmanager
def _capture_input(layer: nn.Module, captured: dict[str, torch.Tensor]) -> Iterator[None]:
    """Record the hidden state entering `layer` as captured["hidden"]."""

    def hook(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _shallow_copy(module: nn.Module, **children: nn.Module) -> nn.Module:
    """A copy of `module` that shares its parameters, buffers and other submodules, with `children` in place of its own."""
    view = copy.copy(module)
    view._modules = {**module._modules, **children}
    return view


def _view_from_layer(lm: nn.Module, start: int, hidden: torch.Tensor) -> nn.Module:
    """A view of the causal LM `lm` whose decoder runs from layer `start` on, fed with `hidden` (the clean pass's
    input to that layer): its lower layers are stand-ins that pass `hidden` on. The view shares every weight with
    `lm` and leaves `lm` untouched, so concurrent forwards and module wrappers see the model as it is."""
    decoder = lm.get_decoder()
    name = next((n for n, child in lm.named_children() if child is decoder), None)
    if name is None:
        raise ValueError(f"{type(lm).__name__}'s decoder is not one of its direct submodules: the in-batch pass cannot start at layer {start}")
    stand_ins = [_Replay(hidden)] + [_Replay(None) for _ in range(start - 1)]
    view_decoder = _shallow_copy(decoder, layers=nn.ModuleList(stand_ins + list(decoder.layers[start:])))
    return _shallow_copy(lm, **{name: view_decoder})


def first_layers_config(config: PreTrainedConfig, num_layers: int | None) -> PreTrainedConfig:
    """A copy of a decoder config keeping its first `num_layers` layers (None = all)."""
    config = copy.deepcopy(config)
    if num_layers is None:
        return config
    if not 1 <= num_layers <= config.num_hidden_layers:
        raise ValueError(f"retriever_layers must be in 1..{config.num_hidden_layers}, got {num_layers}")
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:num_layers]
    return config


def shared_base_model(base: PreTrainedModel, config: PreTrainedConfig) -> PreTrainedModel:
    """A base model of `config` whose parameters ARE `base`'s (the same tensors, no copy).

    `config` is `base`'s architecture with the same or fewer layers (see `first_layers_config`).
    The modules are the model's own, so an adapter injected into it leaves `base` unchanged;
    buffers (rotary frequencies) are its own too.
    """
    with init_empty_weights():  # parameters on the meta device until they are replaced; buffers real
        model = AutoModel.from_config(config)
    for name, param in model.named_parameters():
        try:
            source = base.get_parameter(name)
        except AttributeError:
            source = None
        if source is None or source.shape != param.shape:
            raise ValueError(f"the retriever's {name} {tuple(param.shape)} has no counterpart in the LM's base model")
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, source)
    return model


def _check_holds_base_weights(retriever: PreTrainedModel, base: PreTrainedModel) -> None:
    """Raise unless every weight of `retriever` equals the LM base model's weight of that name."""
    base_state = base.state_dict()
    for name, tensor in retriever.state_dict().items():
        if name not in base_state or base_state[name].shape != tensor.shape or not torch.equal(base_state[name], tensor):
            raise ValueError(
                f"share_base: the retriever's {name} is not the LM base model's; pass retriever=None "
                "(retriever_layers=N for the first N layers) or a checkpoint cut from the LM's"
            )


def _lora_dict(lora: LoraConfig | dict | None) -> dict | None:
    if lora is None or isinstance(lora, dict):
        return lora
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in lora.to_dict().items() if k != "peft_type"}


AutoConfig.register("revela", RevelaConfig, exist_ok=True)
AutoModel.register(RevelaConfig, RevelaForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(RevelaConfig, RevelaForCausalLM, exist_ok=True)
