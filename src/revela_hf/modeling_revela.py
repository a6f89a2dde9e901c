"""`RevelaForCausalLM`: a decoder LM with similarity-weighted in-batch attention and an attached retriever.

One training example is a group of B chunks. The retriever scores every pair (Sim, `(B, B)`); the
LM runs twice: a clean pass records each selected layer's key/value (the e-stream), then a
second pass (the h-stream) adds `sum_j Sim(i, j) * b_ij` in those layers and computes the
next-token loss. The gradient of that loss reaches the retriever only through Sim.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from peft import LoraConfig
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from revela_hf.attention import InBatchContext, enable_inbatch_attention
from revela_hf.configuration_revela import RevelaConfig
from revela_hf.ops import check_inbatch_weights, similarity_weights
from revela_hf.retriever import RevelaRetriever, base_model_of


@dataclass
class RevelaOutput(ModelOutput):
    """loss: NTP loss of the in-batch pass; logits `(B, L, V)`; similarity: retriever cosine
    `(B, B)` (None when weights were given); inbatch_weights: the `(B, B)` weights used."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    similarity: torch.Tensor | None = None
    inbatch_weights: torch.Tensor | None = None


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
        backbone = retriever_backbone if retriever_backbone is not None else AutoModel.from_config(config.retriever_config)
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
        if config.retriever_lora is not None:
            self.retriever.backbone.add_adapter(LoraConfig(**config.retriever_lora))
        if config.freeze_lm:
            self.lm.requires_grad_(False)
        self.post_init()

    @classmethod
    def from_parts(
        cls,
        lm: PreTrainedModel,
        retriever: PreTrainedModel | RevelaRetriever | None = None,
        lm_lora: LoraConfig | dict | None = None,
        retriever_lora: LoraConfig | dict | None = None,
        **config_kwargs,
    ) -> "RevelaForCausalLM":
        """Build from a pretrained causal LM and a retriever backbone (None = a copy of the LM's base model).

        A `RevelaRetriever` brings its pooling, prefixes and max length into the config.
        """
        if retriever is None:
            backbone = copy.deepcopy(base_model_of(lm))
        elif isinstance(retriever, RevelaRetriever):
            backbone = retriever.backbone
            for key, value in retriever.settings().items():
                config_kwargs.setdefault("retriever_max_length" if key == "max_length" else key, value)
            config_kwargs.pop("normalize", None)
        else:
            backbone = base_model_of(retriever)
        config = RevelaConfig(
            lm_config=lm.config,
            retriever_config=backbone.config,
            lm_lora=_lora_dict(lm_lora),
            retriever_lora=_lora_dict(retriever_lora),
            **config_kwargs,
        )
        return cls(config, lm=lm, retriever_backbone=backbone)

    # ------------------------------------------------------------------ plain-LM plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def generate(self, *args, **kwargs):
        """Generate with the LM alone (no in-batch context)."""
        return self.lm.generate(*args, **kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        kwargs = gradient_checkpointing_kwargs or {"use_reentrant": False}
        self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.retriever.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

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
        if self.config.objective != "revela":  # REPLUG / DREAM: revela_hf.objectives (imports this module)
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

    def score_group(
        self,
        query_input_ids: torch.LongTensor,
        query_attention_mask: torch.Tensor,
        passage_input_ids: torch.LongTensor,
        passage_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Retriever cosine `(B, B)` and the in-batch weights Sim `(B, B)` of one group."""
        query_emb = self.retriever(query_input_ids, query_attention_mask)  # (B, E)
        passage_emb = self.retriever(passage_input_ids, passage_attention_mask)  # (B, E)
        return similarity_weights(query_emb, passage_emb, self.config.temperature, self.config.exclude_diagonal)

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


def _lora_dict(lora: LoraConfig | dict | None) -> dict | None:
    if lora is None or isinstance(lora, dict):
        return lora
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in lora.to_dict().items() if k != "peft_type"}
