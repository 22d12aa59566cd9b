"""The Ray engine of dedup gives the local engine's answer.

The fast tests compose the engine's row functions the way Ray's groupby/join deliver rows (any
partitioning, blocks of any size, both ways of resolving clusters) on real prompts with planted
near-duplicates. The slow ones run the real thing on a local `ray.cluster_utils.Cluster` of 3 nodes of
1 CPU with a small object store (blocks spill): same files for 1, 7 and 64 partitions, with a node
removed mid-run, twice; bad input and Ctrl-C are one line.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers.children import start_child
from helpers.planted import recombined, with_near_duplicates
from scripts.lib import minhash as mh
from scripts.lib.dedup import components, signing
from scripts.lib.dedup import rows as R
from scripts.lib.dedup.api import dedup_self, resolve_params
from scripts.lib.dedup.keep import report_counts
from scripts.lib.params import Runtime
from scripts.lib.shingle_sets import jaccard_at_least, shingle_sets

REPO = Path(__file__).resolve().parents[1]
FIXTURES = [REPO / "tests" / "fixtures", REPO.parent / "shared" / "fixtures"]
PARAMS = [{}, {"keep": "longest"}, {"keep": "none_of_pair"}, {"unit": "char", "ngram": 5, "bucket_window": 2}]


def real_prompts(limit: int = 900) -> list[str]:
    folder = next((f for f in FIXTURES if (f / "gpt4-prompts-3k.txt").exists()), None)
    if folder is None:
        pytest.skip("fixture prompts not found")
    texts = (folder / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()[:limit]
    with (folder / "openprompts-1k.csv").open(encoding="utf-8") as f:
        texts += [row[0] for row in list(csv.reader(f))[1 : limit // 3] if row]
    return texts


def planted(limit: int = 300, seed: int = 3) -> tuple[list[str], list[str]]:
    """Real prompts with near-duplicates, exact copies and blanks planted."""
    return with_near_duplicates(real_prompts(limit), seed)


def groups(table: pa.Table, parts: int) -> list[pa.Table]:
    part = table.column("part").to_numpy()
    return [table.filter(pa.array(part == k)) for k in range(parts) if (part == k).any()]


def blocks(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(lo, size) for lo in range(0, table.num_rows, size)]


def composed(texts, ids, params, parts: int, size: int, distributed: bool):
    """on_ray._run's steps, with Ray's shuffles done by `groups` (rows with the same part together)."""
    n, ranks = len(texts), R.RANKS[params.keep]
    table = pa.table(
        {"row": np.arange(n), "text": pa.array(texts, pa.large_string()), "order_key": pa.array(ids, pa.large_string())}
    )
    signed = pa.concat_tables([R.sign_rows(b, params) for b in blocks(table, size)])
    grouped = pa.concat_tables(
        [R.identical_in_group(g, ranks) for g in groups(R.part_of(signed, ["seq0"], parts), parts)]
    )
    rep = grouped.column("rep").to_numpy()
    members = R.member_edges(grouped.filter(pa.array(rep >= 0)), ranks)
    reps = grouped.filter(pa.array(rep < 0))
    bands, _ = signing.banding(params)
    found = []
    for lo in range(0, bands, 8):
        band_rows = pa.concat_tables(
            [R.bucket_rows(b, lo, min(bands, lo + 8), ranks, parts, n) for b in blocks(reps, size)]
        )
        found += [R.candidates_in_group(g, params.bucket_window, ranks) for g in groups(band_rows, parts)]
    pairs, pairs_a = R.pair_fields(ranks, rows=R.row_type(n)), R.pair_fields(ranks, texts="a", rows=R.row_type(n))

    def looked_up(pair_blocks, side, fields, group_step, *args):
        keyed = [R.lookup_requests(b, side, fields, R.TEXT_FIELD, parts) for b in pair_blocks]
        keyed += [R.lookup_sources(b, "row", fields, R.TEXT_FIELD, parts) for b in blocks(table, size)]
        return pa.concat_tables(
            [group_step(g.drop_columns(["part"]), fields, *args) for g in groups(pa.concat_tables(keyed), parts)]
        )

    candidates = looked_up(found, "a", pairs, R.distinct_with_text_a, parts)
    verified = looked_up(blocks(candidates, size), "b", pairs_a, R.verified_with_text_b, params, 50)
    if distributed:
        removed, sizes = star_resolved(verified, members, ranks, params.keep, parts)
    else:
        removed, sizes = R.resolve_edges(verified, members, ranks, params.keep)
    stats = {
        **report_counts(
            n,
            n - len(removed["row"]),
            sizes,
            members.num_rows,
            candidates.num_rows,
            verified.num_rows,
            n - signed.num_rows,
            params,
        ),
        **signing.banding_stats(params),
    }
    return removed, stats


def star_resolved(verified, members, ranks, keep, parts):
    """components.resolve without Ray: star rounds until the edges stop changing, then groups of clusters."""
    edges = pa.table(
        {
            "u": np.concatenate([verified.column("a").to_numpy(), members.column("a").to_numpy()]),
            "v": np.concatenate([verified.column("b").to_numpy(), members.column("b").to_numpy()]),
        }
    )

    def round_of(edges, step):
        both = R.part_of(components._both_ways(edges), ["node"], parts)
        return pa.concat_tables([step(g.drop_columns(["part"])) for g in groups(both, parts)])

    seen = None
    while seen != (now := sorted(zip(edges.column("u").to_pylist(), edges.column("v").to_pylist()))):
        seen, edges = now, round_of(round_of(edges, components.large_star), components.small_star)
    label = {v: v for v in edges.column("v").to_pylist()}
    label.update(zip(edges.column("u").to_pylist(), edges.column("v").to_pylist()))
    columns = verified.column_names
    flagged = pa.concat_tables(
        [components._flagged(verified, columns, False), components._flagged(members, columns, True)]
    )
    labels = pa.array([label[a] for a in flagged.column("a").to_pylist()], pa.int64())
    out = []
    for g in groups(R.part_of(flagged.append_column("label", labels), ["label"], parts), parts):
        member = g.column("member").to_numpy(zero_copy_only=False)
        out.append(pa.table(R.resolve_edges(g.filter(pa.array(~member)), g.filter(pa.array(member)), ranks, keep)[0]))
    table = pa.concat_tables(out)
    order = np.argsort(table.column("row").to_numpy())
    removed = {k: table.column(k).to_numpy()[order] for k in ("row", "duplicate_of", "similarity")}
    return removed, np.unique(list(label.values()), return_counts=True)[1]


@pytest.mark.parametrize("overrides", PARAMS)
@pytest.mark.parametrize("parts, size, distributed", [(1, 5000, False), (7, 97, False), (64, 333, True)])
def test_the_ray_steps_compose_to_the_local_result(overrides, parts, size, distributed):
    texts, ids = planted()
    params = resolve_params(None, **overrides)
    local = dedup_self(texts, ids, params)
    removed, stats = composed(texts, ids, params, parts, size, distributed)
    assert stats == local.stats
    assert np.array_equal(removed["row"], np.flatnonzero(~local.keep))
    assert np.array_equal(removed["duplicate_of"], local.duplicate_of[~local.keep])
    assert np.array_equal(removed["similarity"], local.similarity[~local.keep])
    assert stats["removed"] > 100 and stats["exact_duplicates"] > 0  # the planted copies were found


@pytest.mark.parametrize("parts", [1, 3, 64])
def test_repeated_ids_meet_in_one_group_whatever_block_they_come_in(parts):
    """The Ray stage's id check: ids hashed to groups, repeats counted per group (no groupby on strings)."""
    ids = [f"id-{k}" for k in range(500)]
    for repeats, table_ids in ((0, ids), (1, ids + ["id-7"]), (3, ids + ["id-7", "id-7", "id-499"])):
        table = pa.table({"id": pa.array(table_ids, pa.string())})
        keyed = pa.concat_tables([R.id_parts(b, parts) for b in blocks(table, 97)])
        found = sum(R.repeated_in_group(g).column("repeated")[0].as_py() for g in groups(keyed, parts))
        assert found == repeats, (parts, table_ids[-3:])


