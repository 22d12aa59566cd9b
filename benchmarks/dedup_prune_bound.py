"""How much exact verification an outcome-based prune could save (issue 28, item 6), measured, not guessed.

    .venv/bin/python benchmarks/dedup_prune_bound.py 100000 --out benchmarks/results/dedup_prune_bound_100k.txt

Greedy keep (`first` | `longest`) needs a candidate pair checked only when its earlier row (in keep
order) is kept: a removed row can neither keep a later one out nor be its `duplicate_of`. So the share of
candidates whose earlier row ends up removed bounds what pruning "already decided" rows can save (rows
already in one component are a subset: a removed row's pairs). This runs the real stage code on the
realistic generator (dedup_bench.realistic_prompts), verifies every candidate, and prints that share
beside the time split between finding candidates and verifying them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_bench import realistic_prompts

from benchmarks._record import add_out_argument, record
from scripts.lib.dedup import signing
from scripts.lib.dedup.keep import greedy_assign, keep_rank
from scripts.lib.dedup.texts import as_texts
from scripts.lib.params import Dedup, Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="?", default=100_000)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    texts, _ = realistic_prompts(args.rows)
    params, runtime = Dedup(), Runtime()
    table = as_texts(texts)
    rank = keep_rank(table, None, params.keep)
    sketch = signing.sketch(table, params, runtime)
    nonempty = np.nonzero(sketch.shingle_counts > 0)[0]
    reps, _, _ = signing.identical_groups(sketch.sequence_keys, rank, nonempty)
    start = time.perf_counter()
    packed, order = signing.self_candidates(sketch.band_keys, reps, rank, params.bucket_window)
    found = time.perf_counter()
    near_pairs, jaccard = signing.self_verified(table, packed, order, params, runtime.verify_pairs)  # as the stage
    verified = time.perf_counter()
    keep, _, _ = greedy_assign(args.rows, near_pairs, jaccard, rank)
    pairs = signing.candidate_rows(packed, order)
    earlier = np.where(rank[pairs[:, 0]] < rank[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    prunable = float((~keep[earlier]).mean()) if len(pairs) else 0.0
    print(
        f"{args.rows:,} realistic rows, {len(reps):,} distinct texts, threshold {params.threshold}, keep {params.keep}"
    )
    print(
        f"candidates {len(pairs):,} ({len(pairs) / args.rows:.1f} a row); at >= threshold {len(near_pairs):,} ({len(near_pairs) / max(1, len(pairs)):.4f})"
    )
    print(f"rows removed {int((~keep).sum()):,}; candidates whose earlier row is removed: {prunable:.4f}")
    print(f"finding candidates {found - start:.1f} s, verifying them {verified - found:.1f} s")
    print(
        f"upper bound of an outcome-based prune: {prunable:.1%} of verification, {prunable * (verified - found) / (verified - start):.1%} of both"
    )


if __name__ == "__main__":
    main()
