"""Round 11h's breaks, one table per class (every row failed before its fix): prose refused as a token
(`ring bearer carrying-...`, `ssh://git@github.com`); a local server's placeholder key (`ollama`) refused
every stage that names the server; recipe and source keys accepted but never read; `recipes` cubic in the
length of a base chain (and a RecursionError past ~1,000 links); entry names ending in '.' and rewrites of
one name. Real params.yaml files and the real commands."""

from __future__ import annotations

import copy
import sys

import pandas as pd
import pytest
import yaml
from test_release_recipe import drop_http, load_split, near

from helpers import cli
from helpers.tiers import fast_first
from helpers.workspace import PARAMS, error_line, make_splits, write_params
from scripts.lib.io import stable_id


def section_with(at: tuple, value) -> dict:
    """{section: the repository's section with the scalar at `at` set (a list at `at` gets `value` added)}."""
    section = copy.deepcopy(PARAMS[at[0]])
    node = section
    for key in at[1:-1]:
        node = node[key]
    if isinstance(node[at[-1]], list):
        node[at[-1]] = [*node[at[-1]], value]
    else:
        node[at[-1]] = value
    return {at[0]: section}


def recipes(tmp_path, monkeypatch, capfd, **sections):
    """`recipes data/recipes` on the repository's params.yaml with `sections` replaced: (exit code, stderr)."""
    write_params(tmp_path, **sections)
    result = cli(["recipes", "data/recipes"], tmp_path, monkeypatch, capfd)
    return result.returncode, result.stderr


# ---------------------------------------------------------------- 1. prose refused as a token
EXAMPLES = ("synthesize", "gpt4_style", "fixed_examples")
PROSE = {  # a prompt every stage refused -> a real credential in the same words, still refused
    "a ring bearer": (
        "the ring bearer carrying-an-ancient-sword through mordor",
        "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9' mordor",
    ),
    "a standard bearer, tags": (
        "standard bearer highly-detailed,cinematic,artstation",
        "standard bearer 9f3a07c1d2e4b5a6978877aa1c0e,cinematic",
    ),
    "a title-cased legion": (
        "the torch bearer Of-The-1st-Legion-Banner at dusk",
        "the torch bearer Of-The-1st-Legion-Banner, token Bearer ya29.a0AfH6SMBx7Yq2Lw",
    ),
    "an ssh address": (
        "a terminal showing git clone ssh://git@github.com/org/repo.git, neon glow",
        "a terminal showing git clone ssh://git:hunter2pass@github.com/org/repo.git",
    ),
    "an address with a user name": (
        "a poster reading https://alice@example.org/gallery in gold letters",
        "a poster reading https://a1B2c3D4e5F6g7H8@example.org/gallery",
    ),
    # round 12: `sk-` took any 16 characters, and a size like 3840x2160 read as random
    "a skincare brand": (
        "a bottle of SK-II-facial-treatment-essence on marble",
        "a bottle of sk-proj-AbC123dEf456GhI789jKl0 on marble",
    ),
    "a skateboard": ("photo of sk-8ter-boy-skateboard-deck", "photo of sk-8aB3cD4eF5gH6iJ7kL8mN9 deck"),
    "a bearer in 4k": (
        "a portrait of the standard bearer 3840x2160-wallpaper",
        "a portrait of the standard bearer a1B2c3D4e5F6g7H8i9J0",
    ),
}

# round 12: credentials that no prefix names, and prefixes that were missing
UNPREFIXED = {
    "an HTTP Basic header": "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' example.org",
    "GitHub's token scheme": "Authorization: token AbC123dEf456GhI789jKl012MnO345pQr6",
    "a pasted .env line": "ANTHROPIC_API_KEY=AbC123dEf456GhI789jKl012MnO345pQr678",
    "a PyPI token": "pypi-AgEIcHlwaS5vcmcCJGFiY2RlZg",
    "an npm token": "npm_AbC123dEf456GhI789jKl012MnO345pQr6",
    "a SendGrid key": "SG.abcdefghijklmnop1234.qrstuvwxyzABCDEF5678",
    "an NVIDIA key": "nvapi-AbC123dEf456GhI789jKl0",
    "a Databricks token": "dapi0123456789abcdef0123456789abcdef",
    "an AWS temporary key": "ASIAABCDEFGHIJKLMNOP",
    "a Hub token after an underscore": "MY_hf_AbCdEfGhIjKlMnOpQrStUvWx",
    "an sk- key cut by hyphens": "sk-Test-DoNot-Leak-9f3A7c",
    "a project key": "sk-proj-Ab1_Cd2-Ef3_Gh4-Ij5_Kl6",
}


