"""The batch and group functions of the Ray engine (scripts/lib/dedup/on_ray.py): Arrow table in, Arrow
table out, each a step of the local engine applied to the rows one Ray task holds.

Keep order is carried as columns (RANKS) instead of a global rank array: a group sorts its own rows by
them, which orders any subset of rows exactly as the local engine's global rank does.
Pairs travel as (a, b) with a before b in keep order, plus each end's rank columns (a_*, b_*).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import scripts.lib.dedup.signing as signing
from scripts.lib import minhash as mh
from scripts.lib.dedup.keep import assign, component_sizes
from scripts.lib.params import Dedup
from scripts.lib.shingle_sets import ShingleSets, jaccard_at_least, shingle_sets

# the columns that order rows as keep_rank does: keep longest = most characters, then id, then position
RANKS = {"first": ["row"], "none_of_pair": ["row"], "longest": ["neg_len", "order_key", "row"]}
_MIX = np.uint64(0x9E3779B97F4A7C15)
TEXT = pa.large_string()  # texts and order keys as Arrow's 64-bit-offset strings: one type on every path
RANK_TYPES = {"neg_len": pa.int64(), "order_key": TEXT}
ROW = pa.int64()  # a row number outside the shuffles


def rank_columns(ranks: list[str], prefix: str) -> list[str]:
    return [f"{prefix}{name}" for name in ranks]


def local_rank(table: pa.Table, columns: list[str]) -> np.ndarray:
    """int64 rank of each row of `table` by `columns` (ascending, the last one unique)."""
    order = pc.sort_indices(table.select(columns), sort_keys=[(c, "ascending") for c in columns]).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def sign_rows(table: pa.Table, params: Dedup) -> pa.Table:
    """(row, text, order_key) -> row, seq0, seq1, b0..b{bands-1}, neg_len, order_key; rows without tokens dropped."""
    texts = mh.as_string_array(table.column("text"))
    band_keys, sequence_keys, counts = signing.sketch_batch(texts, params)
    has = np.flatnonzero(counts > 0)
    columns = {"row": table.column("row").to_numpy()[has], "seq0": sequence_keys[has, 0], "seq1": sequence_keys[has, 1]}
    columns.update({f"b{band}": keys[has] for band, keys in enumerate(band_keys)})
    columns["neg_len"] = -pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)[has]
    columns["order_key"] = mh.as_string_array(table.column("order_key")).take(pa.array(has))
    return pa.table(columns)


def part_of(table: pa.Table, columns: list[str], parts: int) -> pa.Table:
    """Add `part`: a hash of `columns` modulo `parts` (the shuffle's group)."""
    return table.append_column("part", pa.array(part_numbers([table.column(c).to_numpy() for c in columns], parts)))


def part_numbers(columns: list[np.ndarray], parts: int) -> np.ndarray:
    """The group of each row of `columns` in a shuffle of `parts` groups (part_of's `part`)."""
    h = np.zeros(len(columns[0]), dtype=np.uint64)
    for values in columns:
        h = mh.fmix64(h * _MIX + values.astype(np.uint64))
    return (h % np.uint64(parts)).astype(narrowest_int(parts))


def narrowest_int(limit: int) -> np.dtype:
    """The narrowest signed integer type holding 0..limit-1: a shuffled column's bytes are the shuffle's time."""
    return np.dtype(next(kind for kind in (np.int8, np.int16, np.int32, np.int64) if limit - 1 <= np.iinfo(kind).max))


def row_type(rows: int) -> pa.DataType:
    """How the shuffles carry a row number of a run of `rows` rows (band rows, pairs, lookup keys)."""
    return pa.from_numpy_dtype(narrowest_int(rows))


def id_parts(table: pa.Table, parts: int) -> pa.Table:
    """(id, part): rows with the same id land in the same group (part: a hash of the id's bytes)."""
    ids = mh.as_string_array(table.column("id"))
    hashed = pa.table({"id": ids, "h": mh.string_hashes(ids)})
    return part_of(hashed, ["h"], parts).drop_columns(["h"])


def repeated_in_group(group: pa.Table) -> pa.Table:
    """How many of one group's rows repeat an id another row of the group has."""
    distinct = pc.count_distinct(group.column("id")).as_py()
    return pa.table({"repeated": pa.array([group.num_rows - distinct], pa.int64())})


def identical_in_group(table: pa.Table, ranks: list[str]) -> pa.Table:
    """Rows of one group, plus `rep`: -1 for the best-ranked row of each identical-text set (and for
    unique texts), else that row; a member also gets its rep's rank columns (b_*), as a pair would."""
    rank = local_rank(table, ranks)
    keys = np.stack([table.column("seq0").to_numpy(), table.column("seq1").to_numpy()], axis=1)
    _, members, member_rep = signing.identical_groups(keys, rank, np.arange(table.num_rows))
    rows = table.column("row").to_numpy()
    rep = np.full(table.num_rows, -1, dtype=np.int64)
    rep[members] = rows[member_rep]
    source = np.arange(table.num_rows)
    source[members] = member_rep
    out = table.drop_columns(["seq0", "seq1", "part"]).append_column("rep", pa.array(rep))
    for name in ranks:
        out = out.append_column(f"b_{name}", table.column(name).take(pa.array(source)))
    return out


def member_edges(table: pa.Table, ranks: list[str]) -> pa.Table:
    """Identical-text members as pairs (a = member, b = its rep, similarity 1), the layout of verified pairs."""
    a = table.select(ranks).rename_columns(rank_columns(ranks, "a_"))
    out = pa.table({"a": table.column("row"), "b": table.column("rep"), "similarity": np.ones(table.num_rows)})
    for name in ranks:
        out = out.append_column(f"a_{name}", a.column(f"a_{name}")).append_column(
            f"b_{name}", table.column(f"b_{name}")
        )
    return out


def bucket_rows(table: pa.Table, lo: int, hi: int, ranks: list[str], parts: int, rows: int) -> pa.Table:
    """Representatives -> one row per (row, band) for bands [lo, hi): band, key, part and the rank columns.
    These rows are most of the shuffled bytes, so row, band and part take the narrowest type their range
    (`rows` rows in the run, `hi` bands, `parts` groups) allows: 10 bytes a row instead of 18 took the
    band passes of 1M rows on a 3-node local cluster from 21 to 12-14 s."""
    ranked = table.select(ranks).set_column(ranks.index("row"), "row", table.column("row").cast(row_type(rows)))
    pieces = []
    for band in range(lo, hi):
        piece = ranked.append_column("band", pa.array(np.full(table.num_rows, band, dtype=narrowest_int(hi))))
        pieces.append(piece.append_column("key", table.column(f"b{band}")))
    band_rows = pa.concat_tables(pieces)
    return part_of(band_rows, ["band", "key"], parts)


def candidates_in_group(table: pa.Table, window: int, ranks: list[str]) -> pa.Table:
    """Candidate pairs of the whole buckets in this group: per band, `bucket_pairs` over its rows in keep order."""
    order = np.argsort(local_rank(table, ranks), kind="stable")
    table = table.take(pa.array(order))
    bands = table.column("band").to_numpy()
    keys = table.column("key").to_numpy()
    found = [np.zeros((0, 2), dtype=np.int64)]
    for band in np.unique(bands):
        at = np.flatnonzero(bands == band)  # in keep order
        found.append(at[mh.bucket_pairs(keys[at], window)])
    pairs = np.concatenate(found)
    row = table.column("row")  # row_type: pairs travel as narrow as the band rows
    out = pa.table({"a": row.take(pa.array(pairs[:, 0])), "b": row.take(pa.array(pairs[:, 1]))})
    for side, index in (("a", pairs[:, 0]), ("b", pairs[:, 1])):
        for name in ranks:
            if name != "row":
                out = out.append_column(f"{side}_{name}", table.column(name).take(pa.array(index)))
    return out


def pair_fields(ranks: list[str], texts: str = "", rows: pa.DataType = ROW) -> list[pa.Field]:
    """The columns of a pair: a, b (of type `rows`: row_type on the way through the shuffles), each end's rank
    columns (row is a and b) and text_<side> for `texts`."""
    fields = [pa.field("a", rows), pa.field("b", rows)]
    fields += [pa.field(f"{side}_{r}", RANK_TYPES[r]) for side in "ab" for r in ranks if r != "row"]
    return fields + [pa.field(f"text_{side}", TEXT) for side in texts]


def conform(table: pa.Table, fields: list[pa.Field]) -> pa.Table:
    """`table` with exactly `fields`, in that order (absent ones null): both sides of a lookup share one schema."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in fields
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# A value of a row (its text, its cluster's label) reaches the pairs that name the row through Ray's
# groupby (a reduce-side join): pairs keyed by one end's row and the rows keyed by row meet in one group.
# Ray 2.60's Dataset.join runs on hash-shuffle actors, which took twice as long on 2 CPUs and once waited
# for CPUs forever on a 3-node cluster of 1 CPU each.
TEXT_FIELD = pa.field("text", TEXT)


def lookup_requests(table: pa.Table, side: str, fields: list[pa.Field], value: pa.Field, parts: int) -> pa.Table:
    """Pairs (columns `fields`), keyed by their `side` row, `value` to be looked up."""
    keyed = table.append_column("key", table.column(side))
    return part_of(conform(keyed, [*fields, _key(fields), value]), ["key"], parts)


def lookup_sources(table: pa.Table, row: str, fields: list[pa.Field], value: pa.Field, parts: int) -> pa.Table:
    """Rows (`row`, `value`), keyed by row, in the schema of the requests (their pair columns null)."""
    keyed = pa.table({"key": table.column(row), value.name: table.column(value.name)})
    return part_of(conform(keyed, [*fields, _key(fields), value]), ["key"], parts)


def _key(fields: list[pa.Field]) -> pa.Field:
    """A lookup's key: a row, of the pairs' row type (fields[0] is a)."""
    return pa.field("key", fields[0].type)


def looked_up(group: pa.Table, fields: list[pa.Field], value: pa.Field, name: str) -> pa.Table:
    """One group's pairs with column `name` = `value` of the row their key names (an inner join: a
    pair whose row has no value goes)."""
    pairs, sources = requests_and_sources(group)
    at, found = source_positions(sources, pairs.column("key").to_numpy())
    values = sources.column(value.name).take(pa.array(at[found]))
    return pairs.filter(pa.array(found)).select([f.name for f in fields]).append_column(name, values)


def requests_and_sources(group: pa.Table) -> tuple[pa.Table, pa.Table]:
    """A lookup group's pairs and its rows (a row has no pair end `a`)."""
    source = pc.is_null(group.column("a")).to_numpy(zero_copy_only=False)
    return group.filter(pa.array(~source)), group.filter(pa.array(source))


