"""Vectorised MinHash primitives for near-duplicate removal: shingles, signatures, band keys and candidate
pairs (their exact Jaccard: scripts/lib/shingle_sets.py), on Arrow arrays in and numpy arrays out (no
Python object per row or per shingle, so 10M prompts fit in a few GB). One job, hence over 500 lines.

Shingling (docs/contracts.md §4): lowercase `\\w+` tokens, word n-grams (`ngram`, default 3); a text
with fewer than n tokens is ONE shingle of all its tokens, one without tokens has none; `unit="char"`:
character n-grams of the tokens joined by spaces. Hashes are stable across processes and machines:
token -> 64-bit hash of its UTF-8 bytes; shingle -> fmix64 of its units' hashes combined; MinHash ->
datasketch 2.x's "affine32" scheme on the shingle hash's low 32 bits, so `datasketch.MinHash(num_perm,
seed, hashfunc=lambda v: v)` fed `shingle_hash32` gives bit-identical signatures (tests/test_dedup.py).
Unlike datasketch's default (sha1 of each shingle, a Python call each) token hashes combine in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib.errors import DataError
from scripts.lib.tables import is_text_type

# RE2 spelling of Python's `re` non-word run: `\w` there is Unicode letters, digits and underscore.
_NON_WORD = r"[^\p{L}\p{N}_]+"
_MIX_MULT = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio odd constant: spreads successive units
_SET_SALT = np.uint64(0xD6E8FEB86659FD93)  # an independent odd constant (token lengths, code points)


class _Ragged:
    """n variable-length runs packed into one array: run i is [offsets[i], offsets[i+1])."""

    offsets: np.ndarray  # int64, length n + 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Shingles(_Ragged):
    """Shingle hashes of n texts: text i owns hashes[offsets[i]:offsets[i+1]] (may repeat)."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, length n + 1


# --- hashing helpers (uint64/uint32 arrays; numpy wraps around silently, which is intended) -----


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3 64-bit finaliser: a fixed avalanching bijection."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finaliser, exactly as datasketch's affine32 scheme pre-mixes its input."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def _combine(h: np.ndarray, unit: np.ndarray) -> np.ndarray:
    return fmix64(h * _MIX_MULT + unit)


_WORD_BYTE = np.zeros(256, dtype=bool)  # ASCII `\w`: [0-9A-Za-z_] (rows with other bytes use RE2)
for _c in b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_":
    _WORD_BYTE[_c] = True
