"""Round 42b: Ray's blocks are bounded by the rows, not by `runtime.partitions` or `runtime.batch_rows`.

The class: a param asking for more blocks (or shuffle groups) than the rows can fill with work. `partitions:
1000000` cut clean@S's 200 rows into 200 one-row blocks (a task and its objects each), dedup@S's five shuffles into
one group per row (a sort shuffle's N x M pieces each), and dedup-text's `batch_rows: 1` into a block per row: time
bounded by the param, and runs past a 60 s bound on a loaded 2-core machine (round 40f). Now
`ray_checks.bounded_blocks` gives at most one block per row, and more than MANY_BLOCKS (64) or 2 per worker only
while each still holds MIN_BLOCK_ROWS (1,000) rows (7 or 64 asked on small inputs stay as asked), and the stage says so in one line on stdout (`ray_checks.blocks_note`).

Default-tier rows are the pure rules, in process; the rows that run the real command on a local
`ray.cluster_utils.Cluster` are in the slow tier.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.ray_runs import out_bytes, ray_stage_folder, run_bounded, two_cpu_cluster, write_prompts
from helpers.repos import REPO
from scripts.lib.params import Runtime

FIXTURES = REPO / "tests" / "fixtures"

# --- the rule, in process ------------------------------------------------------------------------------------------
DEDUP_GROUPS = {
    "partitions 10**6, 3,057 rows, 2 workers": ({"partitions": 1_000_000, "workers": 2}, 3_057, 64),
    "partitions 10**6, 200 rows, 2 workers": ({"partitions": 1_000_000, "workers": 2}, 200, 64),
    "partitions 10**6, 3,057 rows, 100 workers: 2 per worker": ({"partitions": 1_000_000, "workers": 100}, 3_057, 200),
    "partitions 5,000, 2M rows, 2 workers: one per 1,000 rows": ({"partitions": 5_000, "workers": 2}, 2_000_000, 2_000),
    "guard: partitions 7, 556 rows: as asked": ({"partitions": 7, "workers": 2}, 556, 7),
    "guard: partitions 64, 556 rows: as asked": ({"partitions": 64, "workers": 2}, 556, 64),
    "guard: the default, 10 rows, 65,536 workers: one per row": ({"workers": 65_536}, 10, 10),
    "guard: no rows": ({"partitions": 64, "workers": 2}, 0, 1),
}


@pytest.mark.parametrize("runtime, rows, groups", list(DEDUP_GROUPS.values()), ids=list(DEDUP_GROUPS))
def test_dedups_shuffle_groups_are_bounded_by_the_rows(runtime, rows, groups):
    from scripts.lib.dedup.on_ray import partitions

    assert partitions(Runtime(engine="ray", **runtime), rows) == groups


CLEAN_BLOCKS = {
    "partitions 10**6, 200 rows, 2 workers": ({"partitions": 1_000_000}, 2, 200, 64),
    "partitions 10**6, 3,057 rows, 2 workers": ({"partitions": 1_000_000}, 2, 3_057, 64),
    "partitions 100,000, 4M rows, 2 workers": ({"partitions": 100_000}, 2, 4_000_000, 4_000),
    "guard: partitions 1": ({"partitions": 1}, 2, 3_057, 1),
    "guard: the default, 250k rows, 1 worker": ({}, 1, 250_000, 3),
}


@pytest.mark.parametrize("runtime, workers, rows, blocks", list(CLEAN_BLOCKS.values()), ids=list(CLEAN_BLOCKS))
def test_cleans_blocks_are_bounded_by_the_rows(runtime, workers, rows, blocks):
    from scripts.lib.cleaning.on_ray import blocks_of, window_blocks

    table = pa.table({"prompt": pa.array(["a"] * rows)}) if rows < 10_000 else None
    used = window_blocks(Runtime(engine="ray", **runtime), workers, rows, say=False)
    assert used == blocks
    if table is not None:  # the slices the block count makes: every row, once, in order
        parts = blocks_of(table, used)
        assert len(parts) <= blocks and sum(part.num_rows for part in parts) == rows


BATCH_BLOCKS = {
    "batch_rows 1, 200 rows, 2 workers": ({"batch_rows": 1, "workers": 2}, 200, 50),  # 64 asked: 4 rows each
    "batch_rows 1, 3,057 rows, 2 workers": ({"batch_rows": 1, "workers": 2}, 3_057, 64),
    "batch_rows 10, 100,000 rows, 2 workers": ({"batch_rows": 10, "workers": 2}, 100_000, 100),
    "guard: batch_rows 97, 500 rows: as asked": ({"batch_rows": 97, "workers": 2}, 500, 6),
    "guard: batch_rows 1,000, 3,057 rows": ({"batch_rows": 1_000, "workers": 2}, 3_057, 4),
    "guard: no rows": ({"batch_rows": 1, "workers": 2}, 0, 1),
}


@pytest.mark.parametrize("runtime, rows, blocks", list(BATCH_BLOCKS.values()), ids=list(BATCH_BLOCKS))
def test_dedup_texts_blocks_are_bounded_by_the_rows(runtime, rows, blocks, capsys):
    from scripts.lib.dedup.on_ray import row_blocks

    table = pa.table({"row": pa.array(range(rows), pa.int64())})
    parts = row_blocks(table, Runtime(engine="ray", **runtime))
    assert len(parts) == blocks
    assert pa.concat_tables(parts).column("row").to_pylist() == list(range(rows))
    said = capsys.readouterr().out.strip().splitlines()
    asked = -(-rows // runtime["batch_rows"])
    assert len(said) == (1 if blocks < asked else 0), said
    if said:
        assert said[0].startswith(f"runtime.batch_rows={runtime['batch_rows']} asks {asked} blocks for {rows} rows")


# --- the real command on Ray -----------------------------------------------------------------------------------------
BOUND_S = int(os.environ.get("ROUND42B_BOUND_S", "240"))  # a hang bound; times measured are in the round's report


@pytest.fixture(scope="module")
def cluster():
    yield from two_cpu_cluster()


def clean_input(root: Path, rows: int) -> list[str]:
    write_prompts(root, (FIXTURES / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()[:rows])
    return ["clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet"]


def dedup_input(root: Path, rows: int) -> list[str]:
    texts = (FIXTURES / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()[:rows]
    texts += [text + " again" for text in texts[::10]]  # near-duplicates: dedup removes some
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts}), root / "in.parquet")
    return ["dedup", "s", "in.parquet", "out/s.parquet"]


def stage_run(root: Path, make, runtime: dict) -> tuple[subprocess.CompletedProcess, float]:
    ray_stage_folder(root, FIXTURES, runtime)
    return run_bounded(root, make(root, 200), BOUND_S)


RAY_RUNS = {
    "clean@S, partitions 10**6, 200 rows": (clean_input, {"partitions": 1_000_000}),
    "dedup@S, partitions 10**6, 200 rows": (dedup_input, {"partitions": 1_000_000}),
}


@pytest.mark.slow
@pytest.mark.parametrize("make, runtime", list(RAY_RUNS.values()), ids=list(RAY_RUNS))
def test_partitions_past_the_rows_run_in_rows_bounded_time_with_the_local_bytes(
    tmp_path, cluster, make, runtime, capsys
):
    local, _ = stage_run(tmp_path / "local", make, {"engine": "local", "workers": 2})
    assert local.returncode == 0, local.stderr
    done, seconds = stage_run(
        tmp_path / "ray", make, {"engine": "ray", "ray_address": cluster.address, "workers": 2, **runtime}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert out_bytes(tmp_path / "ray") == out_bytes(tmp_path / "local")
    rows = pq.read_metadata(tmp_path / "ray" / "in.parquet").num_rows  # dedup's input has 20 near-duplicates more
    assert f"runtime.partitions=1000000 asks 1000000 blocks for {rows} rows: 64 on Ray" in done.stdout, done.stdout
    with capsys.disabled():
        print(f"\n{runtime}: {seconds:.1f} s")
