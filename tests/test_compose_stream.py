"""compose@V streams the rows of a recipe that only picks and orders them (scripts/lib/compose_stream.py):
the same bytes and the same one-line errors as composing the whole table in memory."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

import scripts.compose
import scripts.release
from helpers.commands import cli
from helpers.trees import file_digests
from helpers.workspace import naming_its_sources
from scripts.lib import external_sort
from scripts.lib.compose import picks_only
from scripts.lib.io import stable_id
from scripts.lib.recipe import resolve_recipe
from scripts.lib.tables import write_parquet

REPO = Path(__file__).resolve().parents[1]
RELEASES = {
    "base": {"components": [{"source": "a", "split": "all", "into": "same", "rows": [0, 700]}], "export": "prompts"},
    "r": {  # a base chain, a source without positions (taken by id) and a range of a source with them
        "base": "base",
        "components": [
            {"source": "b", "split": "train", "into": "validation"},
            {"source": "a", "split": "all", "into": "train", "rows": [700, None]},
        ],
    },
}


def split_rows(source: str, prompts: list[str], start: int, images: bool) -> pd.DataFrame:
    n = len(prompts)
    return pd.DataFrame(
        {
            "id": [stable_id(source, start + i) for i in range(n)],
            "source": source,
            "text": [p.strip().lower() for p in prompts],
            "orig_text": prompts,
            "image": [f"raw/{source}/{i}.png" for i in range(n)] if images else None,
            "width": pd.array([512 if i % 3 else None for i in range(n)], dtype="Int64"),
            "height": pd.array([768] * n if images else [None] * n, dtype="Int64"),
            "generation": "{}",  # a column composition does not keep
        }
    )


@pytest.fixture
def workspace(tmp_path, fixtures_dir) -> Path:
    """data/splits/{a,b} from the GPT-4 prompts (a: text only, with positions; b: images, none), params.yaml."""
    prompts = (fixtures_dir / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"] = {
        "a": {"kind": "text", "path": "raw/a", "images": "raw/a", "text_only": True, "caption_language": None},
        "b": {"kind": "text", "path": "raw/b", "images": "raw/b", "caption_language": None},
    }
    params["releases"] = RELEASES
    params = naming_its_sources(params, keep={"releases"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    a = split_rows("a", prompts[:1500], 0, images=False)
    b = split_rows("b", prompts[1500:2300], 0, images=True)
    for source, rows in (("a", a), ("b", b)):
        rows = rows.sample(frac=1, random_state=1).reset_index(drop=True)  # a split table is in no set order
        write_parquet(rows.iloc[: len(rows) * 9 // 10], tmp_path / "data" / "splits" / source / "train.parquet")
        write_parquet(rows.iloc[len(rows) * 9 // 10 :], tmp_path / "data" / "splits" / source / "validation.parquet")
    (tmp_path / "raw" / "b").mkdir(parents=True)
    picture = io.BytesIO()
    Image.new("RGB", (8, 12), (200, 40, 90)).save(picture, format="PNG")
    for image in b["image"]:  # the preview draws a sample of them
        (tmp_path / image).write_bytes(picture.getvalue())
    positions = a[["id"]].assign(position=range(len(a))).sample(frac=1, random_state=2)
    write_parquet(positions, tmp_path / "data" / "prefilter" / "a.parquet")
    return tmp_path


def set_stream_rows(root: Path, rows: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["runtime"]["stream_rows"] = rows
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def compose(root: Path, out: str, monkeypatch, capfd, streamed: bool = True):
    if not streamed:
        monkeypatch.setattr(scripts.compose, "picks_only", lambda recipe: False)
    result = cli(["compose", "r", "data/splits", out, "--positions", "data/prefilter"], root, monkeypatch, capfd)
    monkeypatch.undo()
    return result


def test_streamed_rows_are_the_bytes_of_the_whole_table(workspace, monkeypatch, capfd):
    whole = compose(workspace, "data/whole", monkeypatch, capfd, streamed=False)
    assert whole.returncode == 0, whole.stderr
    expected = file_digests(workspace / "data" / "whole")
    rows = pd.read_parquet(workspace / "data" / "whole" / "rows.parquet")
    assert len(rows) == 700 + 720 + 800 and (rows.loc[rows["source"] == "b", "split"] == "validation").all()
    assert "generation" not in rows
    for stream_rows, bucket_rows in ((7, 1_000_000), (100, 250), (10_000_000, 1_000_000)):
        set_stream_rows(workspace, stream_rows)
        monkeypatch.setattr(external_sort, "BUCKET_ROWS", bucket_rows)
        result = compose(workspace, f"data/streamed-{stream_rows}", monkeypatch, capfd)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == whole.stdout.strip().replace("data/whole", f"data/streamed-{stream_rows}")
        assert file_digests(workspace / "data" / f"streamed-{stream_rows}") == expected
    assert not list(workspace.rglob("*.tmp*")), "a temp or spill file was left behind"


def test_a_text_only_release_streamed_is_the_bytes_of_the_whole_table(workspace, monkeypatch, capfd):
    assert compose(workspace, "data/compose/r", monkeypatch, capfd).returncode == 0
    argv = ["release", "r", "data/splits", None, "--composed", "data/compose/r"]
    monkeypatch.setattr(scripts.release, "STREAMED_LAYOUTS", ())
    whole = cli([*argv[:3], "data/whole", *argv[4:]], workspace, monkeypatch, capfd)
    monkeypatch.undo()
    assert whole.returncode == 0, whole.stderr
    expected = file_digests(workspace / "data" / "whole")
    assert {"train/prompts.parquet", "validation/prompts.parquet", "rows.parquet", "preview.jpg"} <= set(expected)
    for stream_rows in (7, 1_000):
        set_stream_rows(workspace, stream_rows)
        result = cli([*argv[:3], f"data/streamed-{stream_rows}", *argv[4:]], workspace, monkeypatch, capfd)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == whole.stdout.splitlines()[-1]
        assert file_digests(workspace / "data" / f"streamed-{stream_rows}") == expected


@pytest.mark.parametrize(
    "fault",
    [
        ("a", "train", 150, "text", None),  # a null text in the second chunk of 100
        ("b", "train", 401, "image", "../../../etc/passwd"),  # an image outside the source's folders
        ("a", "validation", 99, "id", "a/../x"),  # an id that is not a plain name
        ("b", "train", 80, "source", "a"),  # a row of another source
    ],
)
def test_a_bad_row_is_the_same_one_line_error_and_no_output(workspace, fault, monkeypatch, capfd):
    source, part, row, column, value = fault
    path = workspace / "data" / "splits" / source / f"{part}.parquet"
    rows = pd.read_parquet(path)
    rows[column] = rows[column].astype(object)
    rows.loc[row - 1, column] = value
    write_parquet(rows, path)
    set_stream_rows(workspace, 100)
    errors = []
    for out, streamed in (("data/whole", False), ("data/streamed", True)):
        result = compose(workspace, out, monkeypatch, capfd, streamed=streamed)
        assert result.returncode == 2 and not (workspace / out).exists(), result.stderr
        errors.append(result.stderr.strip())
    assert errors[0] == errors[1] and f"row {row}:" in errors[1] and len(errors[1].splitlines()) == 1


def test_only_a_recipe_whose_steps_read_no_text_is_streamed():
    def recipe(**entry):
        return resolve_recipe("r", {"base": RELEASES["base"], "r": {**RELEASES["r"], **entry}})

    prefiltered = {"dedup": {"scope": "against", "against": "train", "reference": "base", "before_generate": True}}
    assert picks_only(recipe())
    b = {"source": "b", "split": "train", "into": "validation"}
    assert picks_only(recipe(components=[{**b, "steps": [prefiltered]}]))
    assert not picks_only(recipe(steps=[{"clean": {"rules": "final"}}]))
    assert not picks_only(recipe(steps=[{"dedup": {"scope": "validation_vs_train", "match": "exact"}}]))
    assert not picks_only(recipe(components=[{**b, "steps": [{"dedup": {"scope": "self"}}]}]))
    assert not picks_only(resolve_recipe("r", {"base": {**RELEASES["base"], "reclean": True}, "r": RELEASES["r"]}))


@pytest.mark.parametrize("streamed", [True, False])
def test_an_id_in_two_splits_of_a_source_is_one_line_and_no_output(workspace, streamed, monkeypatch, capfd):
    """release --composed refuses a rows.parquet with a repeated id (ids name files): compose must not
    write one (found by a hostile round: the same id in a source's train and validation)."""
    path = workspace / "data" / "splits" / "a" / "validation.parquet"
    rows = pd.read_parquet(path)
    rows.loc[3, "id"] = pd.read_parquet(path.with_name("train.parquet"))["id"].iloc[10]
    write_parquet(rows, path)
    result = compose(workspace, "data/out", monkeypatch, capfd, streamed=streamed)
    assert result.returncode == 2 and not (workspace / "data" / "out").exists(), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "would be in the release twice" in result.stderr
