"""The main job (`revela demo`) and what it brings along, kept apart from the library it runs.

- `main_job.py`: `run_demo`, prepare -> evaluate -> train -> evaluate, with results.json and a plot.
- `recipes.py`: its budgets and retriever recipes (plain data, no torch).
- `assets.py`: the real models and raw text packaged on PyPI / Debian, found on this machine.
- `humaneval.py`: HumanEval-clean in BEIR layout, and the fingerprints that keep it out of training.
- `benchmark_sets.py`: the yardstick suite's other sets (CONCODE, FOLDOC, stdlib).

Names are imported on first use, so `revela --help` reads the recipes without loading torch.
"""

from revela_hf.lazy import lazy_exports

_EXPORTS = {
    "RetrievalCurve": "revela_hf.demo.main_job",
    "run_demo": "revela_hf.demo.main_job",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
