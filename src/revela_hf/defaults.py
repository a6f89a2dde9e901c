"""Defaults that more than one entry point uses, each written once.

`RevelaConfig` and the Sim functions of `ops.py` default to the paper's tau, `PAPER_TEMPERATURE`, and to
the paper's set-up of an LM that trains too (no `model.lm.requires_grad_(False)`, every layer in-batch).

The training recipe built from model folders has defaults of its own, shared by the Python API
(`training.ModelSpec`), `revela train` (`commands.train.TrainRecipe`) and `revela demo`: a frozen LM with
the in-batch term in its top 4 layers and a LoRA retriever. Its tau is `RECIPE_TEMPERATURE`, 1e-3, not the
paper's 1e-4: it is the value every run the README reports was measured with (`revela demo`, the
yardstick suite, the objectives compared), so changing it would move those numbers.
"""

from __future__ import annotations

PAPER_TEMPERATURE = 1e-4
RECIPE_TEMPERATURE = 1e-3
RECIPE_FREEZE_LM = True
RECIPE_INBATCH_LAYERS = (-4, -3, -2, -1)
RECIPE_RETRIEVER_LORA_R = 16
# All-but-the-top after training (`revela_hf.search.projection`): principal directions of the training docstrings
# removed: on a docstring -> code set of training files (benchmarks/projection_directions.py), not the suite, 16 and 24
# tie (a plateau from 16 to 24 over three seeds). Per pooled vector: a "mean+eos" embedding has 2 x 16 removed.
PROJECTION_DIRECTIONS = 16
# SIF token weights for the mean-pooled half (`revela_hf.token_weights`): Arora et al.'s a, their paper's default.
SIF_A = 1e-3
