"""The main job's recipes: training budgets and the retrievers the demo trains.

Plain data with no heavy imports, so the command line can list them without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from revela_hf.defaults import RECIPE_TEMPERATURE
from revela_hf.objectives.registry import get_objective


@dataclass
class Budget:
    """How much to train: `default` fits 25 minutes on 2 CPU cores, `ci` is a smoke test, `compare` runs
    every objective on default's data."""

    max_steps: int
    source_files: int
    eval_every: int
    lm_layers: int | None = None  # None = the full LM; fewer only for the smoke test
    retriever_layers: int = 6
    group_size: int = 8
    interleave_width: int = 4  # `interleave` groups take chunks in turn from this many neighbouring modules
    max_tokens: int = 128
    decay_steps: int = 0  # the last N steps take the rate to zero along a cosine; 0 = constant to the end

    def lr_schedule(self) -> dict:
        """`TrainingArguments` fields for this budget's rate: constant, then the cosine decay if any."""
        if not self.decay_steps:
            return {"lr_scheduler_type": "constant"}
        return {"lr_scheduler_type": "warmup_stable_decay", "lr_scheduler_kwargs": {"num_decay_steps": self.decay_steps}}


BUDGETS = {
    "ci": Budget(max_steps=3, source_files=40, eval_every=3, lm_layers=4, retriever_layers=2, group_size=4,
                 interleave_width=2, max_tokens=48, decay_steps=2),
    # Groups of 16 chunks, two from each of 8 neighbouring modules, for 90 steps: the same chunks as 180
    # steps of groups of 8 (4 modules), and each chunk is scored against twice the candidates. On the
    # suite, paired over three seeds in bf16: mean nDCG@10 29.4 / 31.6 / 32.6 against 29.2 / 29.0 / 31.3
    # (README, "Yardstick suite"). `revela demo` (fp32, 2 cores, the malloc settings of `revela_hf.malloc`)
    # takes about 19 minutes, install included.
    "default": Budget(max_steps=90, source_files=400, eval_every=15, group_size=16, interleave_width=8),
    # The last 80 steps decay the rate: at a constant 3e-4 one seed's HumanEval curve oscillated (32.0 at step 80,
    # 13.2 at 240) and its suite mean ended at 10.0; the same run (equal to it up to step 160) ends at 18.4.
    "full": Budget(max_steps=240, source_files=1200, eval_every=40, decay_steps=80),
    # The objectives side by side: default's modules in groups of 8, fewer steps (a REPLUG or DREAM step
    # scores 56 chunk pairs or 8 packed rows of 7 candidates with the 30-layer LM: 5-8x a Revela step).
    "compare": Budget(max_steps=20, source_files=400, eval_every=10),
}


# How the demo groups its chunks: taken in turn from a window of neighbouring modules (the paper's
# Wikipedia recipe; `Budget.interleave_width` modules), so each chunk has a partner of its own module among
# chunks of others. On the suite, over three paired seeds at 8 chunks from 4 modules, it beat `document`
# groups (8 consecutive chunks of one module) on every set's mean: 29.8 +- 1.3 against 27.3 +- 4.1
# (README, "Yardstick suite").
DEMO_GROUPING = "interleave"


@dataclass(frozen=True)
class RetrieverRecipe:
    """Which retriever the demo trains and how: `encoder` = an existing embedding model with its own
    tokenizer and no prefixes (adapted to the corpus), otherwise SmolLM2 cut to `Budget.retriever_layers`."""

    label: str  # its name in results tables
    pooling: str
    temperature: float  # Sim's tau: a decoder's embeddings start nearly parallel, a trained encoder's do not
    learning_rate: float
    hub_id: str  # the Hub model its local copy stands for, named as the base model in the trained card
    encoder: bool = False
    # all-but-the-top on the training docstrings after training, the retriever re-pooled this way (None: no projection)
    projection_pooling: str | None = None
    # the projected copy's mean half SIF-weighted by the training chunks' token frequencies
    projection_token_weights: bool = False


RETRIEVERS = {
    # EOS pooling (the paper's). Mean pooling starts far higher (untrained suite mean 20.3 vs 5.5), but
    # the default budget does not improve it (runs end at or below their start), while EOS climbs to
    # 23.1 over four 90-step runs, 27.3 over three 180-step runs and 31.2 at the default budget (README,
    # "Yardstick suite"); `--pooling mean` keeps it at hand. After training, the retriever re-pooled to its mean and
    # EOS states side by side with all-but-the-top: the mean-pooled half, anisotropic and poor alone (21.9), becomes
    # the stronger half once projected (37.7), and together they reach 42.0 against EOS's 34.9 (README). With SIF token
    # weights from the training chunks on the mean half: 47.6 against 43.4 over three seeds; reading that half from
    # the base model instead (mean_from_base) gave the same mean at twice the encoding, so it stays off (README).
    "smollm2": RetrieverRecipe(
        "SmolLM2-135M", pooling="eos", temperature=RECIPE_TEMPERATURE, learning_rate=3e-4,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", projection_pooling="mean+eos",
        projection_token_weights=True,
    ),
    # Adapting a supervised model: its cosines spread over [0, 1], so tau is a contrastive loss's 0.05
    # (at 1e-3 Sim is one-hot and passes no gradient), and a lower rate keeps what it already knows.
    "minilm": RetrieverRecipe(
        "all-MiniLM-L6-v2", pooling="mean", temperature=0.05, learning_rate=1e-4,
        hub_id="sentence-transformers/all-MiniLM-L6-v2", encoder=True,
    ),
}


def projected_name(trained: str) -> str:
    """The results-table row of a trained retriever read as its SIF-weighted mean beside its EOS state, with
    all-but-the-top post-processing."""
    return f"{trained}, SIF mean + EOS, all-but-the-top"


def untrained_name(retriever: str = "smollm2") -> str:
    """The results-table row of the retriever before training."""
    return f"{RETRIEVERS[retriever].label} untrained"


def trained_name(objective: str, retriever: str = "smollm2") -> str:
    """The results-table row of the retriever trained with `objective`."""
    return f"{RETRIEVERS[retriever].label} + {get_objective(objective).label}"