def test_the_rounds_checksum_takes_all_64_bits_of_the_edge_hashes():
    """A round's signature xors 64-bit edge hashes: half of all edge sets have the top bit set (an int64
    column overflowed on those, failing the distributed rounds at random)."""
    sums = [components._checksum(pa.table({"u": [k], "v": [k + 1]})) for k in range(64)]
    values = [t.column("h")[0].as_py() for t in sums]
    assert any(v >= 2**63 for v in values) and any(v < 2**63 for v in values)
    expected = [int(mh.fmix64(np.uint64(k + 1) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(k))) for k in range(64)]
    assert values == expected and all(t.column("n")[0].as_py() == 1 for t in sums)


def test_star_rounds_label_every_node_with_the_smallest_of_its_cluster():
    rng = np.random.default_rng(4)
    u, v = rng.integers(0, 300, 400), rng.integers(0, 300, 400)
    keep = u != v
    verified = pa.table({"a": u[keep], "b": v[keep], "similarity": np.ones(keep.sum())})
    empty = verified.slice(0, 0)
    _, sizes = star_resolved(verified, empty, ["row"], "first", 5)
    _, local_sizes = R.resolve_edges(verified, empty, ["row"], "first")
    assert sorted(sizes.tolist()) == sorted(local_sizes.tolist())


