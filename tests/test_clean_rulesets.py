"""Named, versioned cleaning rule sets: `final`, `2023-04-04`, `2023-03-30`, each the reference
team's `preprocess` at one commit (scripts/clean_rules/<name>.yaml), the default set and its overrides in
params.yaml, the per-source choice of set and mode, and rules.json, which holds every set once.

The expected outputs in VERSIONS are what the team's own code at each commit returns for the prompt
(run with benchmarks/clean_agreement.py's loader on the git mirror of their repository, langdetect seeded
with 0); the reasons are the names of our rules that reproduce those drops. Every prompt there gets a
different outcome from at least two versions, so each line tells the versions apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import cli
from scripts import clean
from scripts.lib import params as P
from scripts.lib.cleaning import (
    all_rule_sets,
    clean_table,
    clean_text,
    compile_rules,
    load_rule_set,
    load_rules,
    rule_set_from_file,
    source_choice,
)
from scripts.lib.cleaning import rule_sets as rule_set_files
from scripts.lib.cleaning.rule_sets import document
from scripts.lib.errors import DataError
from scripts.lib.io import PROMPT_COLUMNS
from scripts.lib.tables import write_parquet

REPO = Path(__file__).resolve().parents[1]
SETS = ("final", "2023-04-04", "2023-03-30")
RULES = {name: load_rules(load_rule_set(name)) for name in SETS}

# prompt -> the outcome per version, (text, None) or (None, reason), in the order of SETS
VERSIONS = [
    # 2023-03-30 drops "fps" (found with spaces deleted); final's number rules eat "30 f"
    (
        "a photo of a cat on a windowsill, 30 fps, golden hour",
        [
            ("a photo of a cat on a windowsill, ps, golden hour", None),
            ("a photo of a cat on a windowsill, 30 fps, golden hour", None),
            (None, "banned_nospace"),
        ],
    ),
    # 2023-03-30's camera stop-words
    (
        "portrait of a woman, shot on kodak portra, soft light at dusk",
        [("portrait of a woman, shot on kodak portra, soft light at dusk", None)] * 2 + [(None, "ban_words")],
    ),
    # final: more than 3 " by "
    (
        "a cat by a tree by a lake by a hill by a road at dawn",
        [(None, "max_by"), (None, "min_mean_word_len"), (None, "min_mean_word_len")],
    ),
    # final deletes "trending on ...", stock phrases and sites; the older ones only "8k"
    (
        "a castle on a hill at sunset, trending on artstation, 8k, octane render",
        [("a castle on a hill at sunset,", None)]
        + [("a castle on a hill at sunset, trending on artstation, octane render", None)] * 2,
    ),
    # final: >= 10 commas
    (
        "red, green, blue, yellow, purple, orange, pink, cyan, white, black, a parrot in a jungle",
        [(None, "max_commas")]
        + [("red, green, blue, yellow, purple, orange, pink, cyan, white, black, a parrot in a jungle", None)] * 2,
    ),
    # langdetect: 2023-04-04 on the raw prompt, 2023-03-30 last, final not at all
    (
        "ein kleines rotes Haus am Waldrand im Winter mit Schnee auf dem Dach",
        [
            ("ein kleines rotes Haus am Waldrand im Winter mit Schnee auf dem Dach", None),
            (None, "language"),
            (None, "language"),
        ],
    ),
    # final collapses repeats and deletes artists; the older ones keep both
    (
        "a very very very large old castle on a hill by greg rutkowski",
        [("a very large old castle on a hill", None)]
        + [("a very very very large old castle on a hill by greg rutkowski", None)] * 2,
    ),
    # SD flags and camera settings: final's long list; the older ones only f-stops and "85mm lens"
    (
        "a fox in a field --steps 50 -w 1024, 85mm lens, f/1.8",
        [("a fox in a field,", None)] + [("a fox in a field -steps 50 -w 1024", None)] * 2,
    ),
    # final's ban words
    (
        "a lighthouse on a cliff, #seascape, dramatic sky",
        [(None, "ban_words")] + [("a lighthouse on a cliff, #seascape, dramatic sky", None)] * 2,
    ),
    # "if my" is a thought phrase of final only
    (
        "if my cat could fly over the city at night it would be wonderful",
        [(None, "thought_phrases")] + [("if my cat could fly over the city at night it would be wonderful", None)] * 2,
    ),
    # final: more than 5 dashes
    (
        "a-b-c-d-e-f-g cat sitting on a mat in the sun",
        [(None, "max_dashes")] + [("a-b-c-d-e-f-g cat sitting on a mat in the sun", None)] * 2,
    ),
    # final: years in brackets go, and a trailing " and" leaves its space (text[:-3])
    (
        "a painting of a ship in a storm (1890), dramatic waves and",
        [("a painting of a ship in a storm , dramatic waves ", None)]
        + [("a painting of a ship in a storm (1890), dramatic waves and", None)] * 2,
    ),
    # langdetect finds no letters: 2023-04-04 logged the exception and kept the prompt, 2023-03-30 dropped it
    ("1234, 5678, 9012, 3456, 7890", [("1234, 5678, 9012, 3456, 7890", None)] * 2 + [(None, "language")]),
    # the older versions move spaces before symbols and drop on the result
    (
        "☀☁☂ abc ☃☄★ def ☆☇☈ ghi ☉☊☋",
        [("abc ☃☄★ def ☆☇☈ ghi ☉☊☋", None), (None, "language"), (None, "min_unique_words")],
    ),
]


@pytest.mark.parametrize("prompt,outcomes", VERSIONS, ids=[v[0][:40] for v in VERSIONS])
def test_each_version_cleans_like_its_commit(prompt, outcomes):
    pytest.importorskip("langdetect")
    assert len(set(outcomes)) > 1  # the line tells at least two versions apart
    assert [clean_text(prompt, RULES[name]) for name in SETS] == outcomes


def test_the_three_versions_ship_and_each_is_a_complete_checked_document():
    assert set(SETS) <= set(P.rule_set_names())
    for name in SETS:
        assert isinstance(load_rule_set(name), P.CleanRules)  # the one model of a rule set
    drops = {name: [rule for rules in RULES[name].drop_rules.values() for rule, _ in rules] for name in SETS}
    assert drops["final"][:3] == ["banned_nospace", "max_dashes", "max_by"]  # language/person_names are off
    assert "max_pipes" not in drops["final"] and RULES["final"].by_clause is None  # 942a6f8 removed both
    assert drops["2023-04-04"][:2] == ["language", "banned_nospace"]
    assert drops["2023-03-30"][-1] == "language"
    persons = RULES["final"].document.person_names
    assert persons.only_if == [" by ", " style "] and persons.max_persons == 3


def test_speedups_are_exact_on_the_older_versions(fixtures_dir):
    prompts = pd.read_csv(fixtures_dir / "openprompts-1k.csv")["prompt"].dropna().astype(str).tolist()[:250]
    for name in ("2023-04-04", "2023-03-30"):
        rules = load_rule_set(name).replace(language={"enabled": False})  # langdetect: slow, not a regex
        fast, slow = compile_rules(rules), compile_rules(rules, fast=False)
        assert [clean_text(p, fast) for p in prompts] == [clean_text(p, slow) for p in prompts], name


# --------------------------------------------------------------------------- params: default set, overrides


def test_params_name_the_default_set_and_override_its_keys():
    params = P.load_params("clean", REPO / "params.yaml")
    assert params["rules"] == "final" and load_rules(params).document == RULES["final"].document
    prompt = "a small red fox sleeping under an old oak tree in autumn"
    older = load_rules({"rules": "2023-04-04", "max_chars": 40})
    assert clean_text(prompt, older) == (None, "max_chars")
    assert older.drop_rules["raw"][0][0] == "language"  # the rest is the named set's
    # the overrides change the default set only: the others stay as shipped
    sets = all_rule_sets(P.parse(P.Clean, {"rules": "2023-04-04", "max_chars": 40}))
    assert sets["2023-04-04"].max_chars == 40
    assert sets["final"] == load_rule_set("final")


def test_an_unquoted_date_names_a_set(tmp_path):
    text = (REPO / "params.yaml").read_text(encoding="utf-8").replace("  rules: final ", "  rules: 2023-04-04 ", 1)
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    assert P.load_section("clean", tmp_path / "params.yaml").rules == "2023-04-04"
    rules = load_rules(P.load_params("clean", tmp_path / "params.yaml"))
    assert rules.document == RULES["2023-04-04"].document
    source = P.parse(P.Source, yaml.safe_load("{kind: text, path: x, clean: 2023-03-30}"))
    assert source.clean == "2023-03-30" and source_choice(yaml.safe_load("2023-03-30")) == ("2023-03-30", "rewrite")
    assert source_choice(source.clean) == ("2023-03-30", "rewrite")


def test_an_unknown_set_is_one_line_naming_the_nearest():
    with pytest.raises(
        DataError, match=r"^params.yaml: rules: unknown cleaning rule set 'fnal' \(did you mean 'final'\?\)"
    ):
        P.parse(P.Clean, {"rules": "fnal"})
    with pytest.raises(DataError, match="sources.x.clean.*unknown cleaning rule set '2023-04-05'"):
        P.parse(P.Source, {"kind": "text", "path": "p", "clean": {"rules": "2023-04-05"}}, at=("sources", "x"))
    with pytest.raises(DataError, match="clean.rules: unknown cleaning rule set 'nope'"):
        load_rules({"rules": "nope"})
    with pytest.raises(DataError, match="no rule set named 'nope'"):
        load_rule_set("nope")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"drops": {"raw": ["max_pipes"]}}, "clean.drops.raw lists 'max_pipes', but clean.max_pipes is not set"),
        ({"max_pipes": 5}, "clean.max_pipes is set, but clean.drops lists no 'max_pipes'"),
        ({"drops": {"raw": ["max_hashtags"]}}, "clean.drops.raw: unknown drop rule 'max_hashtags'"),
        ({"drops": {"early": []}}, "clean.drops: unknown key 'early'"),
        ({"drops": {"raw": ["max_dashes", "max_dashes"]}}, "'max_dashes' is listed twice"),
    ],
)
def test_drops_and_rule_keys_must_agree(change, message):
    with pytest.raises(DataError, match=message):
        load_rules({**document(load_rule_set("final")), **change})


def test_a_rule_set_file_is_checked_naming_the_file(tmp_path, monkeypatch):
    final = (REPO / "scripts" / "clean_rules" / "final.yaml").read_text(encoding="utf-8")
    (tmp_path / "broken.yaml").write_text(final.replace("max_chars: 256 ", "max_chars: many "), encoding="utf-8")
    monkeypatch.setattr(rule_set_files, "CLEAN_RULES_DIR", tmp_path)
    with pytest.raises(DataError, match=r"broken.yaml: max_chars: .*valid integer"):
        load_rule_set("broken")


# --------------------------------------------------------------------------- rules.json and the release API


def test_rules_json_holds_every_set_once_and_the_release_api_reads_any(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    clean.cli_rules(Path("rules.json"))
    document = json.loads(Path("rules.json").read_text(encoding="utf-8"))
    assert document["rules"] == "final" and set(document["sets"]) == set(P.rule_set_names())
    assert all(set(rules) <= set(P.CleanRules.model_fields) for rules in document["sets"].values())
    prompts = [prompt for prompt, _ in VERSIONS]
    for name in SETS:
        from_file = compile_rules(rule_set_from_file(Path("rules.json"), name))
        assert [clean_text(p, from_file) for p in prompts] == [clean_text(p, RULES[name]) for p in prompts]
    assert rule_set_from_file(Path("rules.json")) == RULES["final"].document  # no name: the default set
    with pytest.raises(DataError, match="rules.json: no rule set named '2023-01-01'"):
        rule_set_from_file(Path("rules.json"), "2023-01-01")


# --------------------------------------------------------------------------- modes, per source


def prompt_table(prompts: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"id{i}" for i in range(len(prompts))],
            "source": "s",
            "prompt": prompts,
            "split": None,
            "image": None,
            "width": 512,
            "height": 512,
            "meta": "{}",
        }
    )[PROMPT_COLUMNS]


PROMPTS = [
    "a castle on a hill at sunset, trending on artstation, 8k, octane render",
    "see https://x.io for a cat",
    "a photo of a cat on a windowsill, 30 fps, golden hour",
]


def test_modes_rewrite_filter_only_off():
    df = prompt_table(PROMPTS)
    rules = RULES["2023-03-30"]
    kept, dropped = clean_table(df, rules)
    assert list(kept["text"]) == ["a castle on a hill at sunset, trending on artstation, octane render"]
    assert list(dropped["reason"]) == ["banned_nospace", "banned_nospace"]
    kept, dropped = clean_table(df, rules, mode="filter_only")  # the team's v4-a bug: filtered, text raw
    assert list(kept["text"]) == [PROMPTS[0]] and len(dropped) == 2
    kept, dropped = clean_table(df, rules, mode="off")
    assert list(kept["text"]) == PROMPTS and len(dropped) == 0
    with pytest.raises(DataError, match="mode must be one of"):
        clean_table(df, rules, mode="raw")


def test_source_choice_forms():
    assert source_choice(True) == (None, "rewrite") and source_choice(False) == (None, "off")
    assert source_choice("2023-04-04") == ("2023-04-04", "rewrite")
    assert source_choice(P.SourceClean(rules="2023-04-04", mode="filter_only")) == ("2023-04-04", "filter_only")
    assert source_choice(P.SourceClean(mode="filter_only")) == (None, "filter_only")


def test_clean_stage_uses_the_sources_set_and_mode(tmp_path, monkeypatch, capfd):
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for source, choice in (
        ("t_filter", {"rules": "2023-03-30", "mode": "filter_only"}),
        ("t_set", "2023-03-30"),
        ("t_default", True),
    ):
        params["sources"][source] = {"kind": "text", "path": "x", "clean": choice}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    write_parquet(prompt_table(PROMPTS), tmp_path / "in.parquet")
    assert cli(["clean-rules", "rules.json"], tmp_path, monkeypatch, capfd).returncode == 0
    for source, texts in (
        ("t_filter", [PROMPTS[0]]),
        ("t_set", ["a castle on a hill at sunset, trending on artstation, octane render"]),
        ("t_default", ["a castle on a hill at sunset,", PROMPTS[2].replace("30 fps", "ps")]),
    ):
        result = cli(
            ["clean", source, "in.parquet", f"out/{source}.parquet", "--rules", "rules.json"],
            tmp_path,
            monkeypatch,
            capfd,
        )
        assert result.returncode == 0, result.stderr
        assert list(pq.read_table(tmp_path / "out" / f"{source}.parquet").to_pandas()["text"]) == texts, source
    report = json.loads((tmp_path / "out" / "t_filter.report.json").read_text())
    assert (report["rules"], report["mode"], report["kept"], report["dropped"]) == ("2023-03-30", "filter_only", 1, 2)


def test_langdetect_is_seeded():
    pytest.importorskip("langdetect")
    from langdetect import DetectorFactory

    # langdetect samples at random unless DetectorFactory.seed is set: the rule sets it before each call
    text = "rote Haus am Waldrand, Schnee, Dach und Himmel im Winter am Abend"
    DetectorFactory.seed = 12345
    results = {clean_text(text, RULES["2023-04-04"]) for _ in range(5)}
    assert DetectorFactory.seed == 0 and results == {(None, "language")}
    reseeded = compile_rules(load_rule_set("2023-04-04").replace(language={"enabled": True, "seed": 7}))
    clean_text(text, reseeded)
    assert DetectorFactory.seed == 7


class _Entity:
    def __init__(self, text: str):
        self.text, self.label_ = text, "PERSON"


def test_final_counts_person_names_only_with_by_or_style(monkeypatch):
    # spaCy's model is not installable offline: a stand-in `spacy` whose NER calls every capitalised
    # word a PERSON, loaded through the real rule (person_names.enabled)
    import sys
    import types

    fake = types.ModuleType("spacy")
    fake.load = lambda name: lambda text: types.SimpleNamespace(ents=[_Entity(w) for w in text.split() if w.istitle()])
    monkeypatch.setitem(sys.modules, "spacy", fake)
    rules = load_rules(
        {"rules": "final", "person_names": {"enabled": True, "max_persons": 3, "only_if": [" by ", " style "]}}
    )
    assert clean_text("portrait of a knight by Anna Bob Carl Dan in the snow", rules) == (None, "person_names")
    assert clean_text("portrait of a knight in the style of Anna Bob Carl Dan", rules) == (None, "person_names")
    assert clean_text("portrait of a knight by Anna Bob Carl in the snow", rules)[1] is None  # 3 names: kept
    assert clean_text("portrait of a knight with Anna Bob Carl Dan in the snow", rules)[1] is None  # no by/style


def test_clean_text_command_takes_a_rule_set(tmp_path, monkeypatch, capfd):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "in.txt").write_text("a photo of a cat on a windowsill, 30 fps, golden hour\n", encoding="utf-8")
    for name, row in (
        ("2023-03-30", {"text": None, "reason": "banned_nospace"}),
        ("final", {"text": "a photo of a cat on a windowsill, ps, golden hour", "reason": None}),
    ):
        result = cli(["clean-text", "in.txt", "out.jsonl", "--rules", name], tmp_path, monkeypatch, capfd)
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8")) == row
    result = cli(["clean-text", "in.txt", "out.jsonl", "--rules", "nope"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and "no rule set named 'nope'" in result.stderr


def test_an_interrupt_while_langdetect_loads_its_profiles_is_not_an_undetectable_prompt(monkeypatch):
    """langdetect loads its profiles on first use under a bare `except:`: a Ctrl-C there became its own
    LangDetectException, the prompt counted as undetectable, the half-loaded profiles stayed, and the
    stage exited 0 with other rows (found by hand: a release interrupted 1.2 s in exited 0 with
    `clean:language` 4 instead of 2). The interrupt now goes on and the next detection loads afresh."""
    from langdetect import detector_factory

    from scripts.lib.cleaning.drop_rules import detect_language as _language

    loaded = []
    real_add = detector_factory.DetectorFactory.add_profile

    def add_then_interrupt(self, *args, **kwargs):
        loaded.append(1)
        if len(loaded) == 5:  # where a Ctrl-C lands in the ~1 s of loading
            raise KeyboardInterrupt
        return real_add(self, *args, **kwargs)

    _language.cache_clear()  # an earlier test may have detected this text: make this call load the profiles
    monkeypatch.setattr(detector_factory, "_factory", None)
    monkeypatch.setattr(detector_factory.DetectorFactory, "add_profile", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _language("a red car on a bridge at sunset, photograph", 0)
    assert detector_factory._factory is None
    monkeypatch.setattr(detector_factory.DetectorFactory, "add_profile", real_add)
    assert _language("a red car on a bridge at sunset, photograph", 0) == "en"
