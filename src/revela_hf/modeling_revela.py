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
)

from revela_hf.attention import InBatchContext, enable_inbatch_attention
from revela_hf.configuration_revela import RevelaConfig
from revela_hf.modeling_outputs import RevelaOutput
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
    """A causal LM trained together with a retriever through in-batch attention (Revela)."""

    def __init__(
        self,
        config: RevelaConfig,
        lm: PreTrainedModel | None = None,
        retriever_backbone: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
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
            pooling=config.pooling,
            query_prefix=config.query_prefix,
            passage_prefix=config.passage_prefix,
            max_length=config.retriever_max_length,
        )
        if config.lm_lora is not None and not config.freeze_lm:
            self.lm.add_adapter(LoraConfig(**config.lm_lora))
        if config.freeze_lm:  # before the retriever's adapter, whose weights a shared base would freeze too
            self.lm.requires_grad_(False)
        if config.retriever_lora is not None:
            self.retriever.backbone.add_adapter(LoraConfig(**config.retriever_lora))
        if config.share_base:
            self._tied_weights_keys = self._shared_weight_names()
        self.post_init()

    @classmethod
    def from_parts(
        cls,
        lm: PreTrainedModel,
        retriever: PreTrainedModel | RevelaRetriever | None = None,
        lm_lora: LoraConfig | dict | None = None,
        retriever_lora: LoraConfig | dict | None = None,
        retriever_layers: int | None = None,
        **config_kwargs,
    ) -> RevelaForCausalLM:
        """Build from a pretrained causal LM and a retriever backbone.

        retriever None: the LM's base model, cut to its first `retriever_layers` layers when given;
        a copy of it, or with `share_base=True` its very weights (one copy in memory). A
        `RevelaRetriever` brings its pooling, prefixes and max length into the config. With
        `share_base=True` a given retriever must hold the LM's base weights (e.g. a checkpoint cut
        from the LM's): its config is kept, so the saved adapter names that checkpoint as its base
        model, and its weights give way to the LM's.
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
        return cls(config, lm=lm, retriever_backbone=backbone)

    def _shared_weight_names(self) -> dict[str, str]:
        """{retriever parameter name: LM parameter name} of every parameter the two hold in common."""
        lm_names: dict[int, str] = {}
        for name, param in self.lm.named_parameters(prefix="lm", remove_duplicate=False):
            lm_names.setdefault(id(param), name)
        named = self.retriever.named_parameters(prefix="retriever", remove_duplicate=False)
        return {name: lm_names[id(param)] for name, param in named if id(param) in lm_names}

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
        **kwargs,
    ) -> RevelaOutput:
        """input_ids `(B, L)`: the B chunks of one group; query_/passage_ ids `(B, Lr)`: their retriever
        inputs; inbatch_weights `(B, B)`: override the retriever (ablations, oracle tests).

        Without retriever inputs and without weights this is a plain LM forward.
        """
        if inbatch_weights is None and query_input_ids is None:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
            return RevelaOutput(loss=out.loss, logits=out.logits)
        if self.config.objective != "revela":  # REPLUG / DREAM: revela_hf.objectives
            from revela_hf.objectives import objective_forward

            return objective_forward(
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
        out = self._inbatch_lm_forward(input_ids, attention_mask, labels, inbatch_weights)
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
    ):
        """Clean pass (records key/value), then the in-batch pass with the loss."""
        layers = self.config.resolved_inbatch_layers()
        num_layers = self.config.lm_config.num_hidden_layers
        decoder = self.lm.get_decoder()
        # With a frozen LM and a top block of layers, the in-batch pass starts at that block.
        start = layers[0] if self.config.freeze_lm and layers == list(range(layers[0], num_layers)) else 0
        record = InBatchContext("record", layers=frozenset(layers), detach_kv=self.config.detach_clean_kv)
        captured: dict[str, torch.Tensor] = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_lm):
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
        with _replay_lower_layers(decoder, start, captured.get("hidden")) if start else nullcontext():
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, revela_context=inject)


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


@contextmanager
def _replay_lower_layers(decoder: nn.Module, start: int, hidden: torch.Tensor) -> Iterator[None]:
    """Run the decoder from layer `start` on, fed with `hidden` (the clean pass's input to that layer)."""
    original = decoder.layers
    decoder.layers = nn.ModuleList([_Replay(hidden)] + [_Replay(None) for _ in range(start - 1)] + list(original[start:]))
    try:
        yield
    finally:
        decoder.layers = original


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