# --- the real engine on a local Ray cluster ------------------------------------------------------------


@pytest.mark.parametrize("parts", [1, 4, 16])
def test_a_rows_text_travels_once_to_each_group_that_verifies_its_pairs(parts):
    """Pairs of many candidates a row (as real prompts give): text_a rides on one pair per (a, b's next group),
    never on every pair, and the check by b still finds each pair's exact Jaccard from both texts."""
    params = resolve_params(threshold=0.3)
    texts = real_prompts(120)  # and 39 OpenPrompts rows
    rows = pa.table({"row": np.arange(len(texts)), "text": pa.array(texts, R.TEXT)})
    a, b = (side.reshape(-1) for side in np.triu_indices(len(texts), 1))  # every pair: ~150 candidates a row
    pairs = pa.table({"a": a, "b": b})
    fields, fields_a = R.pair_fields(["row"]), R.pair_fields(["row"], texts="a")

    def lookup(requests, side, fields, step, *args):
        keyed = pa.concat_tables(
            [
                R.lookup_requests(requests, side, fields, R.TEXT_FIELD, parts),
                R.lookup_sources(rows, "row", fields, R.TEXT_FIELD, parts),
            ]
        )
        return pa.concat_tables([step(g.drop_columns(["part"]), fields, *args) for g in groups(keyed, parts)])

    carried = lookup(pairs, "a", fields, R.distinct_with_text_a, parts)
    with_text = carried.filter(pc.is_valid(carried.column("text_a")))
    routes = {
        (x, int(p))
        for x, p in zip(carried.column("a").to_pylist(), R.part_numbers([carried.column("b").to_numpy()], parts))
    }
    assert carried.num_rows == len(a) and with_text.num_rows == len(routes) <= len(texts) * parts < len(a)
    assert all(texts[x] == t for x, t in zip(with_text.column("a").to_pylist(), with_text.column("text_a").to_pylist()))
    verified = lookup(carried, "b", fields_a, R.verified_with_text_b, params, 1000)
    found = {(x, y): j for x, y, j in zip(*(verified.column(c).to_pylist() for c in ("a", "b", "similarity")))}
    sets = shingle_sets(pa.array(texts), params.unit, params.ngram)
    exact = jaccard_at_least(sets, sets, np.stack([a, b], axis=1), params.threshold)
    assert found == {(int(x), int(y)): j for x, y, j in zip(a, b, exact) if j >= params.threshold} and found


