"""The `Example:` blocks of the public docstrings run as written (doctest, outputs compared), on the
tiny in-code models they build: a documented call that stops working fails here. A method's example
continues its class's (it uses the objects the class example built), so the class example runs first."""

from __future__ import annotations

import doctest
import os

import pytest

from revela_hf import collator, configuration_revela, modeling_revela, retriever, trainer

Retriever = retriever.RevelaRetriever
DOCUMENTED = [  # (object, the class whose example it continues)
    (configuration_revela.RevelaConfig, None),
    (modeling_revela.RevelaForCausalLM, None),
    (modeling_revela.RevelaForCausalLM.forward, None),
    (Retriever, None),
    (Retriever.from_pretrained, Retriever),
    (Retriever.save_pretrained, Retriever),
    (Retriever.encode_queries, Retriever),
    (Retriever.encode_corpus, Retriever),
    (trainer.RevelaTrainingArguments, None),
    (trainer.RevelaTrainer, None),
    (collator.RevelaDataCollator, None),
    (collator.DreamDataCollator, None),
]


def _example(obj, globs: dict) -> doctest.DocTest:
    found = [test for test in doctest.DocTestFinder(recurse=False).find(obj, obj.__qualname__, globs=globs) if test.examples]
    assert found, f"{obj.__qualname__} has no Example: block"
    return found[0]


@pytest.mark.parametrize(("obj", "continues"), DOCUMENTED, ids=lambda obj: getattr(obj, "__qualname__", ""))
def test_docstring_example_runs(obj, continues, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save write here
    monkeypatch.setitem(os.environ, "DS_ACCELERATOR", "cpu")  # deepspeed's accelerator notice would join the output
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs: dict = {}
    if continues is not None:
        setup = _example(continues, globs)
        runner.run(setup, clear_globs=False)
        globs = setup.globs
    runner.run(_example(obj, globs))
    assert runner.failures == 0, f"{runner.failures} of {runner.tries} examples of {obj.__qualname__} failed (output above)"