_TAIL_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def hash_byte_ranges(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Stable 64-bit hash of each byte string data[start:start+length] (the token hash).

    Reads 8 bytes at a time through an unaligned little-endian uint64 view, so the cost is one
    mix per 8 bytes of text and identical on every machine.
    """
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[: len(data)] = data
    words = np.ndarray((len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    starts = starts.astype(np.int64)
    h = _combine(lengths.astype(np.uint64) * _SET_SALT, words[starts] & _TAIL_MASKS[np.minimum(lengths, 8)])
    idx = np.flatnonzero(lengths > 8)  # most tokens fit in one 8-byte word
    for k in range(8, int(lengths.max(initial=0)), 8):
        idx = idx[lengths[idx] > k]
        word = words[starts[idx] + k] & _TAIL_MASKS[np.minimum(lengths[idx] - k, 8)]
        h[idx] = _combine(h[idx], word)
    return h


def string_hashes(array: pa.Array) -> np.ndarray:
    """uint64 hash_byte_ranges of each string's UTF-8 bytes (equal strings, equal hashes)."""
    offsets, data = _string_buffers(array)
    return hash_byte_ranges(data, offsets[:-1], np.diff(offsets))


def _string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64[n+1], utf-8 bytes) of a string array without copying the text."""
    array = array.cast(pa.large_string())
    _, offsets, data = array.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64, count=len(array) + 1, offset=array.offset * 8)
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offsets, data


def _ascii_tokens(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    r"""Token hashes and per-text counts of ASCII texts: `\w+` runs found with a byte table."""
    offsets, data = _string_buffers(pc.ascii_lower(texts))
    data = data[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    word = _WORD_BYTE[data]
    boundary = np.zeros(len(data) + 1, dtype=bool)
    boundary[offsets] = True  # a token never runs across two texts
    before = np.concatenate([[False], word])
    after = np.concatenate([word, [False]])
    starts = np.flatnonzero(word & (~before[:-1] | boundary[:-1]))
    ends = np.flatnonzero(word & (~after[1:] | boundary[1:])) + 1
    counts = np.diff(np.searchsorted(starts, offsets))  # tokens starting inside each text
    return hash_byte_ranges(data, starts, ends - starts), counts


def _regex_tokens(texts: pa.Array) -> pa.Array:
    r"""Lowercased `\w+` tokens of any texts (RE2; `\w` spelt as Unicode letters/digits/_)."""
    return pc.split_pattern_regex(pc.utf8_lower(texts), _NON_WORD)


def _unicode_tokens(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    tokens = _regex_tokens(texts)
    flat = pc.list_flatten(tokens)
    parents = pc.list_parent_indices(tokens).to_numpy()
    offsets, data = _string_buffers(flat)
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    counts = np.bincount(parents[nonempty], minlength=len(texts))
    return hash_byte_ranges(data, offsets[:-1][nonempty], lengths[nonempty]), counts


def _word_units(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of all texts in order: ASCII texts by byte table, the others by RE2."""
    ascii_rows = pc.string_is_ascii(texts).to_numpy(zero_copy_only=False)
    if ascii_rows.all():
        values, counts = _ascii_tokens(texts)
        return values, offsets_from_counts(counts)
    other = np.flatnonzero(~ascii_rows)
    plain = np.flatnonzero(ascii_rows)
    v1, c1 = _ascii_tokens(texts.take(pa.array(plain)))
    v2, c2 = _unicode_tokens(texts.take(pa.array(other)))
    counts = np.zeros(len(texts), dtype=np.int64)
    counts[plain], counts[other] = c1, c2
    offsets = offsets_from_counts(counts)
    values = np.empty(offsets[-1], dtype=np.uint64)
    for rows, v, c in ((plain, v1, c1), (other, v2, c2)):
        local = np.arange(len(v)) - np.repeat(offsets_from_counts(c)[:-1], c)
        values[np.repeat(offsets[rows], c) + local] = v
    return values, offsets


# --- shingling -------------------------------------------------------------------------------------


def as_string_array(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not isinstance(texts, pa.Array):
        texts = list(texts)
        try:
            texts = pa.array(texts, type=pa.large_string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # a float NaN, an int, a list: name it, not pyarrow's line
            at = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)), None)
            if at is None:
                raise
            raise DataError(f"text {at + 1}: expected a string, got {type(texts[at]).__name__}") from None
    if is_text_type(texts.type):
        return texts.fill_null("")
    raise TypeError(f"texts must be strings, got {texts.type}")


