"""Time and peak memory of `inbatch_attention` (forward + backward) next to the naive formulation that
materialises all (B, B, H, Lq, Lk) pair scores, in one run; and the sparse top-k mode
(`inbatch_attention(top_k=k)`) at larger groups, as cost PER CHUNK next to the exact operator at a
baseline group size (target of issue 6: B=64, k=4 at most 1.5x the per-chunk cost of dense B=16).
Each measurement runs in a fresh process so that peak RSS belongs to it alone. Prints one JSON object.

    PYTHONPATH=src python benchmarks/inbatch_attention.py --group-sizes 4 16 --sparse 64:4 --dense-baseline 16
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch


def naive(query, key, value, weights, v_norm=True, eps=1e-6):
    """All pairs at once: scores (B_i, B_j, H, Lq, Lk)."""
    H = query.shape[1]
    key = key.repeat_interleave(H // key.shape[1], dim=1)
    value = value.repeat_interleave(H // value.shape[1], dim=1)
    scores = torch.einsum("ihqd,jhkd->ijhqk", query, key) * query.shape[-1] ** -0.5
    probs = scores.softmax(dim=-1)
    pair = torch.einsum("ijhqk,jhkd->ijhqd", probs, value)
    if v_norm:
        pair = pair / (torch.einsum("ijhqk,jhk->ijhq", probs, value.norm(dim=-1)) + eps).unsqueeze(-1)
    return torch.einsum("ij,ijhqd->ihqd", weights, pair)


def inputs(B: int, H: int, Hkv: int, L: int, D: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, L, D, generator=g, requires_grad=True)
    k = torch.randn(B, Hkv, L, D, generator=g, requires_grad=True)
    v = torch.randn(B, Hkv, L, D, generator=g, requires_grad=True)
    w = torch.rand(B, B, generator=g).fill_diagonal_(0)
    return q, k, v, (w / w.sum(-1, keepdim=True)).requires_grad_()


def measure(kind: str, B: int, H: int, Hkv: int, L: int, D: int) -> dict:
    from revela_hf import inbatch_attention

    q, k, v, w = inputs(B, H, Hkv, L, D)
    if kind.startswith("topk:"):
        top_k = int(kind.split(":")[1])
        fn = lambda *a: inbatch_attention(*a, top_k=top_k)  # noqa: E731
    else:
        fn = inbatch_attention if kind == "revela" else naive
    fn(*inputs(2, H, Hkv, 8, D)).sum().backward()  # warm-up: lazy kernel and allocator set-up is not the operator's
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    fn(q, k, v, w).sum().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    return {"seconds": round(seconds, 3), "peak_mib": round(peak / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-sizes", type=int, nargs="*", default=[4, 16])
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--length", type=int, default=160)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--sparse", nargs="*", default=["64:4"], metavar="B:K",
                        help="top-k cases, compared per chunk with the exact operator at --dense-baseline")
    parser.add_argument("--dense-baseline", type=int, default=16, help="group size of the exact per-chunk baseline")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = dict(H=args.heads, Hkv=args.kv_heads, L=args.length, D=args.head_dim)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), **shape)))
        return

    def run(kind: str, B: int) -> dict:
        cmd = [sys.executable, __file__, "--worker", kind, str(B), "--heads", str(args.heads), "--kv-heads",
               str(args.kv_heads), "--length", str(args.length), "--head-dim", str(args.head_dim)]
        return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

    rows = []
    for B in args.group_sizes:
        row = {"B": B, **shape}
        for kind in ("revela", "naive"):
            row[kind] = run(kind, B)
        row["memory_ratio_naive_over_revela"] = round(row["naive"]["peak_mib"] / max(row["revela"]["peak_mib"], 1e-9), 2)
        row["speed_ratio_naive_over_revela"] = round(row["naive"]["seconds"] / row["revela"]["seconds"], 2)
        rows.append(row)
    sparse = []
    if args.sparse:
        Bd = args.dense_baseline
        dense = next((r["revela"] for r in rows if r["B"] == Bd), None) or run("revela", Bd)
        dense_per_chunk = dense["seconds"] / Bd
        for case in args.sparse:
            B, k = (int(x) for x in case.split(":"))
            got = run(f"topk:{k}", B)
            sparse.append({
                "B": B, "top_k": k, **shape, **got,
                "seconds_per_chunk": round(got["seconds"] / B, 4),
                "dense_baseline": {"B": Bd, **dense, "seconds_per_chunk": round(dense_per_chunk, 4)},
                "per_chunk_cost_ratio_vs_dense_baseline": round(got["seconds"] / B / dense_per_chunk, 3),
            })
    machine = {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps({"benchmark": "inbatch_attention fwd+bwd, fp32, CPU", "machine": machine, "results": rows,
                      "sparse_top_k": sparse}))


if __name__ == "__main__":
    main()
