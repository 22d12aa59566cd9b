"""Where the minhash steps read their texts: an Arrow array in memory, or a stage input on disk.

The steps never need all texts at once: signing reads them in batches, keep longest reads their
lengths, verification reads the rows of candidate pairs. So a stage input (scripts/lib/dedup/
stage_input.py) hands them out from its parquet files and 10M rows are never held as one table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib import minhash as mh


@runtime_checkable
class Texts(Protocol):
    """n texts, read as the steps need them (never null: a missing text reads as "")."""

    def __len__(self) -> int: ...

    def batches(self, rows: int) -> Iterator[pa.Array]:
        """All texts in order, in arrays of at most `rows` texts."""
        ...

    def lengths(self) -> pa.Array:
        """Characters of every text (keep longest)."""
        ...

    def take(self, rows: np.ndarray) -> pa.Array:
        """The texts of `rows` (sorted, distinct), in that order."""
        ...

    def whole(self) -> pa.Array:
        """All texts as one array (the steps that hold them all: embedding, Ray)."""
        ...


class ArrayTexts:
    """Texts already in memory (release steps, dedup-text, the tests)."""

    def __init__(self, texts) -> None:
        self.array = mh.as_string_array(texts)

    def __len__(self) -> int:
        return len(self.array)

    def batches(self, rows: int) -> Iterator[pa.Array]:
        return (self.array.slice(lo, rows) for lo in range(0, len(self.array), rows))

    def lengths(self) -> pa.Array:
        return pc.utf8_length(self.array)

    def take(self, rows: np.ndarray) -> pa.Array:
        return self.array.take(pa.array(rows, type=pa.int64()))

    def whole(self) -> pa.Array:
        return self.array


def as_texts(texts) -> Texts:
    """A Texts as it is; anything else (Arrow array, list of str, ...) held in memory."""
    return texts if isinstance(texts, Texts) else ArrayTexts(texts)


def compact(array: pa.Array) -> pa.Array:
    """A copy of `array` in buffers of its own: a pickled slice would carry its parent's whole buffers."""
    return pa.concat_arrays([array])
