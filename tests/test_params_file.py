"""params.yaml: its models (scripts/lib/params/) are the one definition, docs/params.md is generated
from them, bad values stop a stage with one line, and the file survives DVC's and the history replay's
rewrites (`dvc exp run -S`)."""

import copy
import os
import shutil
import time
import types
import typing

import pytest
import yaml
from pydantic import BaseModel

from helpers import REPO, parse_python
from scripts.lib import params as P
from scripts.lib.errors import DataError
from scripts.tools.replay_history import params_up_to, release_names


def test_dvc_set_param_round_trip_keeps_every_value(tmp_path):
    # `dvc exp run -S k=v` rewrites params.yaml with ruamel; flow mappings holding regexes such as
    # \d+:\d+ used to come back unquoted and unreadable by PyYAML, breaking every stage.
    from dvc.utils.serialize import modify_yaml

    copy = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", copy)
    with modify_yaml(copy) as data:
        data["dedup"]["threshold"] = 0.8
    before = yaml.safe_load((REPO / "params.yaml").read_text())
    after = yaml.safe_load(copy.read_text())
    assert after["dedup"]["threshold"] == 0.8
    after["dedup"]["threshold"] = before["dedup"]["threshold"]
    assert after == before


def test_history_replay_params_keep_values_and_drop_later_releases():
    text = (REPO / "params.yaml").read_text()
    names = release_names(text)
    assert names[:5] == ["v2", "v3", "v4", "v4-a", "v4-b"]  # the team's history first; releases added later follow
    for i, name in enumerate(names):
        cut = yaml.safe_load(params_up_to(text, name))
        full = yaml.safe_load(text)
        assert list(cut["releases"]) == names[: i + 1]
        assert {k: v for k, v in cut.items() if k != "releases"} == {k: v for k, v in full.items() if k != "releases"}


# --- scripts/lib/params is the one definition; docs/params.md is generated from it ---------------
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def test_docs_params_md_is_what_the_generator_writes_now():
    from scripts.tools.params_doc import render

    assert (REPO / "docs" / "params.md").read_text(encoding="utf-8") == render(), (
        "docs/params.md is stale: run `python -m scripts params-doc`"
    )


def _models(model: type[BaseModel], seen: list) -> list:
    if model not in seen:
        seen.append(model)
        for field in model.model_fields.values():
            for tp in _types(field.annotation):
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    _models(tp, seen)
    return seen


def _types(tp):
    yield tp
    for arg in typing.get_args(tp):
        yield from _types(arg)


def test_every_model_field_has_a_description_and_every_section_a_model():
    models = _models(P.Params, [])
    assert {m.__name__ for m in models} >= {
        "Source",
        "Clean",
        "Rewrite",
        "Language",
        "PersonNames",
        "ByClause",
        "Dedup",
        "TinyModel",
        "Generate",
        "Split",
        "Release",
        "Component",
        "Export",
        "SynthesizeEntry",
        "ExampleSource",
        "Preview",
    }
    missing = [
        f"{m.__name__}.{k}" for m in models for k, f in m.model_fields.items() if not (f.description or "").strip()
    ]
    assert not missing, f"fields without a description: {missing}"
    assert all((m.__doc__ or "").strip() for m in models)
    assert set(P.SECTION_MODELS) == set(P.Params.model_fields)


def _walk(data, model: type[BaseModel], where: str):
    """Every key of `data` is a field of `model`; recurse into nested models (lists, mappings)."""
    assert isinstance(data, dict), where
    for key, value in data.items():
        assert key in model.model_fields, f"params.yaml: {where}.{key} is not a field of {model.__name__}"
        _walk_value(value, model.model_fields[key].annotation, f"{where}.{key}")


def _walk_value(value, tp, where):
    nested = [t for t in _types(tp) if isinstance(t, type) and issubclass(t, BaseModel)]
    if not nested or value is None or isinstance(value, (str, bool)):  # sources.S.clean: true | set name | {...}
        return
    origin = typing.get_origin(
        typing.get_args(tp)[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) else tp
    )
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, nested[0], f"{where}[{i}]")
    elif origin is dict:
        for name, item in value.items():
            _walk(item, nested[0], f"{where}.{name}")
    else:
        _walk(value, nested[0], where)


def test_every_key_in_params_yaml_is_a_model_field():
    _walk(PARAMS, P.Params, "params")
    P.check_params(PARAMS)


def test_the_models_defaults_are_the_values_params_yaml_ships():
    path = REPO / "params.yaml"
    for section in ("dedup", "tiny_model", "generate", "split", "preview"):
        assert P.load_section(section, path) == P.SECTION_MODELS[section](), section
    clean = P.load_section("clean", path)  # the shipped file picks a rule set and overrides nothing
    assert clean.rules == "final" and clean.language is None and clean.person_names is None
    entry = P.load_section("synthesize", path)["gpt4_style"]
    lists = {"examples", "fixed_examples", "avoid_topics"}  # data, not knobs: empty by default
    assert entry.model_dump(exclude=lists) == P.SynthesizeEntry().model_dump(exclude=lists)
    assert all(isinstance(s, P.Source) for s in P.load_section("sources", path).values())


