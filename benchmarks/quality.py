"""Retrieval quality in one run, on one BEIR folder (training included) or on the whole yardstick suite.

Single set (`--data`): the main job's protocol: untrained SmolLM2 retriever, the same after Revela
training on local unlabelled code (the `revela demo` recipe and budgets), BM25 and
all-MiniLM-L6-v2. Prints one JSON object (nDCG@10 / MRR@10 / Recall@100 per retriever, and the
ratios of the trained retriever to its untrained self and to BM25).

    PYTHONPATH=src python benchmarks/quality.py --data path/to/beir_folder [--budget default|full|ci] [--objective revela|replug|dream]

Suite (`--suite`): builds (or reuses) every set of `revela_hf.demo.benchmark_sets` under `--root` and
evaluates, set by set, the baselines (untrained 6-layer SmolLM2, BM25, all-MiniLM-L6-v2) and each
trained retriever folder given as `--retriever LABEL=PATH`; it never trains. Repeating a label
(one folder per seed) reports the mean and the sample standard deviation over its folders.
Prints one JSON object (per set and system: metrics, nDCG@10 over BM25; per system: the suite
means) on stdout, the Markdown tables on stderr, and writes them (`suite.md`) and a bar plot of
nDCG@10 (`suite.png`) into `--root`, beside the sets. `--baselines bm25` skips the slow baselines;
`--cache FILE` keeps every measured (system, run, set) so that a stopped run resumes.
`--hybrid` adds each trained retriever fused with BM25 (every fusion); `--center-queries` adds every dense system's
query-set centred run (`revela_hf.search.centering`; transductive: it uses the set's queries together), and
`--center-queries K` the run with each query centred on K held-out queries (what an index calibrated on K example
queries does).

    PYTHONPATH=src python benchmarks/quality.py --suite [--root revela-suite] [--sets humaneval,stdlib]
        [--retriever revela=run-seed0/retriever --retriever revela=run-seed1/retriever]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from revela_hf.commands import add_center_queries
from revela_hf.demo import run_demo
from revela_hf.demo.assets import log, minilm_path, smollm2_path
from revela_hf.demo.benchmark_sets import BUILDERS, build_suite
from revela_hf.demo.recipes import BUDGETS, RETRIEVERS, trained_name, untrained_name
from revela_hf.evaluation import centred_name, hybrid_name, hybrid_runs, load_beir, named_runs, plot_results, retrieval_metrics
from revela_hf.evaluation.evaluate import BM25, HEADLINE_METRICS
from revela_hf.objectives.registry import DEFAULT_OBJECTIVE, OBJECTIVES
from revela_hf.search.encoders import load_encoder
from revela_hf.search.fusion import FUSIONS

MAIN_METRIC = "ndcg@10"


def _untrained_retriever() -> Any:
    from revela_hf.retriever import RevelaRetriever

    return RevelaRetriever.from_backbone(smollm2_path(num_hidden_layers=6), pooling=RETRIEVERS["smollm2"].pooling)


# --baselines key -> (table name, loader); BM25 always runs: the ratios divide by it.
BASELINES: dict[str, tuple[str, Callable[[], Any]]] = {
    "bm25": ("BM25", lambda: BM25),
    "minilm": ("all-MiniLM-L6-v2 (supervised)", lambda: load_encoder(minilm_path())),
    "untrained": (f"SmolLM2-135M untrained (6 layers, {RETRIEVERS['smollm2'].pooling} pooling)", _untrained_retriever),
}
BM25_NAME = BASELINES["bm25"][0]


def parse_retrievers(specs: list[str]) -> dict[str, list[Path]]:
    """`LABEL=PATH` (or a bare PATH, labelled by its folder name) -> {label: [folders]} in the order given."""
    runs: dict[str, list[Path]] = {}
    for spec in specs:
        label, _, path = spec.rpartition("=")
        folder = Path(path)
        if not folder.is_dir():
            raise SystemExit(f"--retriever {spec}: no folder {folder}")
        runs.setdefault(label or folder.name, []).append(folder)
    return runs


class ResultCache:
    """Metrics already measured, one JSON line per (system, run, set folder) in `path` (None: no cache).

    A re-run reuses them, so a long suite run that was stopped resumes where it was; delete the
    file when the sets or the retriever folders change.
    """

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.rows: dict[tuple[str, str, str], dict[str, float]] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                self.rows[(row["system"], row["run"], row["folder"])] = row["metrics"]

    def get(self, key: tuple[str, str, str]) -> dict[str, float] | None:
        return self.rows.get(key)

    def put(self, key: tuple[str, str, str], metrics: dict[str, float]) -> None:
        self.rows[key] = metrics
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"system": key[0], "run": key[1], "folder": key[2], "metrics": metrics}) + "\n")


def _evaluate_on_sets(
    load: Callable[[], Any], run: str, folders: dict[str, str], name: str, cache: ResultCache, hybrid: bool = False,
    center: bool | int = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """{system: {set: metrics}} of one retriever (`run` names it: a folder, or "baseline"), loaded once, only
    if a set is not cached; with `center` (a dense retriever), also of its query-set centred run; with `hybrid`,
    also of each of these runs fused with BM25's by every fusion of `FUSIONS`."""
    plain = [name, centred_name(name, center)] if center else [name]
    systems = [*plain, *(hybrid_name(p, fusion) for p in plain for fusion in FUSIONS)] if hybrid else plain
    retriever = None
    scores: dict[str, dict[str, dict[str, float]]] = {system: {} for system in systems}
    for set_name, folder in folders.items():
        keys = {system: (system, run, str(Path(folder).resolve())) for system in systems}
        if all(cache.get(key) is not None for key in keys.values()):
            for system, key in keys.items():
                scores[system][set_name] = cache.get(key)
            continue
        retriever = retriever if retriever is not None else load()
        started = time.perf_counter()
        dataset = load_beir(folder)
        runs = named_runs(name, retriever, dataset, center=center)
        if hybrid:
            dense = dict(runs)
            for fusion in FUSIONS:
                runs.update(hybrid_runs(dense, dataset, fusion=fusion))
        for system, ranked in runs.items():
            metrics = retrieval_metrics(dataset.qrels, ranked, (10, 100))
            scores[system][set_name] = {m: metrics[m] for m in HEADLINE_METRICS}
            cache.put(keys[system], scores[system][set_name])
            log(f"{system} on {set_name}: nDCG@10 {100 * scores[system][set_name][MAIN_METRIC]:.2f} ({time.perf_counter() - started:.0f} s)")
    return scores