@pytest.mark.parametrize(
    "keep, rows, row_type, parts, part_type",
    [
        ("first", 300, pa.int16(), 7, pa.int8()),
        ("longest", 70_000, pa.int32(), 300, pa.int16()),
        ("first", 2**31, pa.int32(), 40_000, pa.int32()),
        ("none_of_pair", 2**31 + 1, pa.int64(), 128, pa.int8()),
    ],
)
def test_band_rows_are_as_narrow_as_the_run_allows(keep, rows, row_type, parts, part_type):
    """Band rows and pairs are most of what the Ray engine shuffles: row, band and part take the narrowest type
    the run's row count, bands and groups allow, and the candidates found from them are the wide rows' pairs."""
    params = resolve_params(keep=keep)
    ranks = R.RANKS[keep]
    texts, ids = planted(200)
    table = pa.table(
        {"row": np.arange(len(texts)), "text": pa.array(texts, R.TEXT), "order_key": pa.array(ids, R.TEXT)}
    )
    signed = R.sign_rows(table, params)
    narrow, wide = (R.bucket_rows(signed, 0, 8, ranks, parts, n) for n in (rows, 2**62))
    assert narrow.schema.field("row").type == row_type and narrow.schema.field("band").type == pa.int8()
    assert narrow.schema.field("part").type == part_type and wide.schema.field("row").type == pa.int64()
    assert (narrow.nbytes < wide.nbytes) == (row_type != pa.int64())
    found = [R.candidates_in_group(band_rows, params.bucket_window, ranks) for band_rows in (narrow, wide)]
    assert found[0].schema.field("a").type == row_type and found[0].num_rows > 0
    assert found[0].cast(found[1].schema).equals(found[1])


def test_each_row_group_task_gets_only_its_own_removed_rows(tmp_path):
    """The kept rows and the ids of removed rows are read row group by row group: each task's item carries the
    removed rows inside its group (with_rows), never the whole array, and the groups' kept rows together are
    the input less the removed rows, in order."""
    from scripts.lib.dedup import on_ray

    texts, ids = planted(120)
    folder = stage_files(tmp_path, texts, ids, shard_rows=130, group_rows=40)
    items, _ = on_ray.fragments(sorted(folder.iterdir()))
    gone = np.sort(np.random.default_rng(4).choice(len(texts), size=len(texts) // 3, replace=False))
    carried = on_ray.with_rows(items, gone, "gone")
    spans = [(item["offset"], item["offset"] + item["rows"]) for item in items]
    assert len(items) > 4 and spans[0][0] == 0 and spans[-1][1] == len(texts)
    for item, (lo, hi) in zip(carried, spans):
        assert np.array_equal(np.frombuffer(item["gone"], np.int64), gone[(gone >= lo) & (gone < hi)])
    kept = pa.concat_tables([on_ray._kept_rows(pa.Table.from_pylist([item])) for item in carried])
    keep = np.ones(len(texts), dtype=bool)
    keep[gone] = False
    assert kept.column("text").to_pylist() == [t for t, k in zip(texts, keep) if k]
    picked = [on_ray._picked_ids(pa.Table.from_pylist([item])) for item in on_ray.with_rows(items, gone, "wanted")]
    found = pa.concat_tables([part for part in picked if part.num_rows])
    assert found.column("id").to_pylist() == [ids[k] for k in gone]


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    env = {"env_vars": {"PYTHONPATH": str(REPO)}}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20) for _ in range(2)]
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    ray.init(address=cluster.address, runtime_env=env, include_dashboard=False, log_to_driver=False)
    for signum, handler in handlers.items():  # ray.init leaves its SIGTERM handler (sys.exit) in this process:
        signal.signal(signum, handler)  # a test forking after it on this xdist worker saw its fork exit 1, not -15
    yield ray, cluster, workers
    ray.shutdown()
    cluster.shutdown()


def stage_files(tmp_path: Path, texts, ids, shard_rows: int = 400, group_rows: int = 150) -> Path:
    table = pa.table({"id": ids, "text": texts, "source": ["s"] * len(texts)})
    folder = tmp_path / "in"
    folder.mkdir()
    for k, lo in enumerate(range(0, len(texts), shard_rows)):  # sharded input, several row groups a shard
        pq.write_table(table.slice(lo, shard_rows), folder / f"part-{k:03d}.parquet", row_group_size=group_rows)
    pq.write_table(table, tmp_path / "in.parquet")
    return folder


