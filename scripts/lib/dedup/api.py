"""The calls other stages make: self dedup, cross dedup against a reference, and release-step masks."""

from __future__ import annotations

import numpy as np

import scripts.lib.dedup.signing as signing
from scripts.lib.dedup.index import Index, build_index
from scripts.lib.dedup.keep import assign, keep_rank, self_stats
from scripts.lib.dedup.result import Result
from scripts.lib.dedup.texts import Texts, as_texts
from scripts.lib.errors import DataError
from scripts.lib.params import Dedup, Runtime, parse
from scripts.lib.params.dedup import SPEED_KEYS


def resolve_params(params=None, **overrides) -> Dedup:
    """A step's Dedup: `params` (Dedup, mapping, or None = defaults) with `overrides` applied and checked.

    A bad value is one DataError naming the key, e.g. resolve_params(base, keep="all") ->
    "Dedup.replace: keep: Input should be 'first', 'longest' or 'none_of_pair' (got 'all')".
    """
    if params is None:
        params = Dedup()
    elif not isinstance(params, Dedup):
        params = parse(Dedup, params, at=("dedup",))
    return params.replace(**overrides) if overrides else params


def dedup_self(texts, order_keys=None, params=None, runtime: Runtime | None = None) -> Result:
    """Near-duplicate removal within one set of texts (strings, or a Texts: e.g. a stage input on disk).

    order_keys: stable ids (str) that break keep=longest's ties (None: input position). Earlier rows
    (keep first) or longer rows (keep longest) are kept; keep none_of_pair keeps no row that has a
    near-duplicate. runtime.engine ray runs minhash on Ray Data (same result).
    """
    params, runtime = resolve_params(params), runtime or Runtime()
    texts = as_texts(texts)
    if params.method == "embedding":
        from scripts.lib.dedup.embedded import dedup_self_embedding

        return dedup_self_embedding(texts.whole(), order_keys, params)
    if runtime.engine == "ray":
        from scripts.lib.dedup.on_ray import dedup_arrays

        return dedup_arrays(texts.whole(), order_keys, params, runtime)
    return _minhash_self(texts, order_keys, params, runtime)


def _minhash_self(texts: Texts, order_keys, params: Dedup, runtime: Runtime) -> Result:
    n = len(texts)
    rank = keep_rank(texts, order_keys, params.keep)
    sk = signing.sketch(texts, params, runtime)
    nonempty = np.nonzero(sk.shingle_counts > 0)[0]
    no_tokens = n - len(nonempty)
    reps, members, member_rep = signing.identical_groups(sk.sequence_keys, rank, nonempty)
    band_keys = sk.band_keys
    del sk, nonempty  # the sequence keys and counts are spent: free them before the bands' sorts
    processes = signing.workers(runtime)
    packed, order = signing.self_candidates(band_keys, reps, rank, params.bucket_window, processes)
    del band_keys, reps
    pairs, jaccard = signing.self_verified(texts, packed, order, params, runtime.verify_pairs, processes)
    candidates = len(packed)
    del packed, order
    keep, duplicate_of, similarity = assign(n, pairs, jaccard, rank, members, member_rep, params.keep)
    stats = {
        **self_stats(keep, pairs, members, member_rep, candidates, no_tokens, params),
        **signing.banding_stats(params),
    }
    return Result(keep=keep, duplicate_of=duplicate_of, similarity=similarity, stats=stats)


def dedup_against(new_texts, reference, params=None, runtime: Runtime | None = None) -> Result:
    """Remove new rows that near-duplicate any reference row (reference: an Index or texts).

    With an Index, its own params are used (they define its band keys); `params` must then be None or
    give the same results.
    """
    if isinstance(reference, Index):
        if params is not None and resolve_params(params).model_dump(
            exclude=set(SPEED_KEYS)
        ) != reference.params.model_dump(exclude=set(SPEED_KEYS)):
            raise DataError("dedup_against: params differ from the ones the index was built with")
        return reference.query(new_texts, runtime)
    return build_index(reference, resolve_params(params), runtime).query(new_texts, runtime)


def near_duplicate_mask(new_texts, reference_texts, params=None, runtime: Runtime | None = None) -> np.ndarray:
    """bool[n_new]: True where a new text near-duplicates a reference text (the reference is never removed)."""
    return ~dedup_against(new_texts, reference_texts, params, runtime).keep


def keep_mask(texts, params=None, against=None, order_keys=None, runtime: Runtime | None = None) -> np.ndarray:
    """bool[n]: True = keep, for one release step with that step's params.

    against None: self mode (params.keep decides which rows of each cluster stay); against texts or
    an Index: rows of `texts` near a reference row are dropped, the reference is untouched.
    """
    if against is None:
        return dedup_self(texts, order_keys, params, runtime).keep
    return dedup_against(texts, against, params, runtime).keep
