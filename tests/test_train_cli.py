"""`revela train`'s flags: HfArgumentParser over `TrainRecipe` and `RevelaTrainingArguments`, a YAML recipe under them."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_causal_lm, tiny_groups

from revela_hf.cli import main
from revela_hf.commands.train import parse_train_args

RECIPE = {
    "data": "groups", "lm": "lm", "output_dir": "run", "retriever_layers": 2, "lora_r": 4, "objective": "dream",
    "inbatch_layers": "-2,-1", "temperature": 0.01, "max_steps": 5, "learning_rate": "3e-5", "max_length": 32,
    "gradient_accumulation_steps": 2, "report_to": "none", "lr_scheduler_type": "linear", "bf16": True, "use_cpu": True,
}


def _recipe(tmp_path, values: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_a_yaml_recipe_fills_both_dataclasses(tmp_path):
    recipe, args = parse_train_args(["--config", _recipe(tmp_path, RECIPE)])
    assert (recipe.data, recipe.lm, recipe.retriever_layers, recipe.lora_r, recipe.objective) == ("groups", "lm", 2, 4, "dream")
    assert recipe.inbatch_layers == [-2, -1] and recipe.temperature == 0.01
    assert (args.output_dir, args.max_steps, args.learning_rate, args.max_length) == ("run", 5, 3e-5, 32)
    assert (args.gradient_accumulation_steps, args.report_to, args.lr_scheduler_type, args.bf16) == (2, [], "linear", True)
    spec = recipe.model_spec()
    assert spec.config_overrides == {"inbatch_top_k": None, "objective": "dream", "objective_settings": {"layers": [-2, -1]}}
    assert (spec.retriever_lora_r, spec.freeze_lm, spec.retriever_layers) == (4, True, 2)


def test_flags_override_the_recipe(tmp_path):
    recipe, args = parse_train_args(["--config", _recipe(tmp_path, RECIPE), "--max-steps", "7", "--temperature", "0.5",
                                     "--inbatch_layers", "all", "--lr_scheduler_type", "constant"])
    assert (args.max_steps, recipe.temperature, recipe.inbatch_layers, args.lr_scheduler_type) == (7, 0.5, None, "constant")
    assert (args.learning_rate, recipe.objective, args.gradient_accumulation_steps) == (3e-5, "dream", 2)  # the file's


def test_unknown_recipe_keys_are_named(tmp_path, capsys):
    path = _recipe(tmp_path, {**RECIPE, "max_stepz": 3, "lora_rank": 8})
    assert main(["train", "--config", path]) == 2
    assert f"{path}: unknown keys ['lora_rank', 'max_stepz']: not flags of `revela train`" in capsys.readouterr().err


def test_recipe_values_are_range_checked_like_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--config", _recipe(tmp_path, {**RECIPE, "temperature": 0})])
    assert "--temperature: must be a positive number, got 0" in capsys.readouterr().err


def test_defaults_are_revela_train_s(tmp_path):
    recipe, args = parse_train_args(["--data", "d", "--lm", "l", "--output", "o", "--max_length", "24"])
    assert (args.output_dir, args.max_steps, args.warmup_steps, args.learning_rate, args.save_steps, args.seed) == ("o", 100, 10, 3e-4, 50, 0)
    assert (args.lr_scheduler_type, args.retriever_max_length, args.eval_strategy, args.report_to) == ("cosine", 24, "no", [])
    assert recipe.inbatch_layers == [-4, -3, -2, -1] and recipe.lora_r == 16 and not recipe.train_lm
    _, args = parse_train_args(["--data", "d", "--lm", "l", "--output_dir", "o", "--num_train_epochs", "2", "--eval-data", "b"])
    assert (args.max_steps, args.num_train_epochs, args.warmup_steps, args.eval_strategy, args.eval_steps) == (-1, 2, 0.1, "steps", 50)


def test_the_python_api_the_command_line_and_the_demo_build_the_same_recipe():
    # One source of the recipe's defaults (revela_hf.defaults), at the values every reported run used; RevelaConfig
    # keeps the paper's tau and a trainable LM.
    from revela_hf import RevelaConfig
    from revela_hf.demo.recipes import RETRIEVERS
    from revela_hf.training import ModelSpec

    recipe, _ = parse_train_args(["--data", "d", "--lm", "l", "--output", "o"])
    spec, api = recipe.model_spec(), ModelSpec(lm="l")
    recipe_fields = ("freeze_lm", "inbatch_layers", "temperature", "retriever_lora_r")
    assert [getattr(spec, name) for name in recipe_fields] == [getattr(api, name) for name in recipe_fields] == [True, [-4, -3, -2, -1], 1e-3, 16]
    assert RETRIEVERS["smollm2"].temperature == api.temperature
    assert RevelaConfig().temperature == 1e-4  # the paper's; a model trains its LM unless frozen after construction


def test_help_lists_every_flag_with_its_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--config", "--data DATA", "--inbatch_layers INBATCH_LAYERS, --inbatch-layers", "--deepspeed", "--bf16",
                 "--report_to", "--num_train_epochs", "--gradient_accumulation_steps GRADIENT_ACCUMULATION_STEPS"):
        assert flag in out, flag
    assert "(default: 0.0003)" in out and "(default: cosine)" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "train LM + retriever on prepared groups" in capsys.readouterr().out


def test_a_training_arguments_flag_reaches_the_trainer(tmp_path, capsys):
    lm, data, run = tiny_causal_lm(tmp_path / "lm"), tiny_groups(tmp_path / "data"), tmp_path / "run"
    path = _recipe(tmp_path, {"data": str(data), "lm": str(lm), "output_dir": str(run), "lora_r": 4, "inbatch_layers": -1,
                              "max_length": 16, "max_steps": 2, "save_steps": 1, "learning_rate": 1e-3})
    assert main(["train", "--config", path, "--gradient_accumulation_steps", "2", "--report_to", "none"]) == 0
    assert f"retriever saved to {run}/retriever (2 steps)" in capsys.readouterr().out
    args = torch.load(run / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert (args.gradient_accumulation_steps, args.report_to, args.learning_rate, args.warmup_steps) == (2, [], 1e-3, 1)
    state = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(4 / 6)  # 2 steps of 2 groups each, of the 6 groups
