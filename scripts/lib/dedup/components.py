"""Clusters of verified pairs too many for the driver: large-star/small-star rounds on Ray Data (Kiveris
et al., "Connected Components in MapReduce and Beyond", 2014; text-dedup's Spark script does the same).

Each round groups edges by node (Ray's groupby) and links every node to the smallest row it can see;
the rounds stop when one leaves the edges unchanged, which happens only when every cluster is a star
around its smallest row (O(log n) rounds). Then each edge is labelled with its cluster and groups of
whole clusters are resolved with the local keep policy where they land.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from scripts.lib import minhash as mh
from scripts.lib.dedup.rows import looked_up, lookup_requests, lookup_sources, pair_fields, part_of, resolve_edges
from scripts.lib.errors import DataError

MAX_ROUNDS = 100  # log2 of any row count we could hold, with a wide margin
_ARROW = dict(batch_format="pyarrow")


def _both_ways(table: pa.Table) -> pa.Table:
    u, v = table.column("u").to_numpy(), table.column("v").to_numpy()
    return pa.table({"node": np.concatenate([u, v]), "nbr": np.concatenate([v, u])})


def _by_node(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (node, nbr) sorted by node; the first index of each node's run; each run's smallest nbr."""
    packed = mh.sorted_unique(
        (table.column("node").to_numpy().astype(np.uint64) << np.uint64(32))
        | table.column("nbr").to_numpy().astype(np.uint64)
    )
    node = (packed >> np.uint64(32)).astype(np.int64)
    nbr = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    start = np.flatnonzero(np.concatenate([[True], node[1:] != node[:-1]]))
    return node, nbr, start, np.minimum.reduceat(nbr, start)


def large_star(table: pa.Table) -> pa.Table:
    """Each node's larger neighbours are linked to the smallest of the node and its neighbours."""
    node, nbr, start, low = _by_node(table)
    smallest = np.repeat(np.minimum(node[start], low), np.diff(np.append(start, len(node))))
    out = nbr > node
    return pa.table({"u": nbr[out], "v": smallest[out]})


def small_star(table: pa.Table) -> pa.Table:
    """Each node and its smaller neighbours are linked to the smallest of them."""
    node, nbr, _, _ = _by_node(table)
    lower = nbr < node
    node, nbr = node[lower], nbr[lower]
    if len(node) == 0:
        return pa.table({"u": np.zeros(0, np.int64), "v": np.zeros(0, np.int64)})
    start = np.flatnonzero(np.concatenate([[True], node[1:] != node[:-1]]))
    smallest = np.repeat(np.minimum.reduceat(nbr, start), np.diff(np.append(start, len(node))))
    u = np.concatenate([nbr, node[start]])
    v = np.concatenate([smallest, smallest[start]])
    keep = u != v
    return pa.table({"u": u[keep], "v": v[keep]})


def _checksum(table: pa.Table) -> pa.Table:
    u, v = table.column("u").to_numpy().astype(np.uint64), table.column("v").to_numpy().astype(np.uint64)
    h = mh.fmix64(np.maximum(u, v) * np.uint64(0x9E3779B97F4A7C15) + np.minimum(u, v))
    xor = np.bitwise_xor.reduce(h) if len(h) else np.uint64(0)
    return pa.table({"n": pa.array([len(u)], pa.int64()), "h": pa.array([xor], pa.uint64())})  # h uses all 64 bits


def star_round(edges, step, parts: int):
    both = edges.map_batches(_both_ways, **_ARROW).map_batches(part_of, fn_args=(["node"], parts), **_ARROW)
    return both.groupby("part").map_groups(lambda t: step(t.drop_columns(["part"])), **_ARROW).materialize()


def signature(ray, edges) -> tuple[int, int]:
    sums = pa.concat_tables([ray.get(ref) for ref in edges.map_batches(_checksum, **_ARROW).to_arrow_refs()])
    return int(np.sum(sums.column("n").to_numpy())), int(
        np.bitwise_xor.reduce(sums.column("h").to_numpy().astype(np.uint64))
    )