def _units(texts: pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-text unit hashes (tokens or characters) and their offsets."""
    if unit == "word":
        return _word_units(texts)
    if unit != "char":
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    tokens = _regex_tokens(texts)
    flat = pc.list_flatten(tokens)
    parents = pc.list_parent_indices(tokens).to_numpy()
    nonempty = pc.not_equal(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
    counts = np.bincount(parents[nonempty], minlength=len(texts))
    words = pa.LargeListArray.from_arrays(offsets_from_counts(counts), pc.filter(flat, pa.array(nonempty)))
    joined = pc.binary_join(words, pa.scalar(" ", flat.type))
    counts = pc.utf8_length(joined).to_numpy(zero_copy_only=False).astype(np.int64)
    codepoints = np.frombuffer("".join(joined.to_pylist()).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    return fmix64(codepoints + _SET_SALT), offsets_from_counts(counts)


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


SHINGLE_BLOCK = 1 << 16  # texts shingled at once: the temporaries cost ~2 kB a text, the result ~0.2 kB
# text bytes shingled at once, however many texts: the temporaries cost ~15 bytes a text byte, so a block of
# texts counted in rows alone held 20,000 prompts of 64 KB (10,000 words each) as ~20 GB in each worker
TEXT_BLOCK_BYTES = 8 << 20


def text_slices(texts: pa.Array, rows: int, max_bytes: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) bounds cutting `texts` into consecutive slices of at most `rows` texts and `max_bytes`
    (TEXT_BLOCK_BYTES) bytes of text (a longer text alone), in order: what one batch of shingling may hold."""
    max_bytes = TEXT_BLOCK_BYTES if max_bytes is None else max_bytes
    sizes = pc.binary_length(texts).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = offsets_from_counts(sizes)
    bounds, start = [], 0
    while start < len(texts):
        fits = int(np.searchsorted(ends, ends[start] + max_bytes, side="right")) - 1  # texts [start, fits) fit
        stop = min(start + rows, max(fits, start + 1))
        bounds.append((start, stop))
        start = stop
    return bounds


def shingle_hashes(texts, unit: str = "word", ngram: int = 3) -> Shingles:
    """64-bit hashes of every text's shingles (see the module docstring for the contract)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    texts = as_string_array(texts)
    blocks = text_slices(texts, SHINGLE_BLOCK)
    if len(blocks) <= 1:
        return _shingle_block(texts, unit, ngram)
    return concat_shingles([_shingle_block(texts.slice(lo, hi - lo), unit, ngram) for lo, hi in blocks])


def concat_shingles(parts: list[Shingles]) -> Shingles:
    """The shingles of consecutive groups of texts as those of one group."""
    starts = np.cumsum([0] + [len(part.hashes) for part in parts[:-1]])
    return Shingles(
        hashes=np.concatenate([part.hashes for part in parts]),
        offsets=np.concatenate([[0]] + [part.offsets[1:] + start for part, start in zip(parts, starts)]),
    )


def _shingle_block(texts: pa.Array, unit: str, ngram: int) -> Shingles:
    values, unit_offsets = _units(texts, unit)
    lengths = np.diff(unit_offsets)
    windows = np.where(lengths >= ngram, lengths - ngram + 1, np.minimum(lengths, 1))
    offsets = offsets_from_counts(windows)
    hashes = np.empty(offsets[-1], dtype=np.uint64)
    # a shingle of w units: fmix64(C_w + sum_k unit_k * M_k), one mix per shingle
    mult = _shingle_multipliers(ngram)
    # full windows over the flat unit array, then keep the windows inside one text
    total = len(values)
    if total >= ngram:
        h = np.full(total - ngram + 1, mult[ngram, 0], dtype=np.uint64)
        term = np.empty_like(h)
        for k in range(ngram):
            np.multiply(values[k : total - ngram + 1 + k], mult[k, 1], out=term)
            h += term
        # the windows inside one text, in order, fill every slot but the short texts' ones
        long_slot = np.ones(len(hashes), dtype=bool)
        long_slot[offsets[:-1][(lengths > 0) & (lengths < ngram)]] = False
        hashes[long_slot] = fmix64(h[_windows_inside(unit_offsets, ngram, len(h))])
    # short texts (fewer units than ngram): one shingle of all their units
    short = np.flatnonzero((lengths > 0) & (lengths < ngram))
    h = mult[lengths[short], 0].copy()
    for k in range(ngram - 1):
        more = k < lengths[short]
        h[more] += values[unit_offsets[short[more]] + k] * mult[k, 1]
    hashes[offsets[short]] = fmix64(h)
    return Shingles(hashes=hashes, offsets=offsets)


def _windows_inside(unit_offsets: np.ndarray, ngram: int, windows: int) -> np.ndarray:
    """bool[windows]: whether the window of `ngram` units starting at each flat position stays inside
    its text. One that does not starts within ngram - 1 units of its text's end (a position marked
    for a later, shorter text's end is that close to its own text's end too)."""
    inside = np.ones(windows, dtype=bool)
    ends = unit_offsets[1:]
    for back in range(1, ngram):
        start = ends - back
        inside[start[(start >= 0) & (start < windows)]] = False
    return inside


def _shingle_multipliers(ngram: int) -> np.ndarray:
    """uint64[ngram + 1, 2]: column 0 = constant per window width, column 1 = odd unit multipliers."""
    draws = np.random.RandomState(0x5813).randint(0, 1 << 63, (ngram + 1, 2), dtype=np.uint64)
    return draws * np.uint64(2) + np.uint64(1)


def shingle_set(text: str, unit: str = "word", ngram: int = 3) -> set[int]:
    """The shingle-hash set of one text (for tests and brute-force checks)."""
    sh = shingle_hashes([text], unit, ngram)
    return set(sh.hashes.tolist())


def shingle_hash32(hashes: np.ndarray) -> np.ndarray:
    """The 32-bit value MinHash permutes (what datasketch's `hashfunc` would return)."""
    return (hashes & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# --- signatures --------------------------------------------------------------------------------------


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch 2.x affine32 permutation parameters (a odd, b) for this seed, bit for bit."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's "no value seen" sentinel


SIGNATURE_CELLS = 1 << 22  # shingles of one signatures() gather: ~50 MB of temporaries, however long the texts


def signatures(shingles: Shingles, perms: tuple[np.ndarray, np.ndarray], block: int = 4096) -> np.ndarray:
    """uint32[n, num_perm] MinHash signatures; texts without shingles get all EMPTY.

    Texts are grouped by shingle count L, so a group is a dense [texts, L] matrix: the minimum over
    its L columns is L elementwise np.minimum calls on cache-sized [block, num_perm] arrays.
    """
    a, b = perms
    counts = shingles.counts
    sig = np.full((len(counts), len(a)), EMPTY, dtype=np.uint32)
    hv = fmix32(shingle_hash32(shingles.hashes))
    by_count = np.argsort(counts, kind="stable")
    group_start = np.searchsorted(counts[by_count], np.arange(int(counts.max(initial=0)) + 2))
    step = np.empty((block, len(a)), dtype=np.uint32)
    for length in range(1, len(group_start) - 1):
        group = by_count[group_start[length] : group_start[length + 1]]
        # [rows, length] gathers 12 bytes a cell: 4096 texts of 10,000 words held 490 MB, of 65,536 characters 3 GB
        at_once = max(1, min(block, SIGNATURE_CELLS // length))
        for lo in range(0, len(group), at_once):
            rows = group[lo : lo + at_once]
            values = hv[shingles.offsets[rows][:, None] + np.arange(length)]  # [len(rows), length]
            acc = np.full((len(rows), len(a)), EMPTY, dtype=np.uint32)
            tmp = step[: len(rows)]
            for k in range(length):
                np.multiply(values[:, k : k + 1], a, out=tmp)
                np.add(tmp, b, out=tmp)
                np.minimum(acc, tmp, out=acc)
            sig[rows] = acc
    return sig


def sequence_keys(shingles: Shingles) -> np.ndarray:
    """uint64[n, 2] key of each text's token sequence: equal keys <=> same shingle sequence.

    Cheap (no sort): texts that are identical after normalisation share a key, so they are grouped
    before LSH instead of flooding its buckets. Texts without shingles get key (0, 0).
    """
    n = len(shingles.counts)
    keys = np.zeros((n, 2), dtype=np.uint64)
    has = np.nonzero(shingles.counts)[0]
    if len(has) == 0:
        return keys
    doc = np.repeat(np.arange(n), shingles.counts)
    position = (np.arange(len(doc)) - shingles.offsets[doc]).astype(np.uint64)
    mixed = fmix64(shingles.hashes + position * _MIX_MULT)  # order matters: a sequence, not a set
    starts = shingles.offsets[has]
    keys[has, 0] = np.add.reduceat(mixed, starts) + shingles.counts[has].astype(np.uint64)
    keys[has, 1] = np.add.reduceat(mixed * _SET_SALT ^ shingles.hashes, starts)
    return keys


# --- LSH banding -------------------------------------------------------------------------------------


def choose_bands(threshold: float, num_perm: int, target_recall: float = 0.995) -> tuple[int, int]:
    """The (bands, rows) with the most rows per band whose pair recall at `threshold` >= target.

    Recall of a pair with Jaccard s is 1 - (1 - s^rows)^bands; more rows = fewer false candidates.
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if band_recall(threshold, bands, rows) >= target_recall:
            return bands, rows
    return num_perm, 1


def band_recall(similarity: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - similarity**rows) ** bands


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint32[n, bands]: a multiply-shift hash of each band's `rows` signature values.

    Equal bands always get equal keys; unequal ones collide with probability ~2^-32 (a collision
    only adds a candidate pair, which exact verification then rejects).
    """
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    multipliers = np.random.RandomState(0x5EED).randint(0, 1 << 63, (bands, rows + 1), dtype=np.uint64) | np.uint64(1)
    values = sig[:, : bands * rows].reshape(len(sig), bands, rows)
    h = np.empty((len(sig), bands), dtype=np.uint64)
    h[:] = multipliers[:, rows]
    term = np.empty_like(h)
    for r in range(rows):  # a sum over a short last axis is slow in numpy: one pass a row instead
        np.multiply(values[:, :, r], multipliers[:, r], out=term)
        h += term
    h >>= np.uint64(32)
    return h.astype(np.uint32)


def bucket_pairs(keys: np.ndarray, window: int) -> np.ndarray:
    """Candidate pairs (int64[m, 2], p < q) of positions sharing a key in one band.

    Positions are in keep order; one sort of (key << 32 | position) groups equal keys and keeps
    that order inside a bucket. Buckets of up to window + 1 rows give all their pairs; in a bigger
    bucket each row is paired with the `window` rows before it and with the bucket's first
    `window` rows, so the work stays linear while every row still meets the rows kept first.
    """
    n = len(keys)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if n >= 1 << 32:
        raise ValueError("bucket_pairs: more than 2^32 rows")
    rows = _maybe_shared(keys)
    packed = keys[rows].astype(np.uint64)
    packed <<= np.uint64(32)
    packed |= rows.astype(np.uint64)
    del rows
    packed.sort()
    high = packed.view(np.uint32)[1::2] if _LITTLE_ENDIAN else (packed >> np.uint64(32))  # the keys, no copy
    same = high[1:] == high[:-1]
    shared = np.zeros(len(packed), dtype=bool)  # rows in buckets of two or more
    shared[1:] = same
    shared[:-1] |= same
    del same, high
    shared_rows = packed[shared]
    del packed, shared
    if len(shared_rows) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return _bucket_walk(shared_rows, window)


_LITTLE_ENDIAN = np.little_endian


def _maybe_shared(keys: np.ndarray) -> np.ndarray:
    """Ascending positions of the rows whose key may occur twice: every row whose key does, and ~3% of
    the others. A plain sort of the uint32 keys finds the repeated ones and a table over their top bits
    marks them, so only these few rows need the costlier sort with their positions."""
    ordered = np.sort(keys)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    bits = min(24, max(8, len(keys).bit_length()))  # about one slot a row, at most 16 MB
    shift = np.uint32(32 - bits)
    table = np.zeros(1 << bits, dtype=bool)
    table[repeated >> shift] = True
    return np.flatnonzero(table[keys >> shift])


def _bucket_walk(shared_rows: np.ndarray, window: int) -> np.ndarray:
    """bucket_pairs' pairs from the sorted (key << 32 | position) of the rows in buckets of two or more
    (a bucket is a run of one key, so dropping the single rows keeps every bucket whole and in order)."""
    m = len(shared_rows)
    position = np.bitwise_and(shared_rows, np.uint64(0xFFFFFFFF)).view(np.int64)
    key = shared_rows >> np.uint64(32)
    new_bucket = np.ones(m, dtype=bool)
    np.not_equal(key[1:], key[:-1], out=new_bucket[1:])
    bucket_start = np.arange(m)
    bucket_start[~new_bucket] = 0
    np.maximum.accumulate(bucket_start, out=bucket_start)
    pos = np.arange(m)
    out = []
    for d in range(1, window + 1):  # each row with the `window` rows after it in its bucket
        pos = pos[pos + d < m]
        pos = pos[bucket_start[pos + d] == bucket_start[pos]]
        if len(pos) == 0:
            break
        out.append(np.stack([position[pos], position[pos + d]], axis=1))
    far = np.flatnonzero(np.arange(m) - bucket_start > 2 * window)
    for d in range(window if len(far) else 0):  # rows deep in a huge bucket also meet its first `window` rows
        out.append(np.stack([position[bucket_start[far] + d], position[far]], axis=1))
    return np.concatenate(out)


def sorted_unique(values: np.ndarray, in_place: bool = False) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based np.unique is several times slower here); `in_place`
    sorts `values` itself (no copy: for a large array the caller drops anyway)."""
    if in_place:
        values.sort()
    else:
        values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def distinct_values(values: np.ndarray, size: int) -> np.ndarray:
    """sorted_unique of int values all in [0, size), by marking a table instead of sorting (when the
    table is not much larger than the values)."""
    if size > 16 * len(values):
        return sorted_unique(values)
    seen = np.zeros(size, dtype=bool)
    seen[values] = True
    return np.flatnonzero(seen)


def positions_in(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """np.searchsorted(rows, values) for values that all occur in `rows` (sorted, distinct ints): one
    lookup table over rows' span instead of a binary search a value."""
    if len(rows) == 0:
        return np.zeros(values.shape, dtype=np.int64)
    if rows[-1] - rows[0] > 16 * values.size:
        return np.searchsorted(rows, values)
    table = np.empty(int(rows[-1] - rows[0]) + 1, dtype=np.int64)
    table[rows - rows[0]] = np.arange(len(rows))
    return table[values - rows[0]]


def dense_rank(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, distinct): the int64 rank of each value among the distinct values (equal values, equal
    rank) and those values, sorted (np.unique's return_inverse answer by `value_order`)."""
    order, ordered = value_order(values)
    new = np.ones(len(values), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    return rank, ordered[new]


def value_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, values[order]): an argsort of uint64 values (equal values in any order), by a plain sort of
    (high bits | index), twice as fast as np.argsort; the rare runs of equal high bits but different
    values are then sorted by value."""
    n = len(values)
    bits = max(1, (n - 1).bit_length())
    if bits > 32:
        order = np.argsort(values)
        return order, values[order]
    low = np.uint64((1 << bits) - 1)
    packed = values & ~low
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.int64)
    packed >>= np.uint64(bits)  # the high bits, sorted
    tie = packed[1:] == packed[:-1]
    del packed
    ordered = values[order]
    clash = tie & (ordered[1:] != ordered[:-1])
    if clash.any():
        run = np.cumsum(np.concatenate([[True], ~tie]))  # run of equal high bits of each sorted position
        at = np.flatnonzero(np.isin(run, run[1:][clash]))  # whole runs, in place
        by_value = at[np.lexsort((ordered[at], run[at]))]
        order[at], ordered[at] = order[by_value], ordered[by_value]
    return order, ordered


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Distinct rows of an int64[m, 2] pair array (values < 2^32), sorted."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    return unpack_pairs(sorted_unique(pack_pairs(pairs)))


def pack_pairs(pairs: np.ndarray) -> np.ndarray:
    """uint64 (a << 32 | b) of each pair (a, b) of an int[m, 2] array (values < 2^32): sorts like the pairs."""
    return (pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64)


def unpack_pairs(packed: np.ndarray) -> np.ndarray:
    """int64[m, 2] pairs of `pack_pairs` values."""
    return np.stack([packed >> np.uint64(32), packed & np.uint64(0xFFFFFFFF)], axis=1).astype(np.int64)
