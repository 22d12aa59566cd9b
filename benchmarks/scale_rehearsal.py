"""Scale rehearsal: the real stages, run by `dvc repro`, on one text source of N generated prompts.

    .venv/bin/python benchmarks/scale_rehearsal.py 100000
    .venv/bin/python benchmarks/scale_rehearsal.py 1000000 --engine ray --out benchmarks/results/scale_rehearsal_1m_ray.txt
    .venv/bin/python benchmarks/scale_rehearsal.py 1000000 --engine ray --cluster 3   # on a local 3-node cluster

Builds a workspace in a temp folder (this tree's code, dvc.yaml and params.yaml, git-initialised) whose
only source is `rehearsal` (kind text, text only, the default cleaning rules, MinHash dedup) and whose only
release is a text-only release of it (`export: prompts`), then runs each stage the release needs with
`dvc repro -s`, dependencies first, and prints per stage: wall time, CPU time (user +
system of the stage and every process it started) and peak RSS (the largest single process it ran, from
wait4; `--pss` also samples the sum over the process tree). Prompts: dedup_bench's synthetic generator
(Zipf vocabulary of 30k words, 10-40 words a prompt, 10% planted near-duplicates).

`--cluster N` starts a local `ray.cluster_utils.Cluster` of N nodes of 1 CPU each (as the tests do) and
points `runtime.ray_address` at it: each stage joins it, and its work runs in the cluster's workers, so
the CPU and RSS columns count the stage's driver only; the wall time is the measure there.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._peak_rss import run_child
from benchmarks._record import TreeMemory, add_out_argument, record

SOURCE, RELEASE = "rehearsal", "r"


def workspace(folder: Path, engine: str, ray_address: str | None = None) -> Path:
    """A git repository holding this tree's tracked files (no pipeline outputs) and rehearsal params."""
    from scripts.tools.replay_history import built_by_the_pipeline

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and not built_by_the_pipeline(name) and not name.startswith(("data/raw/", "tests/")):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw = f"data/raw/{SOURCE}"
    params["sources"] = {
        SOURCE: {
            "kind": "text",
            "path": raw,
            "images": raw,
            "text_only": True,
            "clean": True,
            "dedup": True,
            "caption_language": None,
        }
    }
    params["releases"] = {
        RELEASE: {"components": [{"source": SOURCE, "split": "all", "into": "same"}], "export": "prompts"}
    }
    params["generate"]["sources"] = []
    params["runtime"]["engine"] = engine
    params["runtime"]["ray_address"] = ray_address
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "rehearsal"]):
        subprocess.run(command, cwd=folder, check=True, capture_output=True)
    return folder


def write_prompts(folder: Path, size: int) -> float:
    """data/raw/rehearsal/prompts.txt with `size` prompts, one a line; returns its size in GiB. Written by
    a child process: a stage's peak RSS (wait4) starts at this process's own, which forked it."""
    import multiprocessing

    path = folder / "data" / "raw" / SOURCE / "prompts.txt"
    path.parent.mkdir(parents=True)
    child = multiprocessing.get_context("spawn").Process(target=_write_prompts, args=(path, size))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"writing the prompts failed (exit {child.exitcode})")
    return path.stat().st_size / 2**30


def _write_prompts(path: Path, size: int) -> None:
    from benchmarks.dedup_bench import synthetic_prompts

    texts, _ = synthetic_prompts(size, units=(10, 41))
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, len(texts), 200_000):
            f.write("\n".join(texts.slice(start, 200_000).to_pylist()) + "\n")


def stage_order(folder: Path) -> list[str]:
    """The stages release@r needs, dependencies first (from `dvc dag --dot`)."""
    import graphlib
    import re

    dot = subprocess.run(
        ["dvc", "dag", "--dot", f"release@{RELEASE}"], cwd=folder, capture_output=True, text=True, check=True
    ).stdout
    graph: dict[str, set[str]] = {name: set() for name in re.findall(r'^"([^"]+)";$', dot, re.M)}
    for before, after in re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, re.M):
        graph[after].add(before)
    return list(graphlib.TopologicalSorter(graph).static_order())