def _mean_and_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict[str, dict[str, float]]], sets: list[str]) -> dict[str, Any]:
    """Per set and over the suite: each metric's mean over `runs` ({set: metrics} each), plus its sd when there are several."""
    out: dict[str, Any] = {"runs": len(runs), "sets": {}}
    for set_name in [*sets, "mean"]:
        per_run = [
            {m: statistics.fmean(run[s][m] for s in sets) for m in HEADLINE_METRICS} if set_name == "mean" else run[set_name]
            for run in runs
        ]
        stats = {m: _mean_and_sd([r[m] for r in per_run]) for m in HEADLINE_METRICS}
        entry: dict[str, Any] = {m: round(mean, 4) for m, (mean, _) in stats.items()}
        if len(runs) > 1:
            entry["sd"] = {m: round(sd, 4) for m, (_, sd) in stats.items()}
        out["sets"][set_name] = entry
    return out


def add_bm25_ratios(summaries: dict[str, dict[str, Any]], sets: list[str]) -> None:
    """nDCG@10 over BM25's, per set, and its mean over the sets as the suite's ratio (needs the BM25 system)."""
    bm25 = summaries[BM25_NAME]["sets"]
    for summary in summaries.values():
        ratios = {s: summary["sets"][s][MAIN_METRIC] / max(bm25[s][MAIN_METRIC], 1e-9) for s in sets}
        for s, ratio in ratios.items():
            summary["sets"][s]["ndcg@10_over_bm25"] = round(ratio, 3)
        summary["sets"]["mean"]["ndcg@10_over_bm25"] = round(statistics.fmean(ratios.values()), 3)


