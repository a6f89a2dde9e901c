"""The `Example:` blocks of the public docstrings run as written (doctest, outputs compared), on the
tiny in-code models they build: a documented call that stops working fails here."""

from __future__ import annotations

import doctest
import os

import pytest

from revela_hf import collator, configuration_revela, modeling_revela, retriever, trainer

DOCUMENTED = [
    configuration_revela.RevelaConfig,
    modeling_revela.RevelaForCausalLM,
    modeling_revela.RevelaForCausalLM.forward,
    retriever.RevelaRetriever,
    retriever.RevelaRetriever.from_pretrained,
    retriever.RevelaRetriever.save_pretrained,
    retriever.RevelaRetriever.encode_queries,
    retriever.RevelaRetriever.encode_corpus,
    trainer.RevelaTrainingArguments,
    trainer.RevelaTrainer,
    collator.RevelaDataCollator,
    collator.DreamDataCollator,
]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda obj: obj.__qualname__)
def test_docstring_example_runs(obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save write here
    monkeypatch.setitem(os.environ, "DS_ACCELERATOR", "cpu")  # deepspeed's accelerator notice would join the output
    found = doctest.DocTestFinder(recurse=False).find(obj, obj.__qualname__, globs={})
    examples = [test for test in found if test.examples]
    assert examples, f"{obj.__qualname__} has no Example: block"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in examples:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} of {runner.tries} examples of {obj.__qualname__} failed (output above)"