@pytest.mark.parametrize("secret", UNPREFIXED.values(), ids=UNPREFIXED.keys())
def test_a_credential_without_a_known_prefix_is_refused(tmp_path, monkeypatch, capfd, secret):
    code, err = recipes(tmp_path, monkeypatch, capfd, **section_with(EXAMPLES, secret))
    line = error_line(err)
    assert code == 2 and "synthesize.gpt4_style.fixed_examples.7: holds what looks like an API key" in line, line
    assert secret not in line


@pytest.mark.parametrize("case", PROSE)
def test_prose_shaped_like_a_token_passes_and_a_real_one_is_still_refused(tmp_path, monkeypatch, capfd, case):
    """`bearer\\s+\\S{16,}` and any URL user (`git@`) were tokens: every stage refused these prompts."""
    prose, secret = PROSE[case]
    code, err = recipes(tmp_path, monkeypatch, capfd, **section_with(EXAMPLES, prose))
    assert code == 0, err
    code, err = recipes(tmp_path, monkeypatch, capfd, **section_with(EXAMPLES, secret))
    line = error_line(err)
    assert code == 2 and "synthesize.gpt4_style.fixed_examples.7: holds what looks like an API key" in line, line
    assert secret not in line


# ---------------------------------------------------------------- 2. a local server's placeholder key
BACKEND = ("caption", "laion_buckets", "backend")
PLACEHOLDERS = {  # variable, its value, where params writes the same words
    "Ollama's key, the backend's name": ("OPENROUTER_API_KEY", "ollama", BACKEND, "ollama"),
    "LM Studio's key": ("OPENAI_API_KEY", "lm-studio", BACKEND, "lm-studio"),
    "LM Studio's, upper-cased": ("OPENAI_API_KEY", "LM-Studio", BACKEND, "LM-Studio"),
    "llama.cpp's key in a description": (
        "OPENAI_API_KEY",
        "sk-no-key-required",
        ("releases", "v2", "description"),
        "captioned by a llama.cpp server (its key: sk-no-key-required)",
    ),
    "a not-needed key": ("MY_SERVER_TOKEN", "not-needed", ("releases", "v3", "description"), "not-needed"),
}


@pytest.mark.parametrize("case", PLACEHOLDERS)
def test_a_local_servers_placeholder_key_is_no_secret(tmp_path, monkeypatch, capfd, case):
    """OPENROUTER_API_KEY=ollama with `backend: ollama` refused every stage. A real key written the same
    way is still refused."""
    name, value, at, written = PLACEHOLDERS[case]
    monkeypatch.setenv(name, value)
    code, err = recipes(tmp_path, monkeypatch, capfd, **section_with(at, written))
    assert code == 0, err
    monkeypatch.setenv(name, value + "7q")
    code, err = recipes(tmp_path, monkeypatch, capfd, **section_with(at, written.replace(value, value + "7q")))
    line = error_line(err)
    assert code == 2 and f"{'.'.join(at)}: holds" in line and value + "7q" not in line, line


# ---------------------------------------------------------------- 3. keys accepted, never read
V2_LEAK = ("releases", "v2", "steps", 1)
V4_AGAINST = ("releases", "v4", "components", 0, "steps", 0)
UNREAD = {  # where a dedup step is replaced, by what -> the one line's key path and start
    "threshold with match exact": (
        V2_LEAK,
        {"scope": "validation_vs_train", "match": "exact", "threshold": 0.3},
        "releases.v2.steps[1].dedup: threshold goes with match near",
    ),
    "method with match exact": (
        V2_LEAK,
        {"scope": "per_split", "match": "exact", "method": "minhash"},
        "releases.v2.steps[1].dedup: method goes with match near",
    ),
    "keep with scope against": (
        V4_AGAINST,
        {"scope": "against", "against": "train", "keep": "longest"},
        "releases.v4.components[0].steps[0].dedup: keep goes with scopes self, per_split, after_merge",
    ),
    "keep with scope validation_vs_train": (
        V2_LEAK,
        {"scope": "validation_vs_train", "method": "embedding", "threshold": 0.85, "keep": "first"},
        "releases.v2.steps[1].dedup: keep goes with scopes",
    ),
}


@pytest.mark.parametrize("case", UNREAD)
def test_a_dedup_key_the_step_never_reads_is_one_line(tmp_path, monkeypatch, capfd, case):
    """All passed `recipes` at exit 0: threshold and method do nothing with match exact, keep nothing
    outside the self scopes."""
    at, step, expected = UNREAD[case]
    releases = copy.deepcopy(PARAMS["releases"])
    node = releases
    for key in at[1:]:
        node = node[key]
    node["dedup"] = step
    code, err = recipes(tmp_path, monkeypatch, capfd, releases=releases)
    assert code == 2 and error_line(err).startswith(f"error: params.yaml: {expected}"), err


