"""Where dedup@S's time goes on the Ray engine, against the local engine on the same rows in this process.

    python benchmarks/dedup_ray_phases.py 1000000 --out benchmarks/results/dedup_ray_phases_1m.txt

Writes N synthetic prompts (the scale rehearsal's: 10-40 words, planted near-duplicates) as one parquet
of `id, text` in row groups of --row-group rows (1,048,576: what every stage writes), then runs the
stage's two paths on it: the local engine (scripts/dedup.py's: StageInput, dedup_self, the kept rows
written) and `dedup_stage` on a local `ray.cluster_utils.Cluster` of --nodes 1-CPU nodes with a small
object store each, as the tests and `scale_rehearsal.py --cluster` use. Prints the Ray engine's phases
(scripts/lib/dedup/on_ray.py logs each one's wall time), how much Ray spilled to disk, the ratio of the
two walls, and whether the kept rows and the clusters are the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import add_out_argument, record


def write_input(path: Path, size: int, row_group: int, realistic: bool) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.dedup_bench import realistic_prompts, synthetic_prompts

    texts, _ = realistic_prompts(size) if realistic else synthetic_prompts(size, units=(10, 41))
    ids = pa.array([f"p{i:09d}" for i in np.arange(size)])
    pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=row_group)


def run_local(input: Path, out: Path):
    """The local engine, as scripts/dedup.py runs it."""
    from scripts.dedup import clusters_table
    from scripts.lib.dedup import dedup_self
    from scripts.lib.dedup.stage_input import StageInput
    from scripts.lib.params import Dedup, Runtime
    from scripts.lib.tables import write_row_groups

    params, runtime = Dedup(), Runtime()
    rows = StageInput(input, runtime.stream_rows)
    result = dedup_self(rows, rows.ids, params, runtime)
    write_row_groups(rows.tables(result.keep), rows.schema, out, out)
    return result.stats, clusters_table(rows.ids, result, params)


def timed_local(input: Path, out: Path, when: str):
    """run_local and its wall time; run before and after the Ray engine (a shared machine's load drifts)."""
    t0 = time.perf_counter()
    stats, clusters = run_local(input, out)
    wall = time.perf_counter() - t0
    print(f"local engine, this process, {when} the ray engine: {wall:.1f} s, {stats['removed']:,} removed", flush=True)
    return stats, clusters, wall


class Phases(logging.Handler):
    """Collects on_ray's `phase NAME SECONDS s` lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.fullmatch(r"phase (.+) ([0-9.]+) s", record.getMessage())
        if match:
            self.seen.append((match.group(1), float(match.group(2))))


def spilled_mib(session_dir: str) -> int:
    """MiB spilled by all raylets of a cluster (each logs its running total)."""
    total = 0
    for log_file in Path(session_dir, "logs").glob("raylet*.out"):
        found = re.findall(r"Spilled (\d+) MiB", log_file.read_text(errors="replace"))
        total += max(map(int, found), default=0)
    return total


def run_ray(input: Path, out: Path, nodes: int, store_mb: int):
    from ray.cluster_utils import Cluster

    from scripts.lib.dedup import on_ray
    from scripts.lib.params import Dedup, Runtime

    store = store_mb * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store})
    phases = Phases()
    on_ray.log.addHandler(phases)
    on_ray.log.setLevel(logging.INFO)
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        runtime = Runtime(engine="ray", ray_address=cluster.address)
        t0 = time.perf_counter()
        stats, clusters = on_ray.dedup_stage(input, out, out, Dedup(), runtime)
        wall = time.perf_counter() - t0
        return stats, clusters, wall, phases.seen, spilled_mib(cluster.head_node.get_session_dir_path())
    finally:
        on_ray.log.removeHandler(phases)
        cluster.shutdown()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", type=int, nargs="?", default=1_000_000, help="prompts")
    parser.add_argument("--nodes", type=int, default=3, help="1-CPU nodes of the local cluster")
    parser.add_argument("--node-store-mb", type=int, default=512, help="each node's object store")
    parser.add_argument("--realistic", action="store_true", help="dedup_bench's realistic prompts (real phrases)")
    parser.add_argument("--bands-per-pass", type=int, default=None, help="on_ray.BANDS_PER_PASS for this run")
    parser.add_argument("--row-group", type=int, default=1024 * 1024, help="rows per row group of the input")
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    if args.bands_per_pass:
        from scripts.lib.dedup import on_ray

        on_ray.BANDS_PER_PASS = args.bands_per_pass
    with tempfile.TemporaryDirectory(prefix="dedup-ray-phases-") as tmp:
        folder = Path(tmp)
        input = folder / "clean.parquet"
        t0 = time.perf_counter()
        write_input(input, args.size, args.row_group, args.realistic)
        kind = "realistic" if args.realistic else "synthetic"
        print(
            f"{args.size:,} {kind} prompts written in {time.perf_counter() - t0:.1f} s (row groups of {args.row_group:,})"
        )
        local_stats, local_clusters, local_wall = timed_local(input, folder / "local.parquet", "before")
        stats, clusters, wall, phases, spilled = run_ray(input, folder / "ray.parquet", args.nodes, args.node_store_mb)
        local_wall = min(local_wall, timed_local(input, folder / "local.parquet", "after")[2])
        print(f"ray engine, {args.nodes} nodes of 1 CPU and {args.node_store_mb} MB of object store: {wall:.1f} s")
        print(f"{'phase':<44} {'wall s':>7} {'share':>6}")
        for name, seconds in phases:
            print(f"{name:<44} {seconds:7.1f} {seconds / wall:6.0%}")
        rest = wall - sum(seconds for _, seconds in phases)
        print(f"{'(Ray start and the rest)':<44} {rest:7.1f} {rest / wall:6.0%}")
        print(f"spilled to disk by the cluster's raylets: {spilled:,} MiB")
        same = digest(folder / "local.parquet") == digest(folder / "ray.parquet") and clusters.equals(local_clusters)
        print(f"same kept rows and clusters: {same}; same report counts: {stats == local_stats}")
        print(f"candidate pairs {stats['candidate_pairs']:,}, verified {stats['verified_pairs']:,}")
        print(f"ray / local wall: {wall / local_wall:.2f}x (against the faster local run)")


if __name__ == "__main__":
    main()