def local_files(tmp_path: Path, params) -> tuple[dict, list[bytes]]:
    """The local engine's stats and files (kept rows, clusters) for tmp_path/in.parquet."""
    from scripts.dedup import clusters_table, read_stage_input, write_table

    table = read_stage_input(tmp_path / "in.parquet")
    result = dedup_self(table.column("text"), table.column("id"), params)
    write_table(table.filter(pa.array(result.keep)), tmp_path / "local.parquet")
    write_table(
        clusters_table(table.column("id").combine_chunks(), result, params), tmp_path / "local.clusters.parquet"
    )
    return result.stats, [(tmp_path / f"local{s}.parquet").read_bytes() for s in ("", ".clusters")]


@pytest.mark.slow  # 25-35 s of CI with the cluster's start: CI reached 601 s with it
@pytest.mark.parametrize("driver_edges", [10**9, 0])
def test_on_a_three_node_cluster_the_ray_stage_writes_the_local_files(cluster, tmp_path, driver_edges):
    """The Ray engine on a local cluster, small (the slow tier adds 100k prompts, every partitioning and a lost
    node): real prompts with planted near-duplicates in sharded row groups, the local engine's bytes."""
    texts, ids = planted(300)
    folder = stage_files(tmp_path, texts, ids, shard_rows=150, group_rows=60)
    params = resolve_params(None, keep="longest")
    stats, expected = local_files(tmp_path, params)
    assert stats["removed"] > 100 and stats["exact_duplicates"] > 0
    out, clusters = tmp_path / "out.parquet", tmp_path / "out.clusters.parquet"
    runtime = Runtime(engine="ray", partitions=7, driver_edges=driver_edges, batch_rows=97)
    assert ray_stage(folder, out, clusters, params, runtime) == stats
    assert [out.read_bytes(), clusters.read_bytes()] == expected


@pytest.mark.slow
def test_the_ray_stage_on_100k_prompts_writes_the_local_files(cluster, tmp_path):
    """~100k recombined real prompts with planted near-duplicates, on 3 nodes of 1 CPU whose 80 MB object
    stores make blocks spill: the local engine's bytes."""
    texts, _ = with_near_duplicates(recombined(real_prompts(3_100), 75_000, seed=5), seed=6)
    ids = [f"id{(i * 7919) % 1_000_003:07d}" for i in range(len(texts))]  # distinct, not in row order
    folder = stage_files(tmp_path, texts, ids, shard_rows=20_000, group_rows=7_000)
    params = resolve_params(None)
    stats, expected = local_files(tmp_path, params)
    assert 20_000 < stats["removed"] < 60_000 and stats["candidate_pairs"] > 1_000_000, stats
    out, clusters = tmp_path / "out.parquet", tmp_path / "out.clusters.parquet"
    assert ray_stage(folder, out, clusters, params, Runtime(engine="ray")) == stats
    assert [out.read_bytes(), clusters.read_bytes()] == expected


@pytest.mark.slow
def test_the_ray_stage_writes_the_local_files_for_any_partitioning_and_a_lost_node(cluster, tmp_path):
    _ray, local_cluster, workers = cluster
    texts, ids = planted(600)
    folder = stage_files(tmp_path, texts, ids)
    params = resolve_params(None, keep="longest")
    stats, expected = local_files(tmp_path, params)
    for k, (parts, edges) in enumerate([(1, 10**9), (7, 10**9), (64, 0), (7, 0)]):
        out, clusters = tmp_path / f"out{k}.parquet", tmp_path / f"out{k}.clusters.parquet"
        if k == 3:  # a worker node goes away while the run is under way: Ray Data retries its tasks
            import threading

            threading.Timer(3.0, local_cluster.remove_node, args=(workers[1],)).start()
        found = ray_stage(
            folder, out, clusters, params, Runtime(engine="ray", partitions=parts, driver_edges=edges, batch_rows=97)
        )
        assert found == stats
        assert [out.read_bytes(), clusters.read_bytes()] == expected, (parts, edges)


@pytest.mark.slow
def test_a_relative_input_path_is_read_where_the_stage_runs_not_where_the_workers_do(cluster, tmp_path, monkeypatch):
    """A stage joins a running cluster (runtime.ray_address), whose workers run in their own folders: the
    input named relative to the stage (dvc.yaml's `data/clean/S.parquet`) is read as the stage resolves it.
    The 1M rehearsal on a local cluster failed here with `input shard vanished during the run`."""
    texts, ids = planted(300)
    stage_files(tmp_path, texts, ids)
    params = resolve_params(None)
    stats, expected = local_files(tmp_path, params)
    monkeypatch.chdir(tmp_path)  # the driver's folder; the cluster's workers keep theirs
    out, clusters = Path("out.parquet"), Path("out.clusters.parquet")
    assert ray_stage(Path("in"), out, clusters, params, Runtime(engine="ray")) == stats
    assert [out.read_bytes(), clusters.read_bytes()] == expected


