"""`RevelaConfig`: a decoder LM config, a retriever config and the in-batch training settings."""

from __future__ import annotations

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from revela_hf.retriever import check_pooling

OBJECTIVES = ("revela", "dream", "replug")


class RevelaConfig(PreTrainedConfig):
    r"""Configuration of a [`RevelaForCausalLM`].

    Args:
        lm_config: config of the decoder LM that receives the in-batch attention.
        retriever_config: config of the retriever backbone; None = the LM's base model architecture
            (`from_parts(lm)` then copies the LM's base weights into the retriever, or shares them).
        temperature: softmax temperature of Sim(i, j) (the paper: 1e-4).
        v_norm: V-normalise the in-batch term (METHOD.md; on for text, reported better off for code).
        exclude_diagonal: a chunk gives itself no weight.
        query_ratio: the retriever's query side of chunk i is its first `query_ratio` of words.
        full_chunk_sources: sources whose query side is the whole chunk (code, by default).
        pooling / query_prefix / passage_prefix / retriever_max_length: retriever settings.
        inbatch_layers: indices of the LM layers that receive the in-batch term (None = all; negative
            indices count from the top).
        freeze_lm: keep every LM weight fixed; the clean pass then runs under no_grad and, when
            `inbatch_layers` is a top block, the weighted pass recomputes only that block.
        detach_clean_kv: stop gradients through the clean pass's key/value.
        inbatch_top_k: sparse in-batch attention: each chunk attends only to the k chunks with the
            largest Sim(i, .), weights kept as-is (see `inbatch_attention(top_k=)`); None = exact.
        lm_lora / retriever_lora: `peft.LoraConfig` dicts injected at construction (None = no LoRA).
        share_base: one copy of the base weights: the retriever backbone is built on the LM's own base
            model parameters (its first `retriever_config.num_hidden_layers` layers, embeddings and final
            norm), with the retriever's LoRA adapter on modules of its own, so LM forwards never see it.
            Those weights must stay fixed: needs `retriever_lora`, and `freeze_lm=True` or `lm_lora`.
        objective: "revela", "dream" or "replug" (the last two need `freeze_lm=True`; see
            `revela_hf.objectives`).
        replug_retriever_temperature / replug_lm_temperature: tau_r and tau_lm of REPLUG's
            P_retriever(j|i) = softmax_j(cos/tau_r) and P_LM(j|i) = softmax_j(-loss_LM(i|j)/tau_lm).
        replug_target: "second_half" (score the tokens of chunk i after its first `query_ratio`,
            given chunk j and that first part, as REPLUG does) or "all" (score all of chunk i given j).
        replug_pair_batch_size: (j, i) concatenations per no-grad LM forward when scoring pairs.
        dream_layers: LM layers whose selected heads take the retriever bias (None = all layers).
        dream_heads: heads of those layers: None = all heads, a list of [layer, head] pairs (then
            `dream_layers` may be None), or one list of heads per entry of `dream_layers`.
        dream_temperature: softmax temperature of the retriever's candidate distribution P(k|query);
            the bias added to candidate k's keys is log(K * P(k|query)).
    """

    model_type = "revela"
    sub_configs_defaults = {
        "lm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "retriever_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    lm_config: dict | PreTrainedConfig | None = None
    retriever_config: dict | PreTrainedConfig | None = None
    temperature: float = 1e-4
    v_norm: bool = True
    exclude_diagonal: bool = True
    query_ratio: float = 0.5
    full_chunk_sources: list[str] | None = None
    pooling: str = "eos"
    query_prefix: str = "Query: "
    passage_prefix: str = "Passage: "
    retriever_max_length: int = 512
    inbatch_layers: list[int] | None = None
    freeze_lm: bool = False
    detach_clean_kv: bool = False
    inbatch_top_k: int | None = None
    lm_lora: dict | None = None
    retriever_lora: dict | None = None
    share_base: bool = False
    objective: Literal["revela", "dream", "replug"] = "revela"
    replug_retriever_temperature: float = 1e-3
    replug_lm_temperature: float = 1e-3
    replug_target: Literal["second_half", "all"] = "second_half"
    replug_pair_batch_size: int = 16
    dream_layers: list[int] | None = None
    dream_heads: list | None = None
    dream_temperature: float = 0.05
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.retriever_config is None:
            self.retriever_config = self.lm_config.__class__.from_dict(self.lm_config.to_dict())
        if self.full_chunk_sources is None:
            self.full_chunk_sources = ["code"]
        check_pooling(self.pooling)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0 < self.query_ratio <= 1:
            raise ValueError(f"query_ratio must be in (0, 1], got {self.query_ratio}")
        if self.inbatch_top_k is not None and (
            isinstance(self.inbatch_top_k, bool) or not isinstance(self.inbatch_top_k, int) or self.inbatch_top_k < 1
        ):
            raise ValueError(f"inbatch_top_k must be a positive int or None, got {self.inbatch_top_k!r}")
        self.resolved_inbatch_layers()  # validates indices
        if self.share_base and self.retriever_lora is None:
            raise ValueError("share_base trains the retriever as a LoRA adapter on the LM's weights: set retriever_lora")
        if self.share_base and not self.freeze_lm and self.lm_lora is None:
            raise ValueError(
                "share_base needs the shared base weights frozen: set freeze_lm=True, or train the LM through lm_lora"
            )

    def resolved_inbatch_layers(self) -> list[int]:
        """Sorted non-negative indices of the LM layers that receive the in-batch term."""
        num_layers = self.lm_config.num_hidden_layers
        if self.inbatch_layers is None:
            return list(range(num_layers))
        resolved = sorted({i % num_layers if -num_layers <= i < num_layers else i for i in self.inbatch_layers})
        bad = [i for i in resolved if not 0 <= i < num_layers]
        if bad or not resolved:
            raise ValueError(f"inbatch_layers {self.inbatch_layers} must name layers of the {num_layers}-layer LM")
        return resolved
