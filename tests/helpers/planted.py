"""Near-duplicates planted among real prompts, for the dedup engines' equality tests."""

from __future__ import annotations

import random


def with_near_duplicates(texts: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(texts, ids): `texts`, a third of them again with one word changed or upper-cased, blanks and
    exact copies, shuffled; ids in no particular order (so keep order is not id order)."""
    rng = random.Random(seed)
    near = []
    worded = [text for text in texts if text.split()]  # the fixtures hold a few blank prompts
    for text in rng.sample(worded, len(texts) // 3):
        words = text.split()
        words[rng.randrange(len(words))] = rng.choice(["red", "tiny", "VAST", "old"])
        near.append(" ".join(words) if rng.random() < 0.8 else text.upper())
    texts = texts + near + ["", "  ", "a", "A"] + texts[:20]
    rng.shuffle(texts)
    return texts, [f"id{(i * 7919) % 100_003:06d}" for i in range(len(texts))]
