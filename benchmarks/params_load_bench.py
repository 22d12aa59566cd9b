"""load_params at scale: a params.yaml of N releases (the repository's params.yaml, its `releases` replaced by N
recipes of two components and two steps over the shipped sources, about 66 nodes each) beside the repository's
dvc.yaml, loaded and checked as every stage does, by the loader and by the one it replaced, in one process.

    python benchmarks/params_load_bench.py                        # 1,000, 3,000 and 10,000 releases
    python benchmarks/params_load_bench.py --releases 1000 --out benchmarks/results/params_load.txt

The old loader (before round 42c) compared each dvc.yaml dependency with every stage output (quadratic in the
releases), let the cycle collector walk the growing document, and had ruamel work out the YAML version per node.
At 10,000 releases it runs for many minutes: --old-limit skips it above that many releases.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scripts.lib.params as params_package
from benchmarks._record import add_out_argument, record
from scripts.lib.params import listed, yaml_text

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("diffusiondb", "chatgpt", "gustavosta", "openprompts")


def release_text(number: int) -> str:
    """Release r<number>: based on r<number // 2>, a reference to r<number - 1>, two components with a step each."""
    first, second = SOURCES[number % 4], SOURCES[(number + 1) % 4]
    lines = [f"  r{number}:", *([f"    base: r{number // 2}"] if number else [])]
    lines += [
        f"    description: release {number}, generated",
        "    components:",
        f"      - source: {first}",
        "        split: train",
        "        steps:",
        "          - clean: {rules: '2023-03-30', mode: rewrite, column: orig_text}",
        f"      - source: {second}",
        "        split: all",
        "        into: same",
        "        steps:",
        "          - dedup: {scope: per_split, method: embedding, threshold: 0.85, keep: none_of_pair}",
        "    steps:",
        "      - dedup: {scope: validation_vs_train, match: exact}",
    ]
    if number:
        lines.append(f"      - dedup: {{scope: against, against: train, reference: r{number - 1}, threshold: 0.85}}")
    return "\n".join(lines) + "\n"


def params_text(releases: int) -> str:
    shipped = (REPO / "params.yaml").read_text(encoding="utf-8")
    return shipped.replace("releases:\n", "releases:\n" + "".join(map(release_text, range(releases))), 1)


class PairwiseOuts:
    """listed.py's outs before round 42c: a dependency compared with every output."""

    def __init__(self, outs) -> None:
        self.outs = set(outs)

    def touches(self, path: str) -> bool:
        return any(path == out or path.startswith(out + "/") or out.startswith(path + "/") for out in self.outs)


@contextlib.contextmanager
def old_loader() -> Iterator[None]:
    """The loader as it was: pairwise outs, the collector on, ruamel's per-node version."""
    saved = listed.WrittenPaths, params_package.collector_paused, yaml_text._one_version_resolver
    listed.WrittenPaths = PairwiseOuts  # type: ignore[misc,assignment]
    params_package.collector_paused = contextlib.nullcontext  # type: ignore[assignment]
    yaml_text._one_version_resolver = lambda resolver: resolver
    try:
        yield
    finally:
        listed.WrittenPaths, params_package.collector_paused, yaml_text._one_version_resolver = saved


def timed_load(folder: Path) -> float:
    params_package._CHECKED_PARAMS.clear()  # each run checks the file anew, as a new stage process does
    started = time.perf_counter()
    params_package.load_params(path=folder / "params.yaml")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--old-limit", type=int, default=3000, help="most releases the old loader is run for")
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    for releases in args.releases:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            (folder / "params.yaml").write_text(params_text(releases), encoding="utf-8")
            shutil.copy(REPO / "dvc.yaml", folder / "dvc.yaml")
            os.chdir(folder)
            size = (folder / "params.yaml").stat().st_size
            new = timed_load(folder)
            line = f"{releases:>6} releases ({size / 1e6:4.1f} MB): new {new:7.2f} s"
            if releases <= args.old_limit:
                with old_loader():
                    old = timed_load(folder)
                line += f", old {old:7.2f} s, ratio old/new {old / new:5.1f}x"
            else:
                line += ", old skipped (--old-limit)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