KEEP_LONGEST = {  # a release step of match exact, keep longest: (scope, split) on two sources' copies
    "after_merge": ("after_merge", "train"),
    "per_split": ("per_split", "train"),
    "self": ("self", "validation"),
}


@pytest.mark.parametrize("case", KEEP_LONGEST)
def test_exact_match_keep_longest_keeps_the_copy_with_the_lowest_id(tmp_path, monkeypatch, capfd, case):
    """Copies are equally long, so longest breaks the tie by stable id, as near dedup does; it kept the
    first copy (component order), as `first`."""
    scope, split = KEEP_LONGEST[case]
    components = [{"source": s, "split": split, "into": split} for s in ("diffusiondb", "chatgpt")]
    step = {"dedup": {"scope": scope, "match": "exact", "keep": "longest"}}
    write_params(tmp_path, releases={"x": {"components": components, "steps": [step]}})
    for source in ("diffusiondb", "chatgpt"):
        make_splits(tmp_path, source)  # the same 40 texts in each: row i of one is row i of the other
    result = cli(["compose", "x", "data/splits", "data/compose/x"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    rows = range(30) if split == "train" else range(30, 40)
    lowest = {min(stable_id("diffusiondb", i), stable_id("chatgpt", i)) for i in rows}
    assert lowest != {stable_id("diffusiondb", i) for i in rows}  # else first and longest would agree
    assert set(pd.read_parquet(tmp_path / "data" / "compose" / "x" / "rows.parquet")["id"]) == lowest


def test_the_reclean_shorthand_is_the_step_its_description_names():
    """It named a key `on` that no clean step has (the key is `column`)."""
    import re

    from scripts.lib.params import Release, Step, parse
    from scripts.lib.recipe import resolve_recipe

    written = re.search(r"`(clean: \{.*\})`", Release.model_fields["reclean"].description or "")
    assert written is not None
    described = parse(Step, yaml.safe_load(written[1]))
    releases = {"r": {"components": [{"source": "s"}], "reclean": True}}
    assert resolve_recipe("r", releases).steps[-1] == described


KIND_KEYS = {  # source, key written, its value -> the kinds that read it
    "read with kind text": ("chatgpt", "read", "metadata", "diffusiondb"),
    "part_ids with kind text": ("chatgpt", "part_ids", [1, 2], "diffusiondb"),
    "caption_field with kind text": ("chatgpt", "caption_field", "long_caption", "dalle3"),
    "max_member_bytes with kind text": ("chatgpt", "max_member_bytes", 1024, "diffusiondb | gustavosta"),
    "format with kind diffusiondb": ("diffusiondb", "format", "parquet", "gustavosta"),
    # (max_prompt_bytes with kind dalle3 was this row's: every kind reads it since round 20)
    "csv_files with kind dalle3": ("dalle3", "csv_files", ["a.csv"], "kaggle_sd2"),
}


@pytest.mark.parametrize("case", KIND_KEYS)
def test_a_source_key_its_kind_never_reads_is_one_line(tmp_path, monkeypatch, capfd, case):
    """Ignored by design: `kind: text` with `read: metadata` passed every stage and read nothing of it."""
    source, key, value, kinds = KIND_KEYS[case]
    sources = copy.deepcopy(PARAMS["sources"])
    sources[source][key] = value
    code, err = recipes(tmp_path, monkeypatch, capfd, sources=sources)
    line = error_line(err)
    kind = sources[source]["kind"]
    assert code == 2 and line.startswith(f"error: params.yaml: sources.{source}: {key} is read only by kind {kinds}")
    assert f"not by kind {kind}" in line


# ---------------------------------------------------------------- 4. recipes linear in the chain's length
def base_chain(i: int) -> dict:
    return {"base": "v2" if i == 1 else f"c{i - 1}"}


def reference_chain(i: int) -> dict:
    step = {"dedup": {"scope": "against", "against": "train", "reference": "v2" if i == 1 else f"c{i - 1}"}}
    return {"components": [{"source": "diffusiondb", "split": "validation", "into": "validation", "steps": [step]}]}


CHAINS = {  # 300 releases c1..c300, each reading the one before (c1 reads v2) by:
    "base": base_chain,
    "reference": reference_chain,
    "base and reference in turn": lambda i: base_chain(i) if i % 2 else reference_chain(i),
}


@pytest.mark.parametrize("case", fast_first(CHAINS))
def test_recipes_resolves_each_release_of_a_long_chain_a_bounded_number_of_times(tmp_path, monkeypatch, capfd, case):
    """release_plan resolved every link of every chain again: N=100 took 5 s, 300 nearly 3 minutes, 1,100
    over 5. Counted, not timed: each release's entry is parsed at most 3 times (it was millions)."""
    import scripts.lib.recipe as recipe_module

    releases = {**PARAMS["releases"], **{f"c{i}": CHAINS[case](i) for i in range(1, 301)}}
    bound, parses, parse = 3 * len(releases), [0], recipe_module.parse

    def counted(model, data, at=(), **kw):
        parses[0] += at[:1] == ("releases",)
        if parses[0] > bound:
            raise RuntimeError(f"more than {bound} parses of a release")
        return parse(model, data, at, **kw)

    monkeypatch.setattr(recipe_module, "parse", counted)
    code, err = recipes(tmp_path, monkeypatch, capfd, releases=releases)
    assert code == 0, err[-2000:]
    assert (tmp_path / "data" / "recipes" / "release" / "c300.json").is_file()


DEEP = 1200  # links: past Python's recursion limit (1,000 frames)


def deep_chain() -> dict:
    from test_release_recipe import releases

    return {**releases(), **{f"d{i}": {"base": "c" if i == 1 else f"d{i - 1}"} for i in range(1, DEEP + 1)}}


def compose_deep(recipe):
    from scripts.lib.compose import Ops, compose

    return compose(recipe, Ops(load_split, drop_http, near, built={}))[0]["id"].tolist()


DEEP_USES = {  # what is done with the deepest release -> what its base `c` gives
    "its components": (lambda recipe: len(recipe.components), 3),
    "its chain's steps": (lambda recipe: len(recipe.chain_steps()), 4),
    "its rows, composed": (compose_deep, None),
}


@pytest.mark.parametrize("case", DEEP_USES)
def test_a_chain_past_the_recursion_limit_resolves_and_composes(case):
    """resolve_recipe, Recipe.components and output_rows recursed once per link: RecursionError."""
    from scripts.lib.recipe import resolve_recipe

    use, expected = DEEP_USES[case]
    assert sys.getrecursionlimit() < DEEP
    releases = deep_chain()
    if expected is None:
        expected = use(resolve_recipe("c", releases))
    assert use(resolve_recipe(f"d{DEEP}", releases)) == expected


# ---------------------------------------------------------------- 5. names one file system makes one
NAMES = {  # section, entry renamed (from, to)
    "a release": ("releases", "v4-b", "v4-b."),
    "a release beside its undotted twin": ("releases", "v4-b", "v2."),
    "a source": ("sources", "laion_buckets", "laion_buckets.."),
    "a synthesize entry": ("synthesize", "gpt4_style", "gpt4_style."),
    "a caption entry": ("caption", "laion_buckets", "laion."),
}


@pytest.mark.parametrize("case", NAMES)
def test_an_entry_name_ending_in_a_dot_is_one_line(tmp_path, monkeypatch, capfd, case):
    """Windows drops a trailing dot: `v2.` and `v2` are one folder there. Accepted before."""
    section, old, new = NAMES[case]
    entries = {(new if name == old else name): entry for name, entry in PARAMS[section].items()}
    code, err = recipes(tmp_path, monkeypatch, capfd, **{section: entries})
    line = error_line(err)
    assert code == 2 and f"{new!r} ends in '.', which Windows drops from a file name" in line, line
    assert line.startswith(f"error: params.yaml: {section}: ")


REWRITES = {  # phase -> its rewrites in params.yaml `clean`, and the two of one name
    "normalise": (
        [{"name": "dots", "find": "..."}, {"name": "semi", "find": ";"}, {"name": "dots", "find": ". ."}],
        0,
        2,
    ),
    "tidy": ([{"name": "spaces", "pattern": " +", "repl": " "}, {"name": "spaces", "find": "\t"}], 0, 1),
    "finish": ([{"name": "x", "find": "a"}, {"name": "y", "find": "b"}, {"name": "y", "find": "c"}], 1, 2),
}


@pytest.mark.parametrize("phase", REWRITES)
def test_two_rewrites_of_one_name_in_a_phase_are_one_line(tmp_path, monkeypatch, capfd, phase):
    """Errors and reports name a rewrite by its name: two of one name were accepted."""
    rewrites, first, second = REWRITES[phase]
    code, err = recipes(tmp_path, monkeypatch, capfd, clean={**PARAMS["clean"], phase: rewrites})
    line = error_line(err)
    assert code == 2 and line.startswith(f"error: params.yaml: clean.{phase}: [{first}] and [{second}] are both"), line
