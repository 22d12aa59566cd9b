"""`split`: train/validation split (scripts/split.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from scripts.lib.params.base import Section, Seed


class Split(Section):
    """split@S: rows without a predefined split go to validation, by `method`: hash (a seeded hash of the id:
    adding rows never moves a row) or shuffle (the team's split_dataset.py: random.seed(seed);
    random.shuffle(rows in generation order); train = the first int(n * (1 - validation_fraction)))."""

    method: Literal["hash", "shuffle"] = Field(
        "shuffle",
        description="hash: per-id seeded draw | shuffle: the team's exact shuffle-and-slice over the rows in "
        "generation order (data/prefilter/S.parquet)",
    )
    validation_fraction: float = Field(0.05, ge=0, lt=1, description="share of rows drawn into validation")
    seed: Seed = Field(42, description="seed of the per-id hash draw, or of random.shuffle (method shuffle)")
