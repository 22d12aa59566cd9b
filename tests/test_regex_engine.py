"""The cleaner's regex engine (scripts/lib/regex_engine.py, regex_guards.py, regex_re2.py): every speed-up
gives exactly what running each regex with Python's `re` gives.

The guards, prefilters, unchanged-tests, faster regexes and the RE2 scanner are each checked
against the plain regex on random and real text, and the whole filter against `fast=False`.
"""

from __future__ import annotations

import random
import re

import pytest
from test_clean import PARAMS, RULES, gpt4_prompts, mutations, openprompts

from scripts.lib import regex_engine as engine
from scripts.lib import regex_guards as guards
from scripts.lib import regex_re2 as re2_syntax
from scripts.lib.cleaning import clean_text, load_rules
from scripts.lib.errors import DataError
from scripts.lib.regex_engine import compile_phase, compile_rewrite, run_phase


def random_texts(alphabet: str, n: int, max_len: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def assert_exact_where_unchanged(pattern: str, repl: str, unchanged, samples: list[str]) -> None:
    """Wherever the test says the rewrite changes nothing, the regex indeed changes nothing."""
    regex = re.compile(pattern)
    for text in samples:
        if unchanged(text):
            assert regex.sub(repl, text) == text, text


# --------------------------------------------------------------------------- the engine on its own


def hand_phase(fast: bool):
    return compile_phase(
        (
            compile_rewrite("years", pattern=r"\(\d{4}\)", fast=fast),
            compile_rewrite("eight_k", find="8k", fast=fast),
            compile_rewrite("spaces", pattern=r"\s+", repl=" ", fast=fast),
            compile_rewrite("comma_space", pattern=r"\s+,", repl=",", strip=True, fast=fast),
        ),
        fast,
    )


def test_a_phase_is_its_rewrites_in_order():
    rng = random.Random(9)
    tokens = ["a", "ship", "(1890)", "8k", "8", "k", " ", "  ", ",", "\t", "é", "(", ")", "1999"]
    fast, slow = hand_phase(True), hand_phase(False)
    for _ in range(3000):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 10)))
        expected = text
        for pattern, repl in [(r"\(\d{4}\)", ""), (re.escape("8k"), ""), (r"\s+", " "), (r"\s+,", ",")]:
            expected = re.sub(pattern, repl, expected)
        expected = expected.strip()
        assert run_phase(fast, text) == run_phase(slow, text) == expected, text


def test_a_bad_pattern_or_repl_is_an_error_naming_its_place():
    with pytest.raises(DataError, match=r"^here: bad regex '\(x'"):
        compile_rewrite("broken", pattern="(x", where="here")
    with pytest.raises(DataError, match=r"^there: bad repl"):
        compile_rewrite("bad_group", pattern="a", repl=r"\2", where="there")


# --------------------------------------------------------------------------- the speed-ups are exact


def test_guards_never_change_an_output():
    prompts = openprompts() + gpt4_prompts()
    slow = load_rules(PARAMS["clean"], fast=False)
    for prompt in prompts + mutations(prompts, 3000):
        assert clean_text(prompt, RULES) == clean_text(prompt, slow), prompt


@pytest.mark.parametrize("pattern,repl", list(guards.UNCHANGED_WHEN))
def test_each_unchanged_test_is_exact_for_its_regex(pattern, repl):
    samples = random_texts("aAbk1 9,.!?;:-'()_|\t\u212a\u00e9", 20000, 12, seed=1)
    samples += ["the the cat", "red car red car", "a - b", "end -", "x,y", "a  b", "a b ,", "(( x"]
    assert_exact_where_unchanged(pattern, repl, guards.UNCHANGED_WHEN[pattern, repl], samples)


def test_guard_analysis_finds_what_a_match_needs():
    needs = {rw.name: (rw.needs_digit, rw.literals) for rw in RULES.normalise.rewrites}
    assert needs["seed_number"] == (True, ("seed",))
    assert needs["resolution"] == (False, ("resolution",))
    assert needs["spaces_1"] == (False, ())