def labels(ray, edges, parts: int):
    """(node, label = smallest row of its cluster) for every node of `edges` (columns u, v)."""
    before = signature(ray, edges)
    for _ in range(MAX_ROUNDS):
        edges = star_round(star_round(edges, large_star, parts), small_star, parts)
        after = signature(ray, edges)
        if after == before:
            break
        before = after
    else:
        raise DataError(f"dedup: clusters did not settle in {MAX_ROUNDS} rounds")

    def star_labels(t: pa.Table) -> pa.Table:  # a star (u, root): u and the root itself
        u, v = t.column("u").to_numpy(), t.column("v").to_numpy()
        return pa.table({"node": np.concatenate([u, v]), "label": np.concatenate([v, v])})

    def distinct(t: pa.Table) -> pa.Table:
        node, first = np.unique(t.column("node").to_numpy(), return_index=True)
        return pa.table({"node": node, "label": t.column("label").to_numpy()[first]})

    return (
        edges.map_batches(star_labels, **_ARROW)
        .map_batches(part_of, fn_args=(["node"], parts), **_ARROW)
        .groupby("part")
        .map_groups(distinct, **_ARROW)
        .materialize()
    )


def _flagged(table: pa.Table, columns: list[str], member: bool) -> pa.Table:
    """Verified pairs or identical-text members in one schema, flagged."""
    return table.select(columns).append_column("member", pa.array(np.full(table.num_rows, member)))


def resolve(ray, verified, members, ranks: list[str], keep: str, parts: int):
    """resolve_edges over clusters spread across the cluster: (removed rows, cluster sizes)."""
    columns = ["a", "b", "similarity", *[f"{side}_{r}" for side in "ab" for r in ranks if r != "row"]]
    flagged = [
        d.map_batches(_flagged, fn_args=(columns, member), **_ARROW)
        for d, member in ((verified, False), (members, True))
    ]
    edges = flagged[0].union(flagged[1])
    node_labels = labels(
        ray, edges.map_batches(lambda t: pa.table({"u": t.column("a"), "v": t.column("b")}), **_ARROW), parts
    )
    fields = [*pair_fields(ranks), pa.field("similarity", pa.float64()), pa.field("member", pa.bool_())]
    label = pa.field("label", pa.int64())
    labelled = (
        edges.map_batches(lookup_requests, fn_args=("a", fields, label, parts), **_ARROW)
        .union(node_labels.map_batches(lookup_sources, fn_args=("node", fields, label, parts), **_ARROW))
        .groupby("part")
        .map_groups(looked_up, fn_args=(fields, label, "label"), **_ARROW)
    )

    def resolve_group(t: pa.Table) -> pa.Table:
        member = t.column("member").to_numpy(zero_copy_only=False)
        removed, _ = resolve_edges(t.filter(pa.array(~member)), t.filter(pa.array(member)), ranks, keep)
        return pa.table(removed)

    grouped = labelled.map_batches(part_of, fn_args=(["label"], parts), **_ARROW).groupby("part")
    found = [ray.get(r) for r in grouped.map_groups(resolve_group, **_ARROW).to_arrow_refs()]
    empty = {"row": np.zeros(0, np.int64), "duplicate_of": np.zeros(0, np.int64), "similarity": np.zeros(0)}
    table = pa.concat_tables(found) if found else pa.table(empty)
    order = np.argsort(table.column("row").to_numpy(), kind="stable")
    removed = {name: table.column(name).to_numpy()[order] for name in empty}
    sizes = node_labels.groupby("label").count()
    sizes = pa.concat_tables([ray.get(r) for r in sizes.to_arrow_refs()])
    return removed, sizes.column(sizes.column_names[-1]).to_numpy().astype(np.int64)