def test_source_caps_default_to_the_archive_readers_caps():
    from scripts.lib.archive import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_MEMBER_BYTES

    source = P.Source(kind="text", path="x")
    assert (source.max_member_bytes, source.max_image_pixels) == (DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_IMAGE_PIXELS)


def test_params_imports_only_errors_io_nesting_and_key_redaction():
    """Any module can import the params models: they import nothing of ours that could import them."""
    import ast

    ours = set()
    for path in (REPO / "scripts" / "lib" / "params").glob("*.py"):
        tree = parse_python(path)
        ours |= {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("scripts")
        }
        ours |= {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("scripts")
        }
    ours = {m for m in ours if not m.startswith("scripts.lib.params")}
    # key_redaction: the secret check's encodings (it imports nothing of ours)
    assert ours <= {"scripts.lib.errors", "scripts.lib.io", "scripts.lib.nesting", "scripts.lib.key_redaction"}, ours


# --- bad values: each one DataError naming params.yaml and the key path --------------------------

NAN, INF = float("nan"), float("inf")
BAD = [  # (key path to change, bad value, key path named in the error, message)
    ("dedup.threshold", 0, "dedup.threshold", "greater than 0"),
    ("dedup.threshold", 1.5, "dedup.threshold", "less than or equal to 1"),
    ("dedup.threshold", NAN, "dedup.threshold", "finite number"),
    ("dedup.threshold", "0.8", "dedup.threshold", "valid number (got '0.8')"),
    ("dedup.num_perm", 1_000_000, "dedup.num_perm", "less than or equal to 8192"),
    ("dedup.num_perm", 0, "dedup.num_perm", "greater than or equal to 1"),
    ("dedup.ngram", 10_000, "dedup.ngram", "less than or equal to 64"),
    ("dedup.bucket_window", 10**9, "dedup.bucket_window", "less than or equal to 4096"),
    ("dedup.bucket_window", 0, "dedup.bucket_window", "greater than or equal to 1"),
    ("dedup.target_recall", 1.0, "dedup.target_recall", "less than 1"),
    ("dedup.seed", 2**32, "dedup.seed", "less than or equal to 4294967295"),
    ("runtime.workers", True, "runtime.workers", "valid integer (got True)"),
    ("dedup.bands", 20, "dedup", "set both bands and rows, or neither"),
    ("dedup.unit", "byte", "dedup.unit", "'word' or 'char'"),
    ("runtime.batch_rows", None, "runtime.batch_rows", "valid integer (got None)"),
    ("split.seed", "42", "split.seed", "valid integer (got '42')"),
    ("split.seed", -1, "split.seed", "greater than or equal to 0"),
    ("split.validation_fraction", INF, "split.validation_fraction", "finite number"),
    ("split.validation_fraction", 1.0, "split.validation_fraction", "less than 1"),
    ("generate.height", 100, "generate", "height and width must be multiples of 8, got 100x64"),
    ("generate.steps", 0, "generate.steps", "greater than or equal to 1"),
    ("generate.steps", 3.0, "generate.steps", "valid integer (got 3.0)"),
    ("generate.resize", 0, "generate.resize", "greater than or equal to 1"),
    ("generate.format", "gif", "generate.format", "'jpg', 'webp' or 'png'"),
    ("generate.device", "tpu", "generate.device", "should match pattern"),
    ("generate.guidance", NAN, "generate.guidance", "finite number"),
    ("generate.model", None, "generate.model", "valid string"),
    ("generate.sources", [""], "generate.sources[0]", "at least 1 character"),
    ("tiny_model.unet_heads", [1], "tiny_model", "unet_heads needs one entry per unet_channels entry"),
    ("tiny_model.unet_heads", [3, 2], "tiny_model", "3 heads do not divide 16 channels"),
    ("tiny_model.sample_size", 72, "tiny_model", "not a multiple of 16"),
    ("tiny_model.unet_channels", [16] * 7, "tiny_model.unet_channels", "at most 6 items"),
    ("preview.quality", 0, "preview.quality", "greater than or equal to 1"),
    ("preview.caption_height", -1, "preview.caption_height", "greater than or equal to 0"),
    ("preview.columns", 10**6, "preview.columns", "less than or equal to 100"),
    ("sources.chatgpt.max_member_bytes", 2**40, "sources.chatgpt.max_member_bytes", "less than or equal to"),
    ("sources.chatgpt.batch_rows", 0, "sources.chatgpt.batch_rows", "greater than or equal to 1"),
    ("sources.chatgpt.path", "", "sources.chatgpt.path", "at least 1 character"),
    ("sources.chatgpt.on_error", "ignore", "sources.chatgpt.on_error", "'fail' or 'skip'"),
    ("sources.diffusiondb.num_parts", 5000, "sources.diffusiondb", "num_parts = 5000 exceeds part_id_max = 2000"),
    ("sources.diffusiondb.part_ids", [], "sources.diffusiondb.part_ids", "at least 1 item"),
    ("clean.max_repeat_ratio", NAN, "clean.max_repeat_ratio", "finite number"),
    ("clean.max_chars", "256", "clean.max_chars", "valid integer (got '256')"),
    ("clean.ban_words", ["jpg", ""], "clean.ban_words[1]", "at least 1 character"),
    ("clean.min_chars", 300, "clean", "min_chars = 300 exceeds max_chars = 256"),
    ("runtime.workers", -1, "runtime.workers", "greater than or equal to 0"),
    ("clean.normalise", [{"name": "x"}], "clean.normalise[0]", "set exactly one of find or pattern"),
    ("clean.tidy", [{"name": "x", "patern": "a"}], "clean.tidy[0]", "unknown key 'patern' (did you mean 'pattern'?)"),
    ("clean.by_clause", {"marker": " by "}, "clean.by_clause.exempt", "Field required"),
    ("releases.v2.validation_leaks", "some", "releases.v2.validation_leaks", "'none', 'exact' or 'near'"),
    (
        "releases.v2.export",
        {"format": "webdataset", "shard_size": 0},
        "releases.v2.export.shard_size",
        "greater than or equal to 1",
    ),
    (
        "releases.v2.export",
        "tarball",
        "releases.v2.export.format",
        "'imagefolder', 'webdataset', 'simpletuner', 'parquet', 'bucketed' or 'prompts'",
    ),
    (
        "releases.v2.components",
        [{"source": "x", "into": "tran"}],
        "releases.v2.components[0].into",
        "'train', 'validation' or 'same'",
    ),
    ("synthesize.gpt4_style.base_url", "ftp://x", "synthesize.gpt4_style.base_url", "is not an http(s) URL"),
    ("synthesize.gpt4_style.template", "{topics}", "synthesize.gpt4_style.template", "unknown field {topics}"),
    ("synthesize.gpt4_style.extra_body", {"n": 2}, "synthesize.gpt4_style.extra_body", "'n' is set by the stage"),
    ("synthesize.gpt4_style.timeout_s", 0, "synthesize.gpt4_style.timeout_s", "greater than 0"),
    ("synthesize.gpt4_style.concurrency", 10**6, "synthesize.gpt4_style.concurrency", "less than or equal to 256"),
    ("synthesize.gpt4_style.temperature", INF, "synthesize.gpt4_style.temperature", "finite number"),
]


