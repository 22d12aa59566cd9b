"""The eighth hostile round's table breaks, one table each (every row failed before its fix): a generation
list whose `position` is null, repeated, text or fractional was taken by split --order at exit 0 and by
compose --positions at exit 0 or with a traceback; a bad regex in a --rules file was blamed on params.yaml;
a DiffusionDB part the metadata lacks gave an empty table at exit 0. Real files, the real commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.workspace import PARAMS, error_line, make_splits, run_scripts, snapshot, write_params
from scripts.lib.io import stable_id


class Case(NamedTuple):
    """A bad input, the words its one error line must hold, and whether the command runs as a process."""

    value: Any
    named: list[str]
    process: bool = False


def refused(root: Path, argv: list[str], case: Case, monkeypatch, capfd) -> str:
    """Run `argv` in `root` (a real process, or in this one) and return its one error line, after checking
    it exited 2 and changed nothing under `root`."""
    before = snapshot(root)
    if case.process:
        done: Any = run_scripts(root, *argv)
    else:
        done = cli(argv, root, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert line.startswith("error: ") and all(word in line for word in case.named), line
    assert snapshot(root) == before  # no output, no temp file
    return line


# ---------------------------------------------------------------- 1, 2. a generation list's positions

IDS = 8
POSITIONS = {  # the `position` column of a generation list, and what its one line must name
    "all null": Case(pa.array([None] * IDS, pa.int64()), ["row 1: position is missing"], process=True),
    "all zero": Case(pa.array([0] * IDS, pa.int64()), ["row 2: position 0 repeats row 1's"]),
    "text": Case(pa.array(list("abcdefgh")), ["row 1: position 'a' is not a whole number"]),
    "NaN floats": Case(pa.array([float("nan")] * IDS), ["row 1: position is missing"]),
    "a null in row 3": Case(pa.array([0, 1, None, 3, 4, 5, 6, 7], pa.int64()), ["row 3: position is missing"]),
    "a repeat in row 7": Case(pa.array([0, 1, 2, 3, 4, 5, 1, 7], pa.int64()), ["row 7: position 1 repeats row 2's"]),
    "negative": Case(pa.array([0, 1, 2, -3, 4, 5, 6, 7], pa.int64()), ["row 4: position -3 is negative"]),
    "a fraction": Case(pa.array([0, 1.5, 2, 3, 4, 5, 6, 7]), ["row 2: position 1.5 is not a whole number"]),
    "infinite": Case(pa.array([0, 1, 2, 3, float("inf"), 5, 6, 7]), ["row 5: position inf is past 2**53"]),
}


def generation_list(path: Path, ids: list[str], positions) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "position": positions}), path)


def split_workspace(root: Path, positions) -> list[str]:
    write_params(root, split={**PARAMS["split"], "method": "shuffle"})
    ids = [stable_id("chatgpt", i) for i in range(IDS)]
    texts = [f"prompt {i}" for i in range(IDS)]
    captions = {"id": ids, "source": ["chatgpt"] * IDS, "split": pa.array([None] * IDS, pa.string()), "text": texts}
    pq.write_table(pa.table(captions), root / "cap.parquet")
    generation_list(root / "order.parquet", ids, positions)
    return ["split", "chatgpt", "cap.parquet", "out", "--order", "order.parquet"]


@pytest.mark.parametrize("case", POSITIONS.values(), ids=POSITIONS)
def test_split_refuses_a_generation_list_whose_positions_cannot_order_rows(tmp_path, monkeypatch, capfd, case):
    argv = split_workspace(tmp_path, case.value)
    line = refused(tmp_path, argv, case, monkeypatch, capfd)
    assert line.startswith("error: order.parquet: row "), line


def compose_workspace(root: Path, positions) -> list[str]:
    release = {"components": [{"source": "diffusiondb", "split": "all", "into": "same", "rows": [0, 4]}]}
    write_params(root, releases={"r": {**release, "export": "imagefolder"}})
    make_splits(root, n=IDS)
    ids = [stable_id("diffusiondb", i) for i in range(IDS)]
    generation_list(root / "data" / "prefilter" / "diffusiondb.parquet", ids, positions)
    return ["compose", "r", "data/splits", "data/compose/r", "--positions", "data/prefilter"]


# the same table; the text row as a process (it was a TypeError traceback)
COMPOSE_POSITIONS = {name: case._replace(process=name == "text") for name, case in POSITIONS.items()}


@pytest.mark.parametrize("case", COMPOSE_POSITIONS.values(), ids=COMPOSE_POSITIONS)
def test_compose_refuses_a_generation_list_whose_positions_cannot_order_rows(tmp_path, monkeypatch, capfd, case):
    argv = compose_workspace(tmp_path, case.value)
    line = refused(tmp_path, argv, case, monkeypatch, capfd)
    assert line.startswith("error: data/prefilter/diffusiondb.parquet: row "), line


# ---------------------------------------------------------------- 3. a rules file names itself


def rules_file(path: Path, change) -> None:
    """A rules.json as clean_rules writes it (the `final` set alone), with `change` applied to its document."""
    from scripts.lib.cleaning import load_rule_set
    from scripts.lib.cleaning.rule_sets import rules_file_document

    document = json.loads(json.dumps(rules_file_document("final", {"final": load_rule_set("final")})))
    change(document)
    path.write_text(json.dumps(document), encoding="utf-8")


def with_normalise(pattern: str, repl: str = ""):
    def change(document: dict) -> None:
        document["sets"]["final"]["normalise"] = [{"name": "x", "pattern": pattern, "repl": repl}]

    return change


def with_drop(name: str):
    def change(document: dict) -> None:
        document["sets"]["final"]["drops"]["raw"].append(name)

    return change


def with_default(name: Any):
    def change(document: dict) -> None:
        document["rules"] = name

    return change


RULE_FILES = {
    "an unclosed group": Case(
        with_normalise("("), ["bad_rules.json: sets.final.normalise[0]: bad regex '('"], process=True
    ),
    "a repeat count past C's int": Case(
        with_normalise("a{4294967296}"), ["bad_rules.json: sets.final.normalise[0]: bad regex", "too large"]
    ),
    "groups nested 5000 deep": Case(
        with_normalise("(" * 5000 + ")" * 5000), ["bad_rules.json: sets.final.normalise[0]: bad regex", "characters)"]
    ),
    "a group the pattern lacks": Case(
        with_normalise("(a)", r"\9"), ["bad_rules.json: sets.final.normalise[0]: bad repl"]
    ),
    "an unknown drop rule": Case(with_drop("nope"), ["bad_rules.json: sets.final.drops.raw: unknown drop rule 'nope'"]),
    "a default set name that is not text": Case(
        with_default(5), ["bad_rules.json: rules: a rule set name must be text, got 5"]
    ),
}


@pytest.mark.parametrize("case", RULE_FILES.values(), ids=RULE_FILES)
def test_a_bad_rule_in_a_rules_file_names_that_file(tmp_path, monkeypatch, capfd, case):
    write_params(tmp_path)
    rules_file(tmp_path / "bad_rules.json", case.value)
    prompts = {
        "id": ["0123456789abcdef"],
        "source": ["dalle3"],
        "prompt": ["a cat"],
        "split": pa.array([None], pa.string()),
        "image": pa.array([None], pa.string()),
        "width": pa.array([None], pa.float64()),
        "height": pa.array([None], pa.float64()),
        "meta": ["{}"],
    }
    pq.write_table(pa.table(prompts), tmp_path / "p.parquet")
    argv = ["clean", "dalle3", "p.parquet", "out/c.parquet", "--rules", "bad_rules.json"]
    line = refused(tmp_path, argv, case, monkeypatch, capfd)
    assert "params.yaml" not in line


BY_CLAUSE = (  # a by_clause whose remove_to_comma is no regex
    "by_clause: {marker: ' by ', exempt: 'surrounded by ', cut_if_commas_after: 3, cut_if_names_after: 3, "
    "and_marker: ' and ', remove_to_comma: 'by ('}"
)
SHIPPED_SETS = {  # a shipped set's file (scripts/clean_rules/NAME.yaml) holds its keys at the top
    "a bad regex": ("\nnormalise:\n", "\nnormalise:\n  - {name: x, pattern: '('}\n", "broken.yaml: normalise[0]: bad"),
    "a bad by_clause regex": ("by_clause: null", BY_CLAUSE, "broken.yaml: by_clause.remove_to_comma: bad regex"),
    "an unlisted drop rule": ("\ndrops:", "\nmax_pipes: 5\ndrops:", "broken.yaml: max_pipes is set, but drops lists"),
}


@pytest.mark.parametrize("edit", SHIPPED_SETS.values(), ids=SHIPPED_SETS)
def test_a_bad_rule_in_a_shipped_rule_set_names_its_file(tmp_path, monkeypatch, edit):
    import scripts.lib.cleaning.rule_sets as rule_set_files
    from scripts.lib.cleaning import compile_rules, load_rule_set
    from scripts.lib.errors import DataError
    from scripts.lib.params import CLEAN_RULES_DIR

    old, new, named = edit
    final = (CLEAN_RULES_DIR / "final.yaml").read_text(encoding="utf-8")
    assert old in final
    (tmp_path / "broken.yaml").write_text(final.replace(old, new, 1), encoding="utf-8")
    monkeypatch.setattr(rule_set_files, "CLEAN_RULES_DIR", tmp_path)
    with pytest.raises(DataError) as raised:
        compile_rules(load_rule_set("broken"))
    assert named in str(raised.value) and "params.yaml" not in str(raised.value), raised.value


# ---------------------------------------------------------------- 4. a DiffusionDB part the metadata lacks


def metadata(path: Path, parts: list[int]) -> None:
    n = len(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {
        "image_name": [f"img{i}.png" for i in range(n)],
        "prompt": [f"prompt {i}" for i in range(n)],
        "part_id": pa.array(parts, pa.uint16()),
        **{column: pa.array([1] * n, pa.int64()) for column in ("seed", "step", "sampler", "width", "height")},
        "cfg": pa.array([7.5] * n),
        "user_name": ["u"] * n,
        "timestamp": pa.array([0] * n, pa.int64()),
        "image_nsfw": pa.array([0.1] * n),
        "prompt_nsfw": pa.array([0.1] * n),
    }
    pq.write_table(pa.table(table), path)


PARTS = {  # (parts the metadata holds, the source's part keys), what the line names
    "a part id of none": Case(([1, 2, 3], {"part_ids": [999]}), ["part_id 999, named in part_ids"], process=True),
    "one of two part ids": Case(([1, 1, 2], {"part_ids": [2, 7]}), ["part_id 7, named in part_ids"]),
    "an empty metadata file": Case(([], {"part_ids": [1]}), ["part_id 1, named in part_ids"]),
    "parts drawn past those there": Case(
        ([1, 2, 3], {"num_parts": 40, "part_id_max": 50}), ["drawn by num_parts from 1..part_id_max = 50"]
    ),
}


@pytest.mark.parametrize("case", PARTS.values(), ids=PARTS)
def test_a_diffusiondb_part_the_metadata_lacks_is_one_line(tmp_path, monkeypatch, capfd, case):
    held, keys = case.value
    source = {**PARAMS["sources"]["diffusiondb"], "path": "raw/ddb", "read": "metadata", **keys}
    write_params(tmp_path, sources={**PARAMS["sources"], "diffusiondb": source})
    metadata(tmp_path / "raw" / "ddb" / "metadata.parquet", held)
    line = refused(tmp_path, ["ingest", "diffusiondb", "out.parquet"], case, monkeypatch, capfd)
    assert line.startswith("error: raw/ddb/metadata.parquet: no rows with part_id "), line