def ray_stage(folder: Path, out: Path, clusters: Path, params, runtime) -> dict:
    """The Ray engine's step as the dedup command runs it: kept rows into `out`, the clusters table beside."""
    from scripts.dedup import write_table
    from scripts.lib.dedup.on_ray import dedup_stage

    stats, table = dedup_stage(folder, out, out, params, runtime)  # `out` is its own temp here
    write_table(table, clusters)
    return stats


def run_cli(tmp_path: Path, input: Path, extra_env=None, start=True):
    (tmp_path / "params.yaml").write_text(
        "dedup: {threshold: 0.7}\nruntime: {engine: ray, object_store_mb: 100, partitions: 3}\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
    command = [sys.executable, "-m", "scripts", "dedup", "s", str(input), str(tmp_path / "out" / "s.parquet")]
    (tmp_path / "out").mkdir(exist_ok=True)
    if not start:
        return command, env
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_missing_input_or_a_repeated_id_is_one_line_on_ray(tmp_path):
    done = run_cli(tmp_path, tmp_path / "nowhere")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "input not found" in done.stderr
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "part-000.parquet").write_bytes(b"not parquet")
    done = run_cli(tmp_path, tmp_path / "shards")
    assert (
        done.returncode == 2 and "not a readable parquet file" in done.stderr and done.stderr.strip().count("\n") == 0
    )
    assert not list((tmp_path / "out").iterdir())
    table = pa.table({"id": ["a", "b", "a"], "text": ["a red fox", "a grey wolf", "a red cat"]})
    pq.write_table(table, tmp_path / "shards" / "part-000.parquet")
    done = run_cli(tmp_path, tmp_path / "shards")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "column 'id' has repeated values" in done.stderr
    assert not list((tmp_path / "out").iterdir())
    # found by a Ray task, not the driver: its own line comes back (it was "UDF failed to process a data block")
    pq.write_table(
        pa.table({"id": ["a", "b"], "text": ["a red fox", "a grey wolf"]}), tmp_path / "shards" / "part-000.parquet"
    )
    table = pa.table({"id": ["c", "d", "e"], "text": ["a red cat", None, "a red dog"]})
    pq.write_table(table, tmp_path / "shards" / "part-001.parquet")
    done = run_cli(tmp_path, tmp_path / "shards")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert f"{tmp_path / 'shards' / 'part-001.parquet'}: row 1: text is null" in done.stderr, done.stderr  # in its file
    assert not list((tmp_path / "out").iterdir())


def session_has(session: int, name: str) -> bool:
    """A process of session `session` has `name` in its command line."""
    found = subprocess.run(["pgrep", "-s", str(session), "-f", name], capture_output=True, text=True).stdout
    return bool(found.split())


@pytest.mark.slow
@pytest.mark.parametrize(
    "started, working",
    [("raylet", 3.0), ("gcs_server", 0.0)],  # Ray working; Ray still starting (ray.init's processes were left running)
    ids=["working", "while_ray_starts"],
)
def test_ctrl_c_on_ray_is_exit_130_with_ray_down_and_no_output(tmp_path, started, working):
    texts, ids = planted(900)
    folder = stage_files(tmp_path, texts * 4, [f"{i}-{k}" for k in range(4) for i in ids])
    command, env = run_cli(tmp_path, folder, start=False)
    process = start_child(command, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not session_has(process.pid, started):
        time.sleep(0.05)
    time.sleep(working)  # with the raylet up, 3 s: Ray is working (the whole run takes ~15 s once Ray has started)
    assert process.poll() is None, "the run ended before the Ctrl-C"
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().count("\n") == 0
    assert not list((tmp_path / "out").iterdir())
    leftover = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert not leftover, f"processes of the run still alive: {leftover}"
