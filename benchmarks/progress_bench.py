"""What scripts.lib.progress.track costs a loop (issue 8): the same loops with and without it, in one process.

    python benchmarks/progress_bench.py [--items 1000000]

Prints ns per item of a bare loop, of track() writing to a log (no terminal) and of track() drawing a
live bar (a forced terminal into a buffer), and the ratio to the bare loop; then the ratio on the real
cleaning loop (clean_text over the OpenPrompts fixture), where the per-item cost of cleaning dwarfs it.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import add_out_argument, record
from scripts.lib.progress import track


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    n = args.items
    items = list(range(n))
    bare = timed(lambda: sum(x for x in items))
    log = timed(lambda: sum(x for x in track(items, desc="bench", stream=io.StringIO())))
    bar = timed(lambda: sum(x for x in track(items, desc="bench", stream=io.StringIO(), force_terminal=True)))
    for name, seconds in (("bare loop", bare), ("track, log", log), ("track, live bar", bar)):
        print(f"{name:16} {seconds / n * 1e9:7.0f} ns/item  x{seconds / bare:5.1f}")

    fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "openprompts-1k.csv"
    if fixture.exists():
        import pandas as pd

        from scripts.lib.cleaning import clean_text, load_rules
        from scripts.lib.params import load_params

        rules = load_rules(load_params("clean", Path(__file__).resolve().parents[1] / "params.yaml"))
        prompts = [str(p) for p in pd.read_csv(fixture)["prompt"].dropna()] * 5
        plain = timed(lambda: [clean_text(p, rules) for p in prompts])
        tracked = timed(lambda: [clean_text(p, rules) for p in track(prompts, desc="clean", stream=io.StringIO())])
        print(f"clean_text over {len(prompts):,} prompts: tracked / plain = {tracked / plain:.3f}")


if __name__ == "__main__":
    main()
