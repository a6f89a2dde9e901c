"""`RevelaConfig`: a decoder LM config, a retriever config and the in-batch training settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from revela_hf.defaults import PAPER_TEMPERATURE
from revela_hf.objectives.registry import DEFAULT_OBJECTIVE, OBJECTIVES, get_objective
from revela_hf.pooling import check_pooling

if TYPE_CHECKING:
    from revela_hf.objectives.base import ObjectiveSettings

# Training choices that earlier configs held, and where they went.
RETIRED_SETTINGS = {
    "freeze_lm": "freeze the LM after construction with model.lm.requires_grad_(False) (ModelSpec(freeze_lm=True) does)",
    "detach_clean_kv": "pass forward(..., detach_clean_kv=True)",
}


class RevelaConfig(PreTrainedConfig):
    r"""Configuration class to store the configuration of a [`RevelaForCausalLM`].

    A Revela model pairs a decoder language model with a retriever. The configuration holds the config of each of
    the two networks and the settings of how they are trained together: the retriever scores every pair of chunks in
    a group, the softmax of those scores (Sim) weights an extra in-batch attention term in the LM, and the LM's
    next-token loss trains both. The same configuration also selects one of two retriever-only objectives, REPLUG
    and DREAM, that keep the LM frozen (see `revela_hf.objectives`); their settings are one nested dict,
    `objective_settings`. The values are checked when the configuration is built, so a bad setting fails here rather
    than in the middle of training.

    Configuration objects inherit from [`PreTrainedConfig`] and can be used to control the model outputs. Read the
    documentation from [`PreTrainedConfig`] for more information.

    Args:
        lm_config (`dict` or [`PreTrainedConfig`], *optional*):
            Config of the decoder LM that receives the in-batch attention. A dict is read as the config of its
            `model_type` (Llama when it names none); left unset, a default `LlamaConfig` is used.
        retriever_config (`dict` or [`PreTrainedConfig`], *optional*):
            Config of the retriever backbone. Defaults to a copy of `lm_config`: the LM's own architecture.
            [`RevelaForCausalLM.from_parts`] then fills the retriever with a copy of the LM's base weights (or, with
            `share_base=True`, the very same weights); building the model from the config alone initialises it
            randomly.
        temperature (`float`, *optional*, defaults to 1e-4):
            Softmax temperature of Sim(i, j) = softmax over j of cos(q_i, p_j) / `temperature` (the paper's value).
            Must be positive.
        v_norm (`bool`, *optional*, defaults to `True`):
            Whether to V-normalise the in-batch attention term (METHOD.md §1). The paper uses it on text and reports
            it better off for code.
        exclude_diagonal (`bool`, *optional*, defaults to `True`):
            Whether a chunk is left out of its own Sim row, so that chunk i gives itself no weight.
        query_ratio (`float`, *optional*, defaults to 0.5):
            Share of a chunk's words that forms its retriever query: the query side of chunk i is its first
            `ceil(query_ratio * n_words)` words. Must lie in (0, 1].
        full_chunk_sources (`list[str]`, *optional*, defaults to `["code"]`):
            Sources whose query side is the whole chunk instead of its first `query_ratio` of words.
        pooling (`str`, *optional*, defaults to `"eos"`):
            How the retriever turns hidden states into one embedding: `"eos"` (an EOS token is appended and its last
            hidden state is the embedding), `"last"`, `"mean"` or `"cls"`.
        query_prefix (`str`, *optional*, defaults to `"Query: "`):
            Text put before every query the retriever encodes.
        passage_prefix (`str`, *optional*, defaults to `"Passage: "`):
            Text put before every passage the retriever encodes.
        retriever_max_length (`int`, *optional*, defaults to 512):
            Longest input, in tokens, the retriever encodes; longer texts are truncated.
        inbatch_layers (`list[int]`, *optional*):
            Indices of the LM layers that receive the in-batch term; negative indices count from the top. Defaults to
            every layer. Every index must name a layer of the LM.
        inbatch_top_k (`int`, *optional*):
            Sparse in-batch attention: each chunk attends only to the `inbatch_top_k` chunks with the largest
            Sim(i, .), whose weights are used as they are (not renormalised). Must be a positive integer; unset, the
            exact sum over all chunks is computed.
        lm_lora (`dict`, *optional*):
            Keyword arguments of a `peft.LoraConfig` whose adapter is injected into the LM at construction. Unset,
            the LM trains all its weights (or none: `model.lm.requires_grad_(False)` after construction).
        retriever_lora (`dict`, *optional*):
            Keyword arguments of a `peft.LoraConfig` whose adapter is injected into the retriever backbone at
            construction. Unset, the retriever trains all its weights.
        share_base (`bool`, *optional*, defaults to `False`):
            Whether to keep one copy of the base weights in memory: the retriever backbone is built on the LM's own
            base model parameters (its first `retriever_config.num_hidden_layers` layers, the embeddings and the
            final norm), with the retriever's LoRA adapter on modules of its own, so LM forwards never see it. The
            shared weights stay fixed: it needs `retriever_lora`, and the LM trains through `lm_lora` or not at all.
        objective (`str`, *optional*, defaults to `"revela"`):
            Training objective: `"revela"` (in-batch attention), `"replug"` or `"dream"`. The last two train the
            retriever only and need an LM without trainable weights (`model.lm.requires_grad_(False)`), which the
            forward pass checks.
        objective_settings (`dict`, *optional*):
            The settings of `objective`, by name: the fields of its registry entry's settings class
            ([`ReplugSettings`]: `retriever_temperature`, `lm_temperature`, `target`, `pair_batch_size`;
            [`DreamSettings`]: `temperature`, `layers`, `heads`), defaults for those left out. Revela takes none
            (its settings are the fields above). After construction it holds every setting, defaults included, and
            [`~RevelaConfig.resolved_objective_settings`] gives them as that class. The flat keys of configurations
            written before it (`replug_target`, `dream_layers`, ...) are read into it.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether transformers ties input and output embeddings at the level of the whole Revela model. Whether
            the LM's head is tied to its embeddings follows `lm_config.tie_word_embeddings`.

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from revela_hf import RevelaConfig, RevelaForCausalLM

    >>> # A tiny 2-layer Llama as the LM; the retriever gets the same architecture
    >>> lm_config = LlamaConfig(
    ...     vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    ... )
    >>> configuration = RevelaConfig(lm_config=lm_config, inbatch_layers=[-1])
    >>> configuration.resolved_inbatch_layers()
    [1]
    >>> configuration.retriever_config.num_hidden_layers
    2

    >>> # DREAM with its retriever bias in the top layer: its settings, defaults filled in
    >>> dream = RevelaConfig(lm_config=lm_config, objective="dream", objective_settings={"layers": [-1]})
    >>> dream.objective_settings
    {'temperature': 0.05, 'layers': [-1], 'heads': None}

    >>> # Initializing a model (with random weights) from the configuration
    >>> model = RevelaForCausalLM(configuration)

    >>> # Accessing the model configuration
    >>> configuration = model.config

    ```
    """

    model_type = "revela"
    sub_configs_defaults = {
        "lm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "retriever_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    lm_config: dict | PreTrainedConfig | None = None
    retriever_config: dict | PreTrainedConfig | None = None
    temperature: float = PAPER_TEMPERATURE
    v_norm: bool = True
    exclude_diagonal: bool = True
    query_ratio: float = 0.5
    full_chunk_sources: list[str] | None = None
    pooling: str = "eos"
    query_prefix: str = "Query: "
    passage_prefix: str = "Passage: "
    retriever_max_length: int = 512
    inbatch_layers: list[int] | None = None
    inbatch_top_k: int | None = None
    lm_lora: dict | None = None
    retriever_lora: dict | None = None
    share_base: bool = False
    objective: str = DEFAULT_OBJECTIVE
    objective_settings: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # A config.json written before `objective_settings` holds every objective's settings as flat keys: the
        # configured objective's become its settings, the others' are dropped (they never had an effect).
        flat = {name: objective.pop_flat_settings(kwargs) for name, objective in OBJECTIVES.items()}
        for name, instead in RETIRED_SETTINGS.items():  # False / absent meant the default: nothing to say
            if kwargs.pop(name, False):
                raise ValueError(f"{name} is no longer a RevelaConfig setting (it is a training choice): {instead}; "
                                 f"an older config.json holding it needs the key deleted")
        super().__post_init__(**kwargs)
        if self.retriever_config is None:
            self.retriever_config = self.lm_config.__class__.from_dict(self.lm_config.to_dict())
        if self.full_chunk_sources is None:
            self.full_chunk_sources = ["code"]
        check_pooling(self.pooling)
        self.objective_settings = {**flat[get_objective(self.objective).name], **(self.objective_settings or {})}
        settings = self.resolved_objective_settings()
        self.objective_settings = settings.to_dict() if settings is not None else {}
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

    @property
    def hidden_sizes(self) -> list[int]:
        """The LM's and the retriever's hidden sizes: the composite config has no single `hidden_size`, and
        transformers sizes a DeepSpeed config's `"auto"` ZeRO buckets from the largest of `hidden_sizes`."""
        return [self.lm_config.hidden_size, self.retriever_config.hidden_size]

    def resolved_objective_settings(self) -> ObjectiveSettings | None:
        """`objective_settings` as the objective's settings class, checked (against the LM too); None for an
        objective without settings, which then must be given none."""
        settings_class = get_objective(self.objective).load_settings()
        if settings_class is None:
            if self.objective_settings:
                raise ValueError(f"objective {self.objective!r} takes no objective_settings, got {self.objective_settings}")
            return None
        settings = settings_class.from_dict(self.objective_settings or {})
        settings.check(self.lm_config)
        return settings

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