@pytest.mark.parametrize("pattern,repl", list(guards.UNCHANGED_WHEN_PLAIN))
def test_each_plain_unchanged_test_is_exact_on_printable_ascii(pattern, repl):
    samples = random_texts("aAbk1 9,.!?;:-'()_|/", 20000, 12, seed=2)
    samples += ["the the cat", "red car red car", "a b a c a b", "x,y", "a  b", "a b ,", "(( x"]
    assert all(map(engine.is_plain, samples))
    assert_exact_where_unchanged(pattern, repl, guards.UNCHANGED_WHEN_PLAIN[pattern, repl], samples)


def test_prefilter_is_the_regex_minus_its_leading_boundary():
    assert guards.prefilter(re.compile(r"(?i)\bue\s*\d+")).pattern == r"(?i)ue\s*\d+"
    assert guards.prefilter(re.compile(r"\b(\w+)\s")) is None  # \w first: no faster
    assert guards.prefilter(re.compile(r"\b|x")) is None  # not a top-level leading \b
    assert guards.prefilter(re.compile(r"x\b")) is None


def dense_texts(n: int, seed: int) -> list[str]:
    """Short printable-ASCII texts packed with what the rules look for, so most steps fire and
    deletions join text into new matches ("x/r/y" -> "xy", "8 k" -> "8k")."""
    rng = random.Random(seed)
    tokens = [
        "by",
        "greg",
        "rutkowski",
        "artstation",
        "8",
        "k",
        "8k",
        "x/r/y",
        "/r/",
        "octane",
        "render",
        "Wlop",
        "a",
        "cat",
        "ART",
        "STATION",
        "-",
        ",",
        ".",
        "..",
        "contest-winner",
        "national",
        "geographic",
        "seed",
        "1999",
        "(",
        ")",
        "((",
        "f/1.8",
        "35mm",
        "lens",
        "hd",
        "uhd",
        "--ar",
        "16:9",
        "n",
        "w",
        "h",
        "512",
        "px",
        "!",
        "!!",
        ";",
        ":",
        "_",
        "|",
        "iso",
        "100",
        "unreal",
        "engine",
        "trending",
        "on",
        "and",
        " ",
    ]
    return [" ".join(rng.choice(tokens) for _ in range(rng.randint(1, 14))) for _ in range(n)]


def test_scanner_runs_the_same_steps_as_the_guards():
    # every phase, with the RE2 scanner and with each step checking its own guards (no scanner):
    # the same text after every phase
    pytest.importorskip("re2")
    slow = load_rules(PARAMS["clean"], fast=False)
    phases = ["normalise", "phrases", "tidy", "finish"]
    assert all(getattr(RULES, name).scanner is not None for name in phases)
    for text in dense_texts(6000, seed=3) + [
        "art/r/station by wlop",
        "8k/r/8k",
        "by greg rutkowski and greg rutkowski",
    ]:
        for name in phases:
            assert run_phase(getattr(RULES, name), text, True) == run_phase(getattr(slow, name), text, False), (
                name,
                text,
            )


def test_whole_filter_is_the_same_with_and_without_the_speedups_on_dense_text():
    slow = load_rules(PARAMS["clean"], fast=False)
    for text in dense_texts(4000, seed=4):
        assert clean_text(text, RULES) == clean_text(text, slow), text


@pytest.mark.parametrize("pattern,repl", list(re2_syntax.CHANGES_WHEN_PLAIN))
def test_each_change_pattern_finds_every_change(pattern, repl):
    # where the RE2 pattern (read here by Python's re: the same syntax) finds nothing, the rewrite
    # leaves printable-ASCII text unchanged
    regex, changes = re.compile(pattern), re.compile(re2_syntax.CHANGES_WHEN_PLAIN[pattern, repl])
    for text in random_texts("aAb1 ,.!?;:-'()_|/\"#", 20000, 12, seed=5):
        if not changes.search(text):
            assert regex.sub(repl, text) == text, text