def run_stage(folder: Path, stage: str, pss: bool) -> tuple[float, float, float, float]:
    """(wall s, CPU s, peak RSS GiB of its largest process, sampled peak PSS GiB of the tree or nan)."""
    no_sampling = contextlib.nullcontext(SimpleNamespace(peak_gib=float("nan")))
    with TreeMemory(every_s=0.5) if pss else no_sampling as tree:
        run = run_child(["dvc", "repro", "-s", stage], cwd=folder, merge_stderr=True)
    if run.exit_code:
        raise SystemExit(f"{stage} failed (exit {run.exit_code}):\n{run.stdout[-3000:]}")
    return run.seconds, run.cpu_seconds, run.peak_gib, tree.peak_gib


def outputs_digest(folder: Path) -> str:
    """sha256 over the bytes of every stage output of the rehearsal (data/ but the raw prompts)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((folder / "data").rglob("*")):
        if path.is_file() and "raw" not in path.relative_to(folder / "data").parts[:1]:
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def local_cluster(args):
    """The address of a local ray.cluster_utils.Cluster of `args.cluster` 1-CPU nodes (None without one)."""
    if not args.cluster:
        yield None
        return
    from ray.cluster_utils import Cluster

    store = args.node_store_mb * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store})
    try:
        for _ in range(args.cluster - 1):
            cluster.add_node(num_cpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", type=int, help="prompts in the source")
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help="runtime.engine")
    parser.add_argument("--pss", action="store_true", help="also sample the process tree's PSS (every 0.5 s)")
    parser.add_argument("--keep", type=Path, default=None, help="build the workspace here and keep it")
    parser.add_argument("--cluster", type=int, default=0, metavar="N", help="engine ray on a local cluster of N nodes")
    parser.add_argument("--node-store-mb", type=int, default=512, help="--cluster: each node's object store")
    add_out_argument(parser)
    args = parser.parse_args()
    if args.cluster and args.engine != "ray":
        raise SystemExit("--cluster needs --engine ray")
    record(args.out)
    with tempfile.TemporaryDirectory(prefix="scale-rehearsal-") as tmp, local_cluster(args) as address:
        folder = args.keep or Path(tmp) / "ws"
        if folder.exists():
            raise SystemExit(f"{folder}: exists (--keep builds a new workspace; pick a path that does not exist)")
        folder.mkdir(parents=True)
        workspace(folder, args.engine, address)
        t0 = time.perf_counter()
        gib = write_prompts(folder, args.size)
        where = f" on a local cluster of {args.cluster} nodes of 1 CPU ({address})" if address else ""
        print(
            f"{args.size:,} prompts ({gib:.2f} GiB of text) written in {time.perf_counter() - t0:.0f} s; "
            f"engine {args.engine}{where}"
        )
        totals = [0.0, 0.0]
        print(f"{'stage':<24} {'wall s':>8} {'CPU s':>8} {'CPU µs/row':>11} {'peak RSS GiB':>13} {'tree PSS GiB':>13}")
        for stage in stage_order(folder):
            wall, cpu, rss, pss = run_stage(folder, stage, args.pss)
            totals[0] += wall
            totals[1] += cpu
            print(
                f"{stage:<24} {wall:8.1f} {cpu:8.1f} {cpu / args.size * 1e6:11.1f} {rss:13.2f} {pss:13.2f}", flush=True
            )
        print(f"{'total':<24} {totals[0]:8.1f} {totals[1]:8.1f} {totals[1] / args.size * 1e6:11.1f}")
        import pyarrow.parquet as pq

        parts = sorted((folder / "data" / "releases" / RELEASE).glob("*/prompts.parquet"))
        kept = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
        print(f"outputs digest (equal across engines and runs): {outputs_digest(folder)}")
        print(f"release {RELEASE}: {kept:,} prompts of {args.size:,}")


if __name__ == "__main__":
    main()
