"""Near-duplicates planted among real prompts, for the dedup engines' equality tests."""

from __future__ import annotations

import random
import re


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


def recombined(texts: list[str], n: int, seed: int) -> list[str]:
    """n prompts of 2-5 phrases of `texts` (split at punctuation and ' with ', ' and ', ' of ') drawn
    with a skew, joined by commas: rows share styles and subjects as real corpora do."""
    rng = random.Random(seed)
    found = (p.strip() for t in texts for p in re.split(r"[,.;:!?()]| with | and | of ", t))
    phrases = list(dict.fromkeys(p for p in found if len(p.split()) >= 2))
    weights = [1 / (k + 1) for k in range(len(phrases))]  # Zipf-like: a few phrases in many prompts
    return [", ".join(rng.choices(phrases, weights, k=rng.randint(2, 5))) for _ in range(n)]
