"""Round 28f: names that collide on the file systems a release is checked out on (macOS, Windows).

A release names each row's files after its id (`images/<source>/<id>.png`, a SimpleTuner caption
`<id>.txt`, a tar member `<key>.png`), and a published release is checked out on macOS and Windows and
uploaded to the Hub. The id rule was ASCII letters, digits, `_-.` (PLAIN_ID): one Unicode form of each, no
separator, but it let through

1. an id that is a Windows device name, whatever its case or extension (`CON`, `nul.x`, `com1`, `Lpt9.tar`):
   release wrote `images/diffusiondb/CON.png`, which on Windows is the console (what a checkout writes
   to it is lost), and
2. two ids equal but for case (`ABC` and `abc`): release wrote `ABC.png` and `abc.png`, one file on a
   case-insensitive disk, where a checkout keeps one of the two images under both rows.

Both are now refused in one line (exit 2, nothing written), by one rule in scripts/lib/paths.py (PLAIN_ID,
check_ids_apart), wherever a release's ids come in: the split tables that compose@V and release@V read, and a
composed rows.parquet (`release --composed`). The names of params.yaml entries (sources, releases,
synthesize, caption) were already refused for each of these collisions (params/base.py check_name,
check_names_apart); their tests are test_round23g.py and the params tests.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import PARAMS, PNG, error_line, split_rows, write_params
from scripts.lib.marks import MARKER
from scripts.lib.tables import write_parquet

SOURCE = "diffusiondb"


def _workspace(root: Path, train: list[str], validation: list[str] = (), export: str | None = None) -> None:
    """params.yaml with release v2 of diffusiondb (no steps: every row reaches the export) and the split
    tables of diffusiondb holding rows with these ids, each with its own text, one 1x1 PNG as their image."""
    release = {**PARAMS["releases"]["v2"], "steps": []}
    if export:
        release["export"] = export
    write_params(root, releases={"v2": release})
    image = root / "data" / "images" / SOURCE / "img.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(PNG)
    folder = root / "data" / "splits" / SOURCE
    folder.mkdir(parents=True)
    ids = [*train, *validation]
    rows = split_rows(len(ids), SOURCE, image).assign(id=ids, text=[f"prompt {i} of {len(ids)}" for i in ids])
    rows["orig_text"] = rows["text"]
    write_parquet(rows.iloc[: len(train)].assign(split="train"), folder / "train.parquet")
    write_parquet(rows.iloc[len(train) :].assign(split="validation"), folder / "validation.parquet")
    (folder / MARKER).write_text("", encoding="utf-8")


def _refused(root: Path, monkeypatch, capfd, argv: list[str], output: str) -> str:
    """The command's one error line; exit 2 and `output` not written."""
    result = cli(argv, root, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2, result.stderr
    assert line.startswith("error: ") and "internal error" not in line, line
    assert not (root / output).exists(), sorted(p.name for p in (root / output).rglob("*"))
    return line


RELEASE = ["release", "v2", "data/splits", "data/releases/v2"]
COMPOSE = ["compose", "v2", "data/splits", "data/compose/v2"]

# ---------------------------------------------------------------- 1. an id that is a Windows device

DEVICE_IDS = {  # case: (train ids, the layout, the device the line names)
    "CON, the console": (["a1", "CON"], None, "(CON)"),
    "nul with an extension": (["nul.x", "b2"], None, "(NUL)"),
    "com1 in a SimpleTuner release (its caption com1.txt too)": (["com1"], "simpletuner", "(COM1)"),
    "Lpt9 mixed case, two extensions, in tar shards": (["Lpt9.tar.gz"], "webdataset", "(LPT9)"),
    "aux in a parquet release (its Hub path aux.png)": (["aux"], "parquet", "(AUX)"),
}


@pytest.mark.parametrize("case", fast_first(DEVICE_IDS, keep=2))
def test_a_device_name_as_an_id_is_refused(tmp_path, monkeypatch, capfd, case):
    train, export, device = DEVICE_IDS[case]
    _workspace(tmp_path, train, export=export)
    line = _refused(tmp_path, monkeypatch, capfd, RELEASE, "data/releases/v2")
    assert "train.parquet: row" in line and f"is a device name on Windows {device}" in line, line


def test_compose_refuses_a_device_name_as_an_id(tmp_path, monkeypatch, capfd):
    """compose@V reads the split tables' ids alone first (compose_stream.row_keys): the same rule there."""
    _workspace(tmp_path, ["ok1"], ["PRN"])
    line = _refused(tmp_path, monkeypatch, capfd, COMPOSE, "data/compose/v2")
    assert "validation.parquet: row 1: id 'PRN' is a device name on Windows (PRN)" in line, line


# ---------------------------------------------------------------- 2. two ids equal but for case

CASE_PAIRS = {  # case: (train ids, validation ids, the layout, the pair the line names)
    "ABC and abc in one split": (["ABC", "x1", "abc"], [], None, ("ABC", "abc")),
    "captions x.txt and X.txt of a SimpleTuner release": (["x"], ["X"], "simpletuner", ("x", "X")),
    "Img.1 and iMG.1 across the splits": (["Img.1"], ["iMG.1"], None, ("Img.1", "iMG.1")),
}


@pytest.mark.parametrize("case", fast_first(CASE_PAIRS, keep=2))
def test_two_ids_equal_but_for_case_are_refused(tmp_path, monkeypatch, capfd, case):
    train, validation, export, (first, second) = CASE_PAIRS[case]
    _workspace(tmp_path, train, validation, export)
    line = _refused(tmp_path, monkeypatch, capfd, RELEASE, "data/releases/v2")
    assert f"ids {first!r} and {second!r} differ only by case" in line and "releases.v2" in line, line


def test_compose_refuses_two_ids_equal_but_for_case(tmp_path, monkeypatch, capfd):
    _workspace(tmp_path, ["Kx9"], ["kX9"])
    line = _refused(tmp_path, monkeypatch, capfd, COMPOSE, "data/compose/v2")
    assert "ids 'Kx9' and 'kX9' differ only by case" in line, line


TWIN = "the first row's id in capitals"
COMPOSED_EDITS = {  # case: (the id rows.parquet's second row is given, the layout, what the line says)
    "a case twin of the first row": (TWIN, None, "differ only by case"),
    "a case twin, SimpleTuner captions": (TWIN, "simpletuner", "differ only by case"),
    "a device name": ("Con.1", None, "is a device name on Windows (CON)"),
}


@pytest.mark.parametrize("case", fast_first(COMPOSED_EDITS))
def test_a_composed_table_edited_by_hand_is_held_to_the_id_rule(tmp_path, monkeypatch, capfd, case):
    """`release --composed`: compose@V's rows.parquet, its second row's id edited by hand."""
    new_id, export, said = COMPOSED_EDITS[case]
    _workspace(tmp_path, ["aa1", "bb2"], export=export)
    assert cli(COMPOSE, tmp_path, monkeypatch, capfd).returncode == 0
    table = tmp_path / "data/compose/v2/rows.parquet"
    rows = pd.read_parquet(table)
    rows.loc[1, "id"] = rows.loc[0, "id"].upper() if new_id == TWIN else new_id
    write_parquet(rows, table)
    line = _refused(tmp_path, monkeypatch, capfd, [*RELEASE, "--composed", "data/compose/v2"], "data/releases/v2")
    assert said in line and "rows.parquet" in line, line