def source_positions(sources: pa.Table, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted row: its position in `sources` (by column `key`) and whether it is there."""
    keys = sources.column("key").to_numpy()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    at = np.minimum(np.searchsorted(sorted_keys, wanted), max(len(keys) - 1, 0))
    found = (sorted_keys[at] == wanted) if len(keys) else np.zeros(len(wanted), dtype=bool)
    return (order[at] if len(keys) else at), found


def distinct_with_text_a(group: pa.Table, fields: list[pa.Field], parts: int) -> pa.Table:
    """One group's distinct pairs (a pair comes from every band it shares) with text_a on one pair per (a, the
    group its b goes to next), null on the others: the shuffle by b carries a row's text once to each group
    that needs it, not once per pair (a realistic 100k-prompt run has 69 candidates a row)."""
    pairs, sources = requests_and_sources(group)
    packed = mh.pack_pairs(np.stack([pairs.column("a").to_numpy(), pairs.column("b").to_numpy()], axis=1))
    _, first = np.unique(packed, return_index=True)
    pairs = pairs.take(pa.array(np.sort(first)))
    at, found = source_positions(sources, pairs.column("a").to_numpy())
    pairs, at = pairs.filter(pa.array(found)), at[found]
    a, b = pairs.column("a").to_numpy(), pairs.column("b").to_numpy()
    _, carriers = np.unique(mh.pack_pairs(np.stack([a, part_numbers([b], parts)], axis=1)), return_index=True)
    without = np.ones(len(a), dtype=bool)
    without[carriers] = False
    text_a = sources.column("text").take(pa.array(at, mask=without))
    return pairs.select([f.name for f in fields]).append_column("text_a", text_a)


def verified_with_text_b(group: pa.Table, fields: list[pa.Field], params: Dedup, chunk: int) -> pa.Table:
    """One group's pairs, each a's text on one of its pairs (distinct_with_text_a), and their b rows' texts:
    the pairs at >= threshold (`verify_pairs`)."""
    pairs, sources = requests_and_sources(group)
    carried = pairs.filter(pc.is_valid(pairs.column("text_a")))
    a_texts = pa.table({"key": carried.column("a"), "text": carried.column("text_a")})
    a_at, a_found = source_positions(a_texts, pairs.column("a").to_numpy())
    b_at, b_found = source_positions(sources, pairs.column("b").to_numpy())
    found = a_found & b_found
    pairs = pairs.filter(pa.array(found)).select([f.name for f in fields if f.name != "text_a"])
    verified = verify_pairs(pairs, (a_texts, a_at[found]), (sources, b_at[found]), params, chunk)
    # out of the shuffles, rows are int64 again: the keep policy meets them with the members' (ROW)
    return verified.cast(pa.schema([f.with_type(ROW) if f.name in ("a", "b") else f for f in verified.schema]))


def verify_pairs(pairs: pa.Table, a_side: tuple, b_side: tuple, params: Dedup, chunk: int) -> pa.Table:
    """Pairs (a, b, ...) and, for each side, (rows with column `text`, each pair's position among them) -> the
    pairs whose exact Jaccard >= threshold, with `similarity`. In each chunk a row is shingled once however
    many pairs name it (a group's pairs share their b rows: they were grouped by them), as the local engine
    shingles each candidate row once; no text is copied per pair."""
    jaccard = np.zeros(pairs.num_rows)
    for lo in range(0, pairs.num_rows, chunk):
        hi = min(lo + chunk, pairs.num_rows)
        (left, at_a), (right, at_b) = (_distinct_sets(rows, at[lo:hi], params) for rows, at in (a_side, b_side))
        jaccard[lo:hi] = jaccard_at_least(left, right, np.stack([at_a, at_b], axis=1), params.threshold)
    ok = np.flatnonzero(jaccard >= params.threshold)
    return pairs.take(pa.array(ok)).append_column("similarity", pa.array(jaccard[ok]))


def _distinct_sets(rows: pa.Table, at: np.ndarray, params: Dedup) -> tuple[ShingleSets, np.ndarray]:
    """The shingle sets of the distinct rows `at` names, and each position's place among them."""
    distinct, place = np.unique(at, return_inverse=True)
    return shingle_sets(rows.column("text").take(pa.array(distinct)), params.unit, params.ngram), place.reshape(-1)


def resolve_edges(verified: pa.Table, members: pa.Table, ranks: list[str], keep: str):
    """The keep policy over whole clusters: verified pairs and identical-text members (each a table of
    a, b, similarity, a_*, b_*). Returns (removed rows {row, duplicate_of, similarity} sorted by row,
    cluster sizes of the rows involved)."""
    columns = ["a", "b", "similarity", *[f"{s}_{r}" for s in "ab" for r in ranks if r != "row"]]
    verified = verified.select(columns) if verified.num_rows else None
    members = members.select(columns) if members.num_rows else None
    edges = [t for t in (verified, members) if t is not None]
    empty = {"row": np.zeros(0, np.int64), "duplicate_of": np.zeros(0, np.int64), "similarity": np.zeros(0)}
    if not edges:
        return empty, np.zeros(0, dtype=np.int64)
    ends = []
    for table in edges:
        for side in "ab":
            names = {side: "row", **{f"{side}_{r}": r for r in ranks if r != "row"}}
            ends.append(table.select(list(names)).rename_columns(list(names.values())))
    nodes = pa.concat_tables(ends)
    node_rows = nodes.column("row").to_numpy()
    ids, first = np.unique(node_rows, return_index=True)
    rank = local_rank(nodes.take(pa.array(first)), ranks)

    def compact(table):
        if table is None:
            return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
        pairs = np.stack(
            [np.searchsorted(ids, table.column("a").to_numpy()), np.searchsorted(ids, table.column("b").to_numpy())],
            axis=1,
        )
        return pairs, table.column("similarity").to_numpy()

    pairs, similarity = compact(verified)
    member_pairs, _ = compact(members)
    kept, dup, sim = assign(len(ids), pairs, similarity, rank, member_pairs[:, 0], member_pairs[:, 1], keep)
    gone = np.flatnonzero(~kept)
    sizes = component_sizes(len(ids), np.concatenate([pairs, member_pairs]))
    return {"row": ids[gone], "duplicate_of": ids[dup[gone]], "similarity": sim[gone]}, sizes[sizes > 0]
