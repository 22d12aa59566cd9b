"""The drop rules: each a small named test of the text as it stands, `test(text, rules) -> drop?`.

The name is the rule's key in a rule set (its limit or word list) and the `reason` recorded for the
rows it drops (the stage report counts rows per reason). A rule set's `drops` lists which rules run at
which point (the fields of `Drops`) and in what order; the first that fires is the reason. A rule runs
only when listed, and `language` and `person_names` only when `enabled` too. Adding one:
docs/cleaning.md, "Adding a drop rule".
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from scripts.lib.cleaning.rules import Rules
from scripts.lib.errors import DataError
from scripts.lib.params import Drops


def wrong_language(text: str, rules: Rules) -> bool:
    language = rules.document.language
    assert language is not None  # the compiler runs only rules whose key is set
    detected = detect_language(text, language.seed)
    if detected is None:  # langdetect found nothing to read
        return language.undetectable == "drop"
    return detected not in language.keep


def has_banned_nospace(text: str, rules: Rules) -> bool:
    """One of `banned_nospace` occurs once the spaces are deleted ("h t t p" is "http")."""
    nospace = text.replace(" ", "")
    banned = rules.document.banned_nospace
    assert banned is not None  # the compiler runs only rules whose key is set
    for word in banned:  # noqa: SIM110  # plain loops: no generator per prompt
        if word in nospace:
            return True
    return False


def too_many_dashes(text: str, rules: Rules) -> bool:
    limit = rules.document.max_dashes
    assert limit is not None  # the compiler runs only rules whose key is set
    return text.count("-") > limit


def too_many_pipes(text: str, rules: Rules) -> bool:
    limit = rules.document.max_pipes
    assert limit is not None  # the compiler runs only rules whose key is set
    return text.count("|") > limit


def too_many_by(text: str, rules: Rules) -> bool:
    limit = rules.document.max_by
    assert limit is not None  # the compiler runs only rules whose key is set
    return text.count(" by ") > limit


def too_many_persons(text: str, rules: Rules) -> bool:
    persons = rules.document.person_names
    assert persons is not None  # the compiler runs only rules whose key is set
    if persons.only_if and not any(marker in text for marker in persons.only_if):
        return False  # final: the model runs only on prompts with " by " or " style "
    count_persons = rules.person_names
    assert count_persons is not None  # the compiler loads the model when the rule is enabled
    return count_persons(text) > persons.max_persons


def has_ban_word(text: str, rules: Rules) -> bool:
    return rules.ban_words is not None and rules.ban_words.found(text.lower())


def too_repetitive(text: str, rules: Rules) -> bool:
    words = _words(text)
    limit = rules.document.max_repeat_ratio
    assert limit is not None  # the compiler runs only rules whose key is set
    return bool(words) and (len(words) - len(set(words))) / len(words) > limit


def words_too_short(text: str, rules: Rules) -> bool:
    words = _words(text)  # no words (a text the rewrites emptied): `empty_after_clean` at the end
    limit = rules.document.min_mean_word_len
    assert limit is not None  # the compiler runs only rules whose key is set
    return bool(words) and len("".join(words)) / len(words) < limit


def too_many_commas(text: str, rules: Rules) -> bool:
    limit = rules.document.max_commas
    assert limit is not None  # the compiler runs only rules whose key is set
    return text.count(",") > limit


def too_short(text: str, rules: Rules) -> bool:
    limit = rules.document.min_chars
    assert limit is not None  # the compiler runs only rules whose key is set
    return len(text) < limit


def too_long(text: str, rules: Rules) -> bool:
    limit = rules.document.max_chars
    assert limit is not None  # the compiler runs only rules whose key is set
    return len(text) > limit


def too_few_unique_words(text: str, rules: Rules) -> bool:
    limit = rules.document.min_unique_words
    assert limit is not None  # the compiler runs only rules whose key is set
    return len(set(text.split())) < limit


def has_thought_phrase(text: str, rules: Rules) -> bool:
    return rules.thought_phrases is not None and rules.thought_phrases.found(text)


# The whitespace words of a (stripped) text; two rules in a row read them. Read only.
_words = functools.lru_cache(maxsize=1)(str.split)

DROP_RULES: dict[str, Callable[[str, Rules], bool]] = {
    "language": wrong_language,
    "banned_nospace": has_banned_nospace,
    "max_dashes": too_many_dashes,
    "max_pipes": too_many_pipes,
    "max_by": too_many_by,
    "person_names": too_many_persons,
    "ban_words": has_ban_word,
    "max_repeat_ratio": too_repetitive,
    "min_mean_word_len": words_too_short,
    "max_commas": too_many_commas,
    "min_chars": too_short,
    "max_chars": too_long,
    "min_unique_words": too_few_unique_words,
    "thought_phrases": has_thought_phrase,
}

# Where drops can run: "raw" = the stripped prompt before any rewrite, then after each rewrite step.
DROP_POINTS = tuple(Drops.model_fields)
SWITCHED_RULES = ("language", "person_names")  # rules that run only when `enabled` (besides being listed)


@functools.lru_cache(maxsize=1 << 16)
def detect_language(text: str, seed: int) -> str | None:
    """langdetect's guess, seeded (DetectorFactory.seed) so it is the same on every run; None when it
    finds nothing to read (the reference caught that exception). A seeded guess is a function of the
    text, so it is kept: composing a release re-cleans its base chain's rows, and langdetect takes ~5 ms
    a prompt (an interrupt is an exception, never kept)."""
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise DataError("params.yaml: clean.language.enabled needs the langdetect package") from None
    DetectorFactory.seed = seed
    try:
        return detect(text)
    except LangDetectException as exc:
        if exc.__context__ is not None and not isinstance(exc.__context__, Exception):
            # langdetect loads its profiles on first use under a bare `except:`, which turns a Ctrl-C into
            # its own error and keeps the half-loaded profiles: drop them and let the interrupt go on
            from langdetect import detector_factory

            detector_factory._factory = None
            raise exc.__context__ from None
        return None


def person_counter(model: str) -> Callable[[str], int]:
    """The reference's NER rule; spaCy and its model must already be installed (no downloads)."""
    try:
        import spacy

        nlp = spacy.load(model)
    except (ImportError, OSError) as exc:
        raise DataError(
            f"params.yaml: clean.person_names.enabled needs spaCy with the {model} model installed "
            f"({type(exc).__name__}); set it to false or install them"
        ) from None
    return lambda text: sum(1 for ent in nlp(text).ents if ent.label_ == "PERSON")