def _changed(dotted: str, value) -> dict:
    params = copy.deepcopy(PARAMS)
    *parents, key = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[key] = value
    return params


@pytest.mark.parametrize("dotted, value, where, message", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_a_bad_value_is_one_error_naming_params_yaml_and_the_key(dotted, value, where, message):
    with pytest.raises(DataError) as info:
        P.check_params(_changed(dotted, value))
    text = str(info.value)
    assert text.startswith(f"params.yaml: {where}: "), text
    assert message in text and "\n" not in text, text


def test_a_bad_value_stops_the_stage_with_exit_2(tmp_path):
    from scripts.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_changed("dedup.num_perm", 10**6)), encoding="utf-8")
    (tmp_path / "in.txt").write_text("a b c\n", encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["dedup-text", "in.txt", "out.jsonl"]) == 2
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "out.jsonl").exists()


def test_load_section_gives_models_with_defaults_and_names_a_missing_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dedup: {threshold: 0.8}\nsynthesize: {x: {requests: 1}}\n", encoding="utf-8")
    dedup = P.load_section("dedup", path)
    assert isinstance(dedup, P.Dedup) and dedup.threshold == 0.8 and dedup.num_perm == 128
    assert P.load_section("synthesize", path)["x"].requests == 1
    assert P.load_params("dedup", path) == {"threshold": 0.8}  # plain data for clean.py and the like
    with pytest.raises(DataError, match=r"params.yaml: missing section 'split'"):
        P.load_section("split", path)
    assert P.load_section("preview", path, missing_ok=True) == P.Preview()
    assert P.load_section("sources", path, missing_ok=True) == {}


# --- YAML aliases are refused (DVC's rewrite would expand them; a few hundred bytes can expand to billions)

BOMB = (
    "\n".join(
        ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        + [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    )
    + "\n"
)


def test_a_yaml_alias_bomb_fails_fast_with_one_line(tmp_path):
    assert len(BOMB.encode()) < 400  # 9^9 = 387M strings once expanded
    path = tmp_path / "params.yaml"
    path.write_text(BOMB, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        P.load_params(path=path)
    assert time.perf_counter() - start < 1.0
    assert str(info.value) == f"{path}: line 2: YAML aliases (*name) are not allowed (write the entries out)"


def test_an_alias_in_an_otherwise_valid_file_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "split: &s {seed: 1, validation_fraction: 0.05}\npreview: {columns: 2}\nother: *s\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"params.yaml: line 3: YAML aliases"):
        P.load_params("split", path)
    P.load_params(path=REPO / "params.yaml")  # the shipped file has none