@pytest.mark.parametrize("pattern,repl", list(guards.SAME_ON_PLAIN))
def test_each_faster_regex_writes_the_same_on_printable_ascii(pattern, repl):
    regex, faster = re.compile(pattern), guards.SAME_ON_PLAIN[pattern, repl]
    for text in random_texts("ab ,.", 20000, 16, seed=8) + ["  a  b  ", " ", ""]:
        assert faster.sub(repl, text) == regex.sub(repl, text), text


def test_re2_rewrites_of_lookarounds_and_backreferences_are_exact():
    from re import _parser as parser

    assert re2_syntax.without_edge_lookarounds(r"(?<=[^ ]),(?=[^ ])", parser) == "(?:[^ ]),(?:[^ ])"
    assert re2_syntax.without_edge_lookarounds(r"(?<=\d)\s+(?=\d)", parser) == r"(?:\d)\s+(?:\d)"
    assert re2_syntax.without_edge_lookarounds(r"a(?=b)c", parser) is None  # a lookahead inside: not a concatenation
    assert re2_syntax.without_edge_lookarounds(r"(?<!a)b", parser) is None  # negative: no
    assert re2_syntax.doubled_character(re.compile(r"([()])\1+"), parser) == r"\(\(|\)\)"
    assert re2_syntax.doubled_character(re.compile(r"(ab)\1+"), parser) is None
    # on random text, the rewritten pattern finds a match exactly where the original does
    rng = random.Random(6)
    for original in [r"(?<=[^ ]),(?=[^ ])", r"(?<=\d)\s+(?=\d)", r"([^\w\s])\1+", r"([()\[\]{}])\1+"]:
        rewritten = re.compile(re2_syntax.re2_syntax(re.compile(original)))
        for _ in range(5000):
            text = "".join(rng.choice("a1 ,()[]!!..") for _ in range(rng.randint(0, 8)))
            assert bool(re.search(original, text)) == bool(rewritten.search(text)), (original, text)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # Python warns about "[[:"
@pytest.mark.parametrize(
    "pattern", [r"[[:alpha:]]+", r"a{,3}b", r"(?x) a b", r"x\Z", r"(?<!a)b", r"(a)\1", r"(?>ab)c", r"a++", r"\u00e9"]
)
def test_re2_is_not_given_syntax_it_reads_differently_or_lacks(pattern):
    assert re2_syntax.re2_syntax(re.compile(pattern)) is None


def test_search_is_the_same_with_re2_and_python():
    pytest.importorskip("re2")
    for text in dense_texts(3000, seed=7) + ["I'm here", "if you know", "Eos-1d", "ſ \u212a jpg", "résumé"]:
        for search in (RULES.thought_phrases, RULES.ban_words):
            assert search.re2_match is not None
            assert search.found(text) == (search.regex.search(text) is not None), text
        lower = text.lower()
        assert RULES.ban_words.found(lower) == (RULES.ban_words.regex.search(lower) is not None), text


def test_search_tells_printable_ascii_from_the_rest_in_its_one_pass():
    # RE2 answers only for printable ASCII: a control character or non-ASCII text goes to Python's re
    search = engine.compile_search(r"(?i)\bcat\s+(?:on|in)\b$", fast=True)
    pytest.importorskip("re2")
    assert search.re2_match is not None and not search.any_text
    for text in [
        "a CAT on",
        "a cat\ton",
        "a cat on\n",
        "a cat\x0bon",
        "a cat\x1con",
        "a cat\x7f on",
        "a café cat in",
        "cat  in",
        "",
        "\n",
        "cat on\r",
    ]:
        expected = search.regex.search(text) is not None
        assert search.found(text) == expected, text
        if engine.is_plain(text):
            assert search.found(text, True) == expected, text
        assert search.found(text, False) == expected, text