def markdown_table(summaries: dict[str, dict[str, Any]], sets: list[str], metric: str) -> str:
    """One row per system, one column per set (+ suite mean), `metric` in percent with ± sd over runs."""

    def cell(entry: dict[str, Any]) -> str:
        sd = entry.get("sd", {}).get(metric)
        return f"{100 * entry[metric]:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")

    header = f"| {metric} | runs | " + " | ".join(sets) + " | mean | mean nDCG@10 / BM25 |"
    rule = "|---|---:|" + "---:|" * (len(sets) + 2)
    rows = [
        f"| {name} | {s['runs']} | " + " | ".join(cell(s["sets"][x]) for x in [*sets, "mean"]) + f" | {s['sets']['mean']['ndcg@10_over_bm25']:.2f} |"
        for name, s in summaries.items()
    ]
    return "\n".join([header, rule, *rows])


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Build the sets, evaluate every system on them, write the table and plot; the JSON-ready results."""
    started = time.perf_counter()
    names = args.sets.split(",") if args.sets else list(BUILDERS)
    folders = build_suite(args.root, sources={"concode": args.concode, "foldoc": args.foldoc, "stdlib": args.stdlib}, names=names)
    keys = ["bm25", *(k for k in args.baselines.split(",") if k != "bm25")]
    unknown = [k for k in keys if k not in BASELINES]
    if unknown:
        raise SystemExit(f"--baselines: unknown {unknown}; choose from {','.join(BASELINES)}")
    systems: dict[str, list[tuple[Callable[[], Any], str]]] = {BASELINES[k][0]: [(BASELINES[k][1], "baseline")] for k in keys}
    trained = parse_retrievers(args.retriever)
    for label, paths in trained.items():
        if label in systems:
            raise SystemExit(f"--retriever label {label!r} is a baseline's name")
        systems[label] = [(lambda p=p: load_encoder(str(p)), str(p.resolve())) for p in paths]
    cache = ResultCache(args.cache)
    measured: dict[str, list[dict[str, dict[str, float]]]] = {}
    for name, runs in systems.items():
        dense = name != BM25_NAME
        for load, run in runs:
            found = _evaluate_on_sets(load, run, folders, name, cache, hybrid=args.hybrid and name in trained,
                                      center=args.center_queries if dense else False)
            for system, scores in found.items():
                measured.setdefault(system, []).append(scores)
    summaries = {system: summarize(per_run, names) for system, per_run in measured.items()}
    add_bm25_ratios(summaries, names)
    root = Path(args.root)
    tables = "\n\n".join(markdown_table(summaries, names, m) for m in HEADLINE_METRICS)
    (root / "suite.md").write_text(tables + "\n", encoding="utf-8")
    plot_results(
        {n: {s: v[MAIN_METRIC] for s, v in summary["sets"].items()} for n, summary in summaries.items()},
        root / "suite.png",
        metrics=(*names, "mean"),
        title="nDCG@10 per yardstick set",
        errors={n: {s: v["sd"][MAIN_METRIC] for s, v in summary["sets"].items() if "sd" in v} for n, summary in summaries.items()},
    )
    print(tables, file=sys.stderr)
    datasets = {name: load_beir(folder) for name, folder in folders.items()}
    return {
        "suite": {n: {"folder": folders[n], "queries": len(d.queries), "documents": len(d.corpus)} for n, d in datasets.items()},
        "retrievers": {label: [str(p) for p in paths] for label, paths in trained.items()},
        "results": summaries,
        "markdown": str(root / "suite.md"),
        "plot": str(root / "suite.png"),
        "threads": torch.get_num_threads(),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


def run_single(args: argparse.Namespace) -> dict[str, Any]:
    """Train with the demo recipe and evaluate on one BEIR folder: the JSON-ready results."""
    if not (Path(args.data) / "corpus.jsonl").is_file():
        raise SystemExit(f"{args.data} is not a BEIR folder (no corpus.jsonl)")
    results = run_demo(args.output, args.budget, args.seed, eval_dir=args.data, objective=args.objective)
    table = results["table"]
    trained, untrained = table[trained_name(args.objective)]["ndcg@10"], table[untrained_name()]["ndcg@10"]
    return {
        "data": args.data,
        "budget": args.budget,
        "objective": args.objective,
        "wall_time_s": results["wall_time_s"],
        "table": table,
        "ndcg@10_trained_over_untrained": round(trained / max(untrained, 1e-9), 3),
        "ndcg@10_trained_over_bm25": round(trained / max(table["BM25"]["ndcg@10"], 1e-9), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--data", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv): train and evaluate on it")
    mode.add_argument("--suite", action="store_true", help="evaluate on every yardstick set; no training")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default")
    parser.add_argument("--output", default="revela-quality", help="working folder (--data)")
    parser.add_argument("--objective", choices=list(OBJECTIVES), default=DEFAULT_OBJECTIVE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="revela-suite", help="folder of the suite's sets, table and plot (--suite)")
    parser.add_argument("--sets", help=f"comma-separated subset of {','.join(BUILDERS)} (--suite)")
    parser.add_argument("--baselines", default="untrained,bm25,minilm", help=f"comma-separated subset of {','.join(BASELINES)}; bm25 always runs (--suite)")
    parser.add_argument("--retriever", action="append", default=[], metavar="LABEL=PATH", help="trained retriever folder; repeat a label for seeds (--suite)")
    parser.add_argument("--hybrid", action="store_true", help="also every trained retriever fused with BM25, by normalised scores and by reciprocal rank (--suite)")
    add_center_queries(parser, "also every dense system query-set centred, on its set's mean or (K) on K held-out queries (revela evaluate --center-queries; --suite)")
    parser.add_argument("--cache", help="JSON-lines file of measured (system, run, set) metrics, reused by a re-run (--suite)")
    parser.add_argument("--concode", help="CONCODE jsonl (default $REVELA_CONCODE or ../shared/data/codexglue/concode-dev.jsonl)")
    parser.add_argument("--foldoc", help="folder of foldoc.index + foldoc.dict.dz (default /usr/share/dictd)")
    parser.add_argument("--stdlib", help="standard-library folder (default this interpreter's)")
    args = parser.parse_args()
    if args.retriever and not args.suite:
        parser.error("--retriever goes with --suite")
    print(json.dumps(run_suite(args) if args.suite else run_single(args)))


if __name__ == "__main__":
    main()
